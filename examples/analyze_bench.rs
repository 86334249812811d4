//! Times the analyze stage on a synthesised meeting transcript of a given length.
//! Used by `bench/analyze.sh`; prints one JSON line.
//!
//! `cargo run --example analyze_bench -- MODEL MINUTES THREADS [full-grammar]`

use std::time::Instant;

use diarized::analyze::local::{LocalAnalyzer, LocalOptions};
use diarized::config::Config;
use diarized::model::Segment;
use diarized::pipeline::{AnalysisInput, Analyzer};

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

fn transcript(minutes: f64) -> Vec<Segment> {
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map(String::as_str).unwrap_or("qwen2.5-coder-0.5b");
    let minutes: f64 = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(5.0);
    let threads: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let full_grammar = args.get(3).is_some_and(|a| a == "full-grammar");
    let models_dir = std::env::var("MODELS_DIR").unwrap_or_else(|_| "models-cache".into());
    let cfg = Config { models_dir: models_dir.into(), llm_threads: Some(threads), ..Config::default() };
    if let Err(e) = diarized::models::install(&cfg.models_dir, &[model.to_string()]) {
        eprintln!("cannot install {model}: {e}");
        std::process::exit(1);
    }
    let opts = LocalOptions::from_config(&cfg, model);
    if let Err(e) = opts.check() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    let mut analyzer = LocalAnalyzer::new(opts);
    analyzer.greedy_first = !full_grammar;
    let segs = transcript(minutes);
    let start = Instant::now();
    let result = analyzer.analyze(&AnalysisInput { segments: &segs, language: Some("en") });
    let wall = start.elapsed().as_secs_f64();
    let calls = &analyzer.last_calls;
    let sum = |f: fn(&diarized::analyze::local::CallStats) -> f64| calls.iter().map(f).sum::<f64>();
    let (pt, pms) = (sum(|c| c.prompt_tokens as f64), sum(|c| c.prompt_ms));
    let (gt, gms) = (sum(|c| c.generated_tokens as f64), sum(|c| c.generate_ms));
    let line = serde_json::json!({
        "model": model,
        "minutes": minutes,
        "threads": threads,
        "omp_wait_policy": std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "PASSIVE".into()),
        "greedy_first": !full_grammar,
        "ok": result.is_ok(),
        "error": result.as_ref().err().map(|e| e.to_string()),
        "summary": result.as_ref().ok().and_then(|a| a.summary.clone()),
        "wall_s": (wall * 10.0).round() / 10.0,
        "calls": calls.len(),
        "prompt_tokens": pt,
        "prompt_tok_s": (pt / (pms / 1e3) * 10.0).round() / 10.0,
        "generated_tokens": gt,
        "gen_tok_s": (gt / (gms / 1e3) * 10.0).round() / 10.0,
        "full_grammar_checks": calls.iter().map(|c| c.full_grammar_checks).sum::<u64>(),
    });
    println!("{line}");
}
