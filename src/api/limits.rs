//! Limits that keep one client from holding the API: long requests run beside the request
//! threads, uploads and waits are counted, quoted input in errors is cut short.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tiny_http::Request;

use super::{Api, ApiError, multipart_error};
use crate::model::{Job, Status};
use crate::queue::Queue;

/// Longest error message sent back; longer ones quote hostile input.
const MAX_ERROR_CHARS: usize = 200;

/// Longest multipart text field (speaker hints are small numbers).
const MAX_FIELD_BYTES: usize = 1024;

/// Bodies up to this size are read by tiny_http before the request reaches us.
const SMALL_BODY: usize = 1024;

/// Seconds a client refused for load is told to wait.
const RETRY_AFTER_S: u32 = 5;

/// Cuts `message` to [`MAX_ERROR_CHARS`] characters, saying so.
pub(super) fn truncate(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        None => message.to_string(),
        Some((cut, _)) => format!("{}… (truncated, {} bytes in all)", &message[..cut], message.len()),
    }
}

/// Counts of uploads being received and `?wait=true` requests open.
#[derive(Default)]
pub struct Slots {
    uploads: Arc<AtomicUsize>,
    waits: Arc<AtomicUsize>,
}

/// One taken slot, given back on drop.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slots {
    /// Takes an upload slot, or 503 when `max` uploads are being received.
    pub(super) fn upload(&self, max: usize) -> Result<Slot, ApiError> {
        take(&self.uploads, max, "uploads", "MAX_UPLOADS")
    }

    /// Takes a wait slot, or 503 when `max` waits are open.
    pub(super) fn wait(&self, max: usize) -> Result<Slot, ApiError> {
        take(&self.waits, max, "waiting requests", "MAX_WAITS")
    }

    /// Open waits right now.
    pub fn waits(&self) -> usize {
        self.waits.load(Ordering::SeqCst)
    }
}

fn take(counter: &Arc<AtomicUsize>, max: usize, what: &str, key: &str) -> Result<Slot, ApiError> {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
        .map(|_| Slot(Arc::clone(counter)))
        .map_err(|_| ApiError::Unavailable {
            message: format!("{max} {what} at once already ({key}); retry later"),
            retry_after_s: RETRY_AFTER_S,
        })
}

/// A wait that ended because the service is stopping is a 503, not a finished job.
pub(super) fn unless_stopping(queue: &Queue, job: &Job) -> Result<(), ApiError> {
    if queue.is_stopping() && matches!(job.status, Status::Queued | Status::Processing) {
        return Err(ApiError::Unavailable {
            message: format!("the service is shutting down; job {} stays {}", job.id, job.status.as_str()),
            retry_after_s: 30,
        });
    }
    Ok(())
}

/// Reads a multipart text field of at most [`MAX_FIELD_BYTES`].
pub(super) async fn field_text(
    field: &mut multer::Field<'_>,
    name: &str,
    limit: u64,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(ApiError::BadRequest(format!("field {name} is longer than {MAX_FIELD_BYTES} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::BadRequest(format!("field {name} is not UTF-8 text")))
}

impl Api {
    /// Answers quick requests on this thread; a request that may take long (a body beyond
    /// what tiny_http has already read, or a wait) gets its own thread, so request threads
    /// stay free for `/healthz` and reads. Their number is bounded by the front's
    /// `max_connections`, and the uploads and waits among them by [`Slots`].
    pub(super) fn dispatch(self: &Arc<Self>, request: Request) {
        let chunked = request.headers().iter().any(|h| h.field.equiv("Transfer-Encoding"));
        let long = chunked
            || request.body_length().is_some_and(|n| n > SMALL_BODY)
            || request.url().split_once('?').is_some_and(|(_, q)| q.contains("wait"))
            // An OpenAI-compatible transcription waits for its job, however small its body.
            || request.url().starts_with("/v1/audio/");
        if !long {
            return self.handle(request);
        }
        let api = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("http-long".into()).spawn(move || api.handle(request));
        if let Err(e) = spawned {
            // The request was dropped with the closure; tiny_http answers it 500.
            tracing::error!(error = %e, "cannot start a thread for a long request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(truncate("short"), "short");
        let long = format!("unknown status {:?}", "x".repeat(1 << 20));
        let cut = truncate(&long);
        assert!(cut.len() < 300 && cut.starts_with("unknown status \"xxx"), "{cut}");
        assert!(cut.contains("truncated"));
        let accents = "é".repeat(500);
        assert!(truncate(&accents).starts_with(&"é".repeat(MAX_ERROR_CHARS)));
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let slots = Slots::default();
        let a = slots.wait(2).unwrap();
        let _b = slots.wait(2).unwrap();
        let e = slots.wait(2).err().unwrap();
        assert_eq!(e.status(), 503);
        assert!(e.headers().iter().any(|(k, v)| k == "Retry-After" && v == "5"));
        assert!(e.to_string().contains("MAX_WAITS"));
        drop(a);
        assert_eq!(slots.waits(), 1);
        assert!(slots.wait(2).is_ok());
        assert!(slots.upload(1).is_ok());
    }
}
