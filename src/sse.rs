//! Server-sent events: `GET /api/jobs/<id>/events` (the job's status and progress until it
//! ends) and `GET /api/events` (every job, until the client leaves).
//!
//! A stream does not hold a request thread: the request thread checks it, takes tiny_http's
//! raw writer and hands it to a task on the control plane, which relays bus events to it. The
//! writes themselves run on tokio's blocking pool, so a client that stops reading delays only
//! its own stream (the front drops it after `http_timeout_s`). A `: keepalive` comment every
//! [`KEEPALIVE`] finds clients that left. Streams count as open connections at the front; at
//! most half of `max_connections` may be streams, so ordinary requests always have room.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::api::ApiError;
use crate::events::Event;
use crate::model::Status;
use crate::store::Store;

/// Longest silence on a stream before a comment is sent.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// The response head; the front adds `Connection: close` and the body runs until the close.
const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
X-Accel-Buffering: no\r\n\r\nretry: 3000\n\n";

/// The open event streams.
pub struct Streams {
    runtime: tokio::runtime::Handle,
    store: Arc<Store>,
    open: Arc<AtomicUsize>,
    closing: watch::Receiver<bool>,
}

/// A stream that was admitted: subscribed, its first event read, counted.
pub struct Admitted {
    job: Option<i64>,
    rx: broadcast::Receiver<Arc<Event>>,
    first: Option<Event>,
    slot: Slot,
}

/// One counted stream, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which stream a path asks for: `Some(None)` all jobs, `Some(Some(text))` one job's id text.
pub fn stream_path(path: &str) -> Option<Option<&str>> {
    match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "events"] => Some(None),
        ["api", "jobs", id, "events"] => Some(Some(id)),
        _ => None,
    }
}

impl Streams {
    /// Streams run on `runtime` until `closing` turns true.
    pub fn new(runtime: tokio::runtime::Handle, store: Arc<Store>, closing: watch::Receiver<bool>) -> Self {
        Self { runtime, store, open: Arc::default(), closing }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Admits a stream of one job (404 if there is none) or of all, 503 when `max` are open.
    pub fn admit(&self, job: Option<i64>, max: usize) -> Result<Admitted, ApiError> {
        self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).map_err(
            |_| ApiError::Unavailable {
                message: format!("{max} event streams open already (half of MAX_CONNECTIONS); retry later"),
                retry_after_s: 5,
            },
        )?;
        let slot = Slot(Arc::clone(&self.open));
        // Subscribed before the job is read, so no change falls between.
        let rx = self.store.events().subscribe();
        let first = match job {
            Some(id) => Some(Event::Status { job: Box::new(self.store.job(id)?) }),
            None => None,
        };
        Ok(Admitted { job, rx, first, slot })
    }

    /// Starts relaying events to `writer` (tiny_http's raw response writer).
    pub fn start(&self, admitted: Admitted, writer: Box<dyn Write + Send>) {
        let (store, closing) = (Arc::clone(&self.store), self.closing.clone());
        self.runtime.spawn(async move {
            let Admitted { job, rx, first, slot } = admitted;
            let n = slot.0.load(Ordering::SeqCst);
            tracing::debug!(?job, open = n, "event stream opened");
            pump(writer, job, rx, first, &store, closing).await;
            drop(slot);
            tracing::debug!(?job, "event stream closed");
        });
    }
}

/// The SSE frame of an event.
pub fn frame(event: &Event) -> String {
    let data = match event {
        Event::Status { job } => serde_json::to_string(job).unwrap_or_default(),
        Event::Progress { id, progress } => json!({ "id": id, "progress": progress }).to_string(),
        Event::Deleted { id } => json!({ "id": id }).to_string(),
    };
    format!("event: {}\ndata: {data}\n\n", event.name())
}

/// Whether a one-job stream ends after this event.
fn ends(event: &Event) -> bool {
    match event {
        Event::Status { job } => matches!(job.status, Status::Done | Status::Error | Status::Cancelled),
        Event::Deleted { .. } => true,
        Event::Progress { .. } => false,
    }
}

/// Writes on the blocking pool; gives the writer back unless the client is gone.
async fn send(writer: Box<dyn Write + Send>, bytes: Vec<u8>) -> Option<Box<dyn Write + Send>> {
    tokio::task::spawn_blocking(move || {
        let mut w = writer;
        w.write_all(&bytes).and_then(|()| w.flush()).ok().map(|()| w)
    })
    .await
    .ok()
    .flatten()
}

async fn pump(
    writer: Box<dyn Write + Send>,
    job: Option<i64>,
    mut rx: broadcast::Receiver<Arc<Event>>,
    first: Option<Event>,
    store: &Arc<Store>,
    mut closing: watch::Receiver<bool>,
) {
    let mut head = HEAD.to_vec();
    if let Some(first) = &first {
        head.extend_from_slice(frame(first).as_bytes());
        if ends(first) {
            let _ = send(writer, head).await;
            return;
        }
    }
    let Some(mut writer) = send(writer, head).await else { return };
    loop {
        let bytes = tokio::select! {
            _ = closing.changed() => return,
            received = tokio::time::timeout(KEEPALIVE, rx.recv()) => match received {
                Err(_) => ": keepalive\n\n".to_string(),
                Ok(Ok(event)) if job.is_none_or(|id| id == event.job_id()) => {
                    let text = frame(&event);
                    if job.is_some() && ends(&event) {
                        let _ = send(writer, text.into_bytes()).await;
                        return;
                    }
                    text
                }
                Ok(Ok(_)) => continue,
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => match job {
                    // Fell behind: the job as stored now stands for what was missed.
                    Some(id) => {
                        let store = Arc::clone(store);
                        match tokio::task::spawn_blocking(move || store.job(id)).await {
                            Ok(Ok(job)) => {
                                let event = Event::Status { job: Box::new(job) };
                                if ends(&event) {
                                    let _ = send(writer, frame(&event).into_bytes()).await;
                                    return;
                                }
                                frame(&event)
                            }
                            _ => return,
                        }
                    }
                    None => format!(": {n} events skipped (client too slow)\n\n"),
                },
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            },
        };
        match send(writer, bytes.into_bytes()).await {
            Some(w) => writer = w,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_frames() {
        assert_eq!(stream_path("/api/events"), Some(None));
        assert_eq!(stream_path("/api/jobs/7/events"), Some(Some("7")));
        assert_eq!(stream_path("/api/jobs/7"), None);
        let e = Event::Progress { id: 7, progress: 42.0 };
        assert_eq!(frame(&e), "event: progress\ndata: {\"id\":7,\"progress\":42.0}\n\n");
        assert!(!ends(&e) && ends(&Event::Deleted { id: 7 }));
    }
}
