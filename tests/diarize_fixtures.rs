//! Diarization of the real recordings in `../shared/fixtures/` with the committed models.
//! One test function runs every file serially on one thread (inference is CPU-heavy).

use std::path::{Path, PathBuf};

use diarized::diarize::runtime::Engine;
use diarized::diarize::{PyannoteDiarizer, der, parse_rttm, to_rttm};
use diarized::model::{SpeakerHints, SpeakerTurn};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures").join(name)
}

/// Reads a 16 kHz WAV (s16 or f32), down-mixing channels by averaging.
fn load_wav(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 16_000, "{}", path.display());
    let ch = spec.channels as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => r.samples::<i32>().map(|s| s.unwrap() as f32 / 32768.0).collect(),
    };
    interleaved.chunks_exact(ch).map(|c| c.iter().sum::<f32>() / ch as f32).collect()
}

fn speakers(turns: &[SpeakerTurn]) -> Vec<String> {
    let mut s: Vec<String> = turns.iter().map(|t| t.speaker.clone()).collect();
    s.sort();
    s.dedup();
    s
}

/// Seconds of overlap of `[a, b]` with each speaker's turns.
fn talk_in(turns: &[SpeakerTurn], a: f64, b: f64, who: &str) -> f64 {
    turns.iter().filter(|t| t.speaker == who).map(|t| (b.min(t.end_s) - a.max(t.start_s)).max(0.0)).sum()
}

/// DER upper bounds per file at collar 0.25 s: the benchmark measured 0.017 / 0.212 / 0.378
/// (`bench/diarize.sh`, default parameters) with ~0.05–0.07 of headroom. "All speech as one
/// speaker" scores 0.464 / 0.240 / 0.319 on these files: ami_dev01 is above it (see
/// bench/diarize.md), the corpus bound is well below it.
const BOUNDS: [(&str, f64); 3] = [("ami_sample", 0.07), ("ami_dev00", 0.26), ("ami_dev01", 0.43)];
/// Corpus-wide bound (measured 0.186; one speaker 0.331).
const CORPUS_BOUND: f64 = 0.24;

#[test]
fn diarizes_real_recordings() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut d = PyannoteDiarizer::load(&models, 1).unwrap();
    let none = SpeakerHints::default();

    let mut corpus = der::DerReport::default();
    for (name, bound) in BOUNDS {
        let audio = load_wav(&fixture(&format!("{name}.wav")));
        let turns = d.diarize_samples(&audio[..], none).unwrap();
        let reference =
            parse_rttm(&std::fs::read_to_string(fixture(&format!("{name}.rttm"))).unwrap()).unwrap();
        let rep = der::score(&reference, &turns, 0.25);
        eprintln!(
            "{name}: {} turns, speakers {:?}, DER(0.25) {:.3} {rep:?}",
            turns.len(),
            speakers(&turns),
            rep.der()
        );
        assert_eq!(speakers(&turns), ["Speaker00", "Speaker01"], "{name}");
        assert_eq!(turns[0].speaker, "Speaker00");
        assert!(rep.der() < bound, "{name}: DER {:.3} ≥ {bound}", rep.der());
        corpus.add(&rep);
        // The RTTM export reads back to the same turns.
        let back = parse_rttm(&to_rttm(&turns, name)).unwrap();
        assert_eq!(back.len(), turns.len());
        // Hints: one speaker forced gives one label.
        if name == "ami_sample" {
            let one = d.diarize_samples(&audio[..], SpeakerHints { num_speakers: Some(1), ..none }).unwrap();
            assert_eq!(speakers(&one), ["Speaker00"]);
        }
    }
    eprintln!("corpus DER(0.25) {:.3}", corpus.der());
    assert!(corpus.der() < CORPUS_BOUND, "corpus DER {:.3}", corpus.der());

    // Stereo, two voices one per channel: down-mixed, two speakers, one per sentence.
    let audio = load_wav(&fixture("stereo_diarization.wav"));
    let turns =
        diarized::pipeline::Diarizer::diarize(&mut d, &diarized::audio::Audio::from_f32(&audio), none)
            .unwrap();
    eprintln!("stereo: {turns:?}");
    assert_eq!(speakers(&turns), ["Speaker00", "Speaker01"]);
    // Left channel speaks 0.25–4.6 s, right 0.25–2.5 s (they overlap): whoever holds the left
    // voice's solo stretch 2.7–4.4 s must not be the one heard only in the first part.
    let solo = if talk_in(&turns, 2.7, 4.4, "Speaker00") > talk_in(&turns, 2.7, 4.4, "Speaker01") {
        ("Speaker00", "Speaker01")
    } else {
        ("Speaker01", "Speaker00")
    };
    assert!(talk_in(&turns, 2.7, 4.4, solo.0) > 1.2, "left voice's solo part");
    assert!(talk_in(&turns, 0.0, 2.7, solo.1) > 0.8, "right voice in the first part");
    assert!(talk_in(&turns, 2.9, 5.0, solo.1) < 0.3, "right voice is silent after 2.5 s");

    // JFK: one speaker.
    let audio = load_wav(&fixture("jfk.wav"));
    let turns = d.diarize_samples(&audio[..], none).unwrap();
    eprintln!("jfk: {turns:?}");
    assert_eq!(speakers(&turns), ["Speaker00"]);
    assert!(talk_in(&turns, 0.0, 11.0, "Speaker00") > 6.0);
}

/// ONNX Runtime's library, installed like any model into the models folder the tests use.
fn onnx_runtime() -> PathBuf {
    let cache = std::env::var_os("MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models-cache"));
    diarized::models::install(&cache, &["onnxruntime".to_string()]).unwrap().remove(0)
}

/// ONNX Runtime (installed like any model) runs the segmentation model with 8-bit LSTM weights,
/// tract the f32 export: the same speakers and, scored against tract's turns, little
/// disagreement on two AMI fixtures; each speaker's voice close enough to tract's that people
/// enrolled under one engine are still matched under the other (speakers::MATCH_THRESHOLD is a
/// cosine of 0.47).
#[test]
fn onnx_runtime_diarizes_as_tract_does() {
    let lib = onnx_runtime();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let tract = PyannoteDiarizer::load_with(&models, 1, Engine::Tract).unwrap();
    let ort = PyannoteDiarizer::load_with(&models, 1, Engine::OnnxRuntime(lib)).unwrap();
    assert!(matches!(ort.engine(), Engine::OnnxRuntime(_)));
    assert!(ort.segmentation_file().ends_with(diarized::diarize::SEGMENTATION_INT8_FILE));
    assert!(tract.segmentation_file().ends_with(diarized::diarize::SEGMENTATION_FILE));
    for name in ["ami_sample", "ami_dev00"] {
        let audio = load_wav(&fixture(&format!("{name}.wav")));
        let a = tract.diarize_voices(&audio[..], SpeakerHints::default()).unwrap();
        let b = ort.diarize_voices(&audio[..], SpeakerHints::default()).unwrap();
        assert_eq!(speakers(&a.turns), speakers(&b.turns), "{name}");
        let apart = der::score(&a.turns, &b.turns, 0.0).der();
        eprintln!("{name}: {apart:.4} apart");
        assert!(apart <= 0.02, "{name}: ONNX Runtime's turns {apart:.3} apart from tract's");
        assert_eq!(a.voices.len(), b.voices.len(), "{name}");
        for (va, vb) in a.voices.iter().zip(&b.voices) {
            assert_eq!(va.label, vb.label);
            let cos = diarized::diarize::cluster::cosine(&va.embedding, &vb.embedding);
            eprintln!("{name} {}: voices {cos:.3} alike", va.label);
            assert!(cos >= 0.9, "{name} {}: ONNX Runtime's voice only {cos:.3} like tract's", va.label);
        }
    }
}

/// ONNX Runtime embeds a speaker's frames at their own length; the shortest inputs (one or two
/// frames give CAM++ a non-finite statistics pooling) still come out as finite embeddings.
#[test]
fn onnx_runtime_embeds_very_short_inputs() {
    use diarized::diarize::embedding::{DIM, Embedder};
    use diarized::diarize::fbank::NUM_BINS;
    let lib = onnx_runtime();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(diarized::diarize::EMBEDDING_FILE);
    let emb = Embedder::load(&model, &Engine::OnnxRuntime(lib), 1).unwrap();
    for frames in [1, 2, 31, 40, 251] {
        let feats: Vec<f32> = (0..frames * NUM_BINS).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect();
        let e = emb.embed(&feats).unwrap_or_else(|err| panic!("{frames} frames: {err}"));
        assert_eq!(e.len(), DIM);
        assert!(e.iter().all(|x| x.is_finite()), "{frames} frames: {e:?}");
    }
}

/// A few short utterances in near-silence (the pieces of jfk.wav at `pieces`, 6 s apart from
/// 3 s on, in 20 s of very low noise). Returns the samples and where each piece was placed.
fn short_utterances(pieces: &[(f64, f64)]) -> (Vec<f32>, Vec<(f64, f64)>) {
    let jfk = load_wav(&fixture("jfk.wav"));
    // Deterministic noise of about -80 dBFS instead of digital silence.
    let mut seed = 12345u32;
    let mut out: Vec<f32> = (0..20 * 16_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 16) as f32 / 65_536.0 - 0.5) * 2e-4
        })
        .collect();
    let mut placed = Vec::new();
    for (i, &(a, b)) in pieces.iter().enumerate() {
        let at = 3.0 + 6.0 * i as f64;
        let src = &jfk[(a * 16_000.0) as usize..(b * 16_000.0) as usize];
        let dst = (at * 16_000.0) as usize;
        out[dst..dst + src.len()].copy_from_slice(src);
        placed.push((at, at + b - a));
    }
    (out, placed)
}

/// Issue 9: a file whose speech is only a few short utterances got no speaker turn at all (no
/// local speaker had enough speech for an embedding, so none was labelled).
#[test]
fn short_utterances_get_turns() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let d = PyannoteDiarizer::load(&models, 1).unwrap();
    // "ask", "and so", "ask what": 0.22 s each, shorter than any embedding's minimum.
    let (audio, placed) = short_utterances(&[(3.24, 3.46), (0.28, 0.5), (8.14, 8.36)]);
    let turns = d.diarize_samples(&audio[..], SpeakerHints::default()).unwrap();
    eprintln!("short utterances: {turns:?}");
    assert!(!turns.is_empty(), "speech but no speaker turn");
    assert_eq!(speakers(&turns), ["Speaker00"], "one voice");
    let heard = placed
        .iter()
        .filter(|&&(a, b)| talk_in(&turns, a - 0.1, b + 0.1, "Speaker00") > 0.5 * (b - a))
        .count();
    // The segmentation model itself misses the third word; two of three must be found.
    assert!(heard >= 2, "only {heard} of {} utterances have turns", placed.len());
    let total: f64 = turns.iter().map(|t| t.end_s - t.start_s).sum();
    assert!(total < 1.5, "{total:.2} s of turns for 0.66 s of speech");
}

/// Cuts the short calibration and held-out sets with `bench/diar_material.py` into a temp folder;
/// with `long_minutes` above 0 also the long and medium files (`longheld` is half that long).
fn build_material(long_minutes: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/diar_material.py");
    let built = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.path())
        .env("LONG_MINUTES", long_minutes.to_string())
        .output()
        .expect("python3 runs");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    dir
}

/// The evaluation material is the same on every run, so a DER measured once is the DER the test
/// checks (sox dithered its 16-bit conversions with a random seed: two builds differed).
#[test]
fn diarization_material_is_reproducible() {
    let (a, b) = (build_material(0), build_material(0));
    let mut compared = 0;
    for set in ["calib", "heldout"] {
        let mut names: Vec<_> =
            std::fs::read_dir(a.path().join(set)).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for name in names {
            let (x, y) = (a.path().join(set).join(&name), b.path().join(set).join(&name));
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{set}/{name:?} differs between two builds"
            );
            compared += 1;
        }
    }
    assert!(compared >= 96, "only {compared} files compared");
}

/// Issue 9's bounds on held-out material: corpus DER < 0.20 at collar 0.25 s and < 0.30 at
/// collar 0, and every file with speech gets a speaker turn. The material is cut by
/// `bench/diar_material.py` (the held-out half: other source segments and another seed than the
/// calibration set the parameters were tuned on). Measured 0.271 / 0.153 (`bench/diarize.sh`);
/// all speech given to one speaker scores 0.394 / 0.355, so the bounds fail for a clustering that
/// adds nothing.
#[test]
fn heldout_material_meets_the_der_bounds() {
    let dir = build_material(0);
    let list = std::fs::read_to_string(dir.path().join("heldout.list")).unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let d = PyannoteDiarizer::load(&models, 1).unwrap();
    let (mut c0, mut c25) = (der::DerReport::default(), der::DerReport::default());
    let mut files = 0;
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let (wav, rttm) = line.split_once('=').unwrap();
        let reference = parse_rttm(&std::fs::read_to_string(rttm).unwrap()).unwrap();
        let turns = d.diarize_samples(&load_wav(Path::new(wav))[..], SpeakerHints::default()).unwrap();
        assert!(reference.is_empty() || !turns.is_empty(), "{wav}: speech but no speaker turn");
        let (a, b) = (der::score(&reference, &turns, 0.0), der::score(&reference, &turns, 0.25));
        eprintln!("{wav}: DER {:.3} / {:.3}", a.der(), b.der());
        c0.add(&a);
        c25.add(&b);
        files += 1;
    }
    eprintln!(
        "held-out corpus ({files} files): DER {:.3} (collar 0) / {:.3} (collar 0.25)",
        c0.der(),
        c25.der()
    );
    assert!(files >= 20, "only {files} held-out files");
    assert!(c25.der() < 0.20, "held-out DER at collar 0.25: {:.3}", c25.der());
    assert!(c0.der() < 0.30, "held-out DER at collar 0: {:.3}", c0.der());
}

/// Issue 9's speaker count on a long recording: `longheld30` (30 minutes of seven held-out voices
/// cut by `bench/diar_material.py`, never tuned on) came out as 8 speakers at DER 0.258 (collar
/// 0.25) with the window step and embedding length of short recordings, and as 6 at 0.218 with
/// those of long recordings (tract: 8 at 0.250 → 7 at 0.207; bench/diarize.md). In ONNX Runtime,
/// as the daemon runs when it is installed (tract takes minutes for 30 minutes of audio).
#[test]
fn a_long_heldout_recording_keeps_its_speaker_count() {
    let dir = build_material(60);
    let list = std::fs::read_to_string(dir.path().join("longheld.list")).unwrap();
    let (wav, rttm) = list.trim().split_once('=').unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let d = PyannoteDiarizer::load_with(&models, 2, Engine::OnnxRuntime(onnx_runtime())).unwrap();
    let reference = parse_rttm(&std::fs::read_to_string(rttm).unwrap()).unwrap();
    let turns = d.diarize_samples(&load_wav(Path::new(wav))[..], SpeakerHints::default()).unwrap();
    let (found, real) = (speakers(&turns).len(), speakers(&reference).len());
    let c25 = der::score(&reference, &turns, 0.25).der();
    eprintln!("{wav}: {found} speakers for {real}, DER {c25:.3} (collar 0.25)");
    assert!(found.abs_diff(real) <= 1, "{found} speakers for {real}");
    assert!(c25 < 0.23, "DER at collar 0.25: {c25:.3}");
}
