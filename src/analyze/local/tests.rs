//! The local backend: splitting, worker failures, and real runs of Qwen2.5-Coder-0.5B.
//!
//! The model tests need the `diarized-llm` worker built (`cargo build --workspace`) and install
//! the 0.5B model into `$MODELS_DIR` (default `models-cache/`) on first use. They use the 0.5B
//! model with one thread: ~3× faster than 1.5B and a 0.4 GB download, so CI stays quick; the
//! 1.5B default runs the same code.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::model::Segment;

/// One llama.cpp inference at a time on this 2-core machine.
static MODEL_LOCK: Mutex<()> = Mutex::new(());

const MODEL: &str = "qwen2.5-coder-0.5b";

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| "models-cache".into());
    if dir.is_absolute() { dir } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(dir) }
}

fn options() -> LocalOptions {
    let dir = models_dir();
    let path = crate::models::install(&dir, &[MODEL.to_string()]).expect("install the 0.5B model").remove(0);
    let cfg = Config { models_dir: dir, llm_threads: Some(1), ..Config::default() };
    let opts = LocalOptions::from_config(&cfg, MODEL);
    assert_eq!(opts.model_path, path);
    assert!(
        opts.worker_bin.is_file(),
        "{} missing: run `cargo build --workspace` first",
        opts.worker_bin.display()
    );
    opts
}

fn one_speaker(text: &str) -> Vec<Segment> {
    vec![Segment {
        start_s: 0.0,
        end_s: 5.0,
        text: text.into(),
        speaker: Some("Speaker00".into()),
        words: vec![],
    }]
}

fn analyze(a: &mut LocalAnalyzer, segments: &[Segment]) -> Analysis {
    a.analyze(&AnalysisInput { segments, language: None }).unwrap_or_else(|e| panic!("{e}"))
}

fn mentions_any(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| lower.contains(&w.to_lowercase()))
}

#[test]
fn english_speech_jfk() {
    let _guard = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = LocalAnalyzer::new(options());
    // ../shared/fixtures/jfk.wav, reference transcript from the fixtures README.
    let text = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    let r = analyze(&mut a, &one_speaker(text));
    eprintln!("jfk: {r:?}\n{:?}", a.last_calls);
    assert_eq!(r.language.as_deref(), Some("en"));
    let summary = r.summary.unwrap();
    assert!(mentions_any(&summary, &["country", "americans", "fellow"]), "{summary}");
    let ty = r.conversation_type.unwrap();
    assert!(
        ["speech", "presentation", "lecture", "other", "podcast", "debate"].contains(&ty.as_str()),
        "{ty}"
    );
    assert!(!r.keypoints.unwrap().is_empty());
    assert_eq!(r.clean_transcript.unwrap(), format!("Speaker00: {text}"));
    assert_eq!(a.last_calls.len(), 1);
}

#[test]
fn german_sentences() {
    let _guard = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = LocalAnalyzer::new(options());
    // de_cheetah_test.wav reference.
    let r = analyze(&mut a, &one_speaker("Die Werbung vermittelt einen falschen Eindruck."));
    eprintln!("de_cheetah: {r:?}");
    assert_eq!(r.language.as_deref(), Some("de"));
    assert!(mentions_any(r.summary.as_deref().unwrap(), &["Werbung", "Eindruck"]), "{r:?}");
    // The German part of multilingual.mp3 (the MIT licence grant), on its own.
    let licence = "Jedem, der eine Kopie dieser Software und der zugehörigen Dokumentationsdateien erhält, \
        wird hiermit unentgeltlich die Genehmigung erteilt, ohne Einschränkung mit der Software zu handeln, \
        einschließlich und ohne Einschränkung der Rechte, die Software zu verwenden, zu kopieren, zu ändern, \
        zusammenzuführen, zu veröffentlichen, zu verbreiten, zu unterlizenzieren und zu verkaufen.";
    let r = analyze(&mut a, &one_speaker(licence));
    eprintln!("de_licence: {r:?}");
    assert_eq!(r.language.as_deref(), Some("de"));
    assert!(mentions_any(r.summary.as_deref().unwrap(), &["Software", "Genehmigung", "Lizenz"]), "{r:?}");
    assert!(schema::CONVERSATION_TYPES.contains(&r.conversation_type.as_deref().unwrap()));
}

/// A planning dialogue long enough to need several parts with a small context.
fn long_dialogue() -> Vec<Segment> {
    let lines = [
        (
            "Speaker00",
            "Good morning everyone, let's start the weekly planning meeting for the mobile app release.",
        ),
        ("Speaker01", "Morning. The payment screen is finished, but the login bug on Android is still open."),
        ("Speaker00", "How long will the login bug take to fix?"),
        (
            "Speaker01",
            "Probably two days, the crash only happens on older Android phones with little memory.",
        ),
        (
            "Speaker02",
            "Design has the new onboarding screens ready; I shared them in the team folder yesterday.",
        ),
        ("Speaker00", "Great. Then we move the release from Wednesday to Friday so the login fix can go in."),
        ("Speaker02", "Friday works for marketing too, the newsletter can go out on Friday afternoon."),
        ("Speaker01", "I also need someone to review the payment code before we merge it."),
        ("Speaker00", "Maria will review the payment code tomorrow morning."),
        ("Speaker02", "Should we test the onboarding screens with real users before the release?"),
        ("Speaker00", "Yes, let's invite five users on Thursday for a short test session."),
    ];
    let mut segs = Vec::new();
    for round in 0..4 {
        for (i, (sp, text)) in lines.iter().enumerate() {
            let t = (round * lines.len() + i) as f64 * 5.0;
            segs.push(Segment {
                start_s: t,
                end_s: t + 5.0,
                text: (*text).into(),
                speaker: Some((*sp).into()),
                words: vec![],
            });
        }
    }
    segs
}

#[test]
fn long_transcript_is_analysed_in_parts_and_merged() {
    let _guard = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut opts = options();
    opts.max_context = 1024;
    opts.max_new_tokens = 384;
    let mut a = LocalAnalyzer::new(opts);
    let segs = long_dialogue();
    let r = analyze(&mut a, &segs);
    eprintln!("long: {r:?}\n{:?}", a.last_calls);
    // Several part calls plus at least one merge, none over the context.
    assert!(a.last_calls.len() >= 3, "{:?}", a.last_calls);
    assert!(a.last_calls.iter().all(|c| c.prompt_tokens + 384 <= 1024));
    assert_eq!(r.language.as_deref(), Some("en"));
    let summary = r.summary.unwrap();
    let topics =
        ["release", "login", "payment", "friday", "onboarding", "users", "thursday", "review", "design"];
    assert!(mentions_any(&summary, &topics), "{summary}");
    // The parts the model was given hold every word of the transcript, in order, and each
    // fits the budget: nothing was truncated or dropped on the way in.
    let clean = r.clean_transcript.unwrap();
    let budget = a.budget(Some("en")).unwrap();
    let parts = a.split(&clean, budget).unwrap();
    assert!(parts.len() >= 2, "{parts:?}");
    for p in &parts {
        assert!(a.count(p).unwrap() <= budget, "part over the budget: {p}");
    }
    let words = |s: &str| -> Vec<String> {
        s.lines()
            .flat_map(|l| l.split_once(": ").map_or(l, |(_, text)| text).split_whitespace())
            .map(String::from)
            .collect()
    };
    assert_eq!(parts.iter().flat_map(|p| words(p)).collect::<Vec<_>>(), words(&clean));
}

#[test]
fn crashed_or_stuck_worker_is_replaced_on_the_next_job() {
    let _guard = MODEL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = LocalAnalyzer::new(options());
    let segs = one_speaker("Die Werbung vermittelt einen falschen Eindruck.");
    analyze(&mut a, &segs);
    // Kill the worker behind the analyzer's back: the next job starts a new one.
    let pid = a.worker.as_ref().unwrap().child.id();
    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    std::thread::sleep(Duration::from_millis(200));
    analyze(&mut a, &segs);
    assert_ne!(a.worker.as_ref().unwrap().child.id(), pid);
    // A call that overruns its timeout kills the worker and fails clearly…
    a.opts.timeout = Duration::from_millis(1);
    let err = a.analyze(&AnalysisInput { segments: &segs, language: None }).unwrap_err().to_string();
    assert!(err.contains("local LLM (qwen2.5-coder-0.5b)") && err.contains("no answer within"), "{err}");
    // …and the next job works again.
    a.opts.timeout = Duration::from_secs(600);
    analyze(&mut a, &segs);
}

#[test]
fn missing_model_or_worker_is_a_clear_error() {
    let cfg = Config { models_dir: "/nonexistent-models".into(), ..Config::default() };
    let mut a = LocalAnalyzer::new(LocalOptions::from_config(&cfg, MODEL));
    let err = a.analyze(&AnalysisInput { segments: &one_speaker("hello"), language: None }).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("local LLM (qwen2.5-coder-0.5b)") && err.contains("models install qwen2.5-coder-0.5b"),
        "{err}"
    );
    let mut opts = LocalOptions::from_config(&cfg, MODEL);
    opts.model_path = PathBuf::from(file!()); // any existing file
    opts.worker_bin = "/nonexistent/diarized-llm".into();
    let err =
        LocalAnalyzer::new(opts).analyze(&AnalysisInput { segments: &one_speaker("hi"), language: None });
    assert!(err.unwrap_err().to_string().contains("DIARIZED_LLM_BIN"));
}

#[test]
fn empty_transcript_needs_no_model() {
    let cfg = Config { models_dir: "/nonexistent-models".into(), ..Config::default() };
    let mut a = LocalAnalyzer::new(LocalOptions::from_config(&cfg, MODEL));
    let r = a.analyze(&AnalysisInput { segments: &one_speaker("  "), language: None }).unwrap();
    assert_eq!(r, empty_analysis());
}

#[test]
fn splitting_keeps_every_word_and_labels() {
    let text =
        "Speaker00: one two three four five six seven eight nine ten\nSpeaker01: short\nSpeaker00: a b";
    let parts = split_by_chars(text, 30);
    assert!(parts.iter().all(|p| p.chars().count() <= 30), "{parts:?}");
    assert!(parts.iter().flat_map(|p| p.lines()).all(|l| l.starts_with("Speaker0")), "{parts:?}");
    let words =
        |s: &str| s.split_whitespace().filter(|w| !w.starts_with("Speaker")).collect::<Vec<_>>().join(" ");
    assert_eq!(words(&parts.join("\n")), words(text));
}
