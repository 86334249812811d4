//! One-shot commands: `transcribe` runs the daemon's stages on one file without the store;
//! `models` installs and lists models.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::model::{Analysis, Segment, SpeakerHints, SpeakerTurn, Transcript};
use crate::pipeline::{ResultSink, StageError, Stages};
use crate::render::{Format, render_transcript};

/// Everything the one-shot run produced.
#[derive(Debug, Default, Serialize)]
struct OneShot {
    duration_s: f64,
    language: Option<String>,
    language_probability: Option<f32>,
    segments: Vec<Segment>,
    speaker_turns: Vec<SpeakerTurn>,
    analysis: Option<Analysis>,
    #[serde(skip)]
    last_percent: AtomicU32,
}

impl ResultSink for OneShot {
    fn duration(&mut self, seconds: f64) -> Result<(), StageError> {
        self.duration_s = seconds;
        Ok(())
    }
    fn transcript(&mut self, t: &Transcript) -> Result<(), StageError> {
        self.language = t.language.clone();
        self.language_probability = t.language_probability;
        self.segments = t.segments.clone();
        Ok(())
    }
    fn diarization(&mut self, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<(), StageError> {
        self.speaker_turns = turns.to_vec();
        self.segments = segments.to_vec();
        Ok(())
    }
    fn analysis(&mut self, analysis: &Analysis) -> Result<(), StageError> {
        self.analysis = Some(analysis.clone());
        Ok(())
    }
    fn progress(&self, percent: f32) {
        let p = percent as u32;
        if self.last_percent.swap(p, Ordering::Relaxed) / 10 != p / 10 {
            eprintln!("progress: {p}%");
        }
    }
}

/// `diarized transcribe FILE --format F`.
pub fn transcribe(cfg: &Config, file: &Path, format: &str) -> anyhow::Result<()> {
    let format = Format::parse(format).context("unknown format")?;
    crate::audio::set_max_decode_seconds(cfg.max_audio_seconds);
    let mut stages = Stages::from_config(cfg);
    let mut out = OneShot::default();
    let hints = SpeakerHints {
        num_speakers: cfg.num_speakers,
        min_speakers: cfg.min_speakers,
        max_speakers: cfg.max_speakers,
    };
    stages.run(file, hints, &mut out)?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&out)?,
        other => render_transcript(other, &out.segments, &out.speaker_turns, file),
    };
    println!("{}", text.trim_end());
    Ok(())
}

/// `diarized models install NAME…`.
pub fn install_models(cfg: &Config, names: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(!names.is_empty(), "name at least one model; `diarized models list` shows them");
    for (i, name) in names.iter().enumerate() {
        // Progress on stderr (downloads can take minutes); the installed path on stdout.
        eprintln!("[{}/{}] {name}: installing into {}", i + 1, names.len(), cfg.models_dir.display());
        let path = crate::models::install(&cfg.models_dir, std::slice::from_ref(name))?.remove(0);
        println!("{}", path.display());
    }
    Ok(())
}

/// `diarized models list`.
pub fn list_models(cfg: &Config) -> anyhow::Result<()> {
    for e in crate::models::catalogue() {
        let path = (e.path)(&cfg.models_dir);
        let state = if path.is_file() { "installed" } else { "not installed" };
        println!("{:<22} {:<14} {}", e.name, state, e.description);
    }
    Ok(())
}
