//! Several processes on one PostgreSQL database and one shared upload folder: one `serve` and
//! two `worker` nodes drain a queue; a worker killed mid-job loses nothing; the serve node's
//! event streams follow the jobs the workers run.
//! Needs `DIARIZED_TEST_PG_URL` (`make test` starts a throwaway cluster).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, Stream};
use diarized::store::test_support::{ScratchDatabase, postgres_url};

const JOBS: usize = 30;
const WAIT: Duration = Duration::from_secs(600);

/// `n` distinct short recordings: the first three seconds of jfk.wav, each padded with a
/// different length of silence (so no two have the same content).
fn short_recordings(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut reader = hound::WavReader::open(common::fixture("jfk.wav")).unwrap();
    let spec = reader.spec();
    let samples: Vec<i16> =
        reader.samples::<i16>().take(3 * spec.sample_rate as usize).map(Result::unwrap).collect();
    (0..n)
        .map(|i| {
            let path = dir.join(format!("clip{i:02}.wav"));
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            for s in samples.iter().copied().chain(std::iter::repeat_n(0, 16 * (i + 1))) {
                w.write_sample(s).unwrap();
            }
            w.finalize().unwrap();
            path
        })
        .collect()
}

/// Lines of a node's log that record a job's start, as job ids.
fn started_jobs(node: &Daemon) -> Vec<i64> {
    node.log()
        .lines()
        .filter(|l| l.contains("job started"))
        .filter_map(|l| l.split("job=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_serve_and_two_workers_run_every_job_once_and_take_over_a_killed_workers_job() {
    let Some(admin) = postgres_url() else { return };
    let db = ScratchDatabase::create(&admin).unwrap();
    let shared = tempfile::tempdir().unwrap();
    let uploads = shared.path().join("uploads");
    let uploads_str = uploads.to_string_lossy().into_owned();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("UPLOAD_FOLDER", uploads_str.as_str()),
        ("JOB_LEASE_S", "5"),
        ("WORKERS", "1"),
    ];
    let serve = Daemon::start(&env);
    let clips = short_recordings(shared.path(), JOBS);
    let ids: Vec<i64> = clips
        .iter()
        .map(|clip| {
            let (status, job) = serve.upload("/api/jobs?run=true", clip);
            assert_eq!(status, 201, "{job}");
            job["id"].as_i64().unwrap()
        })
        .collect();
    // One event stream per job on the serve node; each ends when its job ends, wherever it ran.
    let streams: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut stream = Stream::open(&serve, &format!("/api/jobs/{id}/events"), WAIT);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while let Some((name, data)) = stream.next() {
                    if name == "status" {
                        statuses.push(data["status"].as_str().unwrap_or_default().to_owned());
                    }
                }
                let _ = tx.send(statuses);
            });
            rx
        })
        .collect();

    // Worker A: killed with SIGKILL as soon as it starts its first job (its models are still
    // loading then, so the job is certainly unfinished).
    let mut a = Daemon::start_with_args(tempfile::tempdir().unwrap(), &["worker"], &env);
    let deadline = Instant::now() + WAIT;
    let killed = loop {
        if let Some(&id) = started_jobs(&a).first() {
            break id;
        }
        assert!(Instant::now() < deadline, "worker A started no job:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(10));
    };
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let b = Daemon::start_with_args(tempfile::tempdir().unwrap(), &["worker"], &env);

    let jobs: Vec<serde_json::Value> = ids.iter().map(|&id| serve.wait_job(id, WAIT)).collect();
    for job in &jobs {
        let id = job["id"].as_i64().unwrap();
        assert_eq!(job["status"], "done", "{job}\n{}\n{}", serve.log(), b.log());
        let attempts = if id == killed { 2 } else { 1 };
        assert_eq!(job["attempts"], attempts, "job {id}: {job}");
        let text = job["transcript"].as_str().unwrap_or_default().to_lowercase();
        assert!(text.contains("fellow"), "job {id} transcript: {text:?}");
    }
    // Every start is in some node's log: each job once, the killed one again elsewhere.
    let (on_a, on_serve, on_b) = (started_jobs(&a), started_jobs(&serve), started_jobs(&b));
    assert_eq!(on_a, [killed]);
    let mut ran: Vec<i64> = on_serve.iter().chain(&on_b).copied().collect();
    ran.sort();
    assert_eq!(ran, ids, "every job ran exactly once on the live nodes");
    assert!(!on_serve.is_empty() && !on_b.is_empty(), "both live nodes worked: {on_serve:?} {on_b:?}");
    // One sidecar per job, beside its audio in the shared folder. It is written right after the
    // job is recorded as done (the store comes first), so the last one may land a moment later.
    let sidecars = || {
        std::fs::read_dir(&uploads)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sidecars() < JOBS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sidecars(), JOBS);
    // The streams of the jobs worker B ran saw them end too (relayed over NOTIFY).
    for (id, stream) in ids.iter().zip(streams) {
        let statuses = stream
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("job {id} is done but its event stream did not end: {e}"));
        assert_eq!(statuses.last().map(String::as_str), Some("done"), "job {id}: {statuses:?}");
    }
    // The status page lists the nodes with their workers and heartbeat age.
    let (_, status) = serve.get("/api/status");
    let nodes = status["nodes"].as_array().unwrap();
    let roles: Vec<&str> = nodes.iter().filter_map(|n| n["role"].as_str()).collect();
    assert!(roles.contains(&"serve") && roles.iter().filter(|r| **r == "worker").count() >= 1, "{status}");
    assert!(nodes.iter().all(|n| n["workers"] == 1 && n["heartbeat_age_s"].is_number()), "{status}");
}
