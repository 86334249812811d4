//! The HTTP API against hostile and careless clients: authentication, Host and Origin checks,
//! bounded heads, fields and error messages, stalled clients, load and shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, fixture, json_reply};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// The `host:port` a daemon listens on.
fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_string()
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
    bytes: usize,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Answer { status, head: head.to_string(), body: body.to_string(), bytes: raw.len() }
    }

    fn error(&self) -> String {
        serde_json::from_str::<Value>(&self.body).unwrap()["error"].as_str().unwrap().to_string()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` (write errors ignored: the server may stop reading early) and reads the
/// answer until the server closes the connection; panics if that takes over a minute.
fn raw(d: &Daemon, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    let _ = s.write_all(request);
    read_to_close(&mut s, Duration::from_secs(60))
}

fn read_to_close(s: &mut TcpStream, timeout: Duration) -> Answer {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("no end of answer within {timeout:?}; got {:?}", String::from_utf8_lossy(&out))
            }
            // A reset after the answer (the server closed with our bytes unread).
            Err(_) => break,
        }
    }
    Answer::parse(&out)
}

fn get_with_host(d: &Daemon, path: &str, host: &str) -> Answer {
    raw(d, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
}

fn job_count(d: &Daemon, auth: Option<&str>) -> usize {
    let mut r = Daemon::client().get(d.url("/api/jobs"));
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    let (s, jobs) = json_reply(r.send().unwrap());
    assert_eq!(s, 200, "{jobs}");
    jobs.as_array().unwrap().len()
}

/// Polls `what` until it holds; panics after `timeout`.
fn wait_for(timeout: Duration, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn upload_id(d: &Daemon, query: &str, file: &str) -> String {
    upload_path(d, query, &fixture(file))
}

/// Uploads the file at `path` (201 expected) and returns its job id.
fn upload_path(d: &Daemon, query: &str, path: &std::path::Path) -> String {
    let (status, job) = d.upload(&format!("/api/jobs{query}"), path);
    assert_eq!(status, 201, "{job}");
    job["id"].to_string().trim_matches('"').to_string()
}

/// Uploads and queues 20 minutes of meeting audio (`ami_dev00` 40 times, joined by sox): a job
/// that holds a worker for the rest of a test on any machine. (A 30-s fixture did so on a slow
/// machine only; on a fast one the jobs queued behind it ran within a second or two.)
fn long_job(d: &Daemon) -> String {
    let long = d.dir.path().join("long.wav");
    let sox = std::process::Command::new("sox")
        .args(vec![fixture("ami_dev00.wav"); 40])
        .arg(&long)
        .status()
        .expect("sox runs");
    assert!(sox.success(), "sox failed to join the fixtures");
    upload_path(d, "?run=true", &long)
}

fn status_of(d: &Daemon, id: &str) -> String {
    d.get(&format!("/api/jobs/{id}")).1["status"].as_str().unwrap_or_default().to_string()
}

/// A multipart upload head and the start of its body; `declared` bytes are promised.
fn stalled_upload(d: &Daemon, declared: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    let head = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {declared}\r\n\r\n",
        addr(d)
    );
    let mut body =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n".to_vec();
    body.extend_from_slice(&std::fs::read(fixture("jfk.wav")).unwrap()[..64 * 1024]);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    s
}

fn wait_request(d: &Daemon, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    let req = format!(
        "POST /api/jobs/{id}/run?wait=true HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        addr(d)
    );
    s.write_all(req.as_bytes()).unwrap();
    s
}

#[test]
fn token_guards_every_route_but_healthz() {
    let tokens = format!("{TOKEN},second-token-0123456789");
    let d = Daemon::start(&[("API_TOKEN", &tokens)]);
    let c = Daemon::client();
    let auth = format!("Bearer {TOKEN}");

    assert_eq!(d.get("/healthz").0, 200);
    let r = c.get(d.url("/api/jobs")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (_, e) = json_reply(r);
    assert!(e["error"].as_str().unwrap().contains("Bearer"), "{e}");
    for bad in [
        "Bearer wrong-token-0123456789",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        TOKEN,
        "Bearer test-token-012345678",
    ] {
        let r = c.get(d.url("/api/jobs")).header("Authorization", bad).send().unwrap();
        assert_eq!(r.status(), 401, "{bad}");
    }
    for path in ["/api/status", "/api/jobs/1", "/api/nothing"] {
        assert_eq!(d.get(path).0, 401, "{path}");
    }

    let form = reqwest::blocking::multipart::Form::new().file("file", fixture("jfk.ogg")).unwrap();
    let (s, e) = json_reply(c.post(d.url("/api/jobs")).multipart(form).send().unwrap());
    assert_eq!(s, 401, "{e}");
    let form = reqwest::blocking::multipart::Form::new().file("file", fixture("jfk.ogg")).unwrap();
    let (s, job) =
        json_reply(c.post(d.url("/api/jobs")).header("Authorization", &auth).multipart(form).send().unwrap());
    assert_eq!(s, 201, "{job}");

    // Without the token nothing is deleted; the second token works too.
    assert_eq!(c.delete(d.url("/api/jobs?files=true")).send().unwrap().status(), 401);
    assert_eq!(job_count(&d, Some("Bearer second-token-0123456789")), 1);
    assert_eq!(std::fs::read_dir(d.uploads()).unwrap().count(), 1);
}

#[test]
fn non_loopback_bind_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, ok) in [
        (vec![], false),
        (vec![("API_TOKEN", "short")], false),
        (vec![("ALLOW_UNAUTHENTICATED", "true")], true),
        (vec![("API_TOKEN", TOKEN)], true),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_diarized"));
        cmd.current_dir(dir.path()).env_clear().env("BIND", "0.0.0.0:0").env("LOG_DIR", "none");
        for (k, v) in &extra {
            cmd.env(k, v);
        }
        if ok {
            let mut args: Vec<(&str, &str)> = vec![("BIND", "0.0.0.0:0")];
            args.extend(extra.iter().copied());
            let d = Daemon::start(&args);
            let (s, _) = d.get("/healthz");
            assert_eq!(s, 200, "{extra:?}");
            continue;
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("api_token") && err.lines().count() == 1, "{extra:?}: {err}");
    }
}

#[test]
fn host_and_origin_checks_stop_rebinding_and_cross_site_posts() {
    let d =
        Daemon::start(&[("ALLOWED_HOSTS", "transcribe.example"), ("ALLOWED_ORIGINS", "https://app.example")]);
    let port = addr(&d).rsplit(':').next().unwrap().to_string();

    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own name.
    for host in ["evil.example", &format!("evil.example:{port}"), "localhost:1"] {
        let a = get_with_host(&d, "/api/jobs", host);
        assert_eq!(a.status, 421, "{host}: {a:?}");
        assert!(a.error().contains("allowed_hosts"), "{a:?}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "transcribe.example".into()] {
        assert_eq!(get_with_host(&d, "/api/jobs", &host).status, 200, "{host}");
    }
    assert_eq!(get_with_host(&d, "/healthz", "evil.example").status, 200);
    assert_eq!(raw(&d, b"GET /api/jobs HTTP/1.0\r\n\r\n").status, 400);

    // A page on another site posting a form (a CORS "simple" request) is refused.
    let c = Daemon::client();
    let post = |headers: &[(&str, &str)]| {
        let form = reqwest::blocking::multipart::Form::new().file("file", fixture("jfk.ogg")).unwrap();
        let mut r = c.post(d.url("/api/jobs")).multipart(form);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        json_reply(r.send().unwrap())
    };
    for refused in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ] {
        let (s, e) = post(&refused);
        assert_eq!(s, 403, "{refused:?}: {e}");
        assert!(e["error"].as_str().unwrap().contains("allowed_origins"), "{e}");
    }
    assert_eq!(job_count(&d, None), 0, "a refused post made a job");
    assert_eq!(std::fs::read_dir(d.uploads()).unwrap().count(), 0, "a refused post left a file");

    let own = format!("http://127.0.0.1:{port}");
    for accepted in [
        vec![],
        vec![("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")],
        vec![("Origin", "https://app.example"), ("Sec-Fetch-Site", "cross-site")],
    ] {
        let (s, e) = post(&accepted);
        assert_eq!(s, 201, "{accepted:?}: {e}");
    }
    assert_eq!(job_count(&d, None), 3);
}

#[test]
fn hostile_heads_fields_and_stalled_bodies_are_bounded() {
    let d = Daemon::start(&[("HTTP_TIMEOUT_S", "3")]);
    let host = addr(&d);

    // A 1 MB query is refused by size; a 5 KB one is answered with a short message.
    let a = raw(
        &d,
        format!("GET /api/jobs?status={} HTTP/1.1\r\nHost: {host}\r\n\r\n", "x".repeat(1 << 20)).as_bytes(),
    );
    assert_eq!(a.status, 414, "{:?}", a.head);
    assert!(a.bytes < 1024, "{} bytes", a.bytes);
    let a = raw(
        &d,
        format!("GET /api/jobs?status={} HTTP/1.1\r\nHost: {host}\r\n\r\n", "x".repeat(5000)).as_bytes(),
    );
    assert_eq!(a.status, 400);
    assert!(a.bytes < 1024 && a.error().contains("truncated"), "{a:?}");

    // Big or many headers: 431.
    let big = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    assert_eq!(raw(&d, big.as_bytes()).status, 431);
    let many = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n{}\r\n", "X-A: b\r\n".repeat(200));
    assert_eq!(raw(&d, many.as_bytes()).status, 431);

    // A body declared far beyond any limit is refused before anything reads or allocates it.
    let huge = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000000000000\r\n\r\n");
    assert_eq!(raw(&d, huge.as_bytes()).status, 413);
    assert_eq!(d.get("/healthz").0, 200, "the daemon died");

    // A 50 MB speaker hint is not read whole nor echoed.
    let form = reqwest::blocking::multipart::Form::new()
        .text("num_speakers", "7".repeat(50 << 20))
        .file("file", fixture("jfk.ogg"))
        .unwrap();
    let r = Daemon::client().post(d.url("/api/jobs")).multipart(form).send().unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    assert!(text.len() < 1024 && text.contains("num_speakers"), "{} bytes: {:.200}", text.len(), text);

    // A body that stalls: the connection is dropped and nothing is kept.
    let mut s = stalled_upload(&d, 1_000_000);
    read_to_close(&mut s, Duration::from_secs(60));
    wait_for(Duration::from_secs(20), "the stalled upload's temp file to go", || {
        std::fs::read_dir(d.uploads()).unwrap().count() == 0
    });
    assert_eq!(job_count(&d, None), 0);
    assert!(d.log().contains("stalled"), "{}", d.log());
}

#[test]
fn stalled_uploads_and_open_waits_leave_health_and_reads_answering() {
    let d = Daemon::start(&[("HTTP_TIMEOUT_S", "600"), ("MAX_UPLOADS", "8"), ("MAX_WAITS", "16")]);
    // A long job first: it holds the only worker, so the waited jobs below stay queued and
    // their waits open.
    long_job(&d);
    let ids: Vec<String> = (0..50).map(|_| upload_id(&d, "", "en_ldc93s1.wav")).collect();

    let mut uploads: Vec<TcpStream> = (0..50).map(|_| stalled_upload(&d, 10_000_000)).collect();
    let mut waits: Vec<TcpStream> = ids.iter().map(|id| wait_request(&d, id)).collect();

    let c = Daemon::client();
    let r = c.get(d.url("/healthz")).timeout(Duration::from_secs(60)).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(d.url("/api/jobs")).timeout(Duration::from_secs(60)).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_reply(r).1.as_array().unwrap().len(), 51);

    // Those over the limits are answered 503 with Retry-After (on a loaded machine that can take
    // a while: wait up to 30 s for all of them); the rest stay open.
    let refused = |streams: &mut Vec<TcpStream>, expected: usize| {
        let mut answered = vec![false; streams.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pass = |answered: &mut Vec<bool>| {
            for (s, done) in streams.iter_mut().zip(answered.iter_mut()).filter(|(_, d)| !**d) {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                let mut buf = [0u8; 4096];
                if let Ok(len) = s.read(&mut buf) {
                    let a = Answer::parse(&buf[..len]);
                    assert_eq!(a.status, 503, "{a:?}");
                    assert_eq!(a.header("Retry-After").as_deref(), Some("5"), "{a:?}");
                    *done = true;
                }
            }
            answered.iter().filter(|d| **d).count()
        };
        while pass(&mut answered) < expected && Instant::now() < deadline {}
        // Nothing beyond the limit is refused.
        std::thread::sleep(Duration::from_millis(500));
        pass(&mut answered)
    };
    assert_eq!(refused(&mut uploads, 42), 42);
    assert_eq!(refused(&mut waits, 34), 34);
}

#[test]
fn sigterm_ends_open_waits_at_once_and_claims_no_new_job() {
    let grace = 2;
    let mut d = Daemon::start(&[("GRACE_PERIOD_S", "2")]);
    let long = long_job(&d);
    wait_for(Duration::from_secs(120), "the long job to start", || status_of(&d, &long) == "processing");
    let queued = upload_id(&d, "?run=true", "jfk.wav");
    let waited = upload_id(&d, "", "en_ldc93s1.wav");
    let mut wait = wait_request(&d, &waited);
    wait_for(Duration::from_secs(30), "the wait to queue its job", || status_of(&d, &waited) == "queued");

    d.signal("TERM");
    let a = read_to_close(&mut wait, Duration::from_secs(30));
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.header("Retry-After").is_some() && a.error().contains("shutting down"), "{a:?}");
    assert_eq!(d.wait_exit(Duration::from_secs(grace + 5)), Some(0), "{}", d.log());
    let log = d.log();
    for id in [&queued, &waited] {
        assert!(!log.contains(&format!("job started job={id} ")), "claimed {id} after SIGTERM:\n{log}");
    }
}
