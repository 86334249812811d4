//! Running as a system service: systemd's notify protocol from the real binary, an installed
//! (moved) binary finding its models through `MODELS_DIR` only, and `make install`'s layout.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Daemon, fixture, models_dir, repo};

/// Datagrams received on `socket` until `want` has arrived; panics after `timeout`.
fn receive_until(socket: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want:?} within {timeout:?}; received {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
}

#[test]
fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path = path.to_str().unwrap();
    // A 4 s watchdog: pings every 2 s.
    let mut d = Daemon::start(&[("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "4000000")]);
    let mut seen = Vec::new();
    receive_until(&socket, "READY=1", Duration::from_secs(30), &mut seen);
    assert_eq!(seen[0], "READY=1", "READY=1 comes first: {seen:?}");
    // Ready means the API answers.
    assert_eq!(d.get("/healthz").0, 200);
    for _ in 0..2 {
        seen.retain(|m| m != "WATCHDOG=1");
        receive_until(&socket, "WATCHDOG=1", Duration::from_secs(30), &mut seen);
    }
    d.signal("TERM");
    receive_until(&socket, "STOPPING=1", Duration::from_secs(30), &mut seen);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0), "{}", d.log());
}

/// Runs `bin` with only `env` (plus PATH) in `cwd`.
fn run(bin: &Path, cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Copies the committed diarization model files (what `make install` puts in share/).
fn copy_models(to: &Path) {
    let from = repo().join("models");
    std::fs::create_dir_all(to.join("licenses")).unwrap();
    for name in
        std::fs::read_to_string(from.join("SHA256SUMS")).unwrap().lines().filter_map(|l| l.split_once("  "))
    {
        std::fs::copy(from.join(name.1), to.join(name.1)).unwrap();
    }
    std::fs::copy(from.join("SHA256SUMS"), to.join("SHA256SUMS")).unwrap();
}

#[test]
fn a_moved_binary_finds_models_through_models_dir_only() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let bin = prefix.join("bin/diarized");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_diarized"), &bin).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();

    // No package data beside the binary and no ./models: the build tree is not a source.
    let models = tmp.path().join("state/models-cache");
    let out = run(&bin, &elsewhere, &[("MODELS_DIR", &models)], &["models", "install", "diarization"]);
    assert!(!out.status.success(), "installed from the build tree? {}", text(&out));
    let message = text(&out);
    assert!(
        message.contains("share/diarized/models") && message.contains("DIARIZED_DIARIZATION_MODELS"),
        "{message}"
    );

    // With the files where `make install` puts them, relative to the binary.
    copy_models(&prefix.join("share/diarized/models"));
    let out = run(&bin, &elsewhere, &[("MODELS_DIR", &models)], &["models", "install", "diarization"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(models.join("diarization/segmentation-3.0.onnx").is_file());
    let out = run(&bin, &elsewhere, &[("MODELS_DIR", &models)], &["models", "list"]);
    let list = text(&out);
    assert!(list.lines().any(|l| l.starts_with("diarization") && l.contains(" installed")), "{list}");

    // Transcribe with diarization from the moved binary, the whisper model beside the freshly
    // installed diarization models, the package data gone.
    std::fs::remove_dir_all(prefix.join("share")).unwrap();
    std::os::unix::fs::symlink(models_dir().join("ggml-tiny.en.bin"), models.join("ggml-tiny.en.bin"))
        .unwrap();
    let env: Vec<(&str, PathBuf)> = vec![
        ("MODELS_DIR", models.clone()),
        ("WHISPER_MODEL", "tiny.en".into()),
        ("WHISPER_THREADS", "1".into()),
        ("DIARIZATION", "true".into()),
        ("LLM_MODEL", "none".into()),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let audio = fixture("jfk.wav");
    let out = run(&bin, &elsewhere, &env, &["transcribe", audio.to_str().unwrap(), "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let turns = result["speaker_turns"].as_array().map_or(0, Vec::len);
    assert!(turns > 0, "no speaker turns: {result}");
    let words: Vec<&str> =
        result["segments"].as_array().unwrap().iter().filter_map(|s| s["text"].as_str()).collect();
    assert!(common::wer(common::JFK, &words.join(" ")) < 0.3, "{result}");
}

#[test]
fn make_install_lays_out_the_service_and_keeps_an_edited_config() {
    let dest = tempfile::tempdir().unwrap();
    let root = dest.path();
    let install = || {
        Command::new("make")
            .current_dir(repo())
            .args(["--no-print-directory", "install"])
            .arg(format!("DESTDIR={}", root.display()))
            .arg("MODELS=diarization")
            .output()
            .unwrap()
    };
    let out = install();
    assert!(out.status.success(), "{}", text(&out));
    for file in [
        "usr/local/bin/diarized",
        "usr/local/bin/diarized-llm",
        "usr/local/share/diarized/models/SHA256SUMS",
        "usr/local/share/diarized/setup-service.sh",
        "usr/local/share/doc/diarized/README.md",
        "var/lib/diarized/models-cache/diarization/campplus-192.onnx",
    ] {
        assert!(root.join(file).is_file(), "{file} not installed\n{}", text(&out));
    }
    assert!(root.join("var/lib/diarized/uploads").is_dir());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/diarized.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/local/bin/diarized serve\n") && unit.contains("Type=notify"),
        "{unit}"
    );
    let config = root.join("etc/diarized/config.toml");
    assert_eq!(std::fs::read(&config).unwrap(), std::fs::read(repo().join("config.toml.example")).unwrap());

    // A second install keeps the operator's config.
    std::fs::write(&config, "workers = 2\n").unwrap();
    let out = install();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "workers = 2\n");
    assert!(text(&out).contains("keeping existing"), "{}", text(&out));
}
