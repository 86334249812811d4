//! Transcribes one file with `diarized::asr` and prints timings and text as one JSON line.
//!
//! `cargo run --example transcribe -- MODEL AUDIO [--threads N] [--language xx] [--beam N]`
//! MODEL is a catalogue name (looked up in `$MODELS_DIR` or `models-cache/`) or a ggml file.

use std::path::PathBuf;
use std::time::Instant;

use diarized::asr::{AsrOptions, WhisperTranscriber};
use diarized::pipeline::Transcriber;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut opts = AsrOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| anyhow::anyhow!("{a} needs a value"));
        match a.as_str() {
            "--threads" => opts.threads = val()?.parse()?,
            "--language" => opts.language = Some(val()?),
            "--beam" => opts.beam_size = Some(val()?.parse()?),
            _ => pos.push(a.clone()),
        }
    }
    let [model, audio] = pos.as_slice() else {
        anyhow::bail!("usage: transcribe MODEL AUDIO [--threads N] [--language xx] [--beam N]");
    };
    let models_dir =
        std::env::var_os("MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| "models-cache".into());
    let path = diarized::models::whisper::resolve_whisper_model(&models_dir, model)?;
    let audio = diarized::audio::decode_file(std::path::Path::new(audio))?;
    let t0 = Instant::now();
    let mut t = WhisperTranscriber::load(&path, opts)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = t.transcribe(&audio, &|_| {}, &|| false)?;
    let transcribe_s = t1.elapsed().as_secs_f64();
    let json = serde_json::json!({
        "model": t.name(),
        "audio_s": audio.duration_s(),
        "load_s": load_s,
        "transcribe_s": transcribe_s,
        "rtf": transcribe_s / audio.duration_s(),
        "language": out.language,
        "language_probability": out.language_probability,
        "segments": out.segments.len(),
        "text": out.text(),
    });
    println!("{json}");
    Ok(())
}
