//! The watched folder: complete audio files that appear in it become queued jobs.
//!
//! A file is taken once its size and mtime have stayed unchanged for `settle_s` after the last
//! event on it (write, close, rename), so a writer that opens, appends and closes again and
//! again is waited for. Files already there at start go through the same path (one idempotent
//! way in; the database's `UNIQUE(audio_path)` settles any race). Empty files, hidden files,
//! partial/temp names and our own sidecars are ignored; a file whose job was deleted (its audio
//! left in place) is not taken again unless its content changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::EventKind;
use notify::{RecursiveMode, Watcher};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigHandle};
use crate::model::{Source, SpeakerHints};
use crate::queue::Queue;
use crate::store::{NewJob, Outcome, RunStage, Store};

/// How often files still settling are re-checked.
const TICK: Duration = Duration::from_millis(250);
/// How long dropping the watcher waits for a registration in progress.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Watch failures.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {source}")]
    Notify { path: PathBuf, source: notify::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Name suffixes of files still being written by browsers, editors and copy tools.
const PARTIAL_SUFFIXES: &[&str] =
    &[".part", ".partial", ".tmp", ".temp", "~", ".crdownload", ".download", ".swp"];

/// Whether a file name could be a finished upload with an allowed extension.
pub fn is_candidate(path: &Path, cfg: &Config) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    let lower = name.to_ascii_lowercase();
    if name.starts_with('.') || PARTIAL_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        return false;
    }
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| cfg.extension_allowed(e))
}

/// What registering a file did.
#[derive(Debug, PartialEq)]
pub enum Registered {
    /// A new job, queued.
    Queued(i64),
    /// The path is already a job (e.g. an API upload).
    Known,
    /// Same content as an existing job.
    Duplicate(i64),
    /// This path with this content belonged to a deleted job.
    Deleted,
    /// Not audio we accept (bad header, too long): a job in `error` says why.
    Rejected(i64),
}

/// Registers one complete file as a watch job and queues it (idempotent).
pub fn register(path: &Path, cfg: &Config, store: &Store, queue: &Queue) -> Result<Registered, WatchError> {
    let audio_path = path.to_string_lossy().into_owned();
    if store.job_by_audio_path(&audio_path)?.is_some() {
        return Ok(Registered::Known);
    }
    let sha =
        crate::files::sha256_file(path).map_err(|source| WatchError::Io { path: path.to_owned(), source })?;
    if store.is_tombstoned(&audio_path, &sha)? {
        tracing::debug!(path = %path.display(), "its job was deleted; not taken again");
        return Ok(Registered::Deleted);
    }
    if let Some(existing) = store.job_by_sha256(&sha)? {
        if existing.audio_path == audio_path {
            // Another node sharing the folder registered it meanwhile.
            return Ok(Registered::Known);
        }
        tracing::info!(path = %path.display(), job = existing.id, "same content as an existing job; skipped");
        return Ok(Registered::Duplicate(existing.id));
    }
    // The same checks as an upload, before any worker decodes it.
    let rejected = crate::audio::probe_file(path)
        .and_then(|info| info.check_duration(cfg.max_audio_seconds as f64))
        .err();
    let new = NewJob {
        uuid: uuid::Uuid::new_v4().to_string(),
        audio_path,
        original_filename: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        sha256: sha,
        source: Source::Watch,
        speakers: SpeakerHints::default(),
    };
    let Some(job) = store.insert_job(&new)? else { return Ok(Registered::Known) };
    if let Some(e) = rejected {
        tracing::warn!(job = job.id, path = %path.display(), error = %e, "watched file rejected");
        store.finish(job.id, &Outcome::Error(e.to_string()))?;
        return Ok(Registered::Rejected(job.id));
    }
    queue.submit(job.id, RunStage::All)?;
    tracing::info!(job = job.id, path = %path.display(), "watched file queued");
    Ok(Registered::Queued(job.id))
}

/// A running folder watcher (a task on the control plane's runtime); dropping it stops the
/// watch and waits for a registration in progress to finish.
pub struct FolderWatcher {
    /// Candidate files found in the folder at start (taken once settled, like new ones).
    pub found_at_start: usize,
    stop: Option<oneshot::Sender<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The task drops its end when it returns (sooner if the runtime is already gone).
        let _ = self.stopped.recv_timeout(STOP_WAIT);
    }
}

/// A file waiting for its size and mtime to settle.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pending {
    size: u64,
    mtime: Option<SystemTime>,
    /// Since when nothing changed.
    since: Instant,
}

/// Files seen, by path, until they are taken.
#[derive(Default)]
struct Settling {
    files: HashMap<PathBuf, Pending>,
}

impl Settling {
    /// Something happened to `path` (or it was found at start with `already_quiet` of calm).
    fn touch(&mut self, path: &Path, already_quiet: Duration) {
        let Ok(meta) = std::fs::metadata(path) else {
            self.files.remove(path);
            return;
        };
        let now = Instant::now();
        let since = now.checked_sub(already_quiet).unwrap_or(now);
        self.files.insert(path.to_owned(), Pending { size: meta.len(), mtime: meta.modified().ok(), since });
    }

    /// Files unchanged for `settle`; they leave the list. Empty files are dropped, not taken.
    fn ready(&mut self, settle: Duration) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        self.files.retain(|path, p| match std::fs::metadata(path) {
            Err(_) => false,
            Ok(m) if m.len() != p.size || m.modified().ok() != p.mtime => {
                *p = Pending { size: m.len(), mtime: m.modified().ok(), since: Instant::now() };
                true
            }
            Ok(_) if p.since.elapsed() >= settle => {
                if p.size > 0 && std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
                    ready.push(path.clone());
                }
                false
            }
            Ok(_) => true,
        });
        ready.sort();
        ready
    }
}

/// Starts watching the upload folder (non-recursively) from a task on `runtime`. Files already
/// in it are queued for the same settling as new ones, after the watch is set up so nothing
/// falls between.
pub fn start(
    runtime: &Handle,
    config: Arc<ConfigHandle>,
    store: Arc<Store>,
    queue: Arc<Queue>,
) -> Result<FolderWatcher, WatchError> {
    let dir = config.get().upload_folder.clone();
    let (tx, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|source| WatchError::Notify { path: dir.clone(), source })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify { path: dir.clone(), source })?;
    let mut settling = Settling::default();
    let found_at_start = scan(&config.get(), &mut settling)?;
    let (stop, stop_rx) = oneshot::channel();
    let (done, stopped) = std::sync::mpsc::channel::<()>();
    runtime.spawn(async move {
        let _done = done;
        watch_loop(events, stop_rx, settling, config, store, queue).await;
    });
    Ok(FolderWatcher { found_at_start, stop: Some(stop), stopped, _watcher: watcher })
}

/// Takes watch events until `stop`: each event restarts its file's settle time; while files are
/// settling they are re-checked every [`TICK`] (an idle folder costs no wake-ups), and settled
/// ones are registered one at a time on the blocking pool (hashing and probing read the file).
async fn watch_loop(
    mut events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    mut stop: oneshot::Receiver<()>,
    mut settling: Settling,
    config: Arc<ConfigHandle>,
    store: Arc<Store>,
    queue: Arc<Queue>,
) {
    loop {
        let cfg = config.get();
        let recheck = async {
            if settling.files.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(TICK).await
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            event = events.recv() => match event {
                Some(Ok(event)) if is_write(&event.kind) => {
                    for path in event.paths.iter().filter(|p| is_candidate(p, &cfg)) {
                        // Events carry absolute paths; jobs store the folder as configured.
                        let Some(name) = path.file_name() else { continue };
                        settling.touch(&cfg.upload_folder.join(name), Duration::ZERO);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "watch error"),
                None => return,
            },
            () = recheck => {}
        }
        for path in settling.ready(Duration::from_secs(cfg.settle_s)) {
            let (cfg, store, queue) = (Arc::clone(&cfg), Arc::clone(&store), Arc::clone(&queue));
            let registered = tokio::task::spawn_blocking(move || {
                register(&path, &cfg, &store, &queue).map_err(|e| (path, e))
            })
            .await;
            match registered {
                Ok(Ok(_)) => {}
                Ok(Err((path, e))) => {
                    tracing::warn!(path = %path.display(), error = %e, "watched file not registered")
                }
                Err(e) => tracing::error!(error = %e, "registering a watched file failed"),
            }
            if stop.try_recv().is_ok() {
                return;
            }
        }
    }
}

/// Events that may change a file: our own reads (hashing, probing, decoding) are not among them.
fn is_write(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Adds every candidate file in the folder (files added while we were down); one whose mtime is
/// already older than `settle_s` is taken at the first check that finds it unchanged.
fn scan(cfg: &Config, settling: &mut Settling) -> Result<usize, WatchError> {
    let dir = &cfg.upload_folder;
    let entries = std::fs::read_dir(dir).map_err(|source| WatchError::Io { path: dir.clone(), source })?;
    let mut found = 0;
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if !(path.is_file() && is_candidate(&path, cfg)) {
            continue;
        }
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        settling.touch(&path, age.min(Duration::from_secs(cfg.settle_s)));
        found += 1;
    }
    Ok(found)
}

/// Removes upload temp files (`.<uuid>.upload.<ext>`) left by a crash mid-upload.
pub fn remove_stale_uploads(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') && name.contains(".upload.") && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "stale temp upload removed");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn candidates() {
        let cfg = Config::default();
        for ok in ["a.wav", "uploads/Meeting 1.MP3", "x.webm"] {
            assert!(is_candidate(Path::new(ok), &cfg), "{ok}");
        }
        for no in
            [".a.wav", "a.wav.part", "a.mp3~", "a.crdownload", "a.wav.json", "a.txt", "noext", "a.wav.tmp"]
        {
            assert!(!is_candidate(Path::new(no), &cfg), "{no}");
        }
    }

    #[test]
    fn a_file_is_ready_only_after_size_and_mtime_settle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        std::fs::write(&path, b"12345").unwrap();
        let mut s = Settling::default();
        s.touch(&path, Duration::ZERO);
        let settle = Duration::from_millis(300);
        assert!(s.ready(settle).is_empty(), "not yet settled");
        std::thread::sleep(Duration::from_millis(200));
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"678").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(s.ready(settle).is_empty(), "a change (seen without an event) restarts the wait");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(s.ready(settle), vec![path.clone()]);
        assert!(s.ready(settle).is_empty(), "taken once");

        let empty = dir.path().join("empty.wav");
        std::fs::write(&empty, b"").unwrap();
        s.touch(&empty, Duration::from_secs(60));
        assert!(s.ready(settle).is_empty(), "an empty file is never taken");
    }

    #[test]
    fn stale_temp_uploads_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".0123abcd.upload.wav", ".ffff.upload.mp3", "keep.wav", ".keep.wav.json.tmp"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_uploads(dir.path()), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".keep.wav.json.tmp", "keep.wav"]);
    }
}
