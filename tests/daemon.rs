//! End-to-end tests of the daemon: the real binary, driven over HTTP and through its folder.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Daemon, JFK, fixture, json_reply, wer};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

fn upload_id(d: &Daemon, query: &str, file: &str) -> i64 {
    let (status, job) = d.upload(&format!("/api/jobs{query}"), &fixture(file));
    assert_eq!(status, 201, "{job}");
    job["id"].as_i64().unwrap()
}

fn post(d: &Daemon, path: &str) -> (u16, Value) {
    json_reply(Daemon::client().post(d.url(path)).send().unwrap())
}

fn delete(d: &Daemon, path: &str) -> (u16, Value) {
    json_reply(Daemon::client().delete(d.url(path)).send().unwrap())
}

fn is_processing(s: &str) -> bool {
    s == "processing"
}

#[test]
fn api_contract_and_error_codes() {
    let d = Daemon::start(&[("MAX_CONTENT_LENGTH", "300000")]);
    let c = Daemon::client();

    assert_eq!(d.get("/healthz"), (200, json!({"status": "ok"})));
    let (s, status) = d.get("/api/status");
    assert_eq!(s, 200);
    assert_eq!(status["jobs_by_status"]["uploaded"], 0);
    assert_eq!(status["jobs_by_status"]["cancelled"], 0);
    assert_eq!(status["workers"]["dead"], 0);
    assert_eq!(status["models"]["whisper"], "tiny.en");

    // Upload: 201, integer id as in the seed, status uploaded, stored under a fresh uuid with the
    // lower-cased extension.
    let (s, job) = d.upload("/api/jobs", &fixture("jfk.mp3"));
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["id"], 1);
    assert_eq!(job["status"], "uploaded");
    assert_eq!(job["original_filename"], "jfk.mp3");
    assert_eq!(job["attempts"], 0);
    let id = job["id"].as_i64().unwrap();
    let uuid = job["uuid"].as_str().unwrap().to_string();
    assert_eq!(uuid.len(), 36, "{job}");
    assert_eq!(job["audio_path"], format!("uploads/{uuid}.mp3"));
    assert!(d.uploads().join(format!("{uuid}.mp3")).is_file());
    for key in ["conversation_type", "summary", "keypoints", "language", "clean_transcript", "error_message"]
    {
        assert!(job[key].is_null(), "{key}");
    }
    let second = upload_id(&d, "", "jfk.ogg");
    assert_eq!(second, 2);

    // List: newest first, total in a header, filters and paging with Link headers.
    let r = c.get(d.url("/api/jobs?limit=1")).send().unwrap();
    assert_eq!(r.headers()["x-total-count"], "2");
    assert_eq!(r.headers()["link"], "</api/jobs?limit=1&offset=1>; rel=\"next\"");
    let (_, list) = json_reply(r);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], second);
    let r = c.get(d.url("/api/jobs?offset=1")).send().unwrap();
    assert_eq!(r.headers()["link"], "</api/jobs?limit=100&offset=0>; rel=\"prev\"");
    let (_, list) = json_reply(r);
    assert_eq!(list[0]["id"], id);
    assert!(c.get(d.url("/api/jobs")).send().unwrap().headers().get("link").is_none(), "one page");
    assert_eq!(d.get("/api/jobs?status=done").1, json!([]));
    assert_eq!(d.get("/api/jobs?status=bogus").0, 400);
    assert_eq!(d.get("/api/jobs?limit=x").0, 400);
    assert_eq!(d.get(&format!("/api/jobs/{id}")).1["id"], id);
    assert_eq!(d.get(&format!("/api/jobs/{id}/segments")).1, json!([]));

    // Edits: any subset; a mistyped or unknown field is a 400 naming it; the sidecar follows.
    let put = |body: Value| json_reply(c.put(d.url(&format!("/api/jobs/{id}"))).json(&body).send().unwrap());
    let (s, job) = put(json!({"summary": "A speech.", "keypoints": ["duty", "country"]}));
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["keypoints"], json!(["duty", "country"]));
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(d.uploads().join(format!("{uuid}.mp3.json"))).unwrap())
            .unwrap();
    assert_eq!(sidecar["job"]["summary"], "A speech.");
    let (s, e) = put(json!({"keypoints": "duty"}));
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("keypoints"), "{e}");
    let (s, e) = put(json!({"status": "done"}));
    assert!(s == 400 && e["error"].as_str().unwrap().contains("status"), "{e}");
    let r = c.put(d.url(&format!("/api/jobs/{id}"))).body("{not json").send().unwrap();
    assert_eq!(r.status(), 400);

    // Unknown job and route, wrong method; only integer ids name jobs.
    for bad in ["nope", "99", "0", "-1", "1.0", "01x", &uuid] {
        assert_eq!(d.get(&format!("/api/jobs/{bad}")).0, 404, "{bad}");
    }
    let (s, e) = d.get(&format!("/api/jobs/{}", "x".repeat(10_000)));
    assert!(s == 404 && e.to_string().len() < 300, "the error quotes the id whole: {s}");
    assert_eq!(post(&d, &format!("/api/jobs/{id}/cancel")).0, 409, "nothing to cancel");
    assert_eq!(d.get("/api/nothing").0, 404);
    let r = c.patch(d.url("/api/jobs")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, DELETE");
    assert_eq!(json_reply(c.post(d.url("/api/jobs/nope/run")).send().unwrap()).0, 404);

    // Rejected uploads keep nothing: too large, wrong type, not audio, malformed.
    let before = std::fs::read_dir(d.uploads()).unwrap().count();
    let (s, e) = d.upload("/api/jobs", &fixture("jfk.wav"));
    assert_eq!(s, 413, "{e}");
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "hello").unwrap();
    assert_eq!(d.upload("/api/jobs", &txt).0, 415);
    let fake = dir.path().join("fake.wav");
    std::fs::write(&fake, vec![7u8; 5000]).unwrap();
    let (s, e) = d.upload("/api/jobs", &fake);
    assert_eq!(s, 415, "{e}");
    assert!(e["error"].as_str().unwrap().contains("fake.wav"), "{e}");
    let r = c.post(d.url("/api/jobs")).body("plain").send().unwrap();
    assert_eq!(r.status(), 400);
    let form = reqwest::blocking::multipart::Form::new().text("other", "x");
    assert_eq!(json_reply(c.post(d.url("/api/jobs")).multipart(form).send().unwrap()).0, 400);
    let form = reqwest::blocking::multipart::Form::new()
        .file("file", fixture("jfk.ogg"))
        .unwrap()
        .text("num_speakers", "zero");
    assert_eq!(json_reply(c.post(d.url("/api/jobs")).multipart(form).send().unwrap()).0, 400);
    assert_eq!(std::fs::read_dir(d.uploads()).unwrap().count(), before, "rejected uploads left files");
    assert_eq!(d.get("/api/jobs").1.as_array().unwrap().len(), 2, "rejected uploads made jobs");

    // Speaker hints from form fields or the query string are stored.
    let form = reqwest::blocking::multipart::Form::new()
        .text("num_speakers", "2")
        .file("file", fixture("jfk.m4a"))
        .unwrap();
    let (s, job) = json_reply(c.post(d.url("/api/jobs?max_speakers=3")).multipart(form).send().unwrap());
    assert_eq!(s, 201, "{job}");
    assert_eq!((job["num_speakers"].as_u64(), job["max_speakers"].as_u64()), (Some(2), Some(3)));

    // Deletes: one, then all with their files; ids are never handed out again.
    let third = job["id"].as_i64().unwrap();
    let third_uuid = job["uuid"].as_str().unwrap().to_string();
    assert_eq!(delete(&d, &format!("/api/jobs/{third}")).0, 200);
    assert_eq!(d.get(&format!("/api/jobs/{third}")).0, 404);
    assert!(d.uploads().join(format!("{third_uuid}.m4a")).is_file(), "files stay without ?files=true");
    assert_eq!(upload_id(&d, "", "jfk.m4a"), third + 1);
    let (s, r) = delete(&d, "/api/jobs?files=true");
    assert_eq!((s, r["deleted"].as_u64()), (200, Some(3)));
    assert!(!d.uploads().join(format!("{uuid}.mp3")).exists());
    assert!(!d.uploads().join(format!("{uuid}.mp3.json")).exists());
    assert_eq!(d.get("/api/jobs").1, json!([]));
}

#[test]
fn run_transcribes_and_conflicts_while_busy() {
    let d = Daemon::start(&[]);
    let c = Daemon::client();
    let long = upload_id(&d, "", "ami_sample.wav");
    let (s, job) = json_reply(c.post(d.url(&format!("/api/jobs/{long}/run"))).send().unwrap());
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["status"], "queued");
    let (s, e) = json_reply(c.post(d.url(&format!("/api/jobs/{long}/run"))).send().unwrap());
    assert_eq!(s, 409, "{e}");

    let (_, job) = d.upload("/api/jobs", &fixture("jfk.wav"));
    let (id, uuid) = (job["id"].as_i64().unwrap(), job["uuid"].as_str().unwrap().to_string());
    let (s, job) = json_reply(c.post(d.url(&format!("/api/jobs/{id}/run?wait=true"))).send().unwrap());
    assert_eq!(s, 200, "{job}");
    assert_eq!(job["status"], "done", "{job}");
    let text = job["transcript"].as_str().unwrap();
    assert!(wer(JFK, text) <= 0.1, "{text}");
    assert!((job["duration_s"].as_f64().unwrap() - 11.0).abs() < 0.1);
    assert_eq!(job["language"], "en");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());

    let (_, segs) = d.get(&format!("/api/jobs/{id}/segments"));
    let segs = segs.as_array().unwrap();
    assert!(!segs.is_empty());
    assert!(segs.windows(2).all(|w| w[0]["start_s"].as_f64() <= w[1]["start_s"].as_f64()));
    let srt = c.get(d.url(&format!("/api/jobs/{id}/transcript?format=srt"))).send().unwrap().text().unwrap();
    assert!(srt.starts_with("1\n00:00:0") && srt.to_lowercase().contains("country"), "{srt}");
    let vtt = c.get(d.url(&format!("/api/jobs/{id}/transcript?format=vtt"))).send().unwrap().text().unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.contains(" --> "), "{vtt}");
    assert_eq!(d.get(&format!("/api/jobs/{id}/transcript?format=doc")).0, 400);

    let sidecar = d.sidecar(&format!("{uuid}.wav.json"));
    assert_eq!(sidecar["job"]["status"], "done");
    assert_eq!(sidecar["segments"].as_array().unwrap().len(), segs.len());

    let job = d.wait_job(long, LONG);
    assert_eq!(job["status"], "done", "{job}");
}

#[test]
fn cancel_and_delete_stop_queued_and_running_jobs() {
    let d = Daemon::start(&[]);
    let running = upload_id(&d, "?run=true", "ami_dev00.wav");
    let queued = upload_id(&d, "?run=true", "ami_dev01.wav");
    let doomed = upload_id(&d, "?run=true", "ami_sample.wav");
    d.wait_job_status(running, LONG, is_processing);

    let (s, job) = post(&d, &format!("/api/jobs/{queued}/cancel"));
    assert_eq!((s, job["status"].as_str()), (200, Some("cancelled")), "{job}");
    let (s, job) = post(&d, &format!("/api/jobs/{running}/cancel"));
    assert_eq!(s, 202, "{job}");
    let job = d.wait_job(running, LONG);
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["transcript"].is_null(), "cancelled before its transcript was stored: {job}");
    assert_eq!(post(&d, &format!("/api/jobs/{running}/cancel")).0, 409);
    assert_eq!(post(&d, &format!("/api/jobs/{queued}/run")).0, 202, "a cancelled job can run again");
    assert_eq!(post(&d, &format!("/api/jobs/{queued}/cancel")).0, 200);

    // Deleting a running job stops it; its worker writes nothing for the missing row.
    d.wait_job_status(doomed, LONG, is_processing);
    assert_eq!(delete(&d, &format!("/api/jobs/{doomed}")).0, 200);
    let deadline = std::time::Instant::now() + LONG;
    while !d.log().contains("was deleted while it ran") {
        assert!(std::time::Instant::now() < deadline, "worker never noticed the delete\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!d.log().to_lowercase().contains("foreign key"), "{}", d.log());
    assert_eq!(d.get("/api/status").1["workers"]["busy"], 0);
    assert_eq!(d.get("/healthz").0, 200);
}

#[test]
fn watched_folder_takes_complete_files_once() {
    let d = Daemon::start(&[("SETTLE_S", "2")]);
    let up = d.uploads();

    // A copied file.
    std::fs::copy(fixture("jfk.wav"), up.join("jfk.wav")).unwrap();
    // A partial download, renamed when complete.
    std::fs::copy(fixture("en_ldc93s1.wav"), up.join("timit.wav.part")).unwrap();
    // Files that are not jobs.
    std::fs::write(up.join(".hidden.wav"), b"x").unwrap();
    std::fs::write(up.join("notes.txt"), b"x").unwrap();
    std::fs::write(up.join("empty.wav"), b"").unwrap();

    // A slowly written file is not taken before its writer closes it.
    let bytes = std::fs::read(fixture("de_cheetah_test.wav")).unwrap();
    let mut f = std::fs::File::create(up.join("slow.wav")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 6 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let jobs = d.get("/api/jobs").1;
    assert!(
        !jobs.as_array().unwrap().iter().any(|j| j["original_filename"] == "slow.wav"),
        "taken while still being written: {jobs}"
    );
    drop(f);
    std::fs::rename(up.join("timit.wav.part"), up.join("timit.wav")).unwrap();

    let jobs = d.wait_jobs(LONG, |jobs| jobs.len() >= 3 && jobs.iter().all(|j| j["status"] == "done"));
    let mut names: Vec<&str> = jobs.iter().map(|j| j["original_filename"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["jfk.wav", "slow.wav", "timit.wav"], "{jobs:?}");
    assert!(jobs.iter().all(|j| j["source"] == "watch" && j["status"] == "done"), "{jobs:?}");
    let jfk = jobs.iter().find(|j| j["original_filename"] == "jfk.wav").unwrap();
    assert!(wer(JFK, jfk["transcript"].as_str().unwrap()) <= 0.1, "{jfk}");
    assert_eq!(d.sidecar("jfk.wav.json")["job"]["status"], "done");

    // The same content under another name is not a second job; an API upload is not registered twice.
    std::fs::copy(fixture("jfk.wav"), up.join("jfk-copy.wav")).unwrap();
    let id = upload_id(&d, "", "jfk.mp3");
    std::thread::sleep(Duration::from_secs(4));
    let jobs = d.get("/api/jobs").1;
    assert_eq!(jobs.as_array().unwrap().len(), 4, "{jobs}");
    assert_eq!(jobs[0]["id"], id);
    assert!(d.log().contains("same content as an existing job"));

    // A deleted job's file (left in place) is not taken again at restart, nor an empty file;
    // once its content changes it is.
    let jfk_id = jfk["id"].as_i64().unwrap();
    assert_eq!(delete(&d, &format!("/api/jobs/{jfk_id}")).0, 200);
    let d = d.restart();
    std::thread::sleep(Duration::from_secs(4));
    let jobs = d.get("/api/jobs").1;
    let names: Vec<&str> =
        jobs.as_array().unwrap().iter().map(|j| j["original_filename"].as_str().unwrap()).collect();
    assert!(!names.contains(&"jfk.wav") && !names.contains(&"empty.wav"), "{jobs}");
    // The copy was skipped as a duplicate of the deleted job; now it is the only one with that content.
    assert!(names.contains(&"jfk-copy.wav") && names.len() == 4, "{jobs}");
    std::fs::copy(fixture("fr_cheetah_test.wav"), d.uploads().join("jfk.wav")).unwrap();
    let jobs = d.wait_jobs(LONG, |j| j.iter().any(|j| j["original_filename"] == "jfk.wav"));
    assert!(jobs[0]["id"].as_i64().unwrap() > id, "a new job with a new id: {jobs:?}");
}

#[test]
fn an_appending_writer_gets_one_job_with_the_whole_file() {
    // The writer opens, appends and closes once a second for ~8 s (issue 10, item 5).
    let d = Daemon::start(&[]);
    let path = d.uploads().join("dictation.wav");
    let bytes = std::fs::read(fixture("jfk.wav")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 8 + 1) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        f.write_all(chunk).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_secs(1));
    }
    let jobs = d.wait_jobs(LONG, |j| !j.is_empty() && j.iter().all(|j| j["status"] == "done"));
    std::thread::sleep(Duration::from_secs(2));
    let jobs_after = d.get("/api/jobs").1;
    assert_eq!(jobs_after.as_array().unwrap().len(), 1, "{jobs_after}");
    let d_s = jobs[0]["duration_s"].as_f64().unwrap();
    assert!((d_s - 11.0).abs() < 0.1, "taken before the writer was done: {d_s} s of 11");
    assert!(wer(JFK, jobs[0]["transcript"].as_str().unwrap()) <= 0.1, "{}", jobs[0]);
}

/// A 1 KB PCM WAV whose header claims `rate` Hz (the hostile file).
fn hostile_wav(rate: u32) -> Vec<u8> {
    let data = vec![0x40u8; 1000];
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&rate.wrapping_mul(2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(data.len() as u32).to_le_bytes());
    w.extend_from_slice(&data);
    w
}

#[test]
fn hostile_headers_and_long_audio_are_rejected_in_bounded_memory() {
    let d = Daemon::start(&[("MAX_AUDIO_SECONDS", "10"), ("SETTLE_S", "1")]);
    let dir = tempfile::tempdir().unwrap();
    for rate in [0xFFFF_FFF0u32, 1, 0] {
        let path = dir.path().join(format!("rate{rate}.wav"));
        std::fs::write(&path, hostile_wav(rate)).unwrap();
        let (s, e) = d.upload("/api/jobs?run=true", &path);
        assert_eq!(s, 415, "{rate} Hz: {e}");
        assert!(e["error"].as_str().unwrap().contains("sample rate"), "{e}");
        // The same file dropped into the watched folder ends as a job in error, never run.
        std::fs::write(d.uploads().join(format!("rate{rate}.wav")), hostile_wav(rate)).unwrap();
    }
    let (s, e) = d.upload("/api/jobs", &fixture("jfk.wav"));
    assert_eq!(s, 413, "{e}");
    assert!(e["error"].as_str().unwrap().contains("MAX_AUDIO_SECONDS"), "{e}");
    std::fs::copy(fixture("jfk.wav"), d.uploads().join("long.wav")).unwrap();

    let jobs = d.wait_jobs(LONG, |j| j.len() == 4 && j.iter().all(|j| j["status"] == "error"));
    for job in &jobs {
        let message = job["error_message"].as_str().unwrap();
        let expected =
            if job["original_filename"] == "long.wav" { "MAX_AUDIO_SECONDS" } else { "sample rate" };
        assert!(message.contains(expected), "{job}");
        assert_eq!(job["attempts"], 0, "never run: {job}");
    }
    let peak_mib = d.peak_rss_kib() / 1024;
    assert!(peak_mib < 256, "daemon peaked at {peak_mib} MiB");
}

#[test]
fn kill9_and_sigterm_lose_nothing_and_a_job_killed_twice_is_not_retried() {
    // Files copied while the daemon was down are found at start; an empty one and a temp upload
    // left by a crash are not jobs (the temp file is removed).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("uploads")).unwrap();
    std::fs::copy(fixture("ami_dev00.wav"), dir.path().join("uploads/meeting.wav")).unwrap();
    std::fs::write(dir.path().join("uploads/empty.wav"), b"").unwrap();
    let stale = dir.path().join("uploads/.0f0f0f0f.upload.wav");
    std::fs::copy(fixture("jfk.wav"), &stale).unwrap();
    let d = Daemon::start_in(dir, &[("GRACE_PERIOD_S", "0")]);
    assert!(!stale.exists(), "stale temp upload left at start");
    let jobs = d.wait_jobs(LONG, |j| j.iter().any(|j| j["status"] == "processing"));
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let id = jobs[0]["id"].as_i64().unwrap();

    // kill -9 mid-job: after a restart the job runs again (a second attempt proves it was
    // processing when killed) and completes.
    let d = d.kill9_and_restart();
    let job = d.wait_job_status(id, LONG, |s| s != "queued");
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("processing"), Some(2)), "{job}");
    let job = d.wait_job(id, LONG);
    assert_eq!(job["status"], "done", "{job}\n{}", d.log());
    assert!(job["transcript"].as_str().unwrap().len() > 20);
    assert_eq!(d.get("/api/jobs").1.as_array().unwrap().len(), 1, "no duplicate job after restart");

    // Killed while processing twice: not retried a third time.
    let twice = upload_id(&d, "?run=true", "ami_dev01.wav");
    let job = d.wait_job_status(twice, LONG, is_processing);
    assert_eq!(job["attempts"], 1);
    let d = d.kill9_and_restart();
    let job = d.wait_job_status(twice, LONG, |s| s != "queued");
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("processing"), Some(2)), "{job}");
    let d = d.kill9_and_restart();
    let job = d.get(&format!("/api/jobs/{twice}")).1;
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["error_message"], "interrupted twice while processing; not retried");

    // SIGTERM with no grace: the running job goes back to the queue, exit code 0.
    let id2 = upload_id(&d, "?run=true", "ami_dev01.wav");
    d.wait_job_status(id2, LONG, is_processing);
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(d.log().contains(&format!("job={id2}")) && d.log().contains("grace period over"), "{}", d.log());
    let d = d.restart();
    let job = d.wait_job(id2, LONG);
    assert_eq!((job["status"].as_str(), job["attempts"].as_u64()), (Some("done"), Some(1)), "{job}");

    // SIGTERM while idle drains at once.
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn sighup_reloads_config_and_bad_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "max_content_length = 209715200\n").unwrap();
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(d.upload("/api/jobs", &fixture("jfk.wav")).0, 201);
    std::fs::write(d.dir.path().join("config.toml"), "max_content_length = 1000\n").unwrap();
    d.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.upload("/api/jobs", &fixture("jfk.ogg")).0 != 413 {
        assert!(std::time::Instant::now() < deadline, "config not reloaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A changed `.env` is seen too (read into a map, not the process environment).
    std::fs::write(d.dir.path().join("config.toml"), "").unwrap();
    std::fs::write(d.dir.path().join(".env"), "MAX_AUDIO_SECONDS=5\n").unwrap();
    d.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, e) = d.upload("/api/jobs", &fixture("jfk.ogg"));
        if s == 413 && e["error"].as_str().unwrap_or_default().contains("MAX_AUDIO_SECONDS") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, ".env not reloaded: {s} {e}");
        std::thread::sleep(Duration::from_millis(100));
    }

    for (key, value, needle) in [
        ("MAX_CONTENT_LENGTH", "lots", "MAX_CONTENT_LENGTH"),
        ("UPLOAD_FOLDER", "/proc/forbidden", "UPLOAD_FOLDER"),
        ("BIND", "nowhere", "bind"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_diarized"))
            .current_dir(d.dir.path())
            .env(key, value)
            .env("LOG_DIR", "none")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle) && err.lines().count() == 1, "{key}: {err}");
    }
}
