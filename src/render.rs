//! Renders a stored result: transcript exports (txt, srt, vtt, json, rttm) and the sidecar file.
//! OpenAI's bodies are in [`openai`].

pub mod openai;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{Job, Segment, SpeakerTurn};

/// Transcript export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Txt,
    Srt,
    Vtt,
    Json,
    Rttm,
}

impl Format {
    /// Parses a `?format=` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "txt" | "text" => Format::Txt,
            "srt" => Format::Srt,
            "vtt" => Format::Vtt,
            "json" => Format::Json,
            "rttm" => Format::Rttm,
            _ => return None,
        })
    }

    /// HTTP content type of the rendering.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Txt | Format::Rttm => "text/plain; charset=utf-8",
            Format::Srt => "application/x-subrip; charset=utf-8",
            Format::Vtt => "text/vtt; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// Everything stored about one job: what the sidecar and the exports are made of.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub job: Job,
    pub segments: Vec<Segment>,
    pub speaker_turns: Vec<SpeakerTurn>,
}

impl JobResult {
    /// Renders the transcript in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default(),
            other => {
                render_transcript(other, &self.segments, &self.speaker_turns, Path::new(&self.job.audio_path))
            }
        }
    }
}

/// Renders segments (txt, srt, vtt) or turns (rttm) of the audio at `audio_path`.
/// JSON needs the whole result and is rendered by the caller.
pub fn render_transcript(
    format: Format,
    segments: &[Segment],
    turns: &[SpeakerTurn],
    audio_path: &Path,
) -> String {
    match format {
        Format::Txt => txt(segments),
        Format::Srt => subtitles(segments, false),
        Format::Vtt => subtitles(segments, true),
        Format::Rttm => crate::diarize::to_rttm(turns, &file_id(audio_path)),
        Format::Json => serde_json::to_string_pretty(segments).unwrap_or_default(),
    }
}

fn file_id(audio_path: &Path) -> String {
    audio_path.file_stem().and_then(|s| s.to_str()).unwrap_or("audio").to_string()
}

fn txt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match &s.speaker {
            Some(sp) => out.push_str(&format!("[{}] {}: {}\n", clock(s.start_s, '.'), sp, s.text.trim())),
            None => out.push_str(&format!("[{}] {}\n", clock(s.start_s, '.'), s.text.trim())),
        }
    }
    out
}

fn subtitles(segments: &[Segment], vtt: bool) -> String {
    let sep = if vtt { '.' } else { ',' };
    let mut out = String::from(if vtt { "WEBVTT\n\n" } else { "" });
    for (i, s) in segments.iter().enumerate() {
        if !vtt {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!("{} --> {}\n", clock(s.start_s, sep), clock(s.end_s, sep)));
        match (&s.speaker, vtt) {
            (Some(sp), true) => out.push_str(&format!("<v {sp}>{}\n\n", s.text.trim())),
            (Some(sp), false) => out.push_str(&format!("{sp}: {}\n\n", s.text.trim())),
            (None, _) => out.push_str(&format!("{}\n\n", s.text.trim())),
        }
    }
    out
}

/// `HH:MM:SS<sep>mmm`.
fn clock(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// Where the sidecar of `audio_path` goes: `<results>/<name>.json` or beside the audio.
pub fn sidecar_path(audio_path: &Path, results_folder: Option<&Path>) -> PathBuf {
    let name = format!("{}.json", audio_path.file_name().and_then(|n| n.to_str()).unwrap_or("audio"));
    match results_folder {
        Some(dir) => dir.join(name),
        None => audio_path.with_file_name(name),
    }
}

/// Writes the job's sidecar JSON; returns its path.
pub fn write_sidecar(result: &JobResult, results_folder: Option<&Path>) -> std::io::Result<PathBuf> {
    let path = sidecar_path(Path::new(&result.job.audio_path), results_folder);
    let json = result.render(Format::Json);
    crate::files::write_atomically(&path, |e| e, |w| w.write_all(json.as_bytes()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(a: f64, b: f64, sp: &str, text: &str) -> Segment {
        Segment { start_s: a, end_s: b, text: text.into(), speaker: Some(sp.into()), words: vec![] }
    }

    #[test]
    fn subtitles_and_rttm() {
        let segs = [seg(0.0, 1.25, "Speaker00", " Hello."), seg(3661.5, 3662.0, "Speaker01", "Bye")];
        let srt = subtitles(&segs, false);
        assert!(
            srt.starts_with("1\n00:00:00,000 --> 00:00:01,250\nSpeaker00: Hello.\n\n2\n01:01:01,500"),
            "{srt}"
        );
        let vtt = subtitles(&segs, true);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n<v Speaker00>Hello.\n"), "{vtt}");
        let turns = [SpeakerTurn { start_s: 1.0, end_s: 2.5, speaker: "Speaker00".into() }];
        let rttm = render_transcript(Format::Rttm, &segs, &turns, Path::new("uploads/my talk.wav"));
        assert_eq!(rttm, "SPEAKER my_talk 1 1.000 1.500 <NA> <NA> Speaker00 <NA> <NA>\n");
    }

    #[test]
    fn sidecar_beside_audio_or_in_results() {
        assert_eq!(sidecar_path(Path::new("uploads/m.mp3"), None), PathBuf::from("uploads/m.mp3.json"));
        assert_eq!(
            sidecar_path(Path::new("uploads/m.mp3"), Some(Path::new("out"))),
            PathBuf::from("out/m.mp3.json")
        );
    }
}
