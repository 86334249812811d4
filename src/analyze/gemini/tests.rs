//! The real client against a local server speaking Gemini's wire format.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::analyze::clean_transcript;
use crate::model::Segment;

const KEY: &str = "AIzaTEST-secret-key-0123456789";

/// What the test server saw.
struct Seen {
    url: String,
    key: Option<String>,
    body: Value,
    /// When the request arrived and when its reply was sent.
    arrived: Instant,
    answered: Instant,
}

/// Serves the scripted `(status, body)` replies in order, then stops.
fn serve(replies: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<Vec<Seen>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind test server");
    let base = format!("http://{}", server.server_addr().to_ip().expect("ip address"));
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, body) in replies {
            let Ok(Some(mut req)) = server.recv_timeout(Duration::from_secs(10)) else { break };
            let arrived = Instant::now();
            let mut text = String::new();
            let _ = req.as_reader().read_to_string(&mut text);
            let key = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("x-goog-api-key"))
                .map(|h| h.value.as_str().to_string());
            let url = req.url().to_string();
            let header = tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header");
            let _ = req
                .respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
            seen.push(Seen {
                url,
                key,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                arrived,
                answered: Instant::now(),
            });
        }
        seen
    });
    (base, handle)
}

fn analyzer(base: &str) -> GeminiAnalyzer {
    let mut opts = GeminiOptions::new("gemini-2.5-flash", base);
    opts.timeout = Duration::from_secs(10);
    opts.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        server_delay_scale: 0.001,
        max_server_delay: Duration::from_secs(300),
    };
    GeminiAnalyzer::new(Some(ApiKey::new(KEY)), opts)
}

fn segments() -> Vec<Segment> {
    let s = |sp: &str, t: &str| Segment {
        start_s: 0.0,
        end_s: 1.0,
        text: t.into(),
        speaker: Some(sp.into()),
        words: vec![],
    };
    vec![
        s("Speaker00", "Um, shall we move the release to Friday?"),
        s("Speaker01", "Yes, uh, Friday works."),
        s("Speaker01", "The tests need two more days."),
    ]
}

fn run(a: &mut GeminiAnalyzer) -> Result<Analysis, String> {
    let segs = segments();
    a.analyze(&AnalysisInput { segments: &segs, language: Some("en") }).map_err(|e| e.to_string())
}

fn answer(fields: Value) -> String {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "The user wants JSON {\"summary\": \"draft\"}", "thought": true},
                {"text": fields.to_string()}
            ]},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 150, "candidatesTokenCount": 90, "thoughtsTokenCount": 40},
        "modelVersion": "gemini-2.5-flash"
    })
    .to_string()
}

fn good_fields() -> Value {
    json!({
        "conversation_type": "meeting",
        "topics": ["release date"],
        "keypoints": ["The release moves to Friday", "The tests need two more days", "Friday works for Speaker01"],
        "action_items": [{"owner": "Speaker01", "text": "Finish the tests"}],
        "summary": "Speaker00 proposes moving the release. Speaker01 agrees with the new date.",
        "language": "en",
        "clean_transcript": "Speaker00: Shall we move the release to Friday?\nSpeaker01: Yes, Friday works. The tests need two more days."
    })
}

fn api_error(code: u16, status: &str, message: &str, details: Value) -> String {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}}).to_string()
}

fn unavailable() -> String {
    api_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([]))
}

#[test]
fn success_returns_the_analysis_and_sends_the_documented_request() {
    let (base, server) = serve(vec![(200, answer(good_fields()))]);
    let a = run(&mut analyzer(&base)).unwrap();
    assert_eq!(a.conversation_type.as_deref(), Some("meeting"));
    assert!(a.summary.as_deref().unwrap().contains("release"));
    assert_eq!(a.keypoints.as_ref().unwrap().len(), 3);
    assert_eq!(a.topics, Some(vec!["release date".to_string()]));
    let item = crate::model::ActionItem { owner: Some("Speaker01".into()), text: "Finish the tests".into() };
    assert_eq!(a.action_items, Some(vec![item]));
    assert_eq!(a.language.as_deref(), Some("en"));
    assert_eq!(a.clean_transcript.as_deref(), good_fields()["clean_transcript"].as_str());

    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.url, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(req.key.as_deref(), Some(KEY));
    let gen_cfg = &req.body["generationConfig"];
    assert_eq!(gen_cfg["responseMimeType"], "application/json");
    assert_eq!(gen_cfg["responseSchema"]["type"], "OBJECT");
    assert_eq!(gen_cfg["responseSchema"]["properties"]["keypoints"]["type"], "ARRAY");
    assert_eq!(gen_cfg["responseSchema"]["required"].as_array().unwrap().len(), 7);
    // Two people take turns: the type enum has no monologue types.
    let types = gen_cfg["responseSchema"]["properties"]["conversation_type"]["enum"].as_array().unwrap();
    assert!(types.contains(&json!("meeting")) && !types.contains(&json!("speech")), "{types:?}");
    assert!(!types.contains(&json!("voicemail")) && !types.contains(&json!("monologue")), "{types:?}");
    assert!(gen_cfg["temperature"].as_f64().unwrap() <= 0.3);
    let budget = gen_cfg["thinkingConfig"]["thinkingBudget"].as_u64().unwrap();
    assert!(budget > 0 && gen_cfg["maxOutputTokens"].as_u64().unwrap() > budget + 1000);
    assert!(
        req.body["systemInstruction"]["parts"][0]["text"].as_str().unwrap().contains("conversation_type")
    );
    let prompt = req.body["contents"][0]["parts"][0]["text"].as_str().unwrap();
    assert!(prompt.contains("Speaker00: Shall we move the release to Friday?\n"), "{prompt}");
    assert!(prompt.contains("Speaker01: Yes, Friday works. The tests need two more days."), "{prompt}");
    assert!(prompt.contains("2 people take part (Speaker01, Speaker00)"), "{prompt}");
    assert_eq!(req.body["contents"].as_array().unwrap().len(), 1);
}

/// The failure of issue 13: a monologue type, "the speaker", keypoints copying the summary.
fn monologue_fields() -> Value {
    let mut f = good_fields();
    f["conversation_type"] = json!("speech");
    f["summary"] = json!("The speaker is discussing a technical issue. The release moves to Friday.");
    f["keypoints"] = json!([
        "The speaker is discussing a technical issue.",
        "The release moves to Friday.",
        "The tests need two more days"
    ]);
    f
}

#[test]
fn reply_breaking_the_rules_is_corrected_in_one_more_round() {
    let (base, server) = serve(vec![(200, answer(monologue_fields())), (200, answer(good_fields()))]);
    let a = run(&mut analyzer(&base)).unwrap();
    assert_eq!(a.conversation_type.as_deref(), Some("meeting"));
    assert_eq!(a.summary.as_deref(), good_fields()["summary"].as_str());
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2);
    // The second request is the first plus the model's answer and the correction.
    let contents = seen[1].body["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(contents[1]["parts"][0]["text"], monologue_fields().to_string());
    let correction = contents[2]["parts"][0]["text"].as_str().unwrap();
    assert_eq!(contents[2]["role"], "user");
    for rule in
        ["\"speech\" is for one person", "\"the speaker\"", "keypoint 1 repeats", "keypoint 2 repeats"]
    {
        assert!(correction.contains(rule), "{rule} not in {correction}");
    }
}

#[test]
fn reply_still_wrong_after_the_correction_is_repaired_not_stored() {
    let (base, server) = serve(vec![(200, answer(monologue_fields())), (200, answer(monologue_fields()))]);
    let a = run(&mut analyzer(&base)).unwrap();
    assert_eq!(server.join().unwrap().len(), 2);
    assert_eq!(a.conversation_type.as_deref(), Some("discussion"));
    let summary = a.summary.unwrap();
    assert!(!summary.to_lowercase().contains("the speaker "), "{summary}");
    assert!(summary.contains("Speaker00") && summary.contains("Speaker01"), "{summary}");
    assert_eq!(a.keypoints, Some(vec!["The tests need two more days".to_string()]));
}

#[test]
fn renamed_speakers_in_the_model_transcript_fall_back_to_the_diarized_one() {
    let mut fields = good_fields();
    fields["clean_transcript"] = json!("Alice: Shall we move the release?\nBob: Yes.");
    let (base, server) = serve(vec![(200, answer(fields))]);
    let a = run(&mut analyzer(&base)).unwrap();
    assert_eq!(a.clean_transcript.as_deref(), Some(clean_transcript(&segments()).as_str()));
    assert!(a.clean_transcript.unwrap().starts_with("Speaker00: "));
    server.join().unwrap();
}

#[test]
fn schema_violation_is_an_error_without_retry() {
    let (base, server) =
        serve(vec![(200, answer(json!({"conversation_type": "meeting", "summary": "Release moved."})))]);
    let err = run(&mut analyzer(&base)).unwrap_err();
    assert!(err.starts_with("analyze: gemini (gemini-2.5-flash): "), "{err}");
    assert!(err.contains("does not match the schema") && err.contains("keypoints"), "{err}");
    assert!(!err.contains(KEY));
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn max_tokens_without_text_is_an_error() {
    let body = json!({
        "candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 150, "thoughtsTokenCount": 1024, "totalTokenCount": 1174}
    });
    let (base, server) = serve(vec![(200, body.to_string())]);
    let err = run(&mut analyzer(&base)).unwrap_err();
    assert!(err.contains("finishReason MAX_TOKENS (no text)"), "{err}");
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn rate_limit_honours_retry_delay_then_succeeds() {
    let details = json!([
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaValue": "10"}]},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38.5s"}
    ]);
    let limited = api_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details);
    let (base, server) = serve(vec![(429, limited), (200, answer(good_fields()))]);
    let mut a = analyzer(&base);
    a.opts.retry.server_delay_scale = 0.02; // 38.5 s → 770 ms
    let result = run(&mut a).unwrap();
    assert_eq!(result.conversation_type.as_deref(), Some("meeting"));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2);
    // Measured at the server, from the 429 reply to the next request: a client that ignored
    // `retryDelay` would be back within a loopback round trip (well under a millisecond).
    let gap = seen[1].arrived - seen[0].answered;
    assert!(gap >= Duration::from_millis(770), "retried after {gap:?}");
}

#[test]
fn per_day_quota_fails_fast() {
    let details = json!([
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "250"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
    ]);
    let limited = api_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details);
    let (base, server) = serve(vec![(429, limited), (200, answer(good_fields()))]);
    let err = run(&mut analyzer(&base)).unwrap_err();
    assert!(err.contains("HTTP 429 RESOURCE_EXHAUSTED") && err.contains("daily quota"), "{err}");
    drop(server); // The second reply is never requested.
}

#[test]
fn server_error_is_retried_then_succeeds() {
    let (base, server) = serve(vec![(503, unavailable()), (200, answer(good_fields()))]);
    let a = run(&mut analyzer(&base)).unwrap();
    assert_eq!(a.language.as_deref(), Some("en"));
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn persistent_server_errors_give_up_after_the_attempt_limit() {
    let (base, server) = serve(vec![(503, unavailable()), (500, unavailable()), (503, unavailable())]);
    let err = run(&mut analyzer(&base)).unwrap_err();
    assert!(err.contains("HTTP 503 UNAVAILABLE") && err.contains("gave up after 3 attempts"), "{err}");
    assert_eq!(server.join().unwrap().len(), 3);
}

#[test]
fn invalid_key_fails_without_retry_and_without_leaking_the_key() {
    let details = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
        "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]);
    // A server echoing the key must not get it into our error.
    let bad = api_error(400, "INVALID_ARGUMENT", &format!("API key not valid: {KEY}"), details);
    let (base, server) = serve(vec![(400, bad), (200, answer(good_fields()))]);
    let mut a = analyzer(&base);
    let err = run(&mut a).unwrap_err();
    assert!(
        err.contains("HTTP 400 INVALID_ARGUMENT API_KEY_INVALID") && err.contains("GEMINI_API_KEY"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");
    assert!(!format!("{a:?}").contains(KEY));
    drop(server);
}

#[test]
fn unknown_model_is_a_clear_error() {
    let body = api_error(
        404,
        "NOT_FOUND",
        "models/gemini-0.9-nope is not found for API version v1beta, or is not supported for generateContent.",
        json!([]),
    );
    let (base, server) = serve(vec![(404, body)]);
    let err = run(&mut analyzer(&base)).unwrap_err();
    assert!(err.contains("HTTP 404 NOT_FOUND") && err.contains("unknown or retired model"), "{err}");
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn unreachable_server_is_retried_then_reported() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = run(&mut analyzer(&format!("http://127.0.0.1:{port}"))).unwrap_err();
    assert!(err.contains("network error") && err.contains("gave up after 3 attempts"), "{err}");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("38s"), Some(Duration::from_secs(38)));
    assert_eq!(parse_duration("0.25s"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("38"), None);
}

#[test]
fn too_few_keypoints_are_filled_with_transcript_quotes() {
    let mut fields = good_fields();
    fields["keypoints"] = json!(["The tests need two more days"]);
    let (base, server) = serve(vec![(200, answer(fields.clone())), (200, answer(fields))]);
    let mut segs = segments();
    segs.push(Segment {
        start_s: 1.0,
        end_s: 2.0,
        text: "Marketing sends the newsletter on Monday morning.".into(),
        speaker: Some("Speaker00".into()),
        words: vec![],
    });
    let a = analyzer(&base).analyze(&AnalysisInput { segments: &segs, language: Some("en") }).unwrap();
    assert_eq!(server.join().unwrap().len(), 2, "one correction round, then the repair");
    assert_eq!(
        a.keypoints.unwrap(),
        [
            "The tests need two more days",
            "Speaker00: \"Marketing sends the newsletter on Monday morning.\"",
            "Speaker00: \"Shall we move the release to Friday?\"",
        ]
    );
}
