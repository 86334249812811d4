//! The OpenAI-compatible API against the real binary: the real `openai` Python client
//! (tests/openai_client.py), the raw HTTP shapes as curl sees them, parse errors, and the
//! wait-slot bound.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, JFK, fixture, json_reply, repo, wer};
use reqwest::blocking::{RequestBuilder, Response, multipart::Form};
use serde_json::{Value, json};

const TOKEN: &str = "openai-test-token-0123456789";
const LONG: Duration = Duration::from_secs(300);

fn authed(rb: RequestBuilder) -> RequestBuilder {
    rb.bearer_auth(TOKEN)
}

fn get(d: &Daemon, path: &str) -> (u16, Value) {
    json_reply(authed(Daemon::client().get(d.url(path))).send().unwrap())
}

/// A transcription request for `file` with these form fields.
fn transcription(d: &Daemon, file: &str, fields: &[(&str, &str)]) -> Response {
    let mut form = Form::new().file("file", fixture(file)).unwrap();
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    authed(Daemon::client().post(d.url("/v1/audio/transcriptions"))).multipart(form).send().unwrap()
}

/// The sorted keys of a JSON object.
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> =
        v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// Asserts an OpenAI-shaped error with this status and `param`; returns its message.
fn openai_error(r: Response, status: u16, param: Option<&str>) -> String {
    let (got, body) = json_reply(r);
    assert_eq!(got, status, "{body}");
    assert_eq!(keys(&body), ["error"], "{body}");
    let e = &body["error"];
    assert_eq!(keys(e), ["code", "message", "param", "type"], "{body}");
    assert_eq!(e["param"].as_str(), param, "{body}");
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    assert_eq!(e["type"], kind, "{body}");
    e["message"].as_str().unwrap().to_string()
}

/// The `data:` events of a server-sent event stream.
fn events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect()
}

/// The Python with the pinned `openai` package (`make pyenv`; or `OPENAI_PYTHON`).
fn python() -> PathBuf {
    let python = std::env::var_os("OPENAI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/pyenv/bin/python"));
    assert!(python.is_file(), "{} is missing: `make pyenv` installs the openai client", python.display());
    python
}

#[test]
fn the_openai_python_client_works_unchanged() {
    let python = python();
    let d = Daemon::start(&[("API_TOKEN", TOKEN), ("DIARIZATION", "true")]);
    let out = Command::new(python)
        .arg(repo().join("tests/openai_client.py"))
        .arg(&d.base)
        .arg(TOKEN)
        .arg(fixture(""))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "openai_client.py failed:\n{stdout}\n{stderr}\ndaemon log:\n{}", d.log());
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // Every transcription was a job like any other; the refused requests left none.
    let (_, jobs) = get(&d, "/api/jobs");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 9, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["status"] == "done" && j["source"] == "upload"), "{jobs:?}");
}

#[test]
fn raw_shapes_and_parse_errors() {
    let d = Daemon::start(&[("API_TOKEN", TOKEN)]);
    let c = Daemon::client();

    // Same auth as /api/*, answered in OpenAI's shape.
    let r = c.get(d.url("/v1/models")).send().unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    openai_error(r, 401, None);
    let (_, body) =
        json_reply(c.get(d.url("/v1/models")).bearer_auth("wrong-token-0123456789").send().unwrap());
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");

    // Models: OpenAI's list shape; one model by id.
    let (status, list) = get(&d, "/v1/models");
    assert_eq!((status, list["object"].as_str()), (200, Some("list")), "{list}");
    let data = list["data"].as_array().unwrap();
    for m in data {
        assert_eq!(keys(m), ["created", "id", "object", "owned_by"], "{m}");
        assert!(m["object"] == "model" && m["created"].is_u64(), "{m}");
    }
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"tiny.en") && ids.contains(&"whisper-1"), "{ids:?}");
    assert_eq!(get(&d, "/v1/models/whisper-1").1["id"], "whisper-1");
    let r = authed(c.get(d.url("/v1/models/whisper-large"))).send().unwrap();
    openai_error(r, 404, Some("model"));
    let r = authed(c.get(d.url("/v1/audio/transcriptions"))).send().unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    openai_error(r, 405, None);
    openai_error(authed(c.get(d.url("/v1/chat/completions"))).send().unwrap(), 404, None);

    // Parse errors: 400 naming the field, nothing stored.
    let message = openai_error(transcription(&d, "jfk.wav", &[]), 400, Some("model"));
    assert!(message.contains("model"), "{message}");
    let message = openai_error(transcription(&d, "jfk.wav", &[("model", "large-v3")]), 400, Some("model"));
    assert!(message.contains("tiny.en") && message.contains("whisper-1"), "{message}");
    for (field, value, param) in [
        ("response_format", "xml", "response_format"),
        ("temperature", "2", "temperature"),
        ("temperature", "hot", "temperature"),
        ("language", "xx", "language"),
        ("language", "de", "language"),
        ("timestamp_granularities[]", "sentence", "timestamp_granularities"),
        ("stream", "sometimes", "stream"),
    ] {
        let r = transcription(&d, "jfk.wav", &[("model", "whisper-1"), (field, value)]);
        openai_error(r, 400, Some(param));
    }
    let long_prompt = "word ".repeat(300);
    let message = openai_error(
        transcription(&d, "jfk.wav", &[("model", "whisper-1"), ("prompt", &long_prompt)]),
        400,
        None,
    );
    assert!(message.contains("prompt"), "{message}");
    let form = Form::new().text("model", "whisper-1");
    let r = authed(c.post(d.url("/v1/audio/transcriptions"))).multipart(form).send().unwrap();
    assert!(openai_error(r, 400, None).contains("file"));
    let r =
        authed(c.post(d.url("/v1/audio/transcriptions"))).body("{\"model\": \"whisper-1\"}").send().unwrap();
    openai_error(r, 400, None);
    let bad_audio = Form::new()
        .part("file", reqwest::blocking::multipart::Part::bytes(vec![7u8; 5000]).file_name("x.wav"));
    let r = authed(c.post(d.url("/v1/audio/transcriptions")))
        .multipart(bad_audio.text("model", "whisper-1"))
        .send()
        .unwrap();
    openai_error(r, 415, None);
    assert_eq!(get(&d, "/api/jobs").1, json!([]), "a refused request left a job");
    assert_eq!(std::fs::read_dir(d.uploads()).unwrap().count(), 0, "a refused request left a file");

    // json: exactly {text}.
    let (status, body) = json_reply(transcription(&d, "jfk.wav", &[("model", "whisper-1")]));
    assert_eq!((status, keys(&body)), (200, vec!["text"]), "{body}");
    assert!(wer(JFK, body["text"].as_str().unwrap()) <= 0.2, "{body}");

    // verbose_json with both granularities (spelled without `[]`): OpenAI's exact fields.
    let r = transcription(
        &d,
        "jfk.wav",
        &[
            ("model", "tiny.en"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities", "segment"),
            ("timestamp_granularities", "word"),
            ("language", "en"),
        ],
    );
    assert_eq!(r.headers()["content-type"], "application/json");
    let (_, v) = json_reply(r);
    assert_eq!(keys(&v), ["duration", "language", "segments", "task", "text", "words"], "{v}");
    assert_eq!((v["task"].as_str(), v["language"].as_str()), (Some("transcribe"), Some("english")));
    let segment_keys = [
        "avg_logprob",
        "compression_ratio",
        "end",
        "id",
        "no_speech_prob",
        "seek",
        "start",
        "temperature",
        "text",
        "tokens",
    ];
    for s in v["segments"].as_array().unwrap() {
        assert_eq!(keys(s), segment_keys, "{s}");
    }
    let words = v["words"].as_array().unwrap();
    assert!(words.len() >= 20, "{v}");
    assert!(words.iter().all(|w| keys(w) == ["end", "start", "word"]), "{v}");

    // text: the transcript and a newline, as text/plain.
    let r = transcription(&d, "jfk.wav", &[("model", "whisper-1"), ("response_format", "text")]);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().unwrap();
    assert!(text.ends_with('\n') && wer(JFK, &text) <= 0.2, "{text:?}");

    // stream=true: server-sent events, deltas first, one done last.
    let r = transcription(&d, "jfk.wav", &[("model", "whisper-1"), ("stream", "true")]);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let all = events(&r.text().unwrap());
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"transcript.text.delta"), "{types:?}");
    assert_eq!(types.last(), Some(&"transcript.text.done"), "{types:?}");
    let n = types.iter().filter(|t| **t == "transcript.text.delta").count();
    assert_eq!(types.iter().filter(|t| **t == "transcript.text.segment").count(), n, "{types:?}");
    let deltas: String = all.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(all.last().unwrap()["text"], deltas);
    assert!(all.iter().filter(|e| e["type"] == "transcript.text.segment").all(|e| e["speaker"] == "unknown"));

    // Each was a job like any other.
    let (_, jobs) = get(&d, "/api/jobs");
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    for job in jobs {
        assert_eq!(job["status"], "done", "{job}");
        assert!(wer(JFK, job["transcript"].as_str().unwrap()) <= 0.2, "{job}");
    }
}

#[test]
fn waits_are_bounded_and_a_stream_client_leaving_does_not_stop_its_job() {
    let d = Daemon::start(&[("API_TOKEN", TOKEN), ("MAX_WAITS", "1")]);
    // A long job first, so the stream below holds the one wait slot while its job queues.
    let form = Form::new().file("file", fixture("ami_dev00.wav")).unwrap();
    let r = authed(Daemon::client().post(d.url("/api/jobs?run=true"))).multipart(form).send().unwrap();
    assert_eq!(r.status(), 201);
    let stream = transcription(&d, "en_ldc93s1.wav", &[("model", "whisper-1"), ("stream", "true")]);
    assert_eq!(stream.status(), 200, "the stream's head comes once its job is queued");

    let r = transcription(&d, "jfk.wav", &[("model", "whisper-1")]);
    assert_eq!(r.headers()["retry-after"], "5");
    let message = openai_error(r, 503, None);
    assert!(message.contains("MAX_WAITS"), "{message}");

    // The stream's client goes away; its job still ends done.
    drop(stream);
    let (_, jobs) = get(&d, "/api/jobs");
    let id = jobs[0]["id"].as_i64().unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2, "the refused request made no job: {jobs}");
    let deadline = std::time::Instant::now() + LONG;
    let job = loop {
        let (_, job) = get(&d, &format!("/api/jobs/{id}"));
        if !matches!(job["status"].as_str(), Some("queued" | "processing")) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} never ended: {job}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["status"], "done", "{job}");
    let reference = "She had your dark suit in greasy wash water all year.";
    assert!(wer(reference, job["transcript"].as_str().unwrap()) <= 0.35, "{job}");
}

/// The per-job decoding options on the real models: a job's language and prompt apply to that
/// job only, and settings a model cannot honour are errors, not panics.
#[test]
fn per_job_decode_options_apply_to_their_job_only() {
    use diarized::asr::{AsrOptions, WhisperTranscriber};
    use diarized::model::DecodeOptions;
    use diarized::pipeline::Transcriber;

    let dir = common::models_dir();
    let load = |model: &str| {
        let path = diarized::models::whisper::resolve_whisper_model(&dir, model).unwrap();
        WhisperTranscriber::load(&path, AsrOptions { threads: 1, ..AsrOptions::default() }).unwrap()
    };
    let audio = |name: &str| diarized::audio::decode_file(&fixture(name)).unwrap();
    let (progress, cancelled) = (|_: f32| {}, || false);
    let jfk = audio("jfk.wav");

    let mut base = load("base");
    let german = DecodeOptions { language: Some("de".into()), ..Default::default() };
    let live = std::sync::Mutex::new(Vec::new());
    let show = |s: &diarized::model::Segment| live.lock().unwrap().push(s.clone());
    let t =
        base.transcribe_with(&audio("de_cheetah_test.wav"), &german, &progress, &show, &cancelled).unwrap();
    // The segments were shown as they were decoded, the same text as the result.
    let shown = live.lock().unwrap().iter().map(|s| s.text.clone()).collect::<Vec<_>>().join(" ");
    assert_eq!(shown, t.text(), "live segments");
    assert_eq!(t.language.as_deref(), Some("de"));
    assert!(t.text().to_lowercase().contains("werbung"), "{}", t.text());
    // The next job, without options, has its language detected again.
    let t = base.transcribe_with(&jfk, &DecodeOptions::default(), &progress, &|_| {}, &cancelled).unwrap();
    assert_eq!(t.language.as_deref(), Some("en"), "{}", t.text());
    assert!(wer(JFK, &t.text()) <= 0.2, "{}", t.text());

    let mut tiny = load("tiny.en");
    for bad in [
        DecodeOptions { language: Some("de".into()), ..Default::default() },
        DecodeOptions { language: Some("xx".into()), ..Default::default() },
        DecodeOptions { temperature: Some(1.5), ..Default::default() },
    ] {
        assert!(tiny.transcribe_with(&jfk, &bad, &progress, &|_| {}, &cancelled).is_err(), "{bad:?}");
    }
    let prompted = DecodeOptions {
        prompt: Some("President Kennedy's inaugural address, 1961.".into()),
        temperature: Some(0.2),
        ..Default::default()
    };
    let t = tiny.transcribe_with(&jfk, &prompted, &progress, &|_| {}, &cancelled).unwrap();
    assert!(wer(JFK, &t.text()) <= 0.2, "{}", t.text());
    // A prompt longer than Whisper's context is cut to its end, not refused.
    let long = DecodeOptions { prompt: Some("ask not ".repeat(200)), ..Default::default() };
    assert!(tiny.transcribe_with(&jfk, &long, &progress, &|_| {}, &cancelled).is_ok());
}

/// `stream=true` shows segments while the job is still transcribing (issue 11: deltas came only
/// once the whole transcript was stored). The first delta must arrive while the job's stored
/// segments are still empty.
#[test]
fn stream_deltas_arrive_while_the_job_is_still_transcribing() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("jfk16.wav");
    let jfk = fixture("jfk.wav");
    let status = Command::new("sox").args(vec![&jfk; 16]).arg(&long).status().expect("sox runs");
    assert!(status.success());
    let d = Daemon::start(&[("API_TOKEN", TOKEN)]);
    let form = Form::new().file("file", &long).unwrap().text("model", "whisper-1").text("stream", "true");
    let r = authed(Daemon::client().post(d.url("/v1/audio/transcriptions"))).multipart(form).send().unwrap();
    assert_eq!(r.status(), 200);
    let (_, jobs) = get(&d, "/api/jobs");
    let id = jobs[0]["id"].as_i64().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(r));
    let first = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("data: ")).expect("an event");
    let (_, job) = get(&d, &format!("/api/jobs/{id}"));
    let (_, stored) = get(&d, &format!("/api/jobs/{id}/segments"));
    let event: Value = serde_json::from_str(&first["data: ".len()..]).unwrap();
    assert_eq!(event["type"], "transcript.text.delta", "{event}");
    assert_eq!(job["status"], "processing", "{job}");
    assert_eq!(stored, json!([]), "the first delta came only after the transcript was stored");
    // The rest of the stream ends with the whole text.
    let rest: Vec<String> = lines.map_while(Result::ok).filter(|l| l.starts_with("data: ")).collect();
    let done: Value = serde_json::from_str(&rest.last().unwrap()["data: ".len()..]).unwrap();
    assert_eq!(done["type"], "transcript.text.done", "{done}");
    assert!(done["text"].as_str().unwrap().matches("country").count() >= 12, "{done}");
}
