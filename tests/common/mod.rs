//! Test harness: starts the real `diarized` binary on a free port with its own folders.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shared fixture recording.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("../shared/fixtures").join(name)
}

/// Where installed models live for tests (CI installs them before the tests run).
pub fn models_dir() -> PathBuf {
    std::env::var_os("MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("models-cache"))
}

/// A running daemon in a temporary working directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub base: String,
    env: Vec<(String, String)>,
    /// Command-line arguments (`worker`, `serve --no-workers`); none runs `serve`.
    args: Vec<String>,
    pub stderr_log: PathBuf,
}

impl Daemon {
    /// Starts a daemon with tiny.en, no diarization, no analysis, one worker, plus `extra` env.
    pub fn start(extra: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts a daemon in an existing directory (to restart on the same state).
    pub fn start_in(dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Daemon {
        Self::start_with_args(dir, &[], extra)
    }

    /// Starts `diarized ARGS…` (e.g. `worker`) in `dir`; a worker has no HTTP address (`base` is
    /// empty).
    pub fn start_with_args(dir: tempfile::TempDir, args: &[&str], extra: &[(&str, &str)]) -> Daemon {
        let mut env: Vec<(String, String)> = [
            ("BIND", "127.0.0.1:0"),
            ("UPLOAD_FOLDER", "uploads"),
            ("DATABASE_URL", "sqlite:///jobs.db"),
            ("LOG_DIR", "logs"),
            ("WHISPER_MODEL", "tiny.en"),
            ("WHISPER_THREADS", "1"),
            ("LLM_MODEL", "none"),
            ("DIARIZATION", "false"),
            ("RUST_LOG", "info,diarized=debug"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("MODELS_DIR".into(), models_dir().to_string_lossy().into_owned()));
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        Self::spawn(dir, env, args.iter().map(|a| a.to_string()).collect())
    }

    fn spawn(dir: tempfile::TempDir, env: Vec<(String, String)>, args: Vec<String>) -> Daemon {
        let stderr_log = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_diarized"));
        cmd.args(&args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            // The API's private socket folder goes into the test's folder, which is removed
            // with it: the daemon removes it on a clean exit, but tests end it with SIGKILL.
            .env("RUNTIME_DIRECTORY", dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting diarized");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let mut addr = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        if line.starts_with("diarized worker running") {
            addr.clear();
        }
        assert!(
            addr.starts_with("http://") || line.starts_with("diarized worker running"),
            "daemon did not start: {line:?}\n{}",
            std::fs::read_to_string(&stderr_log).unwrap_or_default()
        );
        Daemon { dir, child, base: addr, env, args, stderr_log }
    }

    /// Kills with SIGKILL and starts again on the same folder and database.
    pub fn kill9_and_restart(mut self) -> Daemon {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.restart()
    }

    /// Starts again on the same folder and database (the old process must have exited).
    pub fn restart(mut self) -> Daemon {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let env = std::mem::take(&mut self.env);
        let args = std::mem::take(&mut self.args);
        drop(self);
        Self::spawn(dir, env, args)
    }

    /// Sends a signal with `kill`.
    pub fn signal(&self, sig: &str) {
        let ok =
            Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn uploads(&self) -> PathBuf {
        self.dir.path().join("uploads")
    }

    /// The sidecar `name` in the upload folder. A job's status turns `done` when its results
    /// are stored and the sidecar follows, so this waits for it (panics after 30 s).
    pub fn sidecar(&self, name: &str) -> serde_json::Value {
        let path = self.uploads().join(name);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                return v;
            }
            assert!(Instant::now() < deadline, "no sidecar {}\n{}", path.display(), self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn client() -> reqwest::blocking::Client {
        // reqwest is built with `rustls-no-provider` (for the Gemini client): pick ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(600)).build().unwrap()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        json_reply(Self::client().get(self.url(path)).send().unwrap())
    }

    pub fn upload(&self, path: &str, file: &Path) -> (u16, Value) {
        let form = reqwest::blocking::multipart::Form::new().file("file", file).unwrap();
        json_reply(Self::client().post(self.url(path)).multipart(form).send().unwrap())
    }

    /// Polls a job until it leaves uploaded/queued/processing; panics if it has not by `timeout`.
    pub fn wait_job(&self, id: i64, timeout: Duration) -> Value {
        self.wait_job_status(id, timeout, |s| !matches!(s, "queued" | "processing" | "uploaded"))
    }

    /// Polls a job until its status satisfies `pred`; panics if it has not by `timeout`.
    pub fn wait_job_status(&self, id: i64, timeout: Duration, pred: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.get(&format!("/api/jobs/{id}"));
            if pred(job["status"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(Instant::now() < deadline, "timed out waiting for job {id}: {job}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls the job list until `pred` holds; panics if it does not by `timeout`.
    pub fn wait_jobs(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, jobs) = self.get("/api/jobs");
            let jobs = jobs.as_array().cloned().unwrap_or_default();
            if pred(&jobs) {
                return jobs;
            }
            assert!(Instant::now() < deadline, "timed out waiting on the job list: {jobs:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Peak resident memory of the daemon so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json_reply(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Lower-case words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').collect::<String>().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hyp` against `reference` (Levenshtein over normalised words).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let (r, h) = (words(reference), words(hyp));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

pub const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";

/// An open SSE connection: the raw socket after the response head.
pub struct Stream {
    reader: BufReader<TcpStream>,
}

impl Stream {
    /// Opens `path` on `d`; a read waits at most `timeout`.
    pub fn open(d: &Daemon, path: &str, timeout: Duration) -> Stream {
        let addr = d.base.trim_start_matches("http://");
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(timeout)).unwrap();
        write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let mut reader = BufReader::new(conn);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(reader.read_line(&mut head).unwrap() > 0, "closed in the head: {head}");
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        Stream { reader }
    }

    /// The next event as (name, data); `None` at the end of the stream. Comments are skipped.
    pub fn next(&mut self) -> Option<(String, Value)> {
        let (mut name, mut data) = (None, None);
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if let (Some(n), Some(d)) = (name.take(), data.take()) {
                    return Some((n, d));
                }
            } else if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(d).unwrap());
            }
        }
    }
}
