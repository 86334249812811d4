//! The HTTP API (tiny_http): routing, streaming multipart uploads, JSON errors, exports.
//! Access checks live in `auth`, limits in `limits`, the bounded TCP front in `front`.

mod auth;
mod front;
mod limits;
mod openai;
mod speakers;

pub use front::HttpServer;
pub use limits::Slots;
pub use speakers::VoiceModels;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::config::ConfigHandle;
use crate::model::{Job, Source, SpeakerHints, Status};
use crate::queue::Queue;
use crate::render::{Format, JobResult};
use crate::store::{JobPatch, JobQuery, NewJob, RunStage, Store, StoreError};

/// An API failure; [`ApiError::status`] is the one mapping from error to HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    UriTooLong(String),
    #[error("{0}")]
    MisdirectedRequest(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{message}")]
    Unavailable { message: String, retry_after_s: u32 },
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::Conflict(_) => 409,
            ApiError::TooLarge(_) => 413,
            ApiError::Unsupported(_) => 415,
            ApiError::Internal(_) => 500,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::Timeout(_) => 408,
            ApiError::UriTooLong(_) => 414,
            ApiError::MisdirectedRequest(_) => 421,
            ApiError::HeadersTooLarge(_) => 431,
            ApiError::Unavailable { .. } => 503,
        }
    }

    /// Headers this error's response carries.
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            ApiError::MethodNotAllowed(allow) => vec![("Allow".into(), (*allow).into())],
            ApiError::Unauthorized(_) => {
                vec![("WWW-Authenticate".into(), "Bearer realm=\"diarized\"".into())]
            }
            ApiError::Unavailable { retry_after_s, .. } => {
                vec![("Retry-After".into(), retry_after_s.to_string())]
            }
            _ => vec![],
        }
    }

    /// The JSON body: `{"error": message}`, the message cut short if it quotes long input.
    pub fn body(&self) -> Value {
        json!({ "error": limits::truncate(&self.to_string()) })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound(format!("job {id} not found")),
            StoreError::PersonNotFound(id) => ApiError::NotFound(format!("speaker {id} not found")),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

type ApiResult = Result<Reply, ApiError>;

/// A successful response.
struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
        Reply { status, body, content_type: "application/json", headers: vec![] }
    }
}

/// Everything a request handler needs.
pub struct Api {
    pub config: Arc<ConfigHandle>,
    pub store: Arc<Store>,
    pub queue: Arc<Queue>,
    pub started: Instant,
    /// Names of the configured models, for `/api/status`.
    pub models: Value,
    /// The TCP address the API listens on (requests must name it, or another allowed host).
    pub bound: std::net::SocketAddr,
    /// Uploads and waits in progress.
    pub slots: Slots,
    /// Voice models for enrolment clips, loaded on first use.
    pub voices: VoiceModels,
    /// Server-sent event streams, run on the control plane.
    pub streams: Arc<crate::sse::Streams>,
}

/// Longest `?wait=true` may block.
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Api {
    /// Serves requests on `threads` threads until `server.unblock()` is called once per thread.
    pub fn serve(self: &Arc<Self>, server: Arc<Server>, threads: usize) -> Vec<std::thread::JoinHandle<()>> {
        (0..threads)
            .map(|i| {
                let api = Arc::clone(self);
                let server = Arc::clone(&server);
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(move || {
                        while let Ok(request) = server.recv() {
                            api.dispatch(request);
                        }
                    })
                    .expect("spawning an HTTP thread")
            })
            .collect()
    }

    fn handle(&self, mut request: Request) {
        let started = Instant::now();
        let method = request.method().clone();
        let url = request.url().to_string();
        let (path, query) = split_query(&url);
        if path == "/v1" || path.starts_with("/v1/") {
            return openai::handle(self, request, &method, &path, &query);
        }
        let checked = auth::check(&self.config.get(), self.bound, &request, &path);
        let result = match crate::sse::stream_path(&path).filter(|_| method == Method::Get) {
            // An event stream leaves this thread once admitted.
            Some(job) => match checked.and_then(|()| self.admit_stream(job)) {
                Ok(admitted) => return self.streams.start(admitted, request.into_writer()),
                Err(e) => Err(e),
            },
            None => checked.and_then(|()| self.route(&mut request, &method, &path, &query)),
        };
        let (status, reply) = match result {
            Ok(r) => (r.status, r),
            Err(e) => {
                if e.status() >= 500 {
                    tracing::error!(%method, %url, error = %e, "request failed");
                }
                let mut r = Reply::json(e.status(), &e.body());
                r.headers.extend(e.headers());
                (r.status, r)
            }
        };
        tracing::debug!(%method, %url, status, ms = started.elapsed().as_millis() as u64, "request");
        send(request, reply);
    }

    fn route(&self, req: &mut Request, method: &Method, path: &str, q: &Query) -> ApiResult {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["healthz"] => match method {
                Method::Get | Method::Head => Ok(self.health()),
                _ => Err(ApiError::MethodNotAllowed("GET, HEAD")),
            },
            ["api", "status"] => match method {
                Method::Get => self.status(),
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["api", "jobs"] => match method {
                Method::Get => self.list(q),
                Method::Post => self.upload(req, q),
                Method::Delete => self.delete_all(q),
                _ => Err(ApiError::MethodNotAllowed("GET, POST, DELETE")),
            },
            ["api", "events"] => Err(ApiError::MethodNotAllowed("GET")),
            ["api", "jobs", id, rest @ ..] => self.job_route(req, method, job_id(id)?, rest, q),
            ["api", "speakers", rest @ ..] => self.speakers_route(req, method, rest),
            _ => Err(ApiError::NotFound(format!("no route for {}", clip(path)))),
        }
    }

    fn job_route(&self, req: &mut Request, method: &Method, id: i64, rest: &[&str], q: &Query) -> ApiResult {
        match rest {
            [] => match method {
                Method::Get => Ok(Reply::json(200, &self.store.job(id)?)),
                Method::Put => self.edit(req, id),
                Method::Delete => self.delete_one(id, q),
                _ => Err(ApiError::MethodNotAllowed("GET, PUT, DELETE")),
            },
            ["run"] => match method {
                Method::Post => self.run(id, q),
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            ["cancel"] => match method {
                Method::Post => {
                    let job = self.queue.cancel(id)?;
                    Ok(Reply::json(if job.status == Status::Cancelled { 200 } else { 202 }, &job))
                }
                _ => Err(ApiError::MethodNotAllowed("POST")),
            },
            ["segments"] => match method {
                Method::Get => {
                    self.store.job(id)?;
                    Ok(Reply::json(200, &self.store.segments(id)?))
                }
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["transcript"] => match method {
                Method::Get => self.transcript(id, q),
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["speakers"] => self.job_speakers(req, method, id),
            ["webhooks"] => match method {
                Method::Get => {
                    self.store.job(id)?;
                    Ok(Reply::json(200, &self.store.deliveries(id)?))
                }
                _ => Err(ApiError::MethodNotAllowed("GET")),
            },
            ["events"] => Err(ApiError::MethodNotAllowed("GET")),
            _ => Err(ApiError::NotFound(format!("no route for job {id}/{}", clip(&rest.join("/"))))),
        }
    }

    /// Admits an event stream of one job (`Some(id text)`) or of all; at most half of
    /// `max_connections` streams are open at once.
    fn admit_stream(&self, job: Option<&str>) -> Result<crate::sse::Admitted, ApiError> {
        let job = job.map(job_id).transpose()?;
        self.streams.admit(job, (self.config.get().max_connections / 2).max(1))
    }

    /// `/healthz`: 503 once a worker thread has died, as jobs would then wait forever.
    fn health(&self) -> Reply {
        match self.queue.dead_workers() {
            0 => Reply::json(200, &json!({ "status": "ok" })),
            dead => Reply::json(503, &json!({ "status": "degraded", "dead_workers": dead })),
        }
    }

    fn status(&self) -> ApiResult {
        let running = self.queue.running();
        Ok(Reply::json(
            200,
            &json!({
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": self.started.elapsed().as_secs(),
                "queue_depth": self.store.queue_depth()?,
                "jobs_by_status": self.store.counts_by_status()?,
                "workers": {
                    "count": self.config.get().workers,
                    "dead": self.queue.dead_workers(),
                    "busy": running.len(),
                    "running_jobs": running,
                },
                "models": self.models,
                // Every process sharing the store (one unless several share a PostgreSQL database).
                "nodes": self.store.nodes()?,
            }),
        ))
    }

    fn list(&self, q: &Query) -> ApiResult {
        let status = match q.get("status") {
            Some(s) => {
                Some(Status::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown status {s:?}")))?)
            }
            None => None,
        };
        let limit = q.number("limit")?.unwrap_or(DEFAULT_PAGE);
        let offset = q.number("offset")?.unwrap_or(0);
        let (jobs, total) = self.store.list_jobs(&JobQuery { status, limit: Some(limit), offset })?;
        let mut reply = Reply::json(200, &jobs);
        reply.headers.push(("X-Total-Count".into(), total.to_string()));
        let status_param = status.map(|s| format!("&status={}", s.as_str())).unwrap_or_default();
        let page = |rel: &str, offset: u64| {
            format!("</api/jobs?limit={limit}&offset={offset}{status_param}>; rel=\"{rel}\"")
        };
        let mut links = Vec::new();
        if limit > 0 && u64::from(offset) + u64::from(limit) < total {
            links.push(page("next", u64::from(offset) + u64::from(limit)));
        }
        if offset > 0 {
            links.push(page("prev", u64::from(offset.saturating_sub(limit))));
        }
        if !links.is_empty() {
            reply.headers.push(("Link".into(), links.join(", ")));
        }
        Ok(reply)
    }

    fn upload(&self, req: &mut Request, q: &Query) -> ApiResult {
        let (job, ()) = self.accept_upload(req, q, &[], |_| Ok::<_, ApiError>(()))?;
        let job = if q.flag("run")? { self.queue.submit(job.id, RunStage::All)? } else { job };
        Ok(Reply::json(201, &job))
    }

    /// Receives an upload into a new job (status `uploaded`). The multipart text fields named in
    /// `fields` are collected and given to `check`, which runs once the audio has passed its
    /// checks and before the job exists; its error refuses the upload, leaving nothing behind.
    fn accept_upload<T, E: From<ApiError>>(
        &self,
        req: &mut Request,
        q: &Query,
        fields: &[&str],
        check: impl FnOnce(&[(String, String)]) -> Result<T, E>,
    ) -> Result<(Job, T), E> {
        let cfg = self.config.get();
        if req.body_length().is_some_and(|len| len as u64 > cfg.max_content_length) {
            return Err(too_large(cfg.max_content_length).into());
        }
        let _slot = self.slots.upload(cfg.max_uploads)?;
        let content_type = header(req, "Content-Type").unwrap_or_default();
        let boundary = multer::parse_boundary(&content_type).map_err(|_| {
            ApiError::BadRequest("expected a multipart/form-data body with a 'file' field".into())
        })?;
        let upload =
            receive_upload(req, &boundary, &cfg.upload_folder, cfg.max_content_length, fields, |ext| {
                cfg.extension_allowed(ext)
            })?;
        // From here on the temp file must not outlive a failure.
        let guard = TempFile(Some(upload.temp.clone()));
        let limit = cfg.max_audio_seconds as f64;
        match crate::audio::probe_file(&upload.temp).and_then(|info| info.check_duration(limit)) {
            Ok(()) => {}
            Err(e @ crate::audio::AudioError::TooLong { .. }) => {
                return Err(ApiError::TooLarge(format!("{}: {e}", upload.original_filename)).into());
            }
            Err(e) => return Err(ApiError::Unsupported(format!("{}: {e}", upload.original_filename)).into()),
        }
        let mut speakers = upload.speakers;
        merge_hints(&mut speakers, q)?;
        validate_hints(&speakers)?;
        let checked = check(&upload.fields)?;
        let references = self.reference_prints(upload.references)?;
        let webhook_url = q.get("webhook_url").map(String::from).or(upload.webhook_url);
        if let Some(url) = &webhook_url {
            crate::webhooks::check_url(url).map_err(ApiError::BadRequest)?;
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let final_path = cfg.upload_folder.join(format!("{uuid}.{}", upload.extension));
        let job = self
            .store
            .insert_job(&NewJob {
                uuid,
                audio_path: final_path.to_string_lossy().into_owned(),
                original_filename: Some(upload.original_filename),
                sha256: upload.sha256,
                source: Source::Upload,
                speakers,
            })
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::Internal("a job for this new file name already exists".into()))?;
        let id = job.id;
        if let Err(e) = self.store.save_job_references(id, &references) {
            let _ = self.store.delete_job(id, false);
            return Err(ApiError::from(e).into());
        }
        if let Some(url) = &webhook_url
            && let Err(e) = self.store.set_webhook_url(id, url)
        {
            let _ = self.store.delete_job(id, false);
            return Err(ApiError::from(e).into());
        }
        // The row exists before the file appears, so the folder watcher knows it is ours.
        if let Err(e) = std::fs::rename(&upload.temp, &final_path) {
            let _ = self.store.delete_job(id, false);
            return Err(ApiError::from(e).into());
        }
        guard.disarm();
        tracing::info!(job = id, name = ?job.original_filename, bytes = upload.bytes, "upload stored");
        Ok((job, checked))
    }

    fn edit(&self, req: &mut Request, id: i64) -> ApiResult {
        self.store.job(id)?;
        let mut body = String::new();
        req.as_reader()
            .take(1 << 20)
            .read_to_string(&mut body)
            .map_err(|e| ApiError::BadRequest(format!("unreadable body: {e}")))?;
        let patch = parse_patch(&body)?;
        let job = self.store.patch_job(id, &patch)?;
        self.queue.write_sidecar(id, self.config.get().results_folder.as_deref());
        Ok(Reply::json(200, &job))
    }

    fn run(&self, id: i64, q: &Query) -> ApiResult {
        let stage = match q.get("stage") {
            None | Some("all") => RunStage::All,
            Some("analyze") => RunStage::Analyze,
            Some(s) => return Err(ApiError::BadRequest(format!("unknown stage {s:?} (all, analyze)"))),
        };
        let wait = q.flag("wait")?;
        let _slot = if wait { Some(self.slots.wait(self.config.get().max_waits)?) } else { None };
        let job = self.queue.submit(id, stage)?;
        if wait {
            let job = self.queue.wait_until_finished(id, MAX_WAIT)?;
            limits::unless_stopping(&self.queue, &job)?;
            return Ok(Reply::json(200, &job));
        }
        Ok(Reply::json(202, &job))
    }

    fn transcript(&self, id: i64, q: &Query) -> ApiResult {
        let format = match q.get("format") {
            None => Format::Json,
            Some(f) => Format::parse(f).ok_or_else(|| {
                ApiError::BadRequest(format!("unknown format {f:?} (txt, srt, vtt, json, rttm)"))
            })?,
        };
        let result = JobResult {
            job: self.store.job(id)?,
            segments: self.store.segments(id)?,
            speaker_turns: self.store.speaker_turns(id)?,
        };
        Ok(Reply {
            status: 200,
            body: result.render(format).into_bytes(),
            content_type: format.content_type(),
            headers: vec![],
        })
    }

    fn delete_one(&self, id: i64, q: &Query) -> ApiResult {
        let with_files = q.flag("files")?;
        // A running job is told to stop; its worker then finds the row gone and writes nothing.
        if let Some(flag) = self.queue.cancel_flag(id) {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let job = self.store.delete_job(id, !with_files)?;
        if with_files {
            self.remove_files(&job.audio_path);
        }
        Ok(Reply::json(200, &json!({ "deleted": 1 })))
    }

    fn delete_all(&self, q: &Query) -> ApiResult {
        let with_files = q.flag("files")?;
        for id in self.queue.running() {
            if let Some(flag) = self.queue.cancel_flag(id) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let jobs = self.store.delete_all(!with_files)?;
        if with_files {
            jobs.iter().for_each(|j| self.remove_files(&j.audio_path));
        }
        Ok(Reply::json(200, &json!({ "deleted": jobs.len() })))
    }

    fn remove_files(&self, audio_path: &str) {
        crate::exports::remove_job_files(audio_path, self.config.get().results_folder.as_deref());
    }
}

/// Answers `request` with `reply`.
fn send(request: Request, reply: Reply) {
    let mut response = Response::from_data(reply.body).with_status_code(StatusCode(reply.status));
    for (k, v) in
        std::iter::once(("Content-Type".to_string(), reply.content_type.to_string())).chain(reply.headers)
    {
        if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "client went away");
    }
}

/// Jobs per page of `GET /api/jobs` when no `limit` is given.
const DEFAULT_PAGE: u32 = 100;

/// Parses a job id from the path; anything but a positive integer names no job (404).
fn job_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| ApiError::NotFound(format!("job {:?} not found", clip(text))))
}

/// At most 64 characters of user input, for error messages.
fn clip(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge(format!("upload exceeds MAX_CONTENT_LENGTH ({limit} bytes)"))
}

fn header(req: &Request, name: &'static str) -> Option<String> {
    req.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().to_string())
}

/// Removes a temp file on drop unless disarmed.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The request body as a stream of chunks for multer. After each chunk it reports `Pending`
/// once (waking itself at once): multer reads until its source is pending, and a source that
/// never is would be buffered whole in memory.
struct BodyStream<'r> {
    request: &'r mut Request,
    yielded: bool,
}

impl futures_util::Stream for BodyStream<'_> {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.yielded {
            this.yielded = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut buf = vec![0u8; 256 * 1024];
        let read = this.request.as_reader().read(&mut buf);
        match read {
            Ok(0) => Poll::Ready(None),
            Ok(n) => {
                buf.truncate(n);
                this.yielded = true;
                Poll::Ready(Some(Ok(bytes::Bytes::from(buf))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// A received upload, in a hidden temp file inside the upload folder.
struct Upload {
    temp: PathBuf,
    extension: String,
    original_filename: String,
    sha256: String,
    bytes: u64,
    speakers: SpeakerHints,
    /// Ad-hoc known speakers for this job only.
    references: speakers::References,
    /// The requested extra text fields, in the order sent.
    fields: Vec<(String, String)>,
    /// The `webhook_url` field, if sent.
    webhook_url: Option<String>,
}

/// Most values of extra text fields one upload may carry.
const MAX_FIELD_VALUES: usize = 32;

/// Streams a multipart body to disk, hashing as it goes; nothing is held whole in memory.
fn receive_upload(
    req: &mut Request,
    boundary: &str,
    folder: &Path,
    limit: u64,
    fields: &[&str],
    allowed: impl Fn(&str) -> bool,
) -> Result<Upload, ApiError> {
    let body = BodyStream { request: req, yielded: false };
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(limit.saturating_add(64 * 1024)));
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    futures_executor::block_on(async {
        let mut file: Option<Upload> = None;
        let mut guard = TempFile(None);
        let mut speakers = SpeakerHints::default();
        let mut references = speakers::References::default();
        let mut extra = Vec::new();
        let mut webhook_url = None;
        while let Some(mut field) = multipart.next_field().await.map_err(|e| multipart_error(e, limit))? {
            match field.name().unwrap_or_default() {
                "file" if file.is_none() => {
                    let original = sanitize_filename(field.file_name().unwrap_or_default());
                    let ext = Path::new(&original)
                        .extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase)
                        .unwrap_or_default();
                    if original.is_empty() {
                        return Err(ApiError::BadRequest("the 'file' field has no file name".into()));
                    }
                    if !allowed(&ext) {
                        return Err(ApiError::Unsupported(format!("file type {ext:?} is not allowed")));
                    }
                    std::fs::create_dir_all(folder)?;
                    let temp = folder.join(format!(".{}.upload.{ext}", uuid::Uuid::new_v4().simple()));
                    guard = TempFile(Some(temp.clone()));
                    let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
                    let mut hasher = Sha256::new();
                    let mut bytes = 0u64;
                    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                        bytes += chunk.len() as u64;
                        if bytes > limit {
                            return Err(too_large(limit));
                        }
                        hasher.update(&chunk);
                        out.write_all(&chunk)?;
                    }
                    out.flush()?;
                    out.get_ref().sync_all()?;
                    if bytes == 0 {
                        return Err(ApiError::BadRequest("the uploaded file is empty".into()));
                    }
                    file = Some(Upload {
                        temp,
                        extension: ext,
                        original_filename: original,
                        sha256: hex::encode(hasher.finalize()),
                        bytes,
                        speakers: SpeakerHints::default(),
                        references: speakers::References::default(),
                        fields: Vec::new(),
                        webhook_url: None,
                    });
                }
                name @ ("num_speakers" | "min_speakers" | "max_speakers") => {
                    let name = name.to_string();
                    let text = limits::field_text(&mut field, &name, limit).await?;
                    let n = parse_count(&name, &text)?;
                    match name.as_str() {
                        "num_speakers" => speakers.num_speakers = Some(n),
                        "min_speakers" => speakers.min_speakers = Some(n),
                        _ => speakers.max_speakers = Some(n),
                    }
                }
                name if speakers::References::accepts(name) => {
                    references.receive(&mut field, folder, limit, &allowed).await?;
                }
                name if fields.contains(&name) => {
                    let name = name.to_string();
                    if extra.len() == MAX_FIELD_VALUES {
                        return Err(ApiError::BadRequest(format!(
                            "more than {MAX_FIELD_VALUES} form fields"
                        )));
                    }
                    let text = limits::field_text(&mut field, &name, limit).await?;
                    extra.push((name, text));
                }
                "webhook_url" => {
                    webhook_url = Some(limits::field_text(&mut field, "webhook_url", limit).await?)
                }
                _ => {
                    // Unknown fields are drained and ignored, as browsers send extras.
                    while field.chunk().await.map_err(|e| multipart_error(e, limit))?.is_some() {}
                }
            }
        }
        let mut upload =
            file.ok_or_else(|| ApiError::BadRequest("multipart field 'file' is required".into()))?;
        upload.speakers = speakers;
        upload.references = references;
        upload.fields = extra;
        upload.webhook_url = webhook_url;
        guard.disarm();
        Ok(upload)
    })
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large(limit)
        }
        other => ApiError::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// Keeps the last path component, without control characters, at most 255 bytes.
fn sanitize_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).collect();
    let mut clean = clean.trim().trim_start_matches('.').to_string();
    while clean.len() > 255 {
        clean.pop();
    }
    clean
}

fn parse_count(name: &str, v: &str) -> Result<usize, ApiError> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!("{name} must be a whole number from 1 to 64, got {v:?}"))),
    }
}

fn merge_hints(h: &mut SpeakerHints, q: &Query) -> Result<(), ApiError> {
    for (name, slot) in [
        ("num_speakers", &mut h.num_speakers),
        ("min_speakers", &mut h.min_speakers),
        ("max_speakers", &mut h.max_speakers),
    ] {
        if let Some(v) = q.get(name) {
            *slot = Some(parse_count(name, v)?);
        }
    }
    Ok(())
}

fn validate_hints(h: &SpeakerHints) -> Result<(), ApiError> {
    h.check().map_err(|e| ApiError::BadRequest(e.into()))
}

/// Parses a `PUT` body: any subset of the editable fields, each of the right type.
fn parse_patch(body: &str) -> Result<JobPatch, ApiError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::BadRequest("body must be a JSON object".into()));
    };
    let mut patch = JobPatch::default();
    for (key, v) in map {
        let text = || match &v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(ApiError::BadRequest(format!("field {key:?} must be a string"))),
        };
        match key.as_str() {
            "conversation_type" => patch.conversation_type = Some(text()?),
            "summary" => patch.summary = Some(text()?),
            "language" => patch.language = Some(text()?),
            "clean_transcript" => patch.clean_transcript = Some(text()?),
            "keypoints" => {
                let list =
                    v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
                patch.keypoints = Some(list.ok_or_else(|| {
                    ApiError::BadRequest("field \"keypoints\" must be a list of strings".into())
                })?);
            }
            "topics" => {
                let list =
                    v.as_array().and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
                patch.topics = Some(list.ok_or_else(|| {
                    ApiError::BadRequest("field \"topics\" must be a list of strings".into())
                })?);
            }
            "action_items" => {
                let items = serde_json::from_value(v).map_err(|_| {
                    ApiError::BadRequest(
                        "field \"action_items\" must be a list of {\"owner\": string or null, \"text\": string}"
                            .into(),
                    )
                })?;
                patch.action_items = Some(items);
            }
            _ => return Err(ApiError::BadRequest(format!("field {key:?} cannot be edited"))),
        }
    }
    Ok(patch)
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no") => Ok(false),
            Some("" | "1" | "true" | "yes") => Ok(true),
            Some(v) => Err(ApiError::BadRequest(format!("{key} must be true or false, got {v:?}"))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u32>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::BadRequest(format!("{key} must be a whole number, got {v:?}")))
            })
            .transpose()
    }
}

fn split_query(url: &str) -> (String, Query) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (percent_decode(path), Query(pairs))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_rejects_unknown_and_mistyped_fields() {
        let p = parse_patch(r#"{"summary": "s", "keypoints": ["a", "b"]}"#).unwrap();
        assert_eq!(p.summary.as_deref(), Some("s"));
        assert_eq!(p.keypoints, Some(vec!["a".to_string(), "b".to_string()]));
        let e = parse_patch(r#"{"keypoints": "a"}"#).unwrap_err();
        assert!(e.to_string().contains("keypoints") && e.status() == 400);
        let p =
            parse_patch(r#"{"topics": ["budget"], "action_items": [{"owner": null, "text": "t"}]}"#).unwrap();
        assert_eq!(p.topics, Some(vec!["budget".to_string()]));
        assert_eq!(p.action_items.unwrap()[0], crate::model::ActionItem { owner: None, text: "t".into() });
        for bad in [
            r#"{"topics": "budget"}"#,
            r#"{"action_items": [{"owner": 1, "text": "t"}]}"#,
            r#"{"action_items": [{"text": "t", "due": "friday"}]}"#,
            r#"{"action_items": [{"owner": "Speaker01"}]}"#,
        ] {
            let e = parse_patch(bad).unwrap_err();
            assert!(
                e.status() == 400 && e.to_string().contains(bad.split('"').nth(1).unwrap()),
                "{bad}: {e}"
            );
        }
        let e = parse_patch(r#"{"status": "done"}"#).unwrap_err();
        assert!(e.to_string().contains("status"));
        assert!(parse_patch("[1]").is_err() && parse_patch("{").is_err());
    }

    #[test]
    fn query_and_filenames() {
        let (path, q) = split_query("/api/jobs%2Fx?limit=5&run=true&name=a+b%21&bad=%zz");
        assert_eq!(path, "/api/jobs/x");
        assert_eq!(q.number("limit").unwrap(), Some(5));
        assert!(q.flag("run").unwrap());
        assert_eq!(q.get("name"), Some("a b!"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert!(q.flag("name").is_err());
        assert_eq!(sanitize_filename("../../etc/pa\u{7}sswd.wav"), "passwd.wav");
        assert_eq!(sanitize_filename("C:\\x\\.hidden.mp3"), "hidden.mp3");
    }
}
