//! Integrations against the real binary: signed webhooks to a real local receiver, SSE
//! streams, exports and retention.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Daemon, Stream, fixture, json_reply};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

const LONG: Duration = Duration::from_secs(300);
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: String,
    /// Unix milliseconds when it arrived.
    at_ms: u128,
    answered: u16,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
}

type Responder = dyn Fn(&str, usize) -> u16 + Send + Sync;

/// A real HTTP receiver on a local port: answers each request with `respond(path, nth request
/// for this webhook-id)` and records it.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    fn start(respond: impl Fn(&str, usize) -> u16 + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let respond: Arc<Responder> = Arc::new(respond);
        let recorded = Arc::clone(&hits);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = serve(conn, &recorded, &*respond);
            }
        });
        Receiver { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the hits; panics after `timeout`.
    fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {hits:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(conn: TcpStream, hits: &Mutex<Vec<Hit>>, respond: &Responder) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let Some((k, v)) = line.trim_end().split_once(':') else { break };
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let mut recorded = hits.lock().unwrap();
    let nth = recorded.iter().filter(|h| h.id() == id).count();
    let answered = respond(&path, nth);
    recorded.push(Hit { path, headers, body: String::from_utf8_lossy(&body).into(), at_ms, answered });
    drop(recorded);
    let mut conn = conn;
    let reply = format!("HTTP/1.1 {answered} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    conn.write_all(reply.as_bytes())
}

/// Checks a Standard Webhooks signature the way a receiver would.
fn signature_ok(hit: &Hit) -> bool {
    let key = BASE64.decode(SECRET_B64).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let signed = format!("{}.{}.{}", hit.id(), hit.headers["webhook-timestamp"], hit.body);
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    hit.headers.get("webhook-signature").is_some_and(|s| s.split(' ').any(|sig| sig == expected))
}

fn upload(d: &Daemon, query: &str) -> Value {
    let (status, job) = d.upload(&format!("/api/jobs{query}"), &fixture("jfk.wav"));
    assert_eq!(status, 201, "{job}");
    job
}

fn webhook_log(d: &Daemon, id: i64) -> Vec<Value> {
    let (status, log) = d.get(&format!("/api/jobs/{id}/webhooks"));
    assert_eq!(status, 200, "{log}");
    log.as_array().unwrap().clone()
}

/// Waits until the job's webhook log satisfies `pred`.
fn wait_log(d: &Daemon, id: i64, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + LONG;
    loop {
        let log = webhook_log(d, id);
        if pred(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "webhook log never got there: {log:#?}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn codes(delivery: &Value) -> Vec<Value> {
    delivery["attempts"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect()
}

fn hooks_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("WEBHOOK_ALLOW_HOSTS", "127.0.0.1"),
        ("WEBHOOK_RETRY_DELAYS_S", "0.2,0.2,0.2,0.2"),
    ];
    env.extend_from_slice(extra);
    env
}

#[test]
fn webhooks_are_signed_retried_after_503_and_exports_are_written() {
    // The first two attempts of each event get 503, then 200; job.started is subscribed too.
    let rx = Receiver::start(|path, nth| match path {
        "/flaky" if nth < 2 => 503,
        _ => 200,
    });
    let d = Daemon::start(&hooks_env(&[
        ("WEBHOOK_EVENTS", "job.started,job.done"),
        ("EXPORT_FORMATS", "txt,srt,vtt"),
    ]));
    let url = rx.url("/flaky");
    let job = upload(&d, &format!("?run=true&webhook_url={url}"));
    let id = job["id"].as_i64().unwrap();
    let uuid = job["uuid"].as_str().unwrap().to_string();
    let hits = rx.wait(LONG, "job.done delivered", |h| {
        h.iter().any(|h| h.answered == 200 && h.json()["type"] == "job.done")
    });
    let done = d.wait_job(id, LONG);
    assert_eq!(done["status"], "done", "{done}");

    let started: Vec<&Hit> = hits.iter().filter(|h| h.json()["type"] == "job.started").collect();
    let finished: Vec<&Hit> = hits.iter().filter(|h| h.json()["type"] == "job.done").collect();
    for event in [&started, &finished] {
        assert_eq!(event.iter().map(|h| h.answered).collect::<Vec<_>>(), [503, 503, 200], "{hits:#?}");
        assert!(event.iter().all(|h| h.id() == event[0].id()), "webhook-id constant across retries");
    }
    assert_ne!(started[0].id(), finished[0].id());
    assert_eq!(started[0].json()["job"]["status"], "processing");
    for hit in &hits {
        assert!(signature_ok(hit), "bad signature: {hit:#?}");
        assert_eq!(hit.headers["content-type"], "application/json");
    }
    let body = finished[2].json();
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["job"]["id"], id);
    assert_eq!(body["job"]["status"], "done");
    assert!(common::wer(common::JFK, body["job"]["transcript"].as_str().unwrap()) < 0.3, "{body}");
    // A tampered body does not verify.
    let mut forged = finished[2].clone();
    forged.body = forged.body.replace("\"done\"", "\"error\"");
    assert!(!signature_ok(&forged));

    let log = wait_log(&d, id, |l| l.len() == 2 && l.iter().all(|x| x["state"] == "delivered"));
    let done_log = log.iter().find(|x| x["event_type"] == "job.done").unwrap();
    assert_eq!(codes(done_log), [503, 503, 200]);
    assert_eq!(done_log["event_id"], finished[0].id());
    assert!(done_log["attempts"][0]["at"].as_str().unwrap().ends_with('Z'));

    // Exports beside the sidecar, complete (they exist before the webhook is sent).
    let base = d.uploads().join(format!("{uuid}.wav"));
    let read = |ext: &str| std::fs::read_to_string(format!("{}.{ext}", base.display())).unwrap();
    assert!(read("txt").to_lowercase().contains("ask not what your country"), "{}", read("txt"));
    assert!(read("srt").starts_with("1\n00:00:00,000 --> "), "{}", read("srt"));
    assert!(read("vtt").starts_with("WEBVTT\n\n"), "{}", read("vtt"));
    assert!(!std::path::Path::new(&format!("{}.rttm", base.display())).exists(), "only configured formats");
    let (_, srt) = json_reply(
        Daemon::client().get(d.url(&format!("/api/jobs/{id}/transcript?format=srt"))).send().unwrap(),
    );
    assert_eq!(srt.as_str().unwrap(), read("srt"));

    let end_ms = time_ms(done["finished_at"].as_str().unwrap());
    println!(
        "webhook latency: job end → first job.done attempt {} ms, → delivered (after two 503s, 0.2 s delays) {} ms",
        finished[0].at_ms as i128 - end_ms,
        finished[2].at_ms as i128 - end_ms
    );
}

/// Unix milliseconds of a stored ISO time.
fn time_ms(iso: &str) -> i128 {
    let t = time::OffsetDateTime::parse(iso, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() / 1_000_000
}

#[test]
fn a_400_ends_a_delivery_and_private_targets_need_the_allow_list() {
    let rx = Receiver::start(|path, _| if path == "/bad" { 400 } else { 200 });
    let d = Daemon::start(&hooks_env(&[]));
    let bad = upload(&d, &format!("?run=true&webhook_url={}", rx.url("/bad")))["id"].as_i64().unwrap();
    // `localhost` resolves to a loopback address and is not in the allow list (127.0.0.1 is).
    let local = format!("http://localhost:{}/local", rx.addr.port());
    let refused = upload(&d, &format!("?run=true&webhook_url={local}"))["id"].as_i64().unwrap();

    let log = wait_log(&d, bad, |l| l.first().is_some_and(|x| x["state"] != "pending"));
    assert_eq!(log[0]["state"], "failed", "{log:#?}");
    assert_eq!(codes(&log[0]), [400], "a 400 is not retried");
    let log = wait_log(&d, refused, |l| l.first().is_some_and(|x| x["state"] != "pending"));
    assert_eq!(log[0]["state"], "failed", "{log:#?}");
    let error = log[0]["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("refused") && error.contains("WEBHOOK_ALLOW_HOSTS"), "{error}");
    // Both ended for good; a final state takes no further attempt.
    assert_eq!(rx.hits().iter().filter(|h| h.path == "/bad").count(), 1);
    assert_eq!(
        rx.hits().iter().filter(|h| h.path == "/local").count(),
        0,
        "nothing reached a refused target"
    );

    // Malformed URLs are refused at upload.
    let (status, body) = d.upload("/api/jobs?webhook_url=ftp://x/y", &fixture("jfk.wav"));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("http"), "{body}");
    assert_eq!(d.get("/api/jobs/999/webhooks").0, 404);
}

#[test]
fn a_restart_mid_retry_still_delivers_once_per_event_id() {
    let healthy = Arc::new(AtomicBool::new(false));
    let up = Arc::clone(&healthy);
    let rx = Receiver::start(move |_, _| if up.load(Ordering::SeqCst) { 200 } else { 503 });
    let env = hooks_env(&[("WEBHOOK_RETRY_DELAYS_S", "1,1,1,1,1,1,1")]);
    let d = Daemon::start(&env);
    let id = upload(&d, &format!("?run=true&webhook_url={}", rx.url("/hook")))["id"].as_i64().unwrap();
    rx.wait(LONG, "a first failed attempt", |h| !h.is_empty());
    // Killed once that attempt is recorded, while the retry waits (1 s).
    wait_log(&d, id, |l| l.first().is_some_and(|x| !x["attempts"].as_array().unwrap().is_empty()));
    let d = d.kill9_and_restart();
    healthy.store(true, Ordering::SeqCst);
    let hits = rx.wait(LONG, "the delivery after the restart", |h| h.iter().any(|h| h.answered == 200));
    let log = wait_log(&d, id, |l| l.first().is_some_and(|x| x["state"] == "delivered"));
    // Several retry periods later nothing more came.
    std::thread::sleep(Duration::from_secs(3));
    let hits_after = rx.hits();
    assert_eq!(hits_after.len(), hits.len(), "no attempt after the 200: {hits_after:#?}");
    assert!(hits.iter().all(|h| h.id() == hits[0].id()), "one event id: {hits:#?}");
    assert_eq!(hits.iter().filter(|h| h.answered == 200).count(), 1);
    assert_eq!(codes(&log[0]).len(), hits.len(), "every attempt is logged: {log:#?}");
    assert_eq!(log.len(), 1, "the restart made no second delivery");
    assert!(hits.iter().all(signature_ok));
}

#[test]
fn sse_streams_a_job_to_done_beside_100_subscribers_and_the_api_still_answers() {
    let d = Daemon::start(&[]);
    let c = Daemon::client();
    // The API answers while they are connected (latencies printed, not asserted).
    let timings = |label: &str| {
        let mut ms = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            let r = c.get(d.url("/api/jobs")).send().unwrap();
            assert_eq!(r.status(), 200);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "GET /api/jobs, {label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms[250], ms[494], ms[499]
        );
    };
    timings("no subscriber");
    let mut all: Vec<Stream> = (0..100).map(|_| Stream::open(&d, "/api/events", LONG)).collect();
    timings("100 SSE subscribers connected");

    let id = upload(&d, "")["id"].as_i64().unwrap();
    let mut one = Stream::open(&d, &format!("/api/jobs/{id}/events"), LONG);
    let (name, first) = one.next().unwrap();
    assert_eq!((name.as_str(), first["status"].as_str()), ("status", Some("uploaded")));
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(event) = one.next() {
            seen.push(event);
        }
        seen
    });
    let (status, _) = json_reply(c.post(d.url(&format!("/api/jobs/{id}/run"))).send().unwrap());
    assert_eq!(status, 202);
    let seen = reader.join().unwrap();
    let statuses: Vec<&str> =
        seen.iter().filter(|(n, _)| n == "status").map(|(_, j)| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["queued", "processing", "done"], "{seen:?}");
    let progress: Vec<f64> =
        seen.iter().filter(|(n, _)| n == "progress").map(|(_, p)| p["progress"].as_f64().unwrap()).collect();
    assert!(!progress.is_empty() && progress.iter().all(|p| (0.0..=100.0).contains(p)), "{progress:?}");
    assert_eq!(seen.last().unwrap().1["transcript"].as_str().map(|t| !t.is_empty()), Some(true));
    let done_at = Instant::now();

    // Every one of the 100 subscribers got the job's end.
    let mut lag_ms = Vec::new();
    for s in &mut all {
        loop {
            let (name, data) = s.next().expect("a subscriber's stream ended early");
            if name == "status" && data["id"] == id && data["status"] == "done" {
                break;
            }
        }
        lag_ms.push(done_at.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "100 subscribers all had job.done within {:.1} ms of the per-job stream's end",
        lag_ms.iter().copied().fold(0.0, f64::max)
    );
    let (_, status) = d.get("/api/status");
    assert_eq!(status["workers"]["dead"], 0);
}

#[test]
fn event_streams_are_capped_at_half_of_max_connections() {
    let d = Daemon::start(&[("MAX_CONNECTIONS", "8")]);
    let _open: Vec<Stream> = (0..4).map(|_| Stream::open(&d, "/api/events", LONG)).collect();
    let (status, body) = d.get("/api/events");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("event streams"), "{body}");
    assert_eq!(d.get("/api/jobs").0, 200, "ordinary requests still have room");
    assert_eq!(d.get("/api/jobs/5/events").0, 503, "the cap comes before the lookup");
    drop(_open);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Closed streams are noticed at their next write (the keepalive) and give their slot back.
    while d.get("/api/jobs/5/events").0 != 404 {
        assert!(Instant::now() < deadline, "slots never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(json_reply(Daemon::client().post(d.url("/api/events")).send().unwrap()).0, 405);
}

#[test]
fn retention_deletes_old_jobs_at_start_and_on_its_timer() {
    let d = Daemon::start(&[("EXPORT_FORMATS", "txt")]);
    let job = upload(&d, "?run=true");
    let first = job["id"].as_i64().unwrap();
    assert_eq!(d.wait_job(first, LONG)["status"], "done");
    let audio = d.dir.path().join(job["audio_path"].as_str().unwrap());
    let files = |audio: &std::path::Path| {
        ["", ".json", ".txt"].map(|ext| std::path::PathBuf::from(format!("{}{ext}", audio.display())))
    };
    let wait_files = |audio: &std::path::Path, present: bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !files(audio).iter().all(|f| f.exists() == present) {
            assert!(Instant::now() < deadline, "files of {} not {present}", audio.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_files(&audio, true);
    // "Old" is 2.6 s here; the job ended longer ago than that when the daemon starts again.
    std::thread::sleep(Duration::from_secs(3));
    let mut d = d;
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d = Daemon::start_in(dir, &[("EXPORT_FORMATS", "txt"), ("RETENTION_DAYS", "0.00003")]);
    assert_eq!(d.get(&format!("/api/jobs/{first}")).0, 404, "deleted at start\n{}", d.log());
    wait_files(&audio, false);

    let job = upload(&d, "?run=true");
    let second = job["id"].as_i64().unwrap();
    assert_eq!(d.wait_job(second, LONG)["status"], "done");
    let audio = d.dir.path().join(job["audio_path"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.get(&format!("/api/jobs/{second}")).0 != 404 {
        assert!(Instant::now() < deadline, "the timer never deleted job {second}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_files(&audio, false);
}

#[test]
fn watched_folder_jobs_use_the_configured_default_webhook() {
    let rx = Receiver::start(|_, _| 204);
    let url = rx.url("/default");
    let d = Daemon::start(&hooks_env(&[("WEBHOOK_URL", url.as_str()), ("SETTLE_S", "1")]));
    // An upload without its own webhook_url gets none.
    let uploaded = upload(&d, "?run=true")["id"].as_i64().unwrap();
    assert_eq!(d.wait_job(uploaded, LONG)["status"], "done");
    std::fs::create_dir_all(d.uploads()).unwrap();
    // Other content than the upload (the same content twice makes one job).
    std::fs::copy(fixture("jfk.ogg"), d.uploads().join("dropped.ogg")).unwrap();
    let hits = rx.wait(LONG, "the watched job's webhook", |h| !h.is_empty());
    let body = hits[0].json();
    assert_eq!((body["type"].as_str(), body["job"]["source"].as_str()), (Some("job.done"), Some("watch")));
    assert!(body["job"]["audio_path"].as_str().unwrap().ends_with("dropped.ogg"), "{body}");
    assert!(signature_ok(&hits[0]));
    assert!(webhook_log(&d, uploaded).is_empty(), "the upload had no webhook");
    assert_eq!(rx.hits().len(), 1, "{:#?}", rx.hits());
}

#[test]
fn a_job_that_ended_while_no_daemon_handled_it_still_gets_its_webhook() {
    let rx = Receiver::start(|_, _| 200);
    let mut d = Daemon::start(&hooks_env(&[]));
    let id = upload(&d, &format!("?webhook_url={}", rx.url("/hook")))["id"].as_i64().unwrap();
    d.signal("TERM");
    assert_eq!(d.wait_exit(LONG), Some(0), "{}", d.log());
    // The job's end as a daemon killed right after committing it leaves it: the row is written,
    // no event handler ever ran (before the outbox this webhook was lost for good).
    let store = diarized::store::Store::connect(&d.dir.path().join("jobs.db").to_string_lossy()).unwrap();
    store.finish(id, &diarized::store::Outcome::Done).unwrap();
    drop(store);
    let d = d.restart();
    let hits = rx.wait(LONG, "the job.done delivery after the restart", |h| !h.is_empty());
    assert_eq!(hits[0].json()["type"], "job.done");
    assert_eq!(hits[0].json()["job"]["id"], id);
    assert!(signature_ok(&hits[0]));
    let log = wait_log(&d, id, |l| l.first().is_some_and(|x| x["state"] == "delivered"));
    assert_eq!(log.len(), 1, "{log:#?}");
}
