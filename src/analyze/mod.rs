//! The analyze stage: conversation type, summary, keypoints, action items, topics and language
//! from a diarized transcript, plus the deterministic clean transcript.
//!
//! Both backends are told what the pipeline knows ([`facts::Facts`]: speakers, talk-time
//! shares, duration), constrained to the types those speakers allow, and their replies pass the
//! deterministic rules of [`checks`] (one correction round, then a repair) before they are stored.
//!
//! Backends, chosen by `LLM_MODEL`: `gemini-…` ([`gemini::GeminiAnalyzer`], REST),
//! `qwen2.5-coder-1.5b` / `qwen2.5-coder-0.5b` ([`local::LocalAnalyzer`], llama.cpp in the
//! `diarized-llm` worker process), `none` (no analysis).

pub mod attribute;
pub mod checks;
pub mod clean;
pub mod commitments;
pub mod facts;
pub mod gemini;
pub mod local;
pub mod quotes;
pub mod schema;
pub mod text;

use std::collections::BTreeSet;

pub use clean::clean_transcript;

use crate::config::Config;
use crate::model::Analysis;
use crate::pipeline::{Analyzer, StageError};

/// Builds the analyzer `cfg.llm_model` names; `None` for `none`.
///
/// Problems that only matter when a job runs (no Gemini key, local model not installed, worker
/// binary missing) are logged as warnings here and fail each job with an error naming the
/// backend; an unknown model name is an error now.
pub fn build_analyzer(cfg: &Config) -> Result<Option<Box<dyn Analyzer>>, StageError> {
    let name = cfg.llm_model.trim();
    if name.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if name.starts_with("gemini-") {
        let key = cfg.gemini_api_key.as_deref().map(str::trim).filter(|k| !k.is_empty());
        if key.is_none() {
            tracing::warn!(
                model = name,
                "LLM_MODEL is a Gemini model but GEMINI_API_KEY is not set; analysis will fail"
            );
        }
        let opts = gemini::GeminiOptions::new(name, &cfg.gemini_base_url);
        return Ok(Some(Box::new(gemini::GeminiAnalyzer::new(key.map(gemini::ApiKey::new), opts))));
    }
    if local::LOCAL_MODELS.contains(&name) {
        let opts = local::LocalOptions::from_config(cfg, name);
        if let Err(e) = opts.check() {
            tracing::warn!(model = name, "{e}; analysis will fail");
        }
        return Ok(Some(Box::new(local::LocalAnalyzer::new(opts))));
    }
    Err(StageError::new(
        "analyze",
        format!(
            "unknown LLM_MODEL {name:?}: expected gemini-… (e.g. gemini-2.5-flash), {} or none",
            local::LOCAL_MODELS.join(", ")
        ),
    ))
}

/// The analysis of a transcript with no words: only the (empty) clean transcript.
pub(crate) fn empty_analysis() -> Analysis {
    Analysis { clean_transcript: Some(String::new()), ..Analysis::default() }
}

/// Speaker labels at the start of the lines of a clean transcript.
fn line_labels(text: &str) -> Option<BTreeSet<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_once(':').map(|(label, _)| label.trim()))
        .collect()
}

/// Returns the model's cleaned transcript if it keeps exactly the diarization's speaker labels
/// (every line starts with one of them, and all of them appear); otherwise the deterministic one.
pub(crate) fn checked_transcript(model: Option<&str>, deterministic: &str) -> String {
    let Some(text) = model.map(str::trim).filter(|t| !t.is_empty()) else {
        return deterministic.to_string();
    };
    let expected = line_labels(deterministic);
    if expected.is_some() && line_labels(text) == expected {
        text.to_string()
    } else {
        tracing::warn!("model's clean transcript changed the speaker labels; using the diarized one");
        deterministic.to_string()
    }
}

/// A uniform random number in [0, 1), for jitter (std's per-instance random hash keys).
pub(crate) fn random_unit() -> f64 {
    use std::hash::BuildHasher;
    let h = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_labels_must_match() {
        let det = "Speaker00: hi\nSpeaker01: hello\nSpeaker00: bye";
        let ok = "Speaker00: Hi.\nSpeaker01: Hello. Bye from Speaker00 too.";
        assert_eq!(checked_transcript(Some(ok), det), ok);
        let renamed = "Alice: Hi.\nBob: Hello.";
        assert_eq!(checked_transcript(Some(renamed), det), det);
        let dropped = "Speaker00: Hi hello bye.";
        assert_eq!(checked_transcript(Some(dropped), det), det);
        let invented = "Speaker00: Hi.\nSpeaker01: Hello.\nSpeaker02: Bye.";
        assert_eq!(checked_transcript(Some(invented), det), det);
        assert_eq!(checked_transcript(None, det), det);
    }

    #[test]
    fn factory_picks_backends() {
        let cfg = |m: &str| Config { llm_model: m.into(), ..Config::default() };
        assert!(build_analyzer(&cfg("none")).unwrap().is_none());
        let g = build_analyzer(&cfg("gemini-2.5-flash")).unwrap().unwrap();
        assert_eq!(g.name(), "gemini (gemini-2.5-flash)");
        let l = build_analyzer(&cfg("qwen2.5-coder-0.5b")).unwrap().unwrap();
        assert!(l.name().contains("qwen2.5-coder-0.5b"), "{}", l.name());
        let err = build_analyzer(&cfg("gpt-4")).err().unwrap();
        assert!(err.to_string().contains("unknown LLM_MODEL"), "{err}");
    }

    #[test]
    fn gemini_without_key_fails_each_job_naming_the_backend() {
        let cfg = Config { llm_model: "gemini-2.5-flash".into(), gemini_api_key: None, ..Config::default() };
        let mut a = build_analyzer(&cfg).unwrap().unwrap();
        let seg = crate::model::Segment {
            start_s: 0.0,
            end_s: 1.0,
            text: "hello".into(),
            speaker: Some("Speaker00".into()),
            words: vec![],
        };
        let input = crate::pipeline::AnalysisInput { segments: std::slice::from_ref(&seg), language: None };
        let err = a.analyze(&input).unwrap_err().to_string();
        assert!(err.contains("gemini (gemini-2.5-flash)") && err.contains("GEMINI_API_KEY"), "{err}");
    }
}
