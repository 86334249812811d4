//! Job-store benchmark (not a test): claim throughput and queue latency of no-op jobs.
//!
//! `store_bench DATABASE_URL [--jobs N] [--workers W]`: drains N queued no-op jobs with W worker
//! threads of one node (claim + finish), then measures enqueue → claimed latency of 1,000 jobs
//! queued one every 5 ms while the workers sleep until woken — in-process on SQLite, through a
//! second node's LISTEN on PostgreSQL. Prints one JSON line.
//! `store_bench DATABASE_URL --seed N`: inserts N finished jobs (for `GET /api/jobs` at scale).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use diarized::model::{Source, SpeakerHints};
use diarized::store::{NewJob, Outcome, RunStage, Store};

fn new_job(i: usize) -> NewJob {
    let uuid = uuid::Uuid::new_v4().to_string();
    NewJob {
        audio_path: format!("bench/{uuid}.wav"),
        uuid,
        original_filename: Some(format!("job{i}.wav")),
        sha256: format!("{i:064x}"),
        source: Source::Upload,
        speakers: SpeakerHints::default(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A counter the workers sleep on.
#[derive(Default)]
struct Wake {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Wake {
    fn bump(&self) {
        *self.count.lock().unwrap() += 1;
        self.changed.notify_all();
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().ok_or_else(|| {
        anyhow::anyhow!("usage: store_bench DATABASE_URL [--jobs N] [--workers W] | --seed N")
    })?;
    let opt = |name: &str, default: usize| -> anyhow::Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?.parse()?),
            None => Ok(default),
        }
    };
    let store = Arc::new(Store::connect(url)?);
    if let Some(n) = args.iter().position(|a| a == "--seed").map(|_| opt("--seed", 0)).transpose()? {
        for i in 0..n {
            let job = store.insert_job(&new_job(i))?.expect("fresh path");
            store.finish(job.id, &Outcome::Done)?;
        }
        println!("{{\"seeded\": {n}}}");
        return Ok(());
    }
    let (jobs, workers) = (opt("--jobs", 10_000)?, opt("--workers", 4)?);

    // 1. Throughput: drain `jobs` queued no-op jobs.
    for i in 0..jobs {
        let id = store.insert_job(&new_job(i))?.expect("fresh path").id;
        store.enqueue(id, RunStage::All)?;
    }
    let started = Instant::now();
    let drained: Vec<_> = (0..workers)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || -> anyhow::Result<usize> {
                let mut n = 0;
                while let Some((job, _)) = store.claim_next_job()? {
                    store.finish(job.id, &Outcome::Done)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let claimed: usize = drained.into_iter().map(|t| t.join().expect("worker")).sum::<anyhow::Result<_>>()?;
    let drain_s = started.elapsed().as_secs_f64();
    assert_eq!(claimed, jobs, "every job claimed once");

    // 2. Latency: jobs queued one at a time while the workers sleep until woken.
    const LATENCY_JOBS: usize = 1000;
    let wake = Arc::new(Wake::default());
    let queued_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let pg = url.starts_with("postgres");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The workers' node; on PostgreSQL a second connection pool, woken through LISTEN.
    let worker_node = if pg { Arc::new(Store::connect(url)?) } else { Arc::clone(&store) };
    if pg {
        let (node, wake, done) = (Arc::clone(&worker_node), Arc::clone(&wake), Arc::clone(&done));
        node.wait_for_queued(Duration::from_millis(1))?; // LISTEN before the first enqueue
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if node.wait_for_queued(Duration::from_millis(200)).unwrap_or(false) {
                    wake.bump();
                }
            }
        });
    }
    let pool: Vec<_> = (0..workers)
        .map(|_| {
            let (store, wake, queued_at, latencies, done) = (
                Arc::clone(&worker_node),
                Arc::clone(&wake),
                Arc::clone(&queued_at),
                Arc::clone(&latencies),
                Arc::clone(&done),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let seen = *wake.count.lock().unwrap();
                    if let Some((job, _)) = store.claim_next_job()? {
                        let at = queued_at.lock().unwrap().remove(&job.id).expect("enqueue time");
                        latencies.lock().unwrap().push(at.elapsed().as_secs_f64() * 1000.0);
                        store.finish(job.id, &Outcome::Done)?;
                        continue;
                    }
                    let guard = wake.count.lock().unwrap();
                    if *guard == seen {
                        let _ = wake.changed.wait_timeout(guard, Duration::from_millis(500)).unwrap();
                    }
                }
                Ok(())
            })
        })
        .collect();
    for i in 0..LATENCY_JOBS {
        let id = store.insert_job(&new_job(jobs + i))?.expect("fresh path").id;
        queued_at.lock().unwrap().insert(id, Instant::now());
        store.enqueue(id, RunStage::All)?;
        if !pg {
            wake.bump();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().unwrap().len() < LATENCY_JOBS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    wake.bump();
    for t in pool {
        t.join().expect("worker")?;
    }
    let mut lat = latencies.lock().unwrap().clone();
    anyhow::ensure!(lat.len() == LATENCY_JOBS, "only {} of {LATENCY_JOBS} jobs were claimed", lat.len());
    lat.sort_by(f64::total_cmp);
    println!(
        "{{\"backend\": \"{}\", \"jobs\": {jobs}, \"workers\": {workers}, \"claims_per_s\": {:.0}, \
         \"latency_ms_p50\": {:.2}, \"latency_ms_p99\": {:.2}}}",
        if pg { "postgres" } else { "sqlite" },
        jobs as f64 / drain_s,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    Ok(())
}
