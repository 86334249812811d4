//! OpenAI's renderings of a stored result: the bodies of `POST /v1/audio/transcriptions` for
//! each `response_format`, and its streaming events.
//!
//! What the pipeline does not keep is given as OpenAI's neutral value: `tokens` is empty (token
//! ids are not stored) and `no_speech_prob` is 0 (whisper.cpp drops the segments it judges to
//! be silence, and the probability of the others is not stored).

use std::io::Write;

use serde_json::{Value, json};

use super::{Format, JobResult, render_transcript};
use crate::model::Segment;

/// The `response_format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
    DiarizedJson,
}

impl ResponseFormat {
    /// Every format's name, as OpenAI spells it.
    pub const NAMES: &str = "json, text, srt, vtt, verbose_json, diarized_json";

    /// Parses a `response_format` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "json" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            "verbose_json" => ResponseFormat::VerboseJson,
            "diarized_json" => ResponseFormat::DiarizedJson,
            _ => return None,
        })
    }

    /// HTTP content type of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Text => "text/plain; charset=utf-8",
            ResponseFormat::Srt => Format::Srt.content_type(),
            ResponseFormat::Vtt => Format::Vtt.content_type(),
            _ => "application/json",
        }
    }
}

/// What a `verbose_json` body holds besides the text.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Verbose<'a> {
    /// The language's name as OpenAI gives it (`english`).
    pub language: &'a str,
    /// `segments` (OpenAI's default when no granularity is asked for).
    pub segments: bool,
    /// `words`.
    pub words: bool,
    /// The job's sampling temperature, reported per segment.
    pub temperature: f32,
}

/// The transcript text: the segments' text joined by single spaces, as the deltas of a stream
/// add up to.
pub fn text(segments: &[Segment]) -> String {
    segments.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The body for `format`.
pub fn body(result: &JobResult, format: ResponseFormat, verbose: Verbose<'_>) -> String {
    let audio = std::path::Path::new(&result.job.audio_path);
    match format {
        ResponseFormat::Json => json!({ "text": text(&result.segments) }).to_string(),
        ResponseFormat::Text => format!("{}\n", text(&result.segments)),
        ResponseFormat::Srt => render_transcript(Format::Srt, &unlabelled(&result.segments), &[], audio),
        ResponseFormat::Vtt => render_transcript(Format::Vtt, &unlabelled(&result.segments), &[], audio),
        ResponseFormat::VerboseJson => verbose_json(result, verbose).to_string(),
        ResponseFormat::DiarizedJson => diarized_json(result).to_string(),
    }
}

/// OpenAI's subtitles carry no speakers (`diarized_json` does).
fn unlabelled(segments: &[Segment]) -> Vec<Segment> {
    segments.iter().map(|s| Segment { speaker: None, words: vec![], ..s.clone() }).collect()
}

fn verbose_json(result: &JobResult, verbose: Verbose<'_>) -> Value {
    let mut body = json!({
        "task": "transcribe",
        "language": verbose.language,
        "duration": duration(result),
        "text": text(&result.segments),
    });
    if verbose.segments {
        let segments: Vec<Value> = result
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "id": i,
                    "seek": (s.start_s * 100.0).floor() as i64,
                    "start": s.start_s,
                    "end": s.end_s,
                    "text": s.text,
                    "tokens": [],
                    // As the f32 was written (0.2, not 0.20000000298…).
                    "temperature": verbose.temperature.to_string().parse::<f64>().unwrap_or(0.0),
                    "avg_logprob": avg_logprob(s),
                    "compression_ratio": compression_ratio(&s.text),
                    "no_speech_prob": 0.0,
                })
            })
            .collect();
        body["segments"] = segments.into();
    }
    if verbose.words {
        let words: Vec<Value> = result
            .segments
            .iter()
            .flat_map(|s| &s.words)
            .map(|w| json!({ "word": w.text, "start": w.start_s, "end": w.end_s }))
            .collect();
        body["words"] = words.into();
    }
    body
}

fn diarized_json(result: &JobResult) -> Value {
    let segments: Vec<Value> = result.segments.iter().enumerate().map(|(i, s)| segment_event(i, s)).collect();
    json!({
        "task": "transcribe",
        "duration": duration(result),
        "text": text(&result.segments),
        "segments": segments,
    })
}

fn duration(result: &JobResult) -> f64 {
    result.job.duration_s.unwrap_or_else(|| result.segments.last().map_or(0.0, |s| s.end_s))
}

/// A `transcript.text.segment`: one segment with its speaker (a diarized segment and a
/// streaming event have this same shape).
pub fn segment_event(index: usize, s: &Segment) -> Value {
    json!({
        "type": "transcript.text.segment",
        "id": segment_id(index),
        "start": s.start_s,
        "end": s.end_s,
        "text": s.text.trim(),
        "speaker": speaker(s.speaker.as_deref()),
    })
}

/// A `transcript.text.delta` carrying segment `index`'s text (after a space unless it is the
/// first), so the deltas add up to [`text`].
pub fn delta_event(index: usize, s: &Segment) -> Value {
    let sep = if index == 0 { "" } else { " " };
    json!({
        "type": "transcript.text.delta",
        "delta": format!("{sep}{}", s.text.trim()),
        "segment_id": segment_id(index),
    })
}

/// The closing `transcript.text.done`.
pub fn done_event(segments: &[Segment]) -> Value {
    json!({ "type": "transcript.text.done", "text": text(segments) })
}

fn segment_id(index: usize) -> String {
    format!("seg_{index}")
}

/// OpenAI labels speakers `A`, `B`, …, `Z`, `AA`, …: our `Speaker00` is `A`. Other labels
/// (names) are kept; without diarization the speaker is `unknown`.
fn speaker(label: Option<&str>) -> String {
    let Some(label) = label else { return "unknown".into() };
    match label.strip_prefix("Speaker").and_then(|n| n.parse::<usize>().ok()) {
        Some(mut n) => {
            let mut letters = Vec::new();
            loop {
                letters.push(b'A' + (n % 26) as u8);
                if n < 26 {
                    break;
                }
                n = n / 26 - 1;
            }
            letters.iter().rev().map(|&b| b as char).collect()
        }
        None => label.to_string(),
    }
}

/// Mean log probability of the segment's words (0 without words).
fn avg_logprob(s: &Segment) -> f64 {
    if s.words.is_empty() {
        return 0.0;
    }
    s.words.iter().map(|w| f64::from(w.probability.max(1e-6)).ln()).sum::<f64>() / s.words.len() as f64
}

/// Text bytes over their zlib-compressed size, as OpenAI's decoder computes it (a repetitive
/// text compresses well: a high ratio hints at a hallucination loop).
fn compression_ratio(text: &str) -> f64 {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = z.write_all(text.as_bytes()).and_then(|()| z.finish()).map_or(0, |v| v.len());
    if compressed == 0 { 0.0 } else { text.len() as f64 / compressed as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, Word};

    fn result(speakers: bool) -> JobResult {
        let word =
            |t: &str, a, b| Word { start_s: a, end_s: b, text: t.into(), probability: 0.5, speaker: None };
        let seg = |a, b, text: &str, sp: &str, words| Segment {
            start_s: a,
            end_s: b,
            text: text.into(),
            speaker: speakers.then(|| sp.to_string()),
            words,
        };
        let job: Job = serde_json::from_value(json!({
            "id": 1, "uuid": "u", "audio_path": "uploads/u.wav", "original_filename": "a.wav",
            "sha256": "s", "source": "upload", "status": "done", "error_message": null,
            "conversation_type": null, "summary": null, "keypoints": null, "language": "en",
            "language_probability": null, "clean_transcript": null, "transcript": null,
            "duration_s": 11.0, "progress": null, "attempts": 1, "created_at": "t", "updated_at": "t",
            "started_at": null, "finished_at": null
        }))
        .unwrap();
        JobResult {
            job,
            segments: vec![
                seg(0.0, 2.5, " Ask not", "Speaker00", vec![word("Ask", 0.0, 1.0), word("not", 1.0, 2.5)]),
                seg(3.0, 4.0, "what", "Speaker27", vec![word("what", 3.0, 4.0)]),
            ],
            speaker_turns: vec![],
        }
    }

    #[test]
    fn json_and_text_bodies() {
        let r = result(true);
        assert_eq!(body(&r, ResponseFormat::Json, Verbose::default()), r#"{"text":"Ask not what"}"#);
        assert_eq!(body(&r, ResponseFormat::Text, Verbose::default()), "Ask not what\n");
        let srt = body(&r, ResponseFormat::Srt, Verbose::default());
        assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:02,500\nAsk not\n\n2\n"), "{srt}");
        assert!(body(&r, ResponseFormat::Vtt, Verbose::default()).starts_with("WEBVTT\n\n00:00:00.000 --> "));
    }

    #[test]
    fn verbose_json_has_openais_fields() {
        let r = result(false);
        let v: Value = serde_json::from_str(&body(
            &r,
            ResponseFormat::VerboseJson,
            Verbose { language: "english", segments: true, words: true, temperature: 0.2 },
        ))
        .unwrap();
        assert_eq!((v["task"].as_str(), v["language"].as_str()), (Some("transcribe"), Some("english")));
        assert_eq!((v["duration"].as_f64(), v["text"].as_str()), (Some(11.0), Some("Ask not what")));
        let s = &v["segments"][1];
        for key in [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(!s[key].is_null(), "{key} in {s}");
        }
        assert_eq!(
            (s["id"].as_u64(), s["seek"].as_i64(), s["end"].as_f64()),
            (Some(1), Some(300), Some(4.0))
        );
        assert!((s["avg_logprob"].as_f64().unwrap() - 0.5f64.ln()).abs() < 1e-6);
        assert_eq!(s["temperature"].as_f64(), Some(0.2));
        assert_eq!(
            v["words"],
            json!([
                {"word": "Ask", "start": 0.0, "end": 1.0},
                {"word": "not", "start": 1.0, "end": 2.5},
                {"word": "what", "start": 3.0, "end": 4.0}
            ])
        );
        let only_words: Value = serde_json::from_str(&body(
            &r,
            ResponseFormat::VerboseJson,
            Verbose { language: "english", segments: false, words: true, temperature: 0.0 },
        ))
        .unwrap();
        assert!(only_words.get("segments").is_none() && only_words["words"].is_array());
    }

    #[test]
    fn diarized_json_labels_speakers_with_letters() {
        let v: Value =
            serde_json::from_str(&body(&result(true), ResponseFormat::DiarizedJson, Verbose::default()))
                .unwrap();
        assert_eq!(
            v["segments"],
            json!([
                {"type": "transcript.text.segment", "id": "seg_0", "start": 0.0, "end": 2.5, "text": "Ask not", "speaker": "A"},
                {"type": "transcript.text.segment", "id": "seg_1", "start": 3.0, "end": 4.0, "text": "what", "speaker": "AB"}
            ])
        );
        assert_eq!((v["task"].as_str(), v["duration"].as_f64()), (Some("transcribe"), Some(11.0)));
        assert_eq!(speaker(Some("Alice")), "Alice");
        assert_eq!(speaker(Some("Speaker25")), "Z");
        assert_eq!(speaker(None), "unknown");
    }

    #[test]
    fn deltas_add_up_to_the_done_text() {
        let r = result(false);
        let deltas: String = r
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| delta_event(i, s)["delta"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(deltas, done_event(&r.segments)["text"]);
    }

    #[test]
    fn repetitive_text_compresses_better() {
        let loop_text = "thank you ".repeat(20);
        assert!(compression_ratio(&loop_text) > 2.4, "{}", compression_ratio(&loop_text));
        assert!(compression_ratio("And so my fellow Americans, ask not") < 1.5);
    }
}
