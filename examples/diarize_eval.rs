//! Benchmark driver for the diarization stage (used by `bench/diarize.sh`, not a test).
//!
//! `cargo run --release --example diarize_eval -- [--threads N] [--step F] [--threshold T]
//!   [--min-cluster N] [--models DIR] [--onnxruntime LIB | --tract] FILE.wav[=REF.rttm] | @LIST ...`
//! (`@LIST`: a file of `wav=rttm` lines, as `bench/diar_material.py` writes; `--rttm DIR` writes
//! each hypothesis there. The models run in ONNX Runtime when the models folder has its library
//! or `--onnxruntime` names one, else in tract; `--tract` forces tract.)
//! Prints per file: seconds of audio, wall seconds, RTF, speakers found (and in the reference),
//! DER at collar 0 and 0.25 when a reference is given, and the one-speaker baseline (the
//! reference's speech regions all given to one speaker) at both collars; then corpus totals.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diarized::diarize::runtime::Engine;
use diarized::diarize::{PyannoteDiarizer, der, parse_rttm};
use diarized::model::{SpeakerHints, SpeakerTurn};

fn load_wav(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 16_000, "{}: need 16 kHz", path.display());
    let ch = spec.channels as usize;
    let len = r.len() as usize;
    let scale = (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
    let x: Box<dyn Iterator<Item = f32>> = match spec.sample_format {
        hound::SampleFormat::Float => Box::new(r.samples::<f32>().map(Result::unwrap)),
        hound::SampleFormat::Int => Box::new(r.samples::<i32>().map(move |s| s.unwrap() as f32 / scale)),
    };
    // Down-mix on the fly so only the mono buffer is held (as the daemon's `Audio` is).
    let mut out = Vec::with_capacity(len / ch);
    let mut acc = 0.0;
    for (i, v) in x.enumerate() {
        acc += v;
        if i % ch == ch - 1 {
            out.push(acc / ch as f32);
            acc = 0.0;
        }
    }
    out
}

/// CPU seconds (user + system) this process has used, from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut threads = 1;
    let mut models = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let mut files = Vec::new();
    let mut rttm_dir: Option<PathBuf> = None;
    let mut params = diarized::diarize::Params::default();
    let mut engine = None;
    let mut profiling = false;
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("missing value");
        match a.as_str() {
            "--threads" => threads = val().parse().unwrap(),
            "--step" => params.step_frames = val().parse().unwrap(),
            "--threshold" => params.threshold = val().parse().unwrap(),
            "--min-cluster" => params.min_cluster_size = val().parse().unwrap(),
            "--min-cluster-share" => params.min_cluster_share = val().parse().unwrap(),
            "--new-speaker" => params.new_speaker_distance = val().parse().unwrap(),
            "--min-train" => params.min_train_s = val().parse().unwrap(),
            "--min-embed" => params.min_embed_s = val().parse().unwrap(),
            "--max-embed-frames" => params.max_embed_frames = val().parse().unwrap(),
            "--long-from" => params.long_from_s = val().parse().unwrap(),
            "--long-step" => params.long_step_frames = val().parse().unwrap(),
            "--long-max-embed-frames" => params.long_max_embed_frames = val().parse().unwrap(),
            "--rttm" => rttm_dir = Some(PathBuf::from(val())),
            "--models" => models = PathBuf::from(val()),
            "--onnxruntime" => engine = Some(Engine::OnnxRuntime(PathBuf::from(val()))),
            "--tract" => engine = Some(Engine::Tract),
            "--profile" => profiling = true,
            _ => match a.strip_prefix('@') {
                Some(list) => files.extend(
                    std::fs::read_to_string(list)
                        .unwrap_or_else(|e| panic!("{list}: {e}"))
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_string),
                ),
                None => files.push(a),
            },
        }
    }
    let engine = engine.unwrap_or_else(|| Engine::for_models_dir(&models));
    if profiling {
        return profile(&models, &engine);
    }
    let t0 = Instant::now();
    let mut d = PyannoteDiarizer::load_with(&models, threads, engine).expect("load models");
    d.params = params;
    eprintln!(
        "load {:.2}s engine {} segmentation {} params {:?}",
        t0.elapsed().as_secs_f64(),
        d.engine(),
        d.segmentation_file().display(),
        d.params
    );
    let (mut c0, mut c25) = (der::DerReport::default(), der::DerReport::default());
    let (mut b0, mut b25) = (der::DerReport::default(), der::DerReport::default());
    let (mut audio_s, mut wall_s, mut cpu_s) = (0.0, 0.0, 0.0);
    println!(
        "file\taudio_s\twall_s\trtf\tcpu_s\tcpu_rtf\tspeakers\tref_spk\tder_c0\tder_c025\tone_c0\tone_c025"
    );
    for f in files {
        let (wav, rttm) = match f.split_once('=') {
            Some((w, r)) => (w.to_string(), Some(r.to_string())),
            None => (f.clone(), None),
        };
        let samples = load_wav(Path::new(&wav));
        let secs = samples.len() as f64 / 16_000.0;
        let t = Instant::now();
        let c = cpu_seconds();
        let turns = d.diarize_samples(&samples[..], SpeakerHints::default()).expect("diarize");
        let wall = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c;
        cpu_s += cpu;
        audio_s += secs;
        wall_s += wall;
        let mut spk: Vec<&str> = turns.iter().map(|t| t.speaker.as_str()).collect();
        spk.sort();
        spk.dedup();
        let (nref, d0, d25, o0, o25) = match rttm {
            Some(r) => {
                let reference = parse_rttm(&std::fs::read_to_string(&r).unwrap()).unwrap();
                let (a, b) = (der::score(&reference, &turns, 0.0), der::score(&reference, &turns, 0.25));
                c0.add(&a);
                c25.add(&b);
                let one: Vec<SpeakerTurn> =
                    reference.iter().map(|t| SpeakerTurn { speaker: "one".into(), ..t.clone() }).collect();
                let (oa, ob) = (der::score(&reference, &one, 0.0), der::score(&reference, &one, 0.25));
                b0.add(&oa);
                b25.add(&ob);
                let mut names: Vec<&str> = reference.iter().map(|t| t.speaker.as_str()).collect();
                names.sort();
                names.dedup();
                let f = |r: der::DerReport| format!("{:.3}", r.der());
                (names.len().to_string(), f(a), f(b), f(oa), f(ob))
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let name = Path::new(&wav).file_stem().unwrap().to_string_lossy().to_string();
        if let Some(dir) = &rttm_dir {
            std::fs::write(dir.join(format!("{name}.rttm")), diarized::diarize::to_rttm(&turns, &name))
                .unwrap();
        }
        println!(
            "{name}\t{secs:.1}\t{wall:.2}\t{:.4}\t{cpu:.2}\t{:.4}\t{}\t{nref}\t{d0}\t{d25}\t{o0}\t{o25}",
            wall / secs,
            cpu / secs,
            spk.len()
        );
    }
    println!(
        "TOTAL\t{audio_s:.1}\t{wall_s:.2}\t{:.4}\t{cpu_s:.2}\t{:.4}\t-\t-\t{:.3}\t{:.3}\t{:.3}\t{:.3}",
        wall_s / audio_s.max(1e-9),
        cpu_s / audio_s.max(1e-9),
        c0.der(),
        c25.der(),
        b0.der(),
        b25.der()
    );
    let share = |x: f64| x / c25.total.max(1e-9);
    println!(
        "collar 0.25: missed {:.3} false alarm {:.3} confusion {:.3}",
        share(c25.missed),
        share(c25.false_alarm),
        share(c25.confusion)
    );
}

/// Times one segmentation window and one embedding per bucket length (10 runs each).
fn profile(models: &Path, engine: &Engine) {
    use diarized::diarize::embedding::{BUCKETS, Embedder};
    use diarized::diarize::segmentation::{Segmenter, WINDOW};
    let dir = diarized::diarize::files_dir(models);
    let seg_file = diarized::diarize::segmentation_path(&dir, engine);
    let seg = Segmenter::load(&seg_file, engine, 1).unwrap();
    let emb = Embedder::load(&dir.join(diarized::diarize::EMBEDDING_FILE), engine, 1).unwrap();
    println!("engine: {engine}, segmentation: {}", seg_file.display());
    let x: Vec<f32> = (0..WINDOW).map(|i| ((i * 7919) % 1000) as f32 / 5000.0 - 0.1).collect();
    seg.run(&x).unwrap();
    let t = Instant::now();
    for _ in 0..10 {
        seg.run(&x).unwrap();
    }
    println!("segmentation window (10 s): {:.1} ms", t.elapsed().as_secs_f64() * 100.0);
    for b in BUCKETS {
        let f: Vec<f32> = (0..b * 80).map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5).collect();
        // The first call builds the bucket's plan: not part of the per-call cost.
        emb.embed(&f).unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            emb.embed(&f).unwrap();
        }
        println!("embedding {b} frames: {:.1} ms", t.elapsed().as_secs_f64() * 100.0);
    }
}
