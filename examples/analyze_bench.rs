//! Times and scores the local analyze stage. Used by `bench/analyze.sh`; prints one JSON line.
//!
//! `analyze_bench synth MODEL MINUTES THREADS [full-grammar]`: a synthesised meeting transcript
//! of the given length (speed).
//! `analyze_bench file MODEL THREADS TRANSCRIPT.json multi|solo`: a transcript made by
//! `diarized transcribe --format json` (or `{"segments": […]}`), scored against the rules of
//! issue 13 with the expected kind of conversation.

use std::time::Instant;

use diarized::analyze::checks::MAX_OVERLAP;
use diarized::analyze::local::{CallStats, LocalAnalyzer, LocalOptions, wait_policy};
use diarized::analyze::schema;
use diarized::analyze::text;
use diarized::config::Config;
use diarized::model::{Analysis, Segment};
use diarized::pipeline::{AnalysisInput, Analyzer};
use serde_json::{Value, json};

/// Lines of a product meeting, plus the fixtures' reference sentences, cycled to length.
const LINES: &[&str] = &[
    "Good morning everyone, let's start with the status of the mobile app release.",
    "The payment screen is finished, but the login bug on older Android phones is still open.",
    "How long do you think the login fix will take, including testing?",
    "Probably two days; the crash only happens when the phone is low on memory.",
    "Design has the new onboarding screens ready, they are in the shared folder since yesterday.",
    "Then I suggest we move the release from Wednesday to Friday so the fix can go in.",
    "Friday works for marketing, the newsletter can go out on Friday afternoon instead.",
    "Someone needs to review the payment code before we merge it into the main branch.",
    "Maria can review the payment code tomorrow morning, she wrote the old version.",
    "Should we test the onboarding screens with a few real users before the release?",
    "Yes, let's invite five users on Thursday for a short session of thirty minutes each.",
    "What about the budget for the user tests, do we pay them or give vouchers?",
    "Vouchers are simpler, finance already approved fifty euros per person last quarter.",
    "The support team asked for a way to see which app version a customer is using.",
    "We can add the version number to the settings page, that is a small change.",
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
    "She had your dark suit in greasy wash water all year.",
    "The horizon seems extremely distant, so let's focus on the next two weeks only.",
    "Server costs went up by twenty percent because of the new image processing service.",
    "We could cache the resized images for a day, that should cut most of the cost.",
    "Let's write that down as an action item for the backend team.",
    "Any other topics before we wrap up? Otherwise same time next week.",
];

fn synthesised(minutes: f64) -> Vec<Segment> {
    // ~150 spoken words per minute.
    let target_words = (minutes * 150.0) as usize;
    let mut segs = Vec::new();
    let (mut words, mut t, mut i) = (0, 0.0, 0);
    while words < target_words {
        let text = LINES[i % LINES.len()];
        let n = text.split_whitespace().count();
        let dur = n as f64 / 2.5;
        segs.push(Segment {
            start_s: t,
            end_s: t + dur,
            text: text.into(),
            speaker: Some(format!("Speaker{:02}", (i * 7 / 3) % 3)),
            words: vec![],
        });
        words += n;
        t += dur;
        i += 1;
    }
    segs
}

fn fail(message: String) -> ! {
    eprintln!("{message}");
    std::process::exit(1)
}

fn analyzer(model: &str, threads: usize) -> LocalAnalyzer {
    let models_dir = std::env::var("MODELS_DIR").unwrap_or_else(|_| "models-cache".into());
    let cfg = Config { models_dir: models_dir.into(), llm_threads: Some(threads), ..Config::default() };
    if let Err(e) = diarized::models::install(&cfg.models_dir, &[model.to_string()]) {
        fail(format!("cannot install {model}: {e}"));
    }
    let opts = LocalOptions::from_config(&cfg, model);
    opts.check().unwrap_or_else(|e| fail(e));
    LocalAnalyzer::new(opts)
}

/// Wall time and per-call token rates of one analysis.
fn timing(wall: f64, calls: &[CallStats]) -> Value {
    let sum = |f: fn(&CallStats) -> f64| calls.iter().map(f).sum::<f64>();
    let (pt, pms) = (sum(|c| (c.prompt_tokens - c.reused_tokens) as f64), sum(|c| c.prompt_ms));
    let (gt, gms) = (sum(|c| c.generated_tokens as f64), sum(|c| c.generate_ms));
    let round = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "wall_s": round(wall),
        "calls": calls.len(),
        "prompt_tokens": pt,
        "prompt_s": round(pms / 1e3),
        "prompt_tok_s": round(pt / (pms / 1e3)),
        "generated_tokens": gt,
        "generate_s": round(gms / 1e3),
        "gen_tok_s": round(gt / (gms / 1e3)),
        "full_grammar_checks": calls.iter().map(|c| c.full_grammar_checks).sum::<u64>(),
        "drafted_tokens": calls.iter().map(|c| c.drafted_tokens).sum::<u64>(),
        "accepted_tokens": calls.iter().map(|c| c.accepted_tokens).sum::<u64>(),
    })
}

/// The rules of issue 13 measured on a result.
fn score(a: &Analysis, multi_expected: bool) -> Value {
    let ty = a.conversation_type.clone().unwrap_or_default();
    let summary = a.summary.clone().unwrap_or_default();
    let keypoints = a.keypoints.clone().unwrap_or_default();
    let labels: Vec<String> = (0..10).map(|i| format!("Speaker{i:02}")).collect();
    let named = labels.iter().filter(|l| summary.contains(l.as_str())).count();
    let the_speaker =
        summary.to_lowercase().contains("the speaker ") || summary.to_lowercase().contains("the speaker.");
    let sentences = text::sentences(&summary);
    let max_overlap =
        keypoints.iter().flat_map(|k| sentences.iter().map(move |s| text::overlap(k, s))).fold(0.0, f64::max);
    let dup_pairs = keypoints
        .iter()
        .enumerate()
        .flat_map(|(i, k)| keypoints[..i].iter().map(move |o| (k, o)))
        .filter(|(k, o)| text::overlap(k, o) >= MAX_OVERLAP || text::overlap(o, k) >= MAX_OVERLAP)
        .count();
    let type_right = schema::allowed_types(multi_expected).contains(&ty.as_str());
    let summary_ok = (2..=5).contains(&sentences.len()) && (!multi_expected || (named >= 2 && !the_speaker));
    json!({
        "expected": if multi_expected { "multi" } else { "solo" },
        "conversation_type": ty,
        "type_right": type_right,
        "summary_ok": summary_ok,
        "summary_sentences": sentences.len(),
        "summary_named": named,
        "keypoints": keypoints.len(),
        "max_keypoint_overlap": (max_overlap * 100.0).round() / 100.0,
        "duplicate_keypoints": dup_pairs,
        "action_items": a.action_items.as_ref().map_or(0, Vec::len),
        "topics": a.topics.clone().unwrap_or_default(),
        "summary": summary,
        "keypoint_texts": keypoints,
        "action_item_texts": a.action_items.clone().unwrap_or_default(),
    })
}

fn main() {
    // `RUST_LOG=diarized=debug` shows each call and the keypoints a top-up request offered.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let (mode, model) = (arg(0), arg(1));
    let mut line = match mode {
        "synth" => {
            let minutes: f64 = arg(2).parse().unwrap_or(5.0);
            let threads: usize = arg(3).parse().unwrap_or(1);
            let full_grammar = arg(4) == "full-grammar";
            let mut a = analyzer(model, threads);
            a.greedy_first = !full_grammar;
            let segs = synthesised(minutes);
            let start = Instant::now();
            let result = a.analyze(&AnalysisInput { segments: &segs, language: Some("en") });
            let mut line = timing(start.elapsed().as_secs_f64(), &a.last_calls);
            line["minutes"] = json!(minutes);
            line["threads"] = json!(threads);
            line["greedy_first"] = json!(!full_grammar);
            if let Ok(r) = &result {
                line["score"] = score(r, true);
            }
            line["error"] = json!(result.err().map(|e| e.to_string()));
            line
        }
        "file" => {
            let threads: usize = arg(2).parse().unwrap_or(1);
            let path = arg(3);
            let multi = arg(4) == "multi";
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(format!("{path}: {e}")));
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("{path}: {e}")));
            let segs: Vec<Segment> =
                serde_json::from_value(v["segments"].clone()).unwrap_or_else(|e| fail(format!("{path}: {e}")));
            let language = v["language"].as_str().map(String::from);
            let mut a = analyzer(model, threads);
            let start = Instant::now();
            let result = a.analyze(&AnalysisInput { segments: &segs, language: language.as_deref() });
            let mut line = timing(start.elapsed().as_secs_f64(), &a.last_calls);
            line["file"] = json!(path);
            line["threads"] = json!(threads);
            line["speakers"] = json!(segs.iter().filter_map(|s| s.speaker.clone()).collect::<std::collections::BTreeSet<_>>().len());
            line["audio_s"] = json!(segs.last().map_or(0.0, |s| s.end_s).round());
            if let Some(rv) = &a.last_review {
                line["retried"] = json!(rv.retried);
                line["repaired"] = json!(rv.repaired);
                line["topped_up"] = json!(rv.topped_up);
                line["quoted"] = json!(rv.quoted);
                line["committed"] = json!(rv.committed);
                line["first_problems"] = json!(rv.first_problems.iter().map(ToString::to_string).collect::<Vec<_>>());
            }
            if let Ok(r) = &result {
                line["score"] = score(r, multi);
                line["summary"] = json!(r.summary);
                line["keypoints"] = json!(r.keypoints);
            }
            line["error"] = json!(result.err().map(|e| e.to_string()));
            line
        }
        _ => fail("usage: analyze_bench synth MODEL MINUTES THREADS [full-grammar] | file MODEL THREADS FILE multi|solo".into()),
    };
    line["model"] = json!(model);
    let env = |k: &str| std::env::var(k).ok().map(|v| format!("{k}={v}"));
    // The setting the daemon's default configuration gives the worker (as `analyzer` builds it).
    let spin = LocalOptions::from_config(&Config::default(), model).spin;
    line["wait"] = json!(match wait_policy(spin) {
        Some((k, v)) => format!("{k}={v}"),
        None => env("OMP_WAIT_POLICY").or_else(|| env("GOMP_SPINCOUNT")).unwrap_or_default(),
    });
    line["ok"] = json!(line["error"].is_null());
    println!("{line}");
}
