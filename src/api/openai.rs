//! The OpenAI-compatible API: `POST /v1/audio/transcriptions` and `GET /v1/models`, with
//! OpenAI's form fields, response bodies, streaming events and error shape
//! (`{"error": {"message", "type", "param", "code"}}`), so clients written for OpenAI work
//! unchanged. A transcription is a job like any other: stored, queued behind the others and
//! listed in `/api/jobs`; the request waits for it in a wait slot (`MAX_WAITS`), as
//! `?wait=true` does. These jobs skip the analysis stage.

use std::io::{self, Write};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::limits::{self, Slot};
use super::{Api, ApiError, MAX_WAIT, Query, Reply, auth, clip, send};
use crate::config::Config;
use crate::model::{DecodeOptions, Job, JobOptions, Status};
use crate::models::whisper::{WHISPER_MODELS, ggml_path, resolve_whisper_model};
use crate::render::JobResult;
use crate::render::openai::{self as shapes, ResponseFormat, Verbose};
use crate::store::{RunStage, StoreError};

/// OpenAI's model names; each means the configured Whisper model.
const ALIASES: [&str; 6] = [
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize",
    "gpt-transcribe",
];

/// The form fields a transcription request is read from; others (`include[]`,
/// `chunking_strategy`, …) are ignored.
const FIELDS: [&str; 8] = [
    "model",
    "language",
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
];

/// How often a stream looks for the stored transcript while its job runs.
const POLL: Duration = Duration::from_millis(500);
/// Silence after which a stream sends a comment (keeps proxies open, finds a client gone).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// An API failure with OpenAI's `param` and `code`; its status is [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(super) struct OpenAiError {
    error: ApiError,
    /// The form field at fault.
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None, code: None }
    }
}

impl From<StoreError> for OpenAiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl OpenAiError {
    /// A 400 about form field `param`.
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self { error: ApiError::BadRequest(message.into()), param: Some(param), code: None }
    }

    fn status(&self) -> u16 {
        self.error.status()
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    fn body(&self) -> Value {
        let status = self.status();
        let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
        let code = self.code.or((status == 401).then_some("invalid_api_key"));
        json!({ "error": {
            "message": limits::truncate(&self.error.to_string()),
            "type": kind,
            "param": self.param,
            "code": code,
        }})
    }

    fn reply(&self) -> Reply {
        let mut reply = Reply::json(self.status(), &self.body());
        reply.headers.extend(self.error.headers());
        reply
    }
}

/// What a route answers: a body, or an event stream of a queued job.
enum Answer {
    Reply(Reply),
    Stream(Streaming),
}

/// Serves one `/v1/…` request (same access checks as `/api/…`).
pub(super) fn handle(api: &Api, mut request: Request, method: &Method, path: &str, q: &Query) {
    let started = Instant::now();
    let result = auth::check(&api.config.get(), api.bound, &request, path)
        .map_err(OpenAiError::from)
        .and_then(|()| route(api, &mut request, method, path, q));
    let reply = match result {
        Ok(Answer::Stream(stream)) => return stream.run(api, request),
        Ok(Answer::Reply(reply)) => reply,
        Err(e) => {
            if e.status() >= 500 {
                tracing::error!(%method, path, error = %e, "request failed");
            }
            e.reply()
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    tracing::debug!(%method, path, status = reply.status, ms, "request");
    send(request, reply);
}

fn route(
    api: &Api,
    req: &mut Request,
    method: &Method,
    path: &str,
    q: &Query,
) -> Result<Answer, OpenAiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = |value: Value| Ok(Answer::Reply(Reply::json(200, &value)));
    match (parts.as_slice(), method) {
        (["v1", "models"], Method::Get) => reply(model_list(&api.config.get())),
        (["v1", "models", id], Method::Get) => {
            let cfg = api.config.get();
            let list = model_list(&cfg);
            let found = list["data"].as_array().and_then(|all| all.iter().find(|m| m["id"] == *id)).cloned();
            match found {
                Some(model) => reply(model),
                None => Err(OpenAiError {
                    error: ApiError::NotFound(format!("model {:?} is not installed here", clip(id))),
                    param: Some("model"),
                    code: Some("model_not_found"),
                }),
            }
        }
        (["v1", "models", ..], _) => Err(ApiError::MethodNotAllowed("GET").into()),
        (["v1", "audio", "transcriptions"], Method::Post) => transcribe(api, req, q),
        (["v1", "audio", "transcriptions"], _) => Err(ApiError::MethodNotAllowed("POST").into()),
        _ => Err(ApiError::NotFound(format!("no route for {}", clip(path))).into()),
    }
}

/// Whisper models a request may name: the installed catalogue models, and the configured one
/// (which may be a file of its own).
fn installed(cfg: &Config) -> Vec<String> {
    let mut names: Vec<String> = WHISPER_MODELS
        .iter()
        .filter(|n| ggml_path(&cfg.models_dir, n).is_file())
        .map(|n| n.to_string())
        .collect();
    if !names.contains(&cfg.whisper_model)
        && resolve_whisper_model(&cfg.models_dir, &cfg.whisper_model).is_ok()
    {
        names.insert(0, cfg.whisper_model.clone());
    }
    names
}

/// `GET /v1/models`: the installed models, then OpenAI's names for the configured one.
fn model_list(cfg: &Config) -> Value {
    let created = |name: &str| {
        resolve_whisper_model(&cfg.models_dir, name)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok()?.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    };
    let model = |id: &str, owned_by: String| json!({ "id": id, "object": "model", "created": created(id), "owned_by": owned_by });
    let mut data: Vec<Value> = installed(cfg).iter().map(|n| model(n, "diarized".into())).collect();
    for alias in ALIASES {
        let mut m = model(alias, format!("diarized ({})", cfg.whisper_model));
        m["created"] = created(&cfg.whisper_model).into();
        data.push(m);
    }
    json!({ "object": "list", "data": data })
}

/// A parsed transcription request.
#[derive(Debug, Clone, PartialEq)]
struct Transcription {
    options: JobOptions,
    format: ResponseFormat,
    /// `timestamp_granularities`: segments (the default) and/or words.
    segments: bool,
    words: bool,
    stream: bool,
}

/// Reads the form fields of a transcription request; `installed` as from [`installed`].
fn parse(
    fields: &[(String, String)],
    cfg: &Config,
    installed: &[String],
) -> Result<Transcription, OpenAiError> {
    let last = |name: &str| fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.trim());
    let model = last("model")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OpenAiError::invalid("model", "you must provide a model parameter"))?;
    let model = pick_model(cfg, installed, model)?;
    let effective = model.as_deref().unwrap_or(&cfg.whisper_model);

    let language = match last("language").map(str::to_ascii_lowercase) {
        None => None,
        Some(l) if l.is_empty() || l == "auto" => None,
        Some(l) if l.len() > 3 || !crate::asr::is_language_code(&l) => {
            return Err(OpenAiError::invalid(
                "language",
                format!("language {:?} is not an ISO-639-1 code Whisper knows (e.g. en, de)", clip(&l)),
            ));
        }
        Some(l) => Some(l),
    };
    // The request's language, else the configured one.
    let wanted = language.as_deref().or(cfg.language.as_deref().filter(|l| !l.is_empty() && *l != "auto"));
    if let Some(l) = wanted.filter(|l| *l != "en" && english_only(effective)) {
        return Err(OpenAiError::invalid(
            "language",
            format!("model {effective} is English-only; language {l:?} needs a multilingual model"),
        ));
    }
    let prompt = match last("prompt").filter(|p| !p.is_empty()) {
        Some(p) if p.contains('\0') => {
            return Err(OpenAiError::invalid("prompt", "prompt contains a NUL byte"));
        }
        p => p.map(String::from),
    };
    let temperature = match last("temperature").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match t.parse::<f32>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
            _ => {
                return Err(OpenAiError::invalid(
                    "temperature",
                    format!("temperature must be a number from 0 to 1, got {:?}", clip(t)),
                ));
            }
        },
    };
    let format = match last("response_format").filter(|f| !f.is_empty()) {
        None => ResponseFormat::Json,
        Some(f) => ResponseFormat::parse(f).ok_or_else(|| {
            OpenAiError::invalid(
                "response_format",
                format!("response_format {:?} is not one of {}", clip(f), ResponseFormat::NAMES),
            )
        })?,
    };
    let mut granularities = Vec::new();
    for (_, value) in fields.iter().filter(|(k, _)| k.starts_with("timestamp_granularities")) {
        match value.trim() {
            g @ ("segment" | "word") => granularities.push(g),
            g => {
                return Err(OpenAiError::invalid(
                    "timestamp_granularities",
                    format!("timestamp granularity {:?} is not one of segment, word", clip(g)),
                ));
            }
        }
    }
    let stream = match last("stream").map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(s) => {
            return Err(OpenAiError::invalid(
                "stream",
                format!("stream must be true or false, got {:?}", clip(s)),
            ));
        }
    };
    Ok(Transcription {
        options: JobOptions {
            model,
            decode: DecodeOptions { language, prompt, temperature },
            skip_analysis: true,
        },
        format,
        segments: granularities.is_empty() || granularities.contains(&"segment"),
        words: granularities.contains(&"word"),
        stream,
    })
}

/// The model a request names: `None` for the configured one (or one of OpenAI's names),
/// another installed model by name, else a 400 listing what is installed.
fn pick_model(cfg: &Config, installed: &[String], name: &str) -> Result<Option<String>, OpenAiError> {
    if ALIASES.contains(&name) || name == cfg.whisper_model {
        return Ok(None);
    }
    if installed.iter().any(|m| m == name) {
        return Ok(Some(name.to_string()));
    }
    Err(OpenAiError {
        error: ApiError::BadRequest(format!(
            "model {:?} is not installed; installed: {}; whisper-1 and OpenAI's other names mean {}",
            clip(name),
            installed.join(", "),
            cfg.whisper_model
        )),
        param: Some("model"),
        code: Some("model_not_found"),
    })
}

/// Whether a Whisper model name or file is English-only (`tiny.en`, `ggml-base.en-q5_1.bin`).
fn english_only(model: &str) -> bool {
    std::path::Path::new(model).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".en"))
}

/// `POST /v1/audio/transcriptions`: stores the upload as a job with the request's options,
/// queues it and answers when it ends (or streams it).
fn transcribe(api: &Api, req: &mut Request, q: &Query) -> Result<Answer, OpenAiError> {
    let cfg = api.config.get();
    // Taken before the upload, so a refusal costs the client nothing to send.
    let slot = api.slots.wait(cfg.max_waits)?;
    let installed = installed(&cfg);
    let (job, request) = api.accept_upload(req, q, &FIELDS, |fields| parse(fields, &cfg, &installed))?;
    tracing::info!(
        job = job.id,
        model = request.options.model.as_deref().unwrap_or(&cfg.whisper_model),
        format = ?request.format,
        stream = request.stream,
        "OpenAI-compatible transcription"
    );
    let queued = api
        .store
        .set_job_options(job.id, &request.options)
        .and_then(|()| api.queue.submit(job.id, RunStage::All));
    if let Err(e) = queued {
        let _ = api.store.delete_job(job.id, false);
        api.remove_files(&job.audio_path);
        return Err(e.into());
    }
    if request.stream {
        return Ok(Answer::Stream(Streaming { id: job.id, _slot: slot }));
    }
    let job = api.queue.wait_until_finished(job.id, MAX_WAIT)?;
    limits::unless_stopping(&api.queue, &job)?;
    let result = finished(api, job)?;
    let code = result.job.language.as_deref().unwrap_or_default();
    let verbose = Verbose {
        language: crate::asr::language_name(code).unwrap_or(code),
        segments: request.segments,
        words: request.words,
        temperature: request.options.decode.temperature.unwrap_or(0.0),
    };
    Ok(Answer::Reply(Reply {
        status: 200,
        body: shapes::body(&result, request.format, verbose).into_bytes(),
        content_type: request.format.content_type(),
        headers: vec![],
    }))
}

/// The result of a job that has ended; an error, a cancel or a job still running is an error.
fn finished(api: &Api, job: Job) -> Result<JobResult, OpenAiError> {
    let id = job.id;
    match job.status {
        Status::Done => Ok(JobResult { segments: api.store.segments(id)?, speaker_turns: vec![], job }),
        Status::Error => Err(ApiError::Internal(format!(
            "job {id} failed: {}",
            job.error_message.as_deref().unwrap_or("unknown error")
        ))
        .into()),
        Status::Cancelled => Err(ApiError::Conflict(format!("job {id} was cancelled")).into()),
        s => Err(ApiError::Unavailable {
            message: format!(
                "job {id} is still {} after {} s; see /api/jobs/{id}",
                s.as_str(),
                MAX_WAIT.as_secs()
            ),
            retry_after_s: 30,
        }
        .into()),
    }
}

/// `stream=true`: the job's transcript as server-sent events. Deltas go out as the transcriber
/// decodes segments (when the job runs in this process; on another node, once the transcription
/// stage has stored its segments); segments with speakers and `transcript.text.done` when the
/// job ends. Deltas are a preview: the final segments may differ (a re-decoded window), so
/// `transcript.text.done` carries the text to keep.
struct Streaming {
    id: i64,
    /// The wait slot, held while the stream is open.
    _slot: Slot,
}

impl Streaming {
    fn run(self, api: &Api, request: Request) {
        let outcome = Sse::start(request).and_then(|mut sse| self.relay(api, &mut sse));
        match outcome {
            Ok(()) => tracing::debug!(job = self.id, "transcription stream ended"),
            Err(e) => tracing::info!(job = self.id, error = %e, "stream client went away; the job goes on"),
        }
    }

    fn relay(&self, api: &Api, sse: &mut Sse) -> io::Result<()> {
        let mut sent = 0;
        loop {
            let job = match api.queue.wait_until_finished(self.id, POLL) {
                Ok(job) => job,
                Err(e) => return sse.error(&e.into()),
            };
            if !matches!(job.status, Status::Queued | Status::Processing) {
                return match finished(api, job) {
                    Ok(result) => {
                        sse.deltas(sent, result.segments.get(sent..).unwrap_or_default())?;
                        for (i, s) in result.segments.iter().enumerate() {
                            sse.event(&shapes::segment_event(i, s))?;
                        }
                        sse.event(&shapes::done_event(&result.segments))
                    }
                    Err(e) => sse.error(&e),
                };
            }
            if let Err(e) = limits::unless_stopping(&api.queue, &job) {
                return sse.error(&e.into());
            }
            let mut new = api.queue.live_segments(self.id, sent);
            if new.is_empty() && sent == 0 {
                // Running on another node: its stored segments, once transcribed.
                new = match api.store.segments(self.id) {
                    Ok(segments) => segments,
                    Err(e) => return sse.error(&e.into()),
                };
            }
            sse.deltas(sent, &new)?;
            sent += new.len();
            sse.keepalive()?;
        }
    }
}

/// A server-sent event stream written straight to the connection, each event flushed as its
/// own chunk (tiny_http's own responses buffer 8 KiB before sending).
struct Sse {
    out: Box<dyn Write + Send>,
    last: Instant,
}

impl Sse {
    fn start(request: Request) -> io::Result<Self> {
        let mut out = request.into_writer();
        out.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )?;
        out.flush()?;
        Ok(Self { out, last: Instant::now() })
    }

    fn chunk(&mut self, text: &str) -> io::Result<()> {
        write!(self.out, "{:x}\r\n{text}\r\n", text.len())?;
        self.out.flush()?;
        self.last = Instant::now();
        Ok(())
    }

    fn event(&mut self, value: &Value) -> io::Result<()> {
        self.chunk(&format!("data: {value}\n\n"))
    }

    /// `transcript.text.delta` events for `segments`, the first being segment number `first`.
    fn deltas(&mut self, first: usize, segments: &[crate::model::Segment]) -> io::Result<()> {
        segments.iter().enumerate().try_for_each(|(i, s)| self.event(&shapes::delta_event(first + i, s)))
    }

    /// An error event; OpenAI's clients raise it.
    fn error(&mut self, e: &OpenAiError) -> io::Result<()> {
        tracing::warn!(error = %e, "transcription stream ends with an error");
        self.event(&e.body())
    }

    fn keepalive(&mut self) -> io::Result<()> {
        if self.last.elapsed() < KEEPALIVE { Ok(()) } else { self.chunk(": keepalive\n\n") }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        // The last chunk; the connection then closes.
        let _ = self.out.write_all(b"0\r\n\r\n").and_then(|()| self.out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config { whisper_model: "tiny.en".into(), ..Config::default() }
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn installed_here() -> Vec<String> {
        vec!["tiny.en".into(), "base".into()]
    }

    fn parsed(pairs: &[(&str, &str)]) -> Result<Transcription, OpenAiError> {
        parse(&form(pairs), &cfg(), &installed_here())
    }

    fn refused(pairs: &[(&str, &str)]) -> (u16, Value) {
        let e = parsed(pairs).unwrap_err();
        (e.status(), e.body())
    }

    #[test]
    fn openai_names_mean_the_configured_model_and_installed_names_pick_one() {
        for alias in ALIASES {
            let t = parsed(&[("model", alias)]).unwrap();
            assert_eq!(t.options.model, None, "{alias}");
            assert!(t.options.skip_analysis);
            assert_eq!((t.format, t.segments, t.words, t.stream), (ResponseFormat::Json, true, false, false));
        }
        assert_eq!(parsed(&[("model", "tiny.en")]).unwrap().options.model, None);
        assert_eq!(parsed(&[("model", "base")]).unwrap().options.model.as_deref(), Some("base"));
    }

    #[test]
    fn unknown_or_missing_model_is_a_400_in_openais_shape() {
        let (status, body) = refused(&[("model", "whisper-large-v9")]);
        assert_eq!(status, 400);
        let e = &body["error"];
        assert_eq!((e["type"].as_str(), e["param"].as_str()), (Some("invalid_request_error"), Some("model")));
        assert_eq!(e["code"], "model_not_found");
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("installed: tiny.en, base;") && message.contains("whisper-1"), "{message}");
        assert!(!message.contains("truncated"), "{message}");
        let (status, body) = refused(&[("language", "en")]);
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some("model")));
    }

    #[test]
    fn every_field_is_read_and_checked() {
        let t = parsed(&[
            ("model", "base"),
            ("language", "DE"),
            ("prompt", "Grüße an Angela."),
            ("temperature", "0.3"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
            ("stream", "true"),
        ])
        .unwrap();
        let decode = &t.options.decode;
        assert_eq!(
            (decode.language.as_deref(), decode.prompt.as_deref()),
            (Some("de"), Some("Grüße an Angela."))
        );
        assert_eq!(decode.temperature, Some(0.3));
        assert_eq!(
            (t.format, t.segments, t.words, t.stream),
            (ResponseFormat::VerboseJson, true, true, true)
        );
        // Without `[]` too; words alone leave segments out.
        let t = parsed(&[("model", "whisper-1"), ("timestamp_granularities", "word")]).unwrap();
        assert_eq!((t.segments, t.words), (false, true));
        for format in ["json", "text", "srt", "vtt", "verbose_json", "diarized_json"] {
            assert!(parsed(&[("model", "whisper-1"), ("response_format", format)]).is_ok(), "{format}");
        }
        for (field, value) in [
            ("response_format", "xml"),
            ("temperature", "1.5"),
            ("temperature", "warm"),
            ("temperature", "NaN"),
            ("language", "klingon"),
            ("language", "xx"),
            ("language", "e\0"),
            ("prompt", "a\0b"),
            ("timestamp_granularities[]", "sentence"),
            ("stream", "maybe"),
        ] {
            let (status, body) = refused(&[("model", "base"), (field, value)]);
            let param = field.trim_end_matches("[]");
            assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{field}={value:?}");
        }
        // tiny.en (the configured model) cannot do German.
        let (status, body) = refused(&[("model", "whisper-1"), ("language", "de")]);
        assert_eq!(status, 400);
        assert!(body["error"]["message"].as_str().unwrap().contains("English-only"), "{body}");
        assert!(parsed(&[("model", "whisper-1"), ("language", "en")]).is_ok());
        // Nor the configured language, when a request picks tiny.en without one of its own.
        let german =
            Config { whisper_model: "base".into(), language: Some("de".into()), ..Config::default() };
        let e = parse(&form(&[("model", "tiny.en")]), &german, &installed_here()).unwrap_err();
        assert_eq!((e.status(), e.param), (400, Some("language")));
        assert!(
            parse(&form(&[("model", "tiny.en"), ("language", "en")]), &german, &installed_here()).is_ok()
        );
        assert!(parse(&form(&[("model", "whisper-1")]), &german, &installed_here()).is_ok());
    }

    #[test]
    fn errors_keep_status_headers_and_openai_types() {
        let e = OpenAiError::from(ApiError::Unauthorized("no token".into()));
        let reply = e.reply();
        assert_eq!(reply.status, 401);
        assert!(reply.headers.iter().any(|(k, _)| k == "WWW-Authenticate"));
        assert_eq!(e.body()["error"]["code"], "invalid_api_key");
        let e = OpenAiError::from(ApiError::Unavailable { message: "busy".into(), retry_after_s: 5 });
        assert_eq!((e.status(), e.body()["error"]["type"].as_str()), (503, Some("server_error")));
        assert!(e.reply().headers.iter().any(|(k, v)| k == "Retry-After" && v == "5"));
        let long = OpenAiError::invalid("prompt", "x".repeat(10_000));
        assert!(long.body()["error"]["message"].as_str().unwrap().len() < 400);
    }

    #[test]
    fn english_only_models() {
        for name in ["tiny.en", "tiny.en-q8_0", "/m/ggml-base.en.bin"] {
            assert!(english_only(name), "{name}");
        }
        for name in ["base", "base-q5_1", "/models/english/ggml-base.bin"] {
            assert!(!english_only(name), "{name}");
        }
    }
}
