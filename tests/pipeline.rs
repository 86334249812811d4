//! The whole pipeline through the daemon: transcription, diarization and both analysis backends.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, JFK, fixture, json_reply, wer};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(900);

#[test]
fn stereo_clip_gets_two_speakers_and_a_local_analysis() {
    let d =
        Daemon::start(&[("DIARIZATION", "true"), ("LLM_MODEL", "qwen2.5-coder-0.5b"), ("LLM_THREADS", "1")]);
    let (s, job) = d.upload("/api/jobs?run=true", &fixture("stereo_diarization.wav"));
    assert_eq!(s, 201, "{job}");
    let (id, uuid) = (job["id"].as_i64().unwrap(), job["uuid"].as_str().unwrap().to_string());
    let job = d.wait_job(id, LONG);
    assert_eq!(job["status"], "done", "{job}\n{}", d.log());

    // The two sentences overlap in time; whisper hears the louder, left one.
    let text = job["transcript"].as_str().unwrap().to_lowercase();
    assert!(text.contains("curtain") && text.contains("left"), "{text}");
    let (_, segs) = d.get(&format!("/api/jobs/{id}/segments"));
    let speakers: BTreeSet<&str> = segs
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let words = s["words"].as_array().into_iter().flatten().filter_map(|w| w["speaker"].as_str());
            s["speaker"].as_str().into_iter().chain(words)
        })
        .collect();
    assert!(
        !speakers.is_empty() && speakers.is_subset(&BTreeSet::from(["Speaker00", "Speaker01"])),
        "{segs}"
    );

    let rttm = Daemon::client().get(d.url(&format!("/api/jobs/{id}/transcript?format=rttm"))).send().unwrap();
    let rttm = rttm.text().unwrap();
    assert!(rttm.contains(" Speaker00 ") && rttm.contains(" Speaker01 "), "{rttm}");

    let clean = job["clean_transcript"].as_str().unwrap();
    assert!(clean.lines().all(|l| l.starts_with("Speaker00: ") || l.starts_with("Speaker01: ")), "{clean}");
    assert!(clean.to_lowercase().contains("curtain"), "{clean}");
    assert!(job["summary"].as_str().is_some_and(|s| s.len() > 10), "{job}");
    assert!(job["keypoints"].as_array().is_some_and(|k| !k.is_empty()), "{job}");
    assert!(job["conversation_type"].is_string(), "{job}");
    assert_eq!(job["language"], "en");

    let sidecar = d.sidecar(&format!("{uuid}.wav.json"));
    assert!(sidecar["speaker_turns"].as_array().is_some_and(|t| t.len() >= 2), "{sidecar}");
    assert_eq!(sidecar["job"]["summary"], job["summary"]);
}

/// A local server speaking Gemini's `generateContent` wire format, replying from a script.
fn gemini_server(replies: Vec<(u16, Value)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut urls = Vec::new();
        for (status, body) in replies {
            let Ok(Some(mut req)) = server.recv_timeout(Duration::from_secs(600)) else { break };
            let mut text = String::new();
            let _ = req.as_reader().read_to_string(&mut text);
            let key =
                req.headers().iter().find(|h| h.field.equiv("x-goog-api-key")).map(|h| h.value.to_string());
            assert_eq!(key.as_deref(), Some("test-key-123"));
            let sent: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(sent["generationConfig"]["responseMimeType"], "application/json");
            urls.push(req.url().to_string());
            let h = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
            let _ = req.respond(
                tiny_http::Response::from_string(body.to_string()).with_status_code(status).with_header(h),
            );
        }
        urls
    });
    (base, handle)
}

fn gemini_ok(summary: &str) -> (u16, Value) {
    let analysis = json!({
        "conversation_type": "speech",
        "topics": ["civic duty"],
        "keypoints": ["Speaker00 addresses his fellow Americans", "Ask not what your country can do for you",
                      "Speaker00 asks what you can do"],
        "summary": summary,
        "language": "en",
        "clean_transcript": format!("Speaker00: {JFK}"),
    });
    let reply = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": analysis.to_string()}]},
            "finishReason": "STOP"
        }],
        "modelVersion": "gemini-2.5-flash"
    });
    (200, reply)
}

#[test]
fn gemini_backend_errors_keep_the_transcript_and_analysis_reruns_alone() {
    let bad_key = (
        400,
        json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com"}]}}),
    );
    let (base, server) = gemini_server(vec![
        gemini_ok("Kennedy asks citizens to serve. He speaks to all Americans."),
        bad_key,
        gemini_ok("A call to service. It is addressed to every citizen."),
    ]);
    let d = Daemon::start(&[
        ("LLM_MODEL", "gemini-2.5-flash"),
        ("GEMINI_API_KEY", "test-key-123"),
        ("GEMINI_BASE_URL", &base),
    ]);
    let c = Daemon::client();
    let (s, job) = d.upload("/api/jobs?run=true", &fixture("jfk.wav"));
    assert_eq!(s, 201);
    let (id, uuid) = (job["id"].as_i64().unwrap(), job["uuid"].as_str().unwrap().to_string());
    let job = d.wait_job(id, LONG);
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["summary"], "Kennedy asks citizens to serve. He speaks to all Americans.");
    assert_eq!(job["keypoints"][0], "Speaker00 addresses his fellow Americans");
    assert_eq!(job["conversation_type"], "speech");

    // A rejected key fails the analysis only: the transcript stays, the key is never shown.
    let (s, _) =
        json_reply(c.post(d.url(&format!("/api/jobs/{id}/run?stage=analyze&wait=true"))).send().unwrap());
    assert_eq!(s, 200);
    let job = d.get(&format!("/api/jobs/{id}")).1;
    assert_eq!(job["status"], "error", "{job}");
    let err = job["error_message"].as_str().unwrap();
    assert!(err.contains("gemini") && err.contains("API_KEY_INVALID"), "{err}");
    assert!(wer(JFK, job["transcript"].as_str().unwrap()) <= 0.1);
    assert!(!d.get(&format!("/api/jobs/{id}/segments")).1.as_array().unwrap().is_empty());
    let sidecar = std::fs::read_to_string(d.uploads().join(format!("{uuid}.wav.json"))).unwrap();
    assert!(!sidecar.contains("test-key-123") && !d.log().contains("test-key-123"));

    let (s, job) =
        json_reply(c.post(d.url(&format!("/api/jobs/{id}/run?stage=analyze&wait=true"))).send().unwrap());
    assert_eq!(s, 200);
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["summary"], "A call to service. It is addressed to every citizen.");
    let urls = server.join().unwrap();
    assert_eq!(urls.len(), 3);
    assert!(urls.iter().all(|u| u == "/v1beta/models/gemini-2.5-flash:generateContent"), "{urls:?}");
}
