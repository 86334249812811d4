//! Analysis fields through the daemon: `action_items` and `topics` from the analyzer into the
//! job JSON and the sidecar, editable with `PUT` and validated like the other fields.

mod common;

use std::time::Duration;

use common::{Daemon, JFK, fixture, json_reply};
use serde_json::{Value, json};

/// A local server speaking Gemini's wire format that answers every request with `analysis`.
fn gemini_server(analysis: Value, requests: usize) -> (String, std::thread::JoinHandle<usize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for _ in 0..requests {
            let Ok(Some(mut req)) = server.recv_timeout(Duration::from_secs(300)) else { break };
            let mut text = String::new();
            let _ = req.as_reader().read_to_string(&mut text);
            let reply = json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": analysis.to_string()}]},
                    "finishReason": "STOP"}]
            });
            let h = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
            let _ = req.respond(tiny_http::Response::from_string(reply.to_string()).with_header(h));
            served += 1;
        }
        served
    });
    (base, handle)
}

fn sidecar(d: &Daemon, uuid: &str) -> Value {
    d.sidecar(&format!("{uuid}.wav.json"))
}

#[test]
fn action_items_and_topics_reach_the_job_and_sidecar_and_can_be_edited() {
    let analysis = json!({
        "conversation_type": "speech",
        "topics": ["civic duty", "inaugural address"],
        "keypoints": ["Speaker00 addresses his fellow Americans", "Ask not what your country can do for you",
                      "Speaker00 asks what you can do"],
        "action_items": [{"owner": "Speaker00", "text": "Ask what you can do for your country"},
                         {"owner": null, "text": "Serve the nation"}],
        "summary": "Kennedy asks citizens to serve. He speaks to all Americans.",
        "language": "en",
        "clean_transcript": format!("Speaker00: {JFK}"),
    });
    let (base, server) = gemini_server(analysis.clone(), 1);
    let d = Daemon::start(&[
        ("LLM_MODEL", "gemini-2.5-flash"),
        ("GEMINI_API_KEY", "test-key-123"),
        ("GEMINI_BASE_URL", &base),
    ]);
    let (s, job) = d.upload("/api/jobs?run=true", &fixture("jfk.wav"));
    assert_eq!(s, 201, "{job}");
    assert!(job["action_items"].is_null() && job["topics"].is_null(), "{job}");
    let id = job["id"].as_i64().expect("integer id");
    let uuid = job["uuid"].as_str().expect("uuid").to_string();
    let job = d.wait_job(id, Duration::from_secs(300));
    assert_eq!(job["status"], "done", "{job}\n{}", d.log());
    assert_eq!(server.join().unwrap(), 1, "a reply that keeps the rules is not asked for again");
    assert_eq!(job["action_items"], analysis["action_items"]);
    assert_eq!(job["topics"], analysis["topics"]);
    let side = sidecar(&d, &uuid);
    assert_eq!(side["job"]["action_items"], analysis["action_items"]);
    assert_eq!(side["job"]["topics"], analysis["topics"]);

    // PUT: either list alone, validated; the sidecar follows.
    let c = Daemon::client();
    let put = |body: Value| json_reply(c.put(d.url(&format!("/api/jobs/{id}"))).json(&body).send().unwrap());
    let items = json!([{"owner": "Speaker00", "text": "Write the speech down"}]);
    let (s, job) = put(json!({"action_items": items}));
    assert_eq!(s, 200, "{job}");
    assert_eq!((&job["action_items"], &job["topics"]), (&items, &analysis["topics"]));
    let (s, job) = put(json!({"topics": ["duty"]}));
    assert_eq!((s, &job["topics"], &job["action_items"]), (200, &json!(["duty"]), &items));
    assert_eq!(sidecar(&d, &uuid)["job"]["topics"], json!(["duty"]));
    for (body, field) in [
        (json!({"topics": "duty"}), "topics"),
        (json!({"topics": [1]}), "topics"),
        (json!({"action_items": [{"owner": 7, "text": "x"}]}), "action_items"),
        (json!({"action_items": [{"text": "x", "due": "monday"}]}), "action_items"),
        (json!({"action_items": {"owner": null, "text": "x"}}), "action_items"),
    ] {
        let (s, e) = put(body.clone());
        assert!(s == 400 && e["error"].as_str().unwrap().contains(field), "{body}: {s} {e}");
    }
    assert_eq!(d.get(&format!("/api/jobs/{id}")).1["topics"], json!(["duty"]));
}
