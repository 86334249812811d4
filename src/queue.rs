//! Pipeline workers: claim queued jobs, run the stages, store results, write sidecars.
//!
//! The store is the queue, so a crash loses nothing: jobs left `processing` are queued again
//! at start (once; a job interrupted twice ends in `error`). Workers sleep on a condition
//! variable and are woken when a job is queued. A panic in a stage ends that job in `error` and
//! the worker rebuilds its stages and goes on; a worker thread that dies anyway is counted, and
//! `/healthz` reports it.
//!
//! Several nodes may share the store: a coordinator thread renews this node's heartbeat and
//! the leases of its running jobs, queues again the jobs of nodes whose leases ran out, and
//! wakes the workers when another node queues work (it sleeps on the store's notifications).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigHandle};
use crate::model::{
    Analysis, Job, JobSpeaker, KnownVoice, Segment, SpeakerTurn, SpeakerVoice, Status, Transcript,
};
use crate::pipeline::{ResultSink, StageError, Stages, load_transcriber};
use crate::render::{JobResult, write_sidecar};
use crate::store::{Cancelled, Outcome, RunStage, Store, StoreError};

/// Builds a worker's stages from the configuration (models are loaded here).
pub type StageFactory = Arc<dyn Fn(&Config) -> Stages + Send + Sync>;

/// Set to stop a running job at its next stage boundary; a stage may also poll it (e.g. from
/// whisper.cpp's abort callback) to stop sooner.
pub type CancelFlag = Arc<AtomicBool>;

/// A job a worker is running.
struct Running {
    id: i64,
    cancel: CancelFlag,
    /// Segments shown by the transcriber so far (this run's live preview).
    live: LiveSegments,
}

type LiveSegments = Arc<Mutex<Vec<Segment>>>;

/// The shared queue state.
pub struct Queue {
    store: Arc<Store>,
    config: Arc<ConfigHandle>,
    stopping: AtomicBool,
    /// Bumped when work is queued; workers wait on it.
    wake: Signal,
    /// Bumped when a job ends; `wait_until_finished` waits on it.
    finished: Signal,
    /// worker index → the job it is running.
    running: Mutex<HashMap<usize, Running>>,
    /// Worker threads started, and those still running their loop.
    workers_started: AtomicUsize,
    workers_alive: AtomicUsize,
}

impl Queue {
    /// The segments a job running in this process has decoded so far, from the `from`-th on
    /// (empty when it runs elsewhere or is not transcribing).
    pub fn live_segments(&self, id: i64, from: usize) -> Vec<Segment> {
        let live = lock(&self.running).values().find(|r| r.id == id).map(|r| Arc::clone(&r.live));
        live.map(|l| lock(&l).get(from..).map(<[Segment]>::to_vec).unwrap_or_default()).unwrap_or_default()
    }

    /// Creates the queue and puts interrupted jobs back in it.
    pub fn new(store: Arc<Store>, config: Arc<ConfigHandle>) -> Result<Arc<Self>, StoreError> {
        let (requeued, failed) = store.requeue_interrupted()?;
        if requeued > 0 {
            tracing::warn!(requeued, "jobs interrupted by the last shutdown were queued again");
        }
        if failed > 0 {
            tracing::error!(failed, "jobs interrupted twice while processing were not retried");
        }
        Ok(Arc::new(Self {
            store,
            config,
            stopping: AtomicBool::new(false),
            wake: Signal::default(),
            finished: Signal::default(),
            running: Mutex::new(HashMap::new()),
            workers_started: AtomicUsize::new(0),
            workers_alive: AtomicUsize::new(0),
        }))
    }

    /// Queues a job and wakes a worker.
    pub fn submit(&self, id: i64, stage: RunStage) -> Result<Job, StoreError> {
        let job = self.store.enqueue(id, stage)?;
        self.notify();
        Ok(job)
    }

    /// Cancels a job: a queued one at once; a running one at its next stage boundary (the
    /// returned job is then still `processing`).
    pub fn cancel(&self, id: i64) -> Result<Job, StoreError> {
        match self.store.cancel(id)? {
            Cancelled::Dequeued(job) => {
                tracing::info!(job = id, "queued job cancelled");
                self.finished.bump();
                Ok(job)
            }
            Cancelled::Running(job) => {
                // The store holds the request: a job of this node stops now, one claimed but
                // not yet registered reads it at registration, another node's at its
                // coordinator's next wake-up.
                if let Some(r) = lock(&self.running).values().find(|r| r.id == id) {
                    r.cancel.store(true, Ordering::SeqCst);
                }
                tracing::info!(job = id, "running job will stop at its next stage boundary");
                Ok(job)
            }
        }
    }

    /// The cancel flag of a running job.
    pub fn cancel_flag(&self, id: i64) -> Option<CancelFlag> {
        lock(&self.running).values().find(|r| r.id == id).map(|r| Arc::clone(&r.cancel))
    }

    /// Wakes the workers (something was queued).
    pub fn notify(&self) {
        self.wake.bump();
    }

    /// Jobs being run right now, by worker.
    pub fn running(&self) -> Vec<i64> {
        lock(&self.running).values().map(|r| r.id).collect()
    }

    /// Worker threads that died (0 while shutting down, when they end on purpose).
    pub fn dead_workers(&self) -> usize {
        if self.stopping.load(Ordering::SeqCst) {
            return 0;
        }
        self.workers_started.load(Ordering::SeqCst) - self.workers_alive.load(Ordering::SeqCst)
    }

    /// Starts the coordinator: heartbeat and lease renewal every third of a lease, expired
    /// leases queued again, workers woken when another node queues a job, running jobs
    /// stopped when another node cancels them. It ends after
    /// [`Queue::stop_claiming`] (within a third of a lease; nothing waits for it).
    pub fn start_coordinator(self: &Arc<Self>) -> JoinHandle<()> {
        let queue = Arc::clone(self);
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || queue.coordinate())
            .expect("spawning the coordinator thread")
    }

    fn coordinate(&self) {
        let tick = (self.store.lease() / 3).max(Duration::from_millis(100));
        let mut beat: Option<Instant> = None;
        while !self.is_stopping() {
            if beat.is_none_or(|b| b.elapsed() >= tick) {
                beat = Some(Instant::now());
                if let Err(e) = self.store.heartbeat() {
                    tracing::error!(error = %e, "heartbeat failed; running jobs may be taken over");
                }
                match self.store.requeue_expired() {
                    Ok((requeued, failed)) => {
                        if requeued > 0 {
                            tracing::warn!(requeued, "jobs of a silent node were queued again");
                            self.notify();
                        }
                        if failed > 0 {
                            tracing::error!(
                                failed,
                                "jobs interrupted twice while processing were not retried"
                            );
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot check leases"),
                }
            }
            let left = tick.saturating_sub(beat.map_or(Duration::ZERO, |b| b.elapsed()));
            match self.store.wait_for_queued(left) {
                Ok(true) => self.notify(),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for queued jobs");
                    std::thread::sleep(left);
                }
            }
            self.apply_cancel_requests();
        }
    }

    /// Stops this node's running jobs whose cancel was asked for on another node.
    fn apply_cancel_requests(&self) {
        if lock(&self.running).is_empty() {
            return;
        }
        let ids = match self.store.cancel_requests() {
            Ok(ids) => ids,
            Err(e) => return tracing::error!(error = %e, "cannot check for cancelled jobs"),
        };
        for r in lock(&self.running).values().filter(|r| ids.contains(&r.id)) {
            if !r.cancel.swap(true, Ordering::SeqCst) {
                tracing::info!(job = r.id, "cancelled on another node; stopping");
            }
        }
    }

    /// Starts `n` workers.
    pub fn start_workers(self: &Arc<Self>, n: usize, factory: StageFactory) -> Vec<JoinHandle<()>> {
        (0..n)
            .map(|i| {
                let alive = WorkerAlive::new(Arc::clone(self));
                let factory = Arc::clone(&factory);
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || alive.0.worker_loop(i, factory))
                    .expect("spawning a worker thread")
            })
            .collect()
    }

    fn worker_loop(&self, index: usize, factory: StageFactory) {
        // Stages are built on the first job and rebuilt after a config reload or a panic.
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
            let cancel = CancelFlag::default();
            let live = LiveSegments::default();
            {
                let entry = Running { id: job.id, cancel: Arc::clone(&cancel), live: Arc::clone(&live) };
                lock(&self.running).insert(index, entry);
            }
            // A cancel between the claim and the registration above found no running entry.
            // If the store cannot say, the coordinator's next check of cancel requests will.
            match self.store.cancel_requested(job.id) {
                Ok(true) => cancel.store(true, Ordering::SeqCst),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = job.id, error = %e, "cannot read the job's cancel request"),
            }
            let cfg = self.config.get();
            let started = Instant::now();
            tracing::info!(job = job.id, path = %job.audio_path, ?stage, "job started");
            let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let generation = self.config.generation();
                if stages.as_ref().is_none_or(|(g, _)| *g != generation) {
                    stages = Some((generation, factory(&cfg)));
                }
                let (_, st) = stages.as_mut().expect("stages were just built");
                self.run_job(st, &job, stage, &cfg, &cancel, &live)
            }));
            let outcome = match run {
                Ok(Ok(())) => Outcome::Done,
                Ok(Err(_)) if cancel.load(Ordering::SeqCst) => Outcome::Cancelled,
                Ok(Err(e)) => Outcome::Error(e.to_string()),
                Err(panic) => {
                    stages = None;
                    Outcome::Error(format!("internal error: a stage panicked: {}", panic_message(&*panic)))
                }
            };
            match &outcome {
                Outcome::Done => {
                    tracing::info!(job = job.id, secs = started.elapsed().as_secs_f32(), "job done")
                }
                Outcome::Cancelled => tracing::info!(job = job.id, "job cancelled"),
                Outcome::Error(e) => tracing::warn!(job = job.id, error = %e, "job failed"),
            }
            match self.store.finish(job.id, &outcome) {
                Ok(_) => self.write_sidecar(job.id, cfg.results_folder.as_deref()),
                Err(StoreError::NotFound(_)) => tracing::info!(job = job.id, "job was deleted while it ran"),
                Err(e) => tracing::error!(job = job.id, error = %e, "cannot record the job's end"),
            }
            lock(&self.running).remove(&index);
            self.finished.bump();
        }
    }

    fn run_job(
        &self,
        stages: &mut Stages,
        job: &Job,
        stage: RunStage,
        cfg: &Config,
        cancel: &CancelFlag,
        live: &LiveSegments,
    ) -> Result<(), StageError> {
        let mut sink = StoreSink {
            store: &self.store,
            id: job.id,
            last_percent: AtomicU32::new(u32::MAX),
            cancel: Arc::clone(cancel),
            live,
        };
        match stage {
            RunStage::All => {
                let hints = crate::model::SpeakerHints {
                    num_speakers: job.speakers.num_speakers.or(cfg.num_speakers),
                    min_speakers: job.speakers.min_speakers.or(cfg.min_speakers),
                    max_speakers: job.speakers.max_speakers.or(cfg.max_speakers),
                };
                let options = stored(self.store.job_options(job.id))?;
                let path = Path::new(&job.audio_path);
                match options.model.as_deref().filter(|m| *m != cfg.whisper_model) {
                    None => stages.run_with(path, hints, &options, &mut sink),
                    Some(model) => {
                        // Another model for this job: loaded for it (the weights are shared
                        // with any other worker using them), the configured one put back after.
                        let own = load_transcriber(cfg, model);
                        let configured = std::mem::replace(&mut stages.transcriber, own);
                        let result = stages.run_with(path, hints, &options, &mut sink);
                        stages.transcriber = configured;
                        result
                    }
                }
            }
            RunStage::Analyze => match self.store.segments(job.id) {
                Ok(segs) if segs.is_empty() => Err(StageError::new(
                    "analyze",
                    "no stored transcript to analyze; run the whole job first",
                )),
                Ok(segs) => stages.analyze(&segs, job.language.as_deref(), &mut sink),
                Err(e) => Err(StageError::new("analyze", e.to_string())),
            },
        }
    }

    /// Writes the sidecar of a stored job (after a run or an edit); failures are logged.
    pub fn write_sidecar(&self, id: i64, results_folder: Option<&Path>) {
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
    pub fn wait_until_finished(&self, id: i64, timeout: Duration) -> Result<Job, StoreError> {
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
    pub fn shutdown(&self, workers: Vec<JoinHandle<()>>, grace: Duration) -> Vec<i64> {
        self.stop_claiming();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let unfinished = self.running();
        for &id in &unfinished {
            tracing::warn!(job = id, "grace period over: job queued again for the next start");
            if let Err(e) = self.store.requeue(id) {
                tracing::error!(job = id, error = %e, "cannot requeue");
            }
        }
        for w in workers.into_iter().filter(|w| w.is_finished()) {
            let _ = w.join();
        }
        if let Err(e) = self.store.leave() {
            tracing::warn!(error = %e, "cannot remove this node from the nodes table");
        }
        unfinished
    }
}

/// Counts a worker thread as alive from its start until its loop ends or unwinds.
struct WorkerAlive(Arc<Queue>);

impl WorkerAlive {
    fn new(queue: Arc<Queue>) -> Self {
        queue.workers_started.fetch_add(1, Ordering::SeqCst);
        queue.workers_alive.fetch_add(1, Ordering::SeqCst);
        Self(queue)
    }
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.0.workers_alive.fetch_sub(1, Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!("a worker thread died; /healthz reports it");
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
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
    id: i64,
    /// Last whole percent written, so progress costs one write per percent at most.
    last_percent: AtomicU32,
    cancel: CancelFlag,
    live: &'a LiveSegments,
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
    fn known_voices(&self) -> Result<Vec<KnownVoice>, StageError> {
        stored(self.store.known_voices(self.id))
    }
    fn speakers(&mut self, speakers: &[JobSpeaker], voices: &[SpeakerVoice]) -> Result<(), StageError> {
        stored(self.store.save_job_speakers(self.id, speakers, voices))
    }
    fn progress(&self, percent: f32) {
        if self.last_percent.swap(percent as u32, Ordering::Relaxed) == percent as u32 {
            return;
        }
        if let Err(e) = self.store.set_progress(self.id, percent) {
            tracing::debug!(job = self.id, error = %e, "progress not saved");
        }
    }
    fn partial_segment(&self, segment: &Segment) {
        lock(self.live).push(segment.clone());
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::pipeline::{AnalysisInput, Analyzer, Cancelled, Progress, Slot, Transcriber};
    use crate::store::NewJob;

    /// Panics on a transcript that says "boom"; otherwise summarises it.
    struct PanickyAnalyzer;

    impl Analyzer for PanickyAnalyzer {
        fn analyze(&mut self, input: &AnalysisInput<'_>) -> Result<Analysis, StageError> {
            assert!(!input.segments[0].text.contains("boom"), "analyzer hit a boom");
            Ok(Analysis { summary: Some(input.segments[0].text.clone()), ..Default::default() })
        }
        fn name(&self) -> String {
            "panicky".into()
        }
    }

    /// Blocks until the test lets it go, then returns an empty transcript.
    struct GatedTranscriber {
        started: crossbeam_channel::Sender<()>,
        go: crossbeam_channel::Receiver<()>,
    }

    impl Transcriber for GatedTranscriber {
        fn transcribe(
            &mut self,
            _: &crate::audio::Audio,
            _: Progress<'_>,
            _: Cancelled<'_>,
        ) -> Result<Transcript, StageError> {
            self.started.send(()).unwrap();
            self.go.recv().unwrap();
            let seg = Segment { start_s: 0.0, end_s: 1.0, text: "hi".into(), speaker: None, words: vec![] };
            Ok(Transcript { segments: vec![seg], ..Default::default() })
        }
        fn name(&self) -> String {
            "gated".into()
        }
    }

    /// Stages whose transcriber says when a job reaches it (`started`) and then waits for `go`.
    fn gated_stages() -> (StageFactory, crossbeam_channel::Receiver<()>, crossbeam_channel::Sender<()>) {
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (go, go_rx) = crossbeam_channel::unbounded();
        let factory: StageFactory = Arc::new(move |_| Stages {
            transcriber: Slot::Ready(Box::new(GatedTranscriber {
                started: started_tx.clone(),
                go: go_rx.clone(),
            })),
            diarizer: Slot::Disabled,
            analyzer: Slot::Disabled,
        });
        (factory, started, go)
    }

    /// Says in its one segment which per-job options it was given.
    struct EchoTranscriber;

    impl Transcriber for EchoTranscriber {
        fn transcribe(
            &mut self,
            audio: &crate::audio::Audio,
            progress: Progress<'_>,
            cancelled: Cancelled<'_>,
        ) -> Result<Transcript, StageError> {
            let options = crate::model::DecodeOptions::default();
            self.transcribe_with(audio, &options, progress, &|_| {}, cancelled)
        }
        fn transcribe_with(
            &mut self,
            _: &crate::audio::Audio,
            options: &crate::model::DecodeOptions,
            _: Progress<'_>,
            _: crate::pipeline::SegmentSink<'_>,
            _: Cancelled<'_>,
        ) -> Result<Transcript, StageError> {
            let text = format!("{:?} {:?} {:?}", options.language, options.prompt, options.temperature);
            let seg = Segment { start_s: 0.0, end_s: 1.0, text, speaker: None, words: vec![] };
            Ok(Transcript { segments: vec![seg], ..Default::default() })
        }
        fn name(&self) -> String {
            "echo".into()
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Store>, Arc<Queue>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::in_memory().unwrap());
        let config = Arc::new(ConfigHandle::new(Config::default(), None));
        let queue = Queue::new(Arc::clone(&store), config).unwrap();
        (dir, store, queue)
    }

    fn add_job(store: &Store, audio: &Path, text: Option<&str>) -> i64 {
        let job =
            store.insert_job(&NewJob::for_test(audio.to_string_lossy(), Source::Upload)).unwrap().unwrap();
        if let Some(text) = text {
            let seg = Segment { start_s: 0.0, end_s: 1.0, text: text.into(), speaker: None, words: vec![] };
            store.save_transcript(job.id, &Transcript { segments: vec![seg], ..Default::default() }).unwrap();
        }
        job.id
    }

    const WAIT: Duration = Duration::from_secs(30);

    fn wait_done(queue: &Queue, id: i64) -> Job {
        let job = queue.wait_until_finished(id, WAIT).unwrap();
        assert!(
            !matches!(job.status, Status::Queued | Status::Processing),
            "job {id} still running: {job:?}"
        );
        job
    }

    #[test]
    fn a_panicking_stage_fails_its_job_and_the_worker_goes_on() {
        let (dir, store, queue) = setup();
        let boom = add_job(&store, &dir.path().join("a.wav"), Some("boom"));
        let fine = add_job(&store, &dir.path().join("b.wav"), Some("all fine"));
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&builds);
        let factory: StageFactory = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Stages {
                transcriber: Slot::Disabled,
                diarizer: Slot::Disabled,
                analyzer: Slot::Ready(Box::new(PanickyAnalyzer)),
            }
        });
        queue.submit(boom, RunStage::Analyze).unwrap();
        queue.submit(fine, RunStage::Analyze).unwrap();
        let workers = queue.start_workers(1, factory);
        let failed = wait_done(&queue, boom);
        assert_eq!(failed.status, Status::Error);
        let message = failed.error_message.unwrap();
        assert!(message.contains("panicked") && message.contains("analyzer hit a boom"), "{message}");
        let done = wait_done(&queue, fine);
        assert_eq!((done.status, done.summary.as_deref()), (Status::Done, Some("all fine")));
        assert_eq!(builds.load(Ordering::SeqCst), 2, "stages rebuilt after the panic");
        assert_eq!(queue.dead_workers(), 0);
        assert!(queue.shutdown(workers, WAIT).is_empty());
    }

    #[test]
    fn a_jobs_own_options_reach_the_transcriber_and_can_skip_analysis() {
        let (_dir, store, queue) = setup();
        let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/jfk.wav");
        let own = add_job(&store, &audio, None);
        let options = crate::model::JobOptions {
            model: None,
            decode: crate::model::DecodeOptions {
                language: Some("de".into()),
                prompt: Some("Namen".into()),
                temperature: Some(0.5),
            },
            skip_analysis: true,
        };
        store.set_job_options(own, &options).unwrap();
        let dir2 = tempfile::tempdir().unwrap();
        let copy = dir2.path().join("jfk.wav");
        std::fs::copy(&audio, &copy).unwrap();
        let plain = add_job(&store, &copy, None);
        let factory: StageFactory = Arc::new(|_| Stages {
            transcriber: Slot::Ready(Box::new(EchoTranscriber)),
            diarizer: Slot::Disabled,
            analyzer: Slot::Ready(Box::new(PanickyAnalyzer)),
        });
        queue.submit(own, RunStage::All).unwrap();
        queue.submit(plain, RunStage::All).unwrap();
        let workers = queue.start_workers(1, factory);
        let job = wait_done(&queue, own);
        assert_eq!(job.status, Status::Done, "{job:?}");
        assert_eq!(store.segments(own).unwrap()[0].text, r#"Some("de") Some("Namen") Some(0.5)"#);
        assert_eq!(job.summary, None, "analysis skipped");
        let job = wait_done(&queue, plain);
        assert_eq!(store.segments(plain).unwrap()[0].text, "None None None");
        assert_eq!(job.summary.as_deref(), Some("None None None"), "analysis ran");
        assert!(queue.shutdown(workers, WAIT).is_empty());
    }

    #[test]
    fn a_dead_worker_thread_is_counted() {
        let (_dir, _store, queue) = setup();
        assert_eq!(queue.dead_workers(), 0);
        let alive = WorkerAlive::new(Arc::clone(&queue));
        let died = std::thread::spawn(move || {
            let _alive = alive;
            panic!("worker loop failed");
        })
        .join();
        assert!(died.is_err());
        assert_eq!(queue.dead_workers(), 1);
    }

    #[test]
    fn cancel_stops_a_queued_job_and_a_running_one_at_the_next_stage() {
        let (_dir, store, queue) = setup();
        let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/jfk.wav");
        let running = add_job(&store, &audio, None);
        let dir2 = tempfile::tempdir().unwrap();
        let queued = add_job(&store, &dir2.path().join("never.wav"), None);
        let (factory, started, go) = gated_stages();
        queue.submit(running, RunStage::All).unwrap();
        queue.submit(queued, RunStage::All).unwrap();
        let workers = queue.start_workers(1, factory);
        started.recv_timeout(WAIT).expect("the first job never reached the transcriber");

        assert_eq!(queue.cancel(queued).unwrap().status, Status::Cancelled);
        assert_eq!(queue.cancel(running).unwrap().status, Status::Processing);
        assert!(queue.cancel_flag(running).is_some_and(|f| f.load(Ordering::SeqCst)));
        go.send(()).unwrap();
        let job = wait_done(&queue, running);
        assert_eq!(job.status, Status::Cancelled, "{job:?}");
        assert!(store.segments(running).unwrap().is_empty(), "nothing saved after the cancel");
        assert_eq!(store.job(queued).unwrap().status, Status::Cancelled);
        assert!(matches!(queue.cancel(running), Err(StoreError::Conflict(_))));
        assert!(queue.shutdown(workers, WAIT).is_empty());
    }

    #[test]
    fn on_postgres_a_cancel_on_another_node_stops_the_running_job() {
        let Some(admin) = crate::store::test_support::postgres_url() else { return };
        let db = crate::store::test_support::ScratchDatabase::create(&admin).unwrap();
        let (runner, other) =
            (Arc::new(Store::connect(&db.url).unwrap()), Arc::new(Store::connect(&db.url).unwrap()));
        let config = Arc::new(ConfigHandle::new(Config::default(), None));
        // The runner's LISTEN connection is opened now, so no NOTIFY is sent before it exists
        // (a long-running coordinator always has it; a missed one waits for the next tick).
        assert!(!runner.wait_for_queued(Duration::from_millis(1)).unwrap());
        let queue = Queue::new(runner, Arc::clone(&config)).unwrap();
        let elsewhere = Queue::new(Arc::clone(&other), config).unwrap();
        let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/jfk.wav");
        let id = add_job(&other, &audio, None);
        let (factory, started, go) = gated_stages();
        // Queued before the worker starts: its first claim takes it.
        elsewhere.submit(id, RunStage::All).unwrap();
        queue.start_coordinator();
        let workers = queue.start_workers(1, factory);
        started.recv_timeout(WAIT).expect("the job never reached the transcriber");

        assert_eq!(elsewhere.cancel(id).unwrap().status, Status::Processing);
        let flag = queue.cancel_flag(id).expect("running here");
        let asked = Instant::now();
        while !flag.load(Ordering::SeqCst) {
            assert!(asked.elapsed() < Duration::from_secs(10), "the running node never heard of the cancel");
            std::thread::sleep(Duration::from_millis(20));
        }
        go.send(()).unwrap();
        assert_eq!(wait_done(&queue, id).status, Status::Cancelled);

        // The old request does not cancel the next run.
        elsewhere.submit(id, RunStage::All).unwrap();
        started.recv_timeout(WAIT).expect("the job never reached the transcriber again");
        go.send(()).unwrap();
        assert_eq!(wait_done(&queue, id).status, Status::Done);
        assert!(queue.shutdown(workers, WAIT).is_empty());
    }
}
