//! Pipeline workers: claim queued jobs, run the stages, store results, write sidecars.
//!
//! The store is the queue, so a crash loses nothing: jobs left `processing` are queued again
//! at start. Workers sleep on a condition variable and are woken when a job is queued.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigHandle};
use crate::model::{Analysis, Job, Segment, SpeakerTurn, Status, Transcript};
use crate::pipeline::{ResultSink, StageError, Stages};
use crate::render::{JobResult, write_sidecar};
use crate::store::{RunStage, Store, StoreError};

/// Builds a worker's stages from the configuration (models are loaded here).
pub type StageFactory = Arc<dyn Fn(&Config) -> Stages + Send + Sync>;

/// The shared queue state.
pub struct Queue {
    store: Arc<Store>,
    config: Arc<ConfigHandle>,
    stopping: AtomicBool,
    /// Bumped when work is queued; workers wait on it.
    wake: Signal,
    /// Bumped when a job ends; `wait_until_finished` waits on it.
    finished: Signal,
    /// worker index → id of the job it is running.
    running: Mutex<HashMap<usize, String>>,
}

impl Queue {
    /// Creates the queue and puts interrupted jobs back in it.
    pub fn new(store: Arc<Store>, config: Arc<ConfigHandle>) -> Result<Arc<Self>, StoreError> {
        let requeued = store.requeue_interrupted()?;
        if requeued > 0 {
            tracing::warn!(requeued, "jobs interrupted by the last shutdown were queued again");
        }
        Ok(Arc::new(Self {
            store,
            config,
            stopping: AtomicBool::new(false),
            wake: Signal::default(),
            finished: Signal::default(),
            running: Mutex::new(HashMap::new()),
        }))
    }

    /// Queues a job and wakes a worker.
    pub fn submit(&self, id: &str, stage: RunStage) -> Result<Job, StoreError> {
        let job = self.store.enqueue(id, stage)?;
        self.notify();
        Ok(job)
    }

    /// Wakes the workers (something was queued).
    pub fn notify(&self) {
        self.wake.bump();
    }

    /// Jobs being run right now, by worker.
    pub fn running(&self) -> Vec<String> {
        lock(&self.running).values().cloned().collect()
    }

    /// Starts `n` workers.
    pub fn start_workers(self: &Arc<Self>, n: usize, factory: StageFactory) -> Vec<JoinHandle<()>> {
        (0..n)
            .map(|i| {
                let queue = Arc::clone(self);
                let factory = Arc::clone(&factory);
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || queue.worker_loop(i, factory))
                    .expect("spawning a worker thread")
            })
            .collect()
    }

    fn worker_loop(&self, index: usize, factory: StageFactory) {
        // Stages are built on the first job and rebuilt after a config reload.
        let mut stages: Option<(u64, Stages)> = None;
        while !self.stopping.load(Ordering::SeqCst) {
            let seen = *self.wake.lock();
            let claimed = match self.store.claim_next_job() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim a job");
                    None
                }
            };
            let Some((job, stage)) = claimed else {
                let guard = self.wake.lock();
                if *guard == seen && !self.stopping.load(Ordering::SeqCst) {
                    // The timeout only guards against a lost wake-up; no work is polled for.
                    self.wake.wait(guard, Duration::from_secs(30));
                }
                continue;
            };
            lock(&self.running).insert(index, job.id.clone());
            let generation = self.config.generation();
            let cfg = self.config.get();
            if stages.as_ref().is_none_or(|(g, _)| *g != generation) {
                stages = Some((generation, factory(&cfg)));
            }
            let (_, st) = stages.as_mut().expect("stages were just built");
            self.run_job(st, &job, stage, &cfg);
            lock(&self.running).remove(&index);
            self.finished.bump();
        }
    }

    fn run_job(&self, stages: &mut Stages, job: &Job, stage: RunStage, cfg: &Config) {
        let started = Instant::now();
        tracing::info!(job = %job.id, path = %job.audio_path, ?stage, "job started");
        let mut sink = StoreSink { store: &self.store, id: &job.id, last_percent: AtomicU32::new(u32::MAX) };
        let outcome = match stage {
            RunStage::All => {
                let hints = crate::model::SpeakerHints {
                    num_speakers: job.speakers.num_speakers.or(cfg.num_speakers),
                    min_speakers: job.speakers.min_speakers.or(cfg.min_speakers),
                    max_speakers: job.speakers.max_speakers.or(cfg.max_speakers),
                };
                stages.run(Path::new(&job.audio_path), hints, &mut sink)
            }
            RunStage::Analyze => match self.store.segments(&job.id) {
                Ok(segs) if segs.is_empty() => Err(StageError::new(
                    "analyze",
                    "no stored transcript to analyze; run the whole job first",
                )),
                Ok(segs) => stages.analyze(&segs, job.language.as_deref(), &mut sink),
                Err(e) => Err(StageError::new("analyze", e.to_string())),
            },
        };
        let outcome = outcome.map_err(|e| e.to_string());
        match &outcome {
            Ok(()) => tracing::info!(job = %job.id, secs = started.elapsed().as_secs_f32(), "job done"),
            Err(e) => tracing::warn!(job = %job.id, error = %e, "job failed"),
        }
        match self.store.finish(&job.id, outcome) {
            Ok(_) => self.write_sidecar(&job.id, cfg.results_folder.as_deref()),
            // The job may have been deleted while it ran.
            Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot record the job's end"),
        }
    }

    /// Writes the sidecar of a stored job (after a run or an edit); failures are logged.
    pub fn write_sidecar(&self, id: &str, results_folder: Option<&Path>) {
        let result = (|| -> Result<JobResult, StoreError> {
            Ok(JobResult {
                job: self.store.job(id)?,
                segments: self.store.segments(id)?,
                speaker_turns: self.store.speaker_turns(id)?,
            })
        })();
        match result.map(|r| write_sidecar(&r, results_folder)) {
            Ok(Ok(path)) => tracing::debug!(job = id, path = %path.display(), "sidecar written"),
            Ok(Err(e)) => tracing::error!(job = id, error = %e, "cannot write the sidecar"),
            Err(e) => tracing::warn!(job = id, error = %e, "no sidecar: job unreadable"),
        }
    }

    /// Stops claiming jobs (the running ones go on) and wakes every waiter: the start of a shutdown.
    pub fn stop_claiming(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.notify();
        self.finished.bump();
    }

    /// Whether [`Queue::stop_claiming`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Blocks until job `id` is no longer queued or processing, `timeout` passes or the queue
    /// stops claiming.
    pub fn wait_until_finished(&self, id: &str, timeout: Duration) -> Result<Job, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            let guard = self.finished.lock();
            let job = self.store.job(id)?;
            let now = Instant::now();
            if !matches!(job.status, Status::Queued | Status::Processing)
                || now >= deadline
                || self.is_stopping()
            {
                return Ok(job);
            }
            self.finished.wait(guard, (deadline - now).min(Duration::from_secs(5)));
        }
    }

    /// Stops the workers: no new job is claimed; running jobs get `grace` to finish, then are
    /// queued again for the next start. Returns the ids that were put back.
    pub fn shutdown(&self, workers: Vec<JoinHandle<()>>, grace: Duration) -> Vec<String> {
        self.stop_claiming();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let unfinished = self.running();
        for id in &unfinished {
            tracing::warn!(job = %id, "grace period over: job queued again for the next start");
            if let Err(e) = self.store.requeue(id) {
                tracing::error!(job = %id, error = %e, "cannot requeue");
            }
        }
        for w in workers.into_iter().filter(|w| w.is_finished()) {
            let _ = w.join();
        }
        unfinished
    }
}

/// Locks a mutex; a panic in another holder leaves plain data that is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A counter that threads sleep on until it changes.
#[derive(Default)]
struct Signal {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, u64> {
        lock(&self.count)
    }

    /// Counts one event and wakes every waiter.
    fn bump(&self) {
        *self.lock() += 1;
        self.changed.notify_all();
    }

    /// Sleeps until the next bump or `timeout`, releasing `guard` meanwhile.
    fn wait(&self, guard: MutexGuard<'_, u64>, timeout: Duration) {
        let _ = self.changed.wait_timeout(guard, timeout);
    }
}

/// Saves each stage's result in the store as soon as it is ready.
struct StoreSink<'a> {
    store: &'a Store,
    id: &'a str,
    /// Last whole percent written, so progress costs one write per percent at most.
    last_percent: AtomicU32,
}

fn stored<T>(r: Result<T, StoreError>) -> Result<T, StageError> {
    r.map_err(|e| StageError::new("store", e.to_string()))
}

impl ResultSink for StoreSink<'_> {
    fn duration(&mut self, seconds: f64) -> Result<(), StageError> {
        stored(self.store.set_duration(self.id, seconds))
    }
    fn transcript(&mut self, transcript: &Transcript) -> Result<(), StageError> {
        stored(self.store.save_transcript(self.id, transcript))
    }
    fn diarization(&mut self, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<(), StageError> {
        stored(self.store.save_diarization(self.id, turns, segments))
    }
    fn analysis(&mut self, analysis: &Analysis) -> Result<(), StageError> {
        stored(self.store.save_analysis(self.id, analysis))
    }
    fn progress(&self, percent: f32) {
        if self.last_percent.swap(percent as u32, Ordering::Relaxed) == percent as u32 {
            return;
        }
        if let Err(e) = self.store.set_progress(self.id, percent) {
            tracing::debug!(job = self.id, error = %e, "progress not saved");
        }
    }
}
