//! The long-running service: wires config, store, queue, watcher and HTTP API together and
//! handles signals (TERM/INT drain and exit, HUP reload config and reopen logs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::api::{Api, HttpServer};
use crate::config::{Config, ConfigHandle};
use crate::control::{ControlPlane, SignalAction};
use crate::notify::Notifier;
use crate::pipeline::Stages;
use crate::queue::Queue;
use crate::store::Store;

/// A start-up problem that should stop the daemon with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Checks that `dir` exists (creating it) and is writable.
pub fn ensure_writable_dir(key: &str, dir: &Path) -> Result<(), StartupError> {
    let fail = |e: std::io::Error| StartupError(format!("invalid value for {key}: {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".diarized-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// What a process runs: every part, the API and watcher without workers, or workers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `diarized serve`: HTTP API, folder watcher and workers.
    Serve,
    /// `diarized serve --no-workers`: HTTP API and watcher; other nodes run the jobs.
    ServeNoWorkers,
    /// `diarized worker`: workers only, adding capacity to a shared (PostgreSQL) store.
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::ServeNoWorkers => "serve --no-workers",
            Role::Worker => "worker",
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config, config_path: Option<PathBuf>, role: Role) -> anyhow::Result<()> {
    ensure_writable_dir("UPLOAD_FOLDER", &config.upload_folder)?;
    if let Some(dir) = &config.results_folder {
        ensure_writable_dir("RESULTS_FOLDER", dir)?;
    }
    let log_file = init_logging(config.log_dir.as_deref())?;
    if role != Role::Worker {
        // Uploads cut off by a crash; no request is running yet.
        crate::watch::remove_stale_uploads(&config.upload_folder);
    }
    let db = crate::store::redact_url(&config.database_url);
    let store = Arc::new(
        Store::connect(&config.database_url)
            .map_err(|e| StartupError(format!("invalid value for DATABASE_URL: {e}")))?,
    );
    store.set_lease(Duration::from_secs(config.job_lease_s));
    // Stored audio paths are relative to the upload folder, which every node mounts.
    store.set_upload_folder(&config.upload_folder)?;
    let config = Arc::new(ConfigHandle::new(config, config_path));
    let cfg = config.get();
    match crate::retention::sweep(&store, &cfg) {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "retention: old jobs deleted at start"),
        Err(e) => tracing::error!(error = %e, "retention sweep failed"),
    }
    let mut control = ControlPlane::start(Arc::clone(&store), Arc::clone(&config))?;
    crate::audio::set_max_decode_seconds(cfg.max_audio_seconds);
    let queue = Queue::new(Arc::clone(&store), Arc::clone(&config))?;
    let workers = if role == Role::ServeNoWorkers { 0 } else { cfg.workers };
    store.register_node(role.name(), workers as u32)?;
    queue.start_coordinator();

    let mut front = None;
    if role != Role::Worker {
        // Event streams also show the jobs other nodes run (PostgreSQL LISTEN).
        store.relay_remote_events()?;
        let http_server = HttpServer::bind(Arc::clone(&config)).map_err(|e| {
            StartupError(format!("invalid value for BIND: cannot listen on {}: {e}", cfg.bind))
        })?;
        let addr = http_server.addr;
        let api = Arc::new(Api {
            config: Arc::clone(&config),
            store: Arc::clone(&store),
            queue: Arc::clone(&queue),
            started: Instant::now(),
            models: crate::pipeline::model_names(&cfg),
            bound: addr,
            slots: Default::default(),
            voices: Default::default(),
            streams: Arc::clone(&control.streams),
        });
        let http = api.serve(Arc::clone(&http_server.server), cfg.http_threads);
        let watcher = crate::watch::start(
            control.handle(),
            Arc::clone(&config),
            Arc::clone(&store),
            Arc::clone(&queue),
        )
        .context("starting the folder watcher")?;
        let found = watcher.found_at_start;
        tracing::info!(%addr, %db, folder = %cfg.upload_folder.display(), found, workers, "diarized started");
        // A plain line for scripts and tests that start us on port 0.
        println!("diarized listening on http://{addr}");
        front = Some((http_server, http, watcher));
    }
    let workers = queue.start_workers(workers, Arc::new(Stages::from_config));
    if role == Role::Worker {
        tracing::info!(%db, node = store.node_id(), workers = workers.len(), "diarized worker started");
        println!("diarized worker running as node {}", store.node_id());
    }

    // The store is open and the API answers: tell systemd (Type=notify), then ping its watchdog
    // while the service is healthy, until a stop signal.
    let notifier = Notifier::from_env();
    notifier.notify("READY=1");
    let (stop_watchdog, watchdog_stopped) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|s| {
        if let Some(timeout) = crate::notify::watchdog_timeout() {
            let (queue, notifier, stopped) = (&queue, &notifier, &watchdog_stopped);
            // A worker node has no HTTP front to probe.
            let http = front.as_ref().map(|(server, http, _)| (http.as_slice(), server.addr));
            std::thread::Builder::new()
                .name("watchdog".into())
                .spawn_scoped(s, move || {
                    crate::notify::watchdog(notifier, timeout, stopped, |budget| healthy(queue, http, budget))
                })
                .expect("spawning the watchdog thread");
        }
        while control.next_signal() == SignalAction::Reload {
            match config.reload() {
                Ok(()) => {
                    crate::audio::set_max_decode_seconds(config.get().max_audio_seconds);
                    tracing::info!("configuration reloaded")
                }
                Err(e) => tracing::error!(error = %e, "configuration not reloaded; keeping the running one"),
            }
            if let Some(f) = &log_file {
                f.reopen();
            }
        }
        tracing::info!("shutting down");
        drop(stop_watchdog);
    });
    notifier.notify("STOPPING=1");
    queue.stop_claiming();
    if let Some((mut http_server, http, watcher)) = front {
        // No new connections, no new jobs; open waits end with 503 at once.
        http_server.stop_accepting();
        for _ in 0..http.len() {
            http_server.server.unblock();
        }
        for h in http {
            let _ = h.join();
        }
        // Event streams end; answers already given (the 503s) reach their clients; stalled ones
        // are not waited for.
        control.close_streams();
        http_server.drain(Duration::from_secs(2));
        drop(watcher);
    }
    let grace = Duration::from_secs(config.get().grace_period_s);
    let requeued = queue.shutdown(workers, grace);
    control.shutdown();
    tracing::info!(requeued = requeued.len(), "stopped");
    Ok(())
}

/// What the watchdog pings for: every worker alive (as `/healthz` reports), every request
/// thread running, and the API answering within `budget`.
fn healthy(
    queue: &Queue,
    http: Option<(&[std::thread::JoinHandle<()>], std::net::SocketAddr)>,
    budget: Duration,
) -> Result<(), String> {
    match queue.dead_workers() {
        0 => {}
        dead => return Err(format!("{dead} worker thread(s) died")),
    }
    let Some((http, addr)) = http else { return Ok(()) };
    if http.iter().any(|h| h.is_finished()) {
        return Err("an HTTP request thread ended".into());
    }
    // Any answer will do: the front answers 503 by itself when all connections are taken.
    crate::notify::probe_http(addr, budget).map(|_| ())
}

/// The daily-rolling log file, reopened on SIGHUP (after logrotate moved it, say).
#[derive(Clone)]
pub struct LogFile {
    dir: PathBuf,
    inner: Arc<Mutex<RollingFileAppender>>,
}

impl LogFile {
    fn open(dir: &Path) -> Result<RollingFileAppender, StartupError> {
        RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix("diarized")
            .filename_suffix("log")
            .build(dir)
            .map_err(|e| StartupError(format!("invalid value for LOG_DIR: {}: {e}", dir.display())))
    }

    fn reopen(&self) {
        match Self::open(&self.dir) {
            Ok(fresh) => *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(e) => tracing::error!(error = %e, "cannot reopen the log file"),
        }
    }
}

/// Writes one log record into the current file.
pub struct LogFileWriter(Arc<Mutex<RollingFileAppender>>);

impl std::io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(Arc::clone(&self.inner))
    }
}

/// Logs to stderr (journald adds timestamps) and, if `dir` is set, to a daily file.
pub fn init_logging(dir: Option<&Path>) -> Result<Option<LogFile>, StartupError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr =
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter());
    let file = match dir {
        Some(d) => {
            ensure_writable_dir("LOG_DIR", d)?;
            Some(LogFile { dir: d.to_owned(), inner: Arc::new(Mutex::new(LogFile::open(d)?)) })
        }
        None => None,
    };
    let file_layer = file
        .clone()
        .map(|f| tracing_subscriber::fmt::layer().with_ansi(false).with_writer(f).with_filter(filter()));
    let _ = tracing_subscriber::registry().with(stderr).with(file_layer).try_init();
    Ok(file)
}
