//! Calibration of the known-speaker threshold (used by `bench/speakers.sh`, not a test).
//!
//! `speaker_scores [--models DIR] [--threads N] MATERIAL_DIR`
//!
//! Enrolment clips are cut from the fixtures (each voice's solo speech in one half of each
//! recording, joined; the single-speaker clips whole) and go through the daemon's enrolment
//! path (`VoiceEmbedder::voiceprint`). Job speakers come from diarizing the material of
//! `bench/diar_material.py` (each diarized speaker is given the reference voice it overlaps
//! most, if that voice covers ≥ 60 % of its time). Two directions, never sharing audio:
//! - calibration: enrol from the second halves, score the `calib` files (first halves);
//! - held-out: enrol from the first halves, score the `heldout` files (second halves).
//!
//! Prints the same-/different-speaker score distributions of both, the threshold that
//! minimises false accepts + false rejects on calibration, both error rates at that threshold
//! on both sets, and the outcome of naming the job speakers with it (one person per job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diarized::audio::Audio;
use diarized::diarize::{PyannoteDiarizer, parse_rttm};
use diarized::model::{KnownVoice, SpeakerHints, SpeakerTurn};
use diarized::speakers::{VoiceEmbedder, best_score, name_speakers_at};

const SR: f64 = 16_000.0;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(name)
}

/// One channel (0-based) or the mean of all, as 16 kHz f32.
fn load(path: &Path, channel: Option<usize>) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 16_000, "{}", path.display());
    let ch = spec.channels as usize;
    let scale = (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
    let x: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => r.samples::<i32>().map(|s| s.unwrap() as f32 / scale).collect(),
    };
    x.chunks(ch).map(|f| channel.map_or(f.iter().sum::<f32>() / ch as f32, |c| f[c])).collect()
}

fn slice(x: &[f32], a: f64, b: f64) -> &[f32] {
    let (a, b) = (((a * SR) as usize).min(x.len()), ((b * SR) as usize).min(x.len()));
    &x[a..b]
}

/// Pieces of `who`'s solo speech (no other reference speaker) inside [lo, hi), ≥ 0.5 s each.
fn solo(turns: &[SpeakerTurn], who: &str, lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for t in turns.iter().filter(|t| t.speaker == who) {
        let mut pieces = vec![(t.start_s.max(lo), t.end_s.min(hi))];
        for o in turns.iter().filter(|o| o.speaker != who) {
            pieces = pieces
                .into_iter()
                .flat_map(|(a, b)| {
                    if o.end_s <= a || o.start_s >= b {
                        vec![(a, b)]
                    } else {
                        vec![(a, o.start_s), (o.end_s, b)]
                    }
                })
                .collect();
        }
        out.extend(pieces.into_iter().filter(|(a, b)| b - a >= 0.5));
    }
    out
}

/// Enrolment clips of one side: (voice, clip samples).
fn enrolment_clips(first: bool) -> Vec<(String, Vec<f32>)> {
    let (lo, hi) = if first { (0.0, 15.0) } else { (15.0, 30.0) };
    let mut clips = Vec::new();
    for name in ["ami_sample", "ami_dev00", "ami_dev01"] {
        let x = load(&fixture(&format!("{name}.wav")), None);
        let turns = parse_rttm(&std::fs::read_to_string(fixture(&format!("{name}.rttm"))).unwrap()).unwrap();
        let mut voices: Vec<&str> = turns.iter().map(|t| t.speaker.as_str()).collect();
        voices.dedup();
        voices.sort();
        voices.dedup();
        for v in voices {
            let mut clip = Vec::new();
            for (a, b) in solo(&turns, v, lo, hi) {
                clip.extend_from_slice(slice(&x, a, b));
                clip.extend(std::iter::repeat_n(0.0, 3200));
            }
            if clip.len() as f64 >= 2.0 * SR {
                clips.push((v.to_string(), clip));
            }
        }
    }
    let jfk = load(&fixture("jfk.wav"), None);
    let jfk_mid = 5.5;
    let singles: Vec<(&str, Vec<f32>)> = if first {
        vec![
            ("jfk", slice(&jfk, 0.0, jfk_mid).to_vec()),
            ("ldc", load(&fixture("en_ldc93s1.wav"), None)),
            ("de", load(&fixture("de_cheetah_test.wav"), None)),
            ("stL", load(&fixture("stereo_diarization.wav"), Some(0))),
        ]
    } else {
        vec![
            ("jfk", slice(&jfk, jfk_mid, 100.0).to_vec()),
            ("fr", load(&fixture("fr_cheetah_test.wav"), None)),
            ("stR", load(&fixture("stereo_diarization.wav"), Some(1))),
        ]
    };
    clips.extend(singles.into_iter().map(|(n, x)| (n.to_string(), x)));
    clips
}

/// One diarized speaker of a material file, with the reference voice it is.
struct JobVoice {
    file: String,
    truth: String,
    embedding: Vec<f32>,
}

fn overlap(a: &SpeakerTurn, b: &SpeakerTurn) -> f64 {
    (a.end_s.min(b.end_s) - a.start_s.max(b.start_s)).max(0.0)
}

/// The labelled job voices of every material file in `list`, and how many were skipped.
fn job_voices(d: &PyannoteDiarizer, list: &Path) -> (Vec<JobVoice>, usize) {
    let mut out = Vec::new();
    let mut impure = 0;
    for line in std::fs::read_to_string(list).unwrap().lines().filter(|l| !l.trim().is_empty()) {
        let (wav, rttm) = line.split_once('=').unwrap();
        let x = load(Path::new(wav), None);
        let reference = parse_rttm(&std::fs::read_to_string(rttm).unwrap()).unwrap();
        let diar = d.diarize_voices(&x[..], SpeakerHints::default()).unwrap();
        for v in &diar.voices {
            let mine: Vec<&SpeakerTurn> = diar.turns.iter().filter(|t| t.speaker == v.label).collect();
            let total: f64 = mine.iter().map(|t| t.end_s - t.start_s).sum();
            let mut by_ref: BTreeMap<&str, f64> = BTreeMap::new();
            for r in &reference {
                *by_ref.entry(&r.speaker).or_default() += mine.iter().map(|t| overlap(t, r)).sum::<f64>();
            }
            match by_ref.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
                Some((truth, o)) if o >= 0.6 * total && o >= 1.0 => out.push(JobVoice {
                    file: wav.to_string(),
                    truth: truth.to_string(),
                    embedding: v.embedding.clone(),
                }),
                _ => impure += 1,
            }
        }
    }
    (out, impure)
}

struct Direction {
    name: &'static str,
    same: Vec<f32>,
    diff: Vec<f32>,
    people: Vec<KnownVoice>,
    jobs: Vec<JobVoice>,
}

fn enrol(e: &VoiceEmbedder, first: bool) -> (Vec<KnownVoice>, Vec<String>) {
    let mut people: Vec<KnownVoice> = Vec::new();
    let mut rejected = Vec::new();
    for (who, clip) in enrolment_clips(first) {
        match e.voiceprint(&Audio::from_f32(&clip)) {
            Ok(p) => match people.iter_mut().find(|k| k.name == who) {
                Some(k) => k.prints.push(p),
                None => people.push(KnownVoice { name: who, prints: vec![p] }),
            },
            Err(err) => rejected.push(format!("{who}: {err}")),
        }
    }
    (people, rejected)
}

fn score(name: &'static str, people: Vec<KnownVoice>, jobs: Vec<JobVoice>) -> Direction {
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for j in &jobs {
        for p in &people {
            let s = best_score(&j.embedding, &p.prints).unwrap();
            if p.name == j.truth { same.push(s) } else { diff.push(s) }
        }
    }
    Direction { name, same, diff, people, jobs }
}

fn pct(v: &[f32], q: f64) -> f32 {
    let mut v = v.to_vec();
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn rates(d: &Direction, t: f32) -> (f64, f64) {
    let fa = d.diff.iter().filter(|&&s| s >= t).count() as f64 / d.diff.len().max(1) as f64;
    let fr = d.same.iter().filter(|&&s| s < t).count() as f64 / d.same.len().max(1) as f64;
    (fa, fr)
}

/// Names every file's speakers at `t` (one person per job) and counts the outcomes.
fn naming(d: &Direction, t: f32) -> String {
    let (mut right, mut wrong, mut missed, mut stranger_ok, mut stranger_named) = (0, 0, 0, 0, 0);
    let mut files: Vec<&str> = d.jobs.iter().map(|j| j.file.as_str()).collect();
    files.dedup();
    for f in files {
        let jobs: Vec<&JobVoice> = d.jobs.iter().filter(|j| j.file == f).collect();
        let voices: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| diarized::model::SpeakerVoice {
                label: format!("S{i}"),
                embedding: j.embedding.clone(),
            })
            .collect();
        let named = name_speakers_at(&[], &voices, &d.people, t);
        for (j, n) in jobs.iter().zip(&named) {
            let enrolled = d.people.iter().any(|p| p.name == j.truth);
            match (&n.name, enrolled) {
                (Some(name), _) if *name == j.truth => right += 1,
                (Some(_), true) => wrong += 1,
                (Some(_), false) => stranger_named += 1,
                (None, true) => missed += 1,
                (None, false) => stranger_ok += 1,
            }
        }
    }
    format!(
        "enrolled voices: {right} named right, {wrong} named wrong, {missed} left unnamed; \
         unenrolled voices: {stranger_ok} left unnamed, {stranger_named} given a name"
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut models = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let mut threads = 2;
    let mut material = PathBuf::from("target/diar-material");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--models" => models = args.next().expect("--models DIR").into(),
            "--threads" => threads = args.next().expect("--threads N").parse().unwrap(),
            other => material = other.into(),
        }
    }
    let embedder = VoiceEmbedder::load(&models).unwrap();
    let diarizer = PyannoteDiarizer::load(&models, threads).unwrap();
    let mut dirs = Vec::new();
    for (name, enrol_first, list) in
        [("calibration", false, "calib.list"), ("held-out", true, "heldout.list")]
    {
        let (people, rejected) = enrol(&embedder, enrol_first);
        let (jobs, impure) = job_voices(&diarizer, &material.join(list));
        println!("== {name}: enrolled from the {} halves", if enrol_first { "first" } else { "second" });
        for p in &people {
            println!("   {:<10} {} print(s)", p.name, p.prints.len());
        }
        for r in &rejected {
            println!("   rejected clip: {r}");
        }
        println!(
            "   job speakers scored: {} ({impure} skipped: no voice covers 60 % of their time)",
            jobs.len()
        );
        dirs.push(score(name, people, jobs));
    }
    println!("\n| set | pairs same / diff | same: min p05 p50 max | diff: min p50 p95 max |");
    println!("|---|---|---|---|");
    for d in &dirs {
        let q = |v: &[f32], a: f64| pct(v, a);
        println!(
            "| {} | {} / {} | {:.3} {:.3} {:.3} {:.3} | {:.3} {:.3} {:.3} {:.3} |",
            d.name,
            d.same.len(),
            d.diff.len(),
            q(&d.same, 0.0),
            q(&d.same, 0.05),
            q(&d.same, 0.5),
            q(&d.same, 1.0),
            q(&d.diff, 0.0),
            q(&d.diff, 0.5),
            q(&d.diff, 0.95),
            q(&d.diff, 1.0),
        );
    }
    // Threshold: least false accepts + false rejects on calibration, in the middle of the
    // range of thresholds that reach it (the widest margin to both distributions).
    let cal = &dirs[0];
    let grid: Vec<f32> = (0..=100).map(|i| i as f32 / 100.0).collect();
    let err = |t: f32| {
        let (fa, fr) = rates(cal, t);
        fa + fr
    };
    let least = grid.iter().map(|&t| err(t)).fold(f64::INFINITY, f64::min);
    let best_range: Vec<f32> = grid.iter().copied().filter(|&t| err(t) == least).collect();
    let (lo, hi) = (best_range[0], best_range[best_range.len() - 1]);
    let best = ((lo + hi) / 2.0 * 100.0).round() / 100.0;
    println!("\nleast FA+FR on calibration ({least:.3}) for thresholds {lo:.2}–{hi:.2}; chosen: {best:.2}");
    for t in [best - 0.1, best, best + 0.1, diarized::speakers::MATCH_THRESHOLD] {
        for d in &dirs {
            let (fa, fr) = rates(d, t);
            println!(
                "  t={t:.2} {:<11} false accept {:.3}  false reject {:.3}  | {}",
                d.name,
                fa,
                fr,
                naming(d, t)
            );
        }
    }
}
