//! Property tests beyond the examples: random and mutated input for the config parser, every
//! audio decoder (on the real fixtures), the query parser and the multipart reader (over HTTP,
//! against the real daemon). Nothing may panic, answer 5xx or hold more than a bound.
//!
//! `make test` runs a few dozen cases per property; `PROPTEST_CASES=N` runs more
//! (`bench/robustness.sh` does a long run).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Daemon, fixture};
use diarized::audio::{self, AudioError};
use diarized::config::Config;
use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestRunner};

/// `PROPTEST_CASES`, else `short` (the CI run).
fn runner(short: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(short);
    TestRunner::new(Cases { cases, failure_persistence: None, ..Cases::default() })
}

/// An edit of a byte string: the mutations a damaged or hostile file shows.
#[derive(Debug, Clone)]
enum Edit {
    /// Overwrite the byte at this fraction of the length.
    Set(f64, u8),
    /// Write a little-endian u32 (a size, rate or count field) at this fraction.
    Word(f64, u32),
    /// Cut the data at this fraction.
    Truncate(f64),
    /// Insert random bytes at this fraction.
    Insert(f64, Vec<u8>),
    /// Remove a run of bytes at this fraction.
    Remove(f64, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Headers hold most fields: half of the edits go to the first 2 %.
    let at = prop_oneof![0.0..0.02f64, 0.0..1.0f64];
    let words = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), Just(0x7FFF_FFFF), any::<u32>()];
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (at.clone(), words).prop_map(|(a, w)| Edit::Word(a, w)),
        (0.0..1.0f64).prop_map(Edit::Truncate),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(a, v)| Edit::Insert(a, v)),
        (at, 1..4096usize).prop_map(|(a, n)| Edit::Remove(a, n)),
    ]
}

fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = base.to_vec();
    let pos = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
    for e in edits {
        let len = out.len();
        match e {
            Edit::Set(f, b) => {
                if let Some(x) = out.get_mut(pos(*f, len)) {
                    *x = *b;
                }
            }
            Edit::Word(f, w) => {
                let at = pos(*f, len).min(len.saturating_sub(4));
                if len >= 4 {
                    out[at..at + 4].copy_from_slice(&w.to_le_bytes());
                }
            }
            Edit::Truncate(f) => out.truncate(pos(*f, len)),
            Edit::Insert(f, bytes) => {
                let at = pos(*f, len);
                out.splice(at..at, bytes.iter().copied());
            }
            Edit::Remove(f, n) => {
                let at = pos(*f, len);
                out.drain(at..(at + n).min(len));
            }
        }
    }
    out
}

#[test]
fn the_config_parser_takes_any_file_dotenv_and_environment() {
    let example = std::fs::read(common::repo().join("config.toml.example")).unwrap();
    let keys = [
        "BIND",
        "MAX_CONTENT_LENGTH",
        "MAX_AUDIO_SECONDS",
        "SETTLE_S",
        "ALLOWED_EXTENSIONS",
        "WORKERS",
        "WHISPER_THREADS",
        "LANGUAGE",
        "DIARIZATION",
        "LLM_MODEL",
        "API_TOKEN",
        "ALLOWED_HOSTS",
        "ALLOWED_ORIGINS",
        "HTTP_THREADS",
        "MAX_CONNECTIONS",
        "HTTP_TIMEOUT_S",
        "DATABASE_URL",
    ];
    let value = prop_oneof![
        "[0-9]{0,25}",
        "-?[0-9]{1,5}(\\.[0-9]{1,3})?",
        "(true|false|yes|0|1|on| )",
        "[ -~]{0,40}",
        any::<String>(),
    ];
    let env = prop::collection::vec((prop::sample::select(keys.to_vec()), value), 0..6);
    let file = prop_oneof![
        prop::collection::vec(edit(), 1..6).prop_map(move |e| apply(&example, &e)),
        prop::collection::vec(any::<u8>(), 0..512),
        "([a-z_]{1,20} = (\"[ -~]{0,20}\"|[0-9]{1,20}|true|\\[\\]|\\{\\}|-1|1e400)\n){1,8}"
            .prop_map(String::into_bytes),
    ];
    let dotenv = prop_oneof![
        "([A-Z_]{1,20}=[ -~]{0,30}\n){0,6}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..256),
    ];
    let dir = tempfile::tempdir().unwrap();
    runner(256)
        .run(&(file, dotenv, env), |(file, dotenv, env)| {
            let (config, dotenv_path) = (dir.path().join("config.toml"), dir.path().join(".env"));
            std::fs::write(&config, &file).unwrap();
            std::fs::write(&dotenv_path, &dotenv).unwrap();
            let get = |k: &str| env.iter().rev().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
            // Loaded or refused, never a panic; a refusal is the one line the daemon prints
            // before exiting with code 2.
            if let Err(e) = Config::load_layered(Some(&config), &dotenv_path, get) {
                let line = e.to_string();
                prop_assert!(!line.trim().is_empty() && !line.contains('\n'), "{line:?}");
            }
            Ok(())
        })
        .unwrap();
}

/// Probes and decodes `bytes` as a file named `name`: an error or audio within `limit_s`.
fn decode_bounded(dir: &Path, name: &str, bytes: &[u8], limit_s: f64) -> Result<(), TestCaseError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let _ = audio::probe_file(&path);
    match audio::decode_file_limited(&path, limit_s) {
        Ok(a) => {
            // At most the limit, plus one resampler chunk of rounding.
            let bound = (limit_s * f64::from(audio::SAMPLE_RATE)) as usize + 4096;
            prop_assert!(a.len() <= bound, "{name}: {} samples over {bound}", a.len());
        }
        Err(AudioError::Open(..)) => prop_assert!(false, "{name}: could not open our own file"),
        Err(_) => {}
    }
    Ok(())
}

#[test]
fn every_decoder_survives_mutated_fixtures_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    for name in
        ["jfk.wav", "jfk.mp3", "jfk.m4a", "jfk.ogg", "jfk.opus.ogg", "jfk.webm", "stereo_diarization.wav"]
    {
        let base = std::fs::read(fixture(name)).unwrap();
        // 11 s of speech: a limit of 12 s leaves room for the real audio only, so a mutation
        // that makes the decoder produce more (a lying length, a repeated frame) is caught.
        let limit = audio::decode_file_limited(&fixture(name), 1e9).unwrap().duration_s() + 1.0;
        let ext = name.rsplit('.').next().unwrap();
        runner(24)
            .run(&prop::collection::vec(edit(), 1..8), |edits| {
                decode_bounded(dir.path(), &format!("case.{ext}"), &apply(&base, &edits), limit)
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn every_decoder_survives_random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // Random bytes, and random bytes behind each container's magic so the real parsers run.
    let magic: Vec<&[u8]> = vec![
        &b""[..],
        &b"RIFF\x24\x00\x00\x00WAVEfmt "[..],
        &b"ID3\x03\x00"[..],
        &b"\xff\xfb"[..],
        &b"OggS\x00\x02"[..],
        &b"\x1a\x45\xdf\xa3"[..],
        &b"\x00\x00\x00\x20ftypM4A "[..],
    ];
    let strategy = (
        prop::sample::select(magic),
        prop::collection::vec(any::<u8>(), 0..8192),
        prop::sample::select(vec!["wav", "mp3", "m4a", "ogg", "webm"]),
    );
    runner(128)
        .run(&strategy, |(magic, body, ext)| {
            decode_bounded(dir.path(), &format!("random.{ext}"), &[magic, &body[..]].concat(), 30.0)
        })
        .unwrap();
}

/// Sends raw bytes and returns (status, bytes of the whole answer); panics on silence.
fn raw(d: &Daemon, request: &[u8]) -> (u16, usize) {
    let mut s = TcpStream::connect(d.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    if let Err(e) = s.read_to_end(&mut answer) {
        assert!(!answer.is_empty(), "no answer: {e}");
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, answer.len())
}

#[test]
fn the_query_parser_answers_any_query_with_a_bounded_4xx_or_success() {
    let d = Daemon::start(&[]);
    assert_eq!(d.upload("/api/jobs", &fixture("jfk.wav")).0, 201);
    let targets = prop::sample::select(vec![
        "/api/jobs",
        "/api/jobs/1",
        "/api/jobs/1/transcript",
        "/api/jobs/1/segments",
        "/api/jobs/999999999999999999999",
        "/api/status",
    ]);
    let key = prop_oneof![
        prop::sample::select(vec!["limit", "offset", "status", "format", "files", "wait", "stage", "run"])
            .prop_map(String::from),
        "[!-~&&[^&=#]]{0,12}",
    ];
    let val = prop_oneof![
        "-?[0-9]{0,24}",
        "(true|false|yes|no|txt|srt|vtt|json|rttm|done|error|analyze)",
        "(%[0-9a-fA-F]{2}|%|%z|[!-~&&[^&#]]){0,40}",
        "[a-z]{300,3000}",
    ];
    let query = prop::collection::vec((key, val), 0..6);
    // Reads only: running or deleting jobs is not what this test is about.
    runner(48)
        .run(&(targets, query, prop::sample::select(vec!["GET", "HEAD"])), |(target, query, method)| {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let request = format!(
                "{method} {target}?{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                q.join("&"),
                d.base.trim_start_matches("http://")
            );
            let (status, bytes) = raw(&d, request.as_bytes());
            prop_assert!((200..500).contains(&status), "{request:?} → {status}");
            // Errors quote input cut short: an answer never echoes a long query.
            if status >= 400 {
                prop_assert!(bytes < 2048, "{request:?} → {bytes} bytes");
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(d.get("/healthz").0, 200, "{}", d.log());
}

/// A well-formed multipart upload of `file` (as `name`) plus a speaker hint.
fn multipart(boundary: &str, name: &str, file: &[u8], hint: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"num_speakers\"\r\n\r\n{hint}\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[test]
fn the_multipart_reader_answers_any_body_with_4xx_or_201_and_keeps_nothing_rejected() {
    let d = Daemon::start(&[]);
    let host = d.base.trim_start_matches("http://").to_string();
    let wav = std::fs::read(fixture("jfk.wav")).unwrap();
    // Mutations of a valid upload (header region and body), and bodies from scratch.
    let body = prop_oneof![
        (prop::collection::vec(edit(), 1..6), "[a-zA-Z0-9'()+_,./:=? -]{1,70}", "([1-9]|[0-9]{1,3})")
            .prop_map(move |(edits, boundary, hint)| (
                boundary.clone(),
                apply(&multipart(&boundary, "a.wav", &wav[..4096], &hint), &edits)
            )),
        ("[a-zA-Z0-9]{1,70}", prop::collection::vec(any::<u8>(), 0..2048)).prop_map(|(b, body)| (b, body)),
    ];
    runner(48)
        .run(&body, |(boundary, body)| {
            let mut request = format!("POST /api/jobs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            request.extend_from_slice(&body);
            let (status, bytes) = raw(&d, &request);
            prop_assert!(status == 201 || (400..500).contains(&status), "→ {status}\n{}", d.log());
            if status != 201 {
                prop_assert!(bytes < 2048, "{bytes}-byte error answer");
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(d.get("/healthz").0, 200, "{}", d.log());
    // One stored file per job; no temp file of a rejected upload is left.
    let files: Vec<String> = std::fs::read_dir(d.uploads())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().all(|f| !f.contains(".upload.")), "{files:?}");
    let audio = files.iter().filter(|f| !f.starts_with('.') && !f.ends_with(".json")).count();
    let listed = Daemon::client().get(d.url("/api/jobs")).send().unwrap();
    let total: usize = listed.headers()["x-total-count"].to_str().unwrap().parse().unwrap();
    assert_eq!(total, audio, "{files:?}");
}
