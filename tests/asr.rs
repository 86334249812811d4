//! Whisper transcription on real recordings from `../shared/fixtures/`.
//!
//! Models are installed (once, idempotently) into `models-cache/` at the repo root, or into
//! `$MODELS_DIR`. Transcriptions run one at a time with one thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use diarized::asr::{AsrOptions, WhisperTranscriber};
use diarized::audio::Audio;
use diarized::models::whisper::resolve_whisper_model;
use diarized::pipeline::Transcriber;

const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// Serialises model installs and inference across the tests of this file.
static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn models_dir() -> PathBuf {
    std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models-cache"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(name)
}

fn transcriber(model: &str, language: Option<&str>) -> WhisperTranscriber {
    let dir = models_dir();
    diarized::models::install(&dir, &[model.to_string()]).expect("install model");
    let path = resolve_whisper_model(&dir, model).expect("resolve model");
    let opts = AsrOptions { threads: 1, language: language.map(str::to_string), ..AsrOptions::default() };
    WhisperTranscriber::load(&path, opts).expect("load model")
}

fn load(name: &str) -> Audio {
    diarized::audio::decode_file(&fixture(name)).expect("decode fixture")
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').flat_map(char::to_lowercase).collect()
        })
        .filter(|w: &String| !w.is_empty())
        .collect()
}

/// Word error rate of `hyp` against `reference` on lower-cased, punctuation-free words.
fn wer(reference: &str, hyp: &str) -> f64 {
    let (r, h) = (words(reference), words(hyp));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rw != hw)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

#[test]
fn wer_helper() {
    assert_eq!(wer("a b c d", "A, b c d."), 0.0);
    assert_eq!(wer("a b c d", "a x c"), 0.5);
}

#[test]
fn jfk_wav_transcribes_to_reference() {
    let _g = serial();
    let mut t = transcriber("tiny.en", None);
    let audio = load("jfk.wav");
    let seen = Mutex::new(Vec::new());
    let progress = |p: f32| seen.lock().unwrap().push(p);
    let out = t.transcribe(&audio, &progress, &|| false).expect("transcribe");
    let text = out.text();
    let e = wer(JFK, &text);
    assert!(e <= 0.10, "WER {e:.2}: {text:?}");
    assert_eq!(out.language.as_deref(), Some("en"));
    // Segments and words carry plausible, ordered times inside the 11 s clip.
    assert!(!out.segments.is_empty());
    for s in &out.segments {
        assert!(0.0 <= s.start_s && s.start_s <= s.end_s && s.end_s <= audio.duration_s() + 0.5, "{s:?}");
        assert!(!s.words.is_empty());
        for w in &s.words {
            assert!(
                s.start_s - 0.5 <= w.start_s && w.start_s <= w.end_s && w.end_s <= s.end_s + 0.5,
                "{w:?}"
            );
        }
    }
    let all_words: Vec<String> =
        out.segments.iter().flat_map(|s| s.words.iter().map(|w| w.text.clone())).collect();
    assert!(wer(JFK, &all_words.join(" ")) <= 0.10, "{all_words:?}");
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.first(), Some(&0.0));
    assert_eq!(seen.last(), Some(&1.0));
    assert!(seen.windows(2).all(|w| w[0] <= w[1] + 1e-6), "{seen:?}");

    // The same loaded model serves a second file (model reused across jobs).
    let again = t.transcribe(&audio, &|_| {}, &|| false).expect("second run");
    assert!(wer(JFK, &again.text()) <= 0.10);
}

/// The default holds the decoder's matrices of a 16-bit model in q8_0 (tiny.en: the token
/// embedding and 10 per layer of 4 layers); off, the file's weights load as they are. Both
/// transcribe jfk.
#[test]
fn decoder_q8_quantizes_the_decoder_only_when_asked() {
    let _g = serial();
    let dir = models_dir();
    diarized::models::install(&dir, &["tiny.en".to_string()]).expect("install model");
    let path = resolve_whisper_model(&dir, "tiny.en").expect("resolve model");
    let audio = load("jfk.wav");
    for (decoder_q8, matrices) in [(true, 41), (false, 0)] {
        let opts = AsrOptions { threads: 1, decoder_q8, ..AsrOptions::default() };
        let mut t = WhisperTranscriber::load(&path, opts).expect("load model");
        assert_eq!(t.decoder_q8_matrices(), matrices, "decoder_q8 {decoder_q8}");
        let text = t.transcribe(&audio, &|_| {}, &|| false).expect("transcribe").text();
        let e = wer(JFK, &text);
        assert!(e <= 0.10, "decoder_q8 {decoder_q8}: WER {e:.2}: {text:?}");
    }
}

#[test]
fn jfk_in_every_container_transcribes() {
    let _g = serial();
    let mut t = transcriber("tiny.en", None);
    for f in ["jfk.mp3", "jfk.m4a", "jfk.ogg", "jfk.opus.ogg", "jfk.webm"] {
        let text = t.transcribe(&load(f), &|_| {}, &|| false).expect("transcribe").text();
        let e = wer(JFK, &text);
        assert!(e <= 0.10, "{f}: WER {e:.2}: {text:?}");
    }
}

#[test]
fn silence_gives_no_words() {
    let _g = serial();
    let mut t = transcriber("tiny.en", None);
    let silence = Audio::from_f32(&vec![0.0; 16_000 * 10]);
    let out = t.transcribe(&silence, &|_| {}, &|| false).expect("transcribe");
    assert!(out.segments.is_empty(), "{:?}", out.segments);
    assert_eq!(out.text(), "");
}

#[test]
fn multilingual_english_then_german_with_base() {
    let _g = serial();
    let mut t = transcriber("base", None);
    let audio = load("multilingual.mp3");
    let (out, chunks) = t.transcribe_detailed(&audio, &|_| {}, &|| false).expect("transcribe");
    let lang_at = |s: f64| chunks.iter().find(|c| c.start_s <= s && s < c.end_s).map(|c| c.language.as_str());
    assert_eq!(lang_at(5.0), Some("en"), "{chunks:?}");
    assert_eq!(lang_at(45.0), Some("de"), "{chunks:?}");
    assert!(chunks.iter().all(|c| c.probability.is_some_and(|p| p > 0.5)), "{chunks:?}");
    // Text of the segments that start inside chunks detected as `lang`.
    let text_in = |lang: &str| {
        let segs = out.segments.iter().filter(|s| {
            chunks.iter().any(|c| c.language == lang && c.start_s - 0.5 <= s.start_s && s.start_s < c.end_s)
        });
        segs.map(|s| s.text.as_str()).collect::<Vec<_>>().join(" ")
    };
    let english = words(&text_in("en"));
    let german = words(&text_in("de"));
    for w in ["permission", "granted", "software"] {
        assert!(english.iter().any(|x| x == w), "{w} missing in {english:?}");
    }
    // (base renders "hiermit" as "wir mit", so check other key words.)
    for w in ["unentgeltlich", "genehmigung", "software"] {
        assert!(german.iter().any(|x| x == w), "{w} missing in {german:?}");
    }
    assert!(out.language.is_some() && out.language_probability.is_some());
}

#[test]
fn configured_language_and_bad_settings() {
    let _g = serial();
    let dir = models_dir();
    diarized::models::install(&dir, &["tiny.en".to_string()]).expect("install");
    let path = resolve_whisper_model(&dir, "tiny.en").unwrap();
    let bad = |language: Option<&str>, threads: usize| {
        let opts = AsrOptions { threads, language: language.map(str::to_string), ..AsrOptions::default() };
        WhisperTranscriber::load(&path, opts).is_err()
    };
    assert!(bad(Some("de"), 1), "English-only model must refuse German");
    assert!(bad(Some("xx"), 1));
    assert!(bad(None, 0));
    assert!(WhisperTranscriber::load(Path::new("/nonexistent/ggml.bin"), AsrOptions::default()).is_err());
    let small = resolve_whisper_model(&dir, "small").unwrap_err().to_string();
    assert!(small.contains("tiny.en") && small.contains("base"), "{small}");
}
