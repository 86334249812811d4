//! Known speakers over HTTP: enrolment, matching in jobs, renames with enrolment, ad-hoc names.
//! Voices are real: the AMI excerpts `ami_dev00` and `ami_dev01` are one meeting with the same
//! two people (MEE009, MEE012), so one excerpt enrols them and the other is the job; Kennedy
//! (`jfk.wav`) is the third, unenrolled voice.

mod common;

use std::time::Duration;

use common::{Daemon, fixture, json_reply};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(900);

/// A fixture as 16 kHz mono f32 (the fixtures used here are 16 kHz).
fn load(name: &str) -> Vec<f32> {
    let mut r = hound::WavReader::open(fixture(name)).unwrap();
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 16_000);
    let ch = spec.channels as usize;
    let x: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
        hound::SampleFormat::Int => r.samples::<i16>().map(|s| s.unwrap() as f32 / 32768.0).collect(),
    };
    x.chunks(ch).map(|f| f.iter().sum::<f32>() / ch as f32).collect()
}

/// Seconds `a`–`b` of `x`.
fn cut(x: &[f32], a: f64, b: f64) -> Vec<f32> {
    x[(a * 16_000.0) as usize..((b * 16_000.0) as usize).min(x.len())].to_vec()
}

/// A 16 kHz mono 16-bit WAV file's bytes.
fn wav(samples: &[f32]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).unwrap();
    }
    w.finalize().unwrap();
    out.into_inner()
}

fn part(bytes: Vec<u8>, name: &str) -> reqwest::blocking::multipart::Part {
    reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string())
}

/// `POST path` with a `name` (if any) and clips as `file` parts.
fn post_clips(d: &Daemon, path: &str, name: Option<&str>, clips: Vec<(&str, Vec<u8>)>) -> (u16, Value) {
    let mut form = reqwest::blocking::multipart::Form::new();
    if let Some(n) = name {
        form = form.text("name", n.to_string());
    }
    for (file, bytes) in clips {
        form = form.part("file", part(bytes, file));
    }
    json_reply(Daemon::client().post(d.url(path)).multipart(form).send().unwrap())
}

fn send(d: &Daemon, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = Daemon::client().request(method, d.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    json_reply(req.send().unwrap())
}

/// Voiceprints stored in the daemon's database.
fn voiceprints_in_db(d: &Daemon) -> i64 {
    let db = rusqlite::Connection::open(d.dir.path().join("jobs.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM voiceprints", [], |r| r.get(0)).unwrap()
}

/// MEE009 alone in ami_dev00 (1.44–13.15 s in the reference).
fn mee009() -> Vec<u8> {
    wav(&cut(&load("ami_dev00.wav"), 1.5, 13.0))
}

/// MEE012 alone in ami_dev00 (13.15–16.92 s).
fn mee012() -> Vec<u8> {
    wav(&cut(&load("ami_dev00.wav"), 13.2, 16.9))
}

#[test]
fn enrolment_checks_clips_and_people_survive_restarts_until_deleted() {
    let d = Daemon::start(&[]);
    let (s, nine) = post_clips(&d, "/api/speakers", Some("Nine"), vec![("nine.wav", mee009())]);
    assert_eq!(s, 201, "{nine}\n{}", d.log());
    let id = nine["id"].as_i64().unwrap();
    assert_eq!(nine["name"], "Nine");
    assert_eq!(nine["samples"][0]["source"], "nine.wav");

    // Hostile or wrong clips: a clear 400 naming the clip and the reason; nothing stored.
    let silence = vec![0.0f32; 16_000 * 5];
    let two_voices = cut(&load("ami_sample.wav"), 6.5, 30.0);
    let jfk = load("jfk.wav");
    for (clip, bytes, why) in [
        ("quiet.wav", wav(&silence), "no speech"),
        ("short.wav", wav(&cut(&jfk, 0.0, 1.0)), "2 to 30 s"),
        ("long.wav", wav(&vec![0.0f32; 16_000 * 31]), "2 to 30 s"),
        ("meeting.wav", wav(&two_voices), "several voices"),
    ] {
        let (s, e) =
            post_clips(&d, "/api/speakers", Some("Other"), vec![("ok.wav", mee012()), (clip, bytes)]);
        assert_eq!(s, 400, "{clip}: {e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains(clip) && msg.contains(why), "{clip}: {msg}");
    }
    let (s, e) = post_clips(&d, "/api/speakers", Some("Other"), vec![("bad.wav", b"not audio".to_vec())]);
    assert_eq!(s, 415, "{e}");
    let (s, e) = post_clips(&d, "/api/speakers", None, vec![("a.wav", mee012())]);
    assert_eq!((s, e["error"].as_str().unwrap().contains("name")), (400, true), "{e}");
    let (s, _) = post_clips(&d, "/api/speakers", Some("Speaker01"), vec![("a.wav", mee012())]);
    assert_eq!(s, 400, "diarization labels are not names");
    let (s, _) = post_clips(&d, "/api/speakers", Some("nine"), vec![("a.wav", mee012())]);
    assert_eq!(s, 409, "names are unique regardless of case");
    assert_eq!(d.get("/api/speakers").1.as_array().unwrap().len(), 1);
    assert_eq!(voiceprints_in_db(&d), 1);

    // More clips, a new name; then a restart keeps everything.
    let more = wav(&cut(&load("ami_dev01.wav"), 7.1, 11.7));
    let (s, p) = post_clips(&d, &format!("/api/speakers/{id}/samples"), None, vec![("more.wav", more)]);
    assert_eq!((s, p["samples"].as_array().unwrap().len()), (201, 2), "{p}");
    let (s, p) =
        send(&d, reqwest::Method::PUT, &format!("/api/speakers/{id}"), Some(json!({"name": "Mee Nine"})));
    assert_eq!((s, p["name"].as_str()), (200, Some("Mee Nine")), "{p}");
    let d = d.restart();
    let (s, p) = d.get(&format!("/api/speakers/{id}"));
    assert_eq!((s, p["name"].as_str(), p["samples"].as_array().unwrap().len()), (200, Some("Mee Nine"), 2));

    // Deleting the person deletes their voiceprints.
    assert_eq!(voiceprints_in_db(&d), 2);
    let (s, _) = send(&d, reqwest::Method::DELETE, &format!("/api/speakers/{id}"), None);
    assert_eq!(s, 200);
    assert_eq!(voiceprints_in_db(&d), 0);
    assert_eq!(d.get(&format!("/api/speakers/{id}")).0, 404);
    assert_eq!(d.get("/api/speakers/abc").0, 404);
    assert_eq!(send(&d, reqwest::Method::PATCH, "/api/speakers", None).0, 405);
}

/// A local Gemini stand-in that answers once and hands back the request body it got.
fn gemini_once() -> (String, std::thread::JoinHandle<String>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let Ok(Some(mut req)) = server.recv_timeout(LONG) else { return String::new() };
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let analysis = json!({"conversation_type": "meeting", "summary": "A meeting.", "keypoints": ["k"],
            "language": "en", "clean_transcript": "Speaker00: x"});
        let reply = json!({"candidates": [{"content": {"role": "model",
            "parts": [{"text": analysis.to_string()}]}, "finishReason": "STOP"}]});
        let h = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
        let _ = req.respond(tiny_http::Response::from_string(reply.to_string()).with_header(h));
        body
    });
    (base, handle)
}

/// The label or name of the segment that says `word`.
fn speaker_saying(segments: &Value, word: &str) -> String {
    let seg = segments
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["text"].as_str().unwrap().to_lowercase().contains(word));
    seg.unwrap_or_else(|| panic!("no segment says {word:?}: {segments}"))["speaker"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn enrolled_people_are_named_in_a_job_strangers_are_not_and_renames_enrol() {
    let (base, gemini) = gemini_once();
    let d = Daemon::start(&[
        ("DIARIZATION", "true"),
        ("LLM_MODEL", "gemini-2.5-flash"),
        ("GEMINI_API_KEY", "test-key-123"),
        ("GEMINI_BASE_URL", &base),
    ]);
    for (name, clip) in [("Nine", mee009()), ("Twelve", mee012())] {
        let (s, p) = post_clips(&d, "/api/speakers", Some(name), vec![("clip.wav", clip)]);
        assert_eq!(s, 201, "{p}");
    }
    // The other excerpt of the same meeting, then Kennedy.
    let mut audio = load("ami_dev01.wav");
    audio.extend(vec![0.0f32; 16_000]);
    audio.extend(load("jfk.wav"));
    let path = d.dir.path().join("meeting.wav");
    std::fs::write(&path, wav(&audio)).unwrap();
    let (s, job) = d.upload("/api/jobs?run=true", &path);
    assert_eq!(s, 201, "{job}");
    let (id, uuid) = (job["id"].as_i64().unwrap(), job["uuid"].as_str().unwrap().to_string());
    let job = d.wait_job(id, LONG);
    assert_eq!(job["status"], "done", "{job}\n{}", d.log());

    let speakers = job["speakers"].as_array().unwrap();
    let named: Vec<&str> = speakers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(named.contains(&"Nine") && named.contains(&"Twelve"), "{speakers:?}");
    assert!(
        speakers
            .iter()
            .all(|s| s["score"].is_number() && s["label"].as_str().unwrap().starts_with("Speaker"))
    );
    let (_, segments) = d.get(&format!("/api/jobs/{id}/segments"));
    let kennedy = speaker_saying(&segments, "country");
    assert!(kennedy.starts_with("Speaker"), "the unenrolled voice keeps its label: {kennedy}\n{speakers:?}");
    let entry = speakers.iter().find(|s| s["label"] == kennedy.as_str()).unwrap();
    assert!(entry["name"].is_null(), "{entry}");
    let words_named =
        segments.as_array().unwrap().iter().flat_map(|s| s["words"].as_array().cloned().unwrap_or_default());
    assert!(
        words_named.into_iter().any(|w| w["speaker"] == "Nine" || w["speaker"] == "Twelve"),
        "{segments}"
    );
    let rttm = Daemon::client().get(d.url(&format!("/api/jobs/{id}/transcript?format=rttm"))).send().unwrap();
    let rttm = rttm.text().unwrap();
    assert!(
        rttm.contains(" Nine ") && rttm.contains(" Twelve ") && rttm.contains(&format!(" {kennedy} ")),
        "{rttm}"
    );
    // The analysis ran after naming: the names are in its prompt and in the clean transcript.
    let prompt = gemini.join().unwrap();
    assert!(prompt.contains("Nine: ") && prompt.contains("Twelve: "), "{prompt}");
    let clean = job["clean_transcript"].as_str().unwrap();
    assert!(clean.contains("Nine: ") && clean.contains(&format!("{kennedy}: ")), "{clean}");
    let sidecar = || std::fs::read_to_string(d.uploads().join(format!("{uuid}.wav.json"))).unwrap();
    assert!(sidecar().contains("\"Twelve\""));

    // Naming Kennedy in this job, and enrolling his voice from it.
    let put = |body: Value| send(&d, reqwest::Method::PUT, &format!("/api/jobs/{id}/speakers"), Some(body));
    assert_eq!(put(json!({"Speaker77": "X"})).0, 400);
    assert_eq!(put(json!({(kennedy.as_str()): 5})).0, 400);
    let before = voiceprints_in_db(&d);
    let (s, job) = put(json!({(kennedy.as_str()): "John Kennedy", "enroll": true}));
    assert_eq!(s, 200, "{job}");
    let entry = job["speakers"].as_array().unwrap().iter().find(|s| s["label"] == kennedy.as_str()).cloned();
    assert_eq!(entry.unwrap()["name"], "John Kennedy");
    assert!(job["clean_transcript"].as_str().unwrap().contains("John Kennedy: "), "{job}");
    let (_, segments) = d.get(&format!("/api/jobs/{id}/segments"));
    assert_eq!(speaker_saying(&segments, "country"), "John Kennedy");
    let rttm = Daemon::client().get(d.url(&format!("/api/jobs/{id}/transcript?format=rttm"))).send().unwrap();
    assert!(rttm.text().unwrap().contains(" John_Kennedy "));
    assert!(sidecar().contains("\"John Kennedy\""));
    let people = d.get("/api/speakers").1;
    let john = people.as_array().unwrap().iter().find(|p| p["name"] == "John Kennedy").cloned().unwrap();
    assert_eq!(john["samples"][0]["source"], format!("job {id} {kennedy}"));
    assert_eq!(voiceprints_in_db(&d), before + 1);
    let (s, _) = send(&d, reqwest::Method::DELETE, &format!("/api/speakers/{}", john["id"]), None);
    assert_eq!((s, voiceprints_in_db(&d)), (200, before));
}

fn data_url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::from("data:audio/wav;base64,");
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            s.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    s
}

#[test]
fn ad_hoc_names_apply_to_their_job_only() {
    let d = Daemon::start(&[("DIARIZATION", "true")]);
    let jfk = load("jfk.wav");
    let job_audio = part(wav(&cut(&jfk, 5.5, 11.0)), "second_half.wav");
    let form = reqwest::blocking::multipart::Form::new()
        .part("file", job_audio)
        .text("known_speaker_names[]", "Kennedy")
        .text("known_speaker_references[]", data_url(&wav(&cut(&jfk, 0.0, 5.5))));
    let (s, job) =
        json_reply(Daemon::client().post(d.url("/api/jobs?run=true")).multipart(form).send().unwrap());
    assert_eq!(s, 201, "{job}");
    let job = d.wait_job(job["id"].as_i64().unwrap(), LONG);
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["speakers"][0]["name"], "Kennedy", "{job}");
    let (_, segments) = d.get(&format!("/api/jobs/{}/segments", job["id"]));
    assert_eq!(speaker_saying(&segments, "country"), "Kennedy");
    assert_eq!(d.get("/api/speakers").1, json!([]), "ad-hoc names are not enrolled");

    // At most four, one reference per name, and a bad reference is a 400; no job is made.
    let clip = || part(wav(&cut(&jfk, 0.0, 5.5)), "ref.wav");
    let mut five = reqwest::blocking::multipart::Form::new().file("file", fixture("jfk.wav")).unwrap();
    for i in 0..5 {
        five =
            five.text("known_speaker_names[]", format!("P{i}x")).part("known_speaker_references[]", clip());
    }
    let unpaired = reqwest::blocking::multipart::Form::new()
        .file("file", fixture("jfk.wav"))
        .unwrap()
        .text("known_speaker_names[]", "A")
        .text("known_speaker_names[]", "B")
        .part("known_speaker_references[]", clip());
    let silent = reqwest::blocking::multipart::Form::new()
        .file("file", fixture("jfk.wav"))
        .unwrap()
        .text("known_speaker_names[]", "A")
        .part("known_speaker_references[]", part(wav(&vec![0.0; 16_000 * 4]), "silence.wav"));
    for (form, why) in [(five, "at most 4"), (unpaired, "one reference per name"), (silent, "no speech")] {
        let (s, e) = json_reply(Daemon::client().post(d.url("/api/jobs")).multipart(form).send().unwrap());
        assert_eq!(s, 400, "{e}");
        assert!(e["error"].as_str().unwrap().contains(why), "{e}");
    }
    assert_eq!(d.get("/api/jobs").1.as_array().unwrap().len(), 1);
}
