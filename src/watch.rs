//! The watched folder: complete audio files that appear in it become queued jobs.
//!
//! A file counts as complete when its writer closes it, when it is moved in (rename is atomic),
//! or — for writers that give no close event — when its size has not changed for
//! [`SETTLE`]. Hidden files, partial/temp names and our own sidecars are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher};

use crate::config::{Config, ConfigHandle};
use crate::model::{Source, SpeakerHints};
use crate::queue::Queue;
use crate::store::{NewJob, RunStage, Store};

/// How long a file's size must stay unchanged, with no close event, before it is taken.
pub const SETTLE: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(250);

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
    Queued(String),
    /// The path is already a job (e.g. an API upload).
    Known,
    /// Same content as an existing job.
    Duplicate(String),
}

/// Registers one complete file as a watch job and queues it.
pub fn register(path: &Path, store: &Store, queue: &Queue) -> Result<Registered, WatchError> {
    let audio_path = path.to_string_lossy().into_owned();
    if store.job_by_audio_path(&audio_path)?.is_some() {
        return Ok(Registered::Known);
    }
    let sha =
        crate::files::sha256_file(path).map_err(|source| WatchError::Io { path: path.to_owned(), source })?;
    if let Some(existing) = store.job_by_sha256(&sha)? {
        tracing::info!(path = %path.display(), job = %existing.id, "same content as an existing job; skipped");
        return Ok(Registered::Duplicate(existing.id));
    }
    let id = uuid::Uuid::new_v4().to_string();
    store.insert_job(&NewJob {
        id: id.clone(),
        audio_path,
        original_filename: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        sha256: sha,
        source: Source::Watch,
        speakers: SpeakerHints::default(),
    })?;
    queue.submit(&id, RunStage::All)?;
    tracing::info!(job = %id, path = %path.display(), "watched file queued");
    Ok(Registered::Queued(id))
}

/// Registers every candidate file already in the folder (files added while we were down).
pub fn rescan(cfg: &Config, store: &Store, queue: &Queue) -> Result<usize, WatchError> {
    let dir = &cfg.upload_folder;
    let entries = std::fs::read_dir(dir).map_err(|source| WatchError::Io { path: dir.clone(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_candidate(p, cfg))
        .collect();
    paths.sort();
    let mut queued = 0;
    for p in paths {
        match register(&p, store, queue) {
            Ok(Registered::Queued(_)) => queued += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "rescan: file skipped"),
        }
    }
    Ok(queued)
}

/// A running folder watcher; dropping it stops the watch.
pub struct FolderWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _watcher: notify::RecommendedWatcher,
}

impl Drop for FolderWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A file seen changing, waiting to be complete.
struct Pending {
    size: u64,
    since: Instant,
}

/// Starts watching the upload folder (non-recursively).
pub fn start(
    config: Arc<ConfigHandle>,
    store: Arc<Store>,
    queue: Arc<Queue>,
) -> Result<FolderWatcher, WatchError> {
    let dir = config.get().upload_folder.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|source| WatchError::Notify { path: dir.clone(), source })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify { path: dir.clone(), source })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let mut pending: HashMap<PathBuf, Pending> = HashMap::new();
            while !stop2.load(Ordering::SeqCst) {
                match rx.recv_timeout(TICK) {
                    Ok(Ok(event)) => {
                        let cfg = config.get();
                        for path in event.paths.iter().filter(|p| is_candidate(p, &cfg)) {
                            // Events carry absolute paths; jobs store the folder as configured.
                            let Some(name) = path.file_name() else { continue };
                            on_event(
                                &event.kind,
                                &cfg.upload_folder.join(name),
                                &mut pending,
                                &store,
                                &queue,
                            );
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "watch error"),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
                settle(&mut pending, &store, &queue);
            }
        })
        .map_err(|source| WatchError::Io { path: PathBuf::from("watch thread"), source })?;
    Ok(FolderWatcher { stop, thread: Some(thread), _watcher: watcher })
}

fn on_event(
    kind: &EventKind,
    path: &Path,
    pending: &mut HashMap<PathBuf, Pending>,
    store: &Store,
    queue: &Queue,
) {
    let complete = matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    );
    if complete {
        pending.remove(path);
        take(path, store, queue);
    } else if matches!(kind, EventKind::Create(_) | EventKind::Modify(_)) {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        pending.insert(path.to_owned(), Pending { size, since: Instant::now() });
    } else if matches!(kind, EventKind::Remove(_)) {
        pending.remove(path);
    }
}

/// Takes files whose size stopped changing (writers that never send a close event).
fn settle(pending: &mut HashMap<PathBuf, Pending>, store: &Store, queue: &Queue) {
    let mut ready = Vec::new();
    pending.retain(|path, p| match std::fs::metadata(path) {
        Err(_) => false,
        Ok(m) if m.len() != p.size => {
            *p = Pending { size: m.len(), since: Instant::now() };
            true
        }
        Ok(_) if p.since.elapsed() >= SETTLE => {
            ready.push(path.clone());
            false
        }
        Ok(_) => true,
    });
    for path in ready {
        take(&path, store, queue);
    }
}

fn take(path: &Path, store: &Store, queue: &Queue) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        _ => return,
    }
    if let Err(e) = register(path, store, queue) {
        tracing::warn!(path = %path.display(), error = %e, "watched file not registered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
