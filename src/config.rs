//! Configuration: defaults → `config.toml` → `.env` → environment variables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem, naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The daemon's settings. Every field has a default; see `config.toml.example`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on (`BIND`).
    pub bind: String,
    /// Watched folder; API uploads are stored here too (`UPLOAD_FOLDER`).
    pub upload_folder: PathBuf,
    /// Where sidecar JSON files go; `None` writes them beside the audio (`RESULTS_FOLDER`).
    pub results_folder: Option<PathBuf>,
    /// SQLite database, `sqlite:///relative.db`, `sqlite:////abs.db` or a plain path; or a
    /// PostgreSQL one, `postgres://user:password@host/db`, shared by several nodes (`DATABASE_URL`).
    pub database_url: String,
    /// Largest accepted upload in bytes (`MAX_CONTENT_LENGTH`).
    pub max_content_length: u64,
    /// Longest accepted recording in seconds; longer uploads get 413, longer watched files an
    /// `error` job (`MAX_AUDIO_SECONDS`).
    pub max_audio_seconds: u64,
    /// Seconds a watched file's size and mtime must stay unchanged before it is taken (`SETTLE_S`).
    pub settle_s: u64,
    /// Accepted file extensions, lower case, without dots (`ALLOWED_EXTENSIONS`).
    pub allowed_extensions: BTreeSet<String>,
    /// Accepted for compatibility with the seed's `.env`; the API has no sessions to sign (`SECRET_KEY`).
    pub secret_key: Option<String>,
    /// Number of pipeline workers (`WORKERS`).
    pub workers: usize,
    /// Seconds a running job may take to finish on shutdown before it is re-queued (`GRACE_PERIOD_S`).
    pub grace_period_s: u64,
    /// Seconds a running job stays claimed without its node's heartbeat; after that another node
    /// runs it again (`JOB_LEASE_S`).
    pub job_lease_s: u64,
    /// Folder of the daily-rolling log file; `None` logs to stderr only (`LOG_DIR`).
    pub log_dir: Option<PathBuf>,
    /// Folder where installed models are cached (`MODELS_DIR`).
    pub models_dir: PathBuf,
    /// Whisper model: `base`, `tiny.en` or a path to a ggml file (`WHISPER_MODEL`).
    pub whisper_model: String,
    /// Threads for whisper.cpp; `None` = number of cores (`WHISPER_THREADS`).
    pub whisper_threads: Option<usize>,
    /// Hold the decoder's weights of a 16-bit Whisper model in q8_0, which decodes faster
    /// (`WHISPER_DECODER_Q8`; false keeps the file's weights as they are).
    pub whisper_decoder_q8: bool,
    /// Force the transcription language (ISO code); `None` auto-detects (`LANGUAGE`).
    pub language: Option<String>,
    /// Run speaker diarization (`DIARIZATION`).
    pub diarization: bool,
    /// Default speaker-count hints for jobs that give none.
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    /// Analysis backend: `gemini-…`, `qwen2.5-coder-1.5b`, `qwen2.5-coder-0.5b` or `none` (`LLM_MODEL`).
    pub llm_model: String,
    /// Threads for the local LLM; `None` = 1, as spinning ggml threads collapse on a busy machine (`LLM_THREADS`).
    pub llm_threads: Option<usize>,
    /// Gemini API key (`GEMINI_API_KEY`).
    pub gemini_api_key: Option<String>,
    /// Gemini endpoint base URL (`GEMINI_BASE_URL`).
    pub gemini_base_url: String,
    /// Accepted for compatibility; no model is fetched from a hub (`HF_TOKEN`).
    pub hf_token: Option<String>,
    /// Bearer tokens the API accepts; empty = no authentication (`API_TOKEN`, comma-separated).
    pub api_token: ApiTokens,
    /// Allows a non-loopback `bind` without `api_token` (`ALLOW_UNAUTHENTICATED`).
    pub allow_unauthenticated: bool,
    /// Extra `Host` names the API answers to, `name` (any port) or `name:port` (`ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
    /// Other sites' origins (`https://app.example`) whose browser requests are accepted (`ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// Threads answering quick requests; uploads and waits run beside them (`HTTP_THREADS`, at start).
    pub http_threads: usize,
    /// Open client connections at most; more are answered 503 (`MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Request bodies over 1 KiB (uploads) received at once at most; more get 503 (`MAX_UPLOADS`).
    pub max_uploads: usize,
    /// `?wait=true` requests open at once at most; more get 503 (`MAX_WAITS`).
    pub max_waits: usize,
    /// Seconds a client may stay silent while sending a request, or stall reading a response (`HTTP_TIMEOUT_S`).
    pub http_timeout_s: u64,
    /// Webhook for jobs of the watched folder; uploads name their own (`WEBHOOK_URL`).
    pub webhook_url: Option<String>,
    /// Standard Webhooks signing key, `whsec_<base64>` (`WEBHOOK_SECRET`).
    pub webhook_secret: Option<WebhookSecret>,
    /// Hosts webhooks may reach although they are private or loopback (`WEBHOOK_ALLOW_HOSTS`).
    pub webhook_allow_hosts: Vec<String>,
    /// Events sent: `job.done`, `job.error`, `job.cancelled`, `job.started` (`WEBHOOK_EVENTS`).
    pub webhook_events: Vec<String>,
    /// Seconds before each retry of a failed delivery; one attempt more than entries (`WEBHOOK_RETRY_DELAYS_S`).
    pub webhook_retry_delays_s: Vec<f64>,
    /// Renderings written beside the sidecar when a job is done: txt, srt, vtt, rttm (`EXPORT_FORMATS`).
    pub export_formats: Vec<String>,
    /// Jobs that ended longer ago are deleted with their files; 0 keeps them (`RETENTION_DAYS`).
    pub retention_days: f64,
}

/// The webhook signing key (`whsec_<base64>`); `Debug` does not print it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// Webhook event types a configuration may name.
pub const WEBHOOK_EVENTS: [&str; 4] = ["job.done", "job.error", "job.cancelled", "job.started"];

/// Transcript renderings `export_formats` may name (JSON is the sidecar itself).
pub const EXPORT_FORMATS: [&str; 4] = ["txt", "srt", "vtt", "rttm"];

/// API bearer tokens: one string or a list in the file, comma-separated in `API_TOKEN`.
/// `Debug` does not print them.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct ApiTokens(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for ApiTokens {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => ApiTokens::parse(&s),
            OneOrMany::Many(list) => ApiTokens(list.into_iter().map(|t| t.trim().to_string()).collect()),
        }
    }
}

impl ApiTokens {
    /// Splits a comma-separated list, dropping blanks.
    pub fn parse(v: &str) -> Self {
        ApiTokens(v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect())
    }

    /// Whether no token is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens({} redacted)", self.0.len())
    }
}

/// Fewest characters an API token may have.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Default database URL, as in the seed application.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///diarize_ai_agent.db";

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:5000".into(),
            upload_folder: "uploads".into(),
            results_folder: None,
            database_url: DEFAULT_DATABASE_URL.into(),
            max_content_length: 209_715_200,
            max_audio_seconds: 14_400,
            settle_s: 5,
            allowed_extensions: ["wav", "mp3", "m4a", "ogg", "webm"].iter().map(|s| s.to_string()).collect(),
            secret_key: None,
            workers: 1,
            grace_period_s: 30,
            job_lease_s: 60,
            log_dir: Some("logs".into()),
            models_dir: "models-cache".into(),
            whisper_model: "base".into(),
            whisper_threads: None,
            whisper_decoder_q8: true,
            language: None,
            diarization: true,
            num_speakers: None,
            min_speakers: None,
            max_speakers: None,
            llm_model: "qwen2.5-coder-1.5b".into(),
            llm_threads: None,
            gemini_api_key: None,
            gemini_base_url: "https://generativelanguage.googleapis.com".into(),
            hf_token: None,
            api_token: ApiTokens::default(),
            allow_unauthenticated: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            http_threads: 8,
            max_connections: 256,
            max_uploads: 8,
            max_waits: 16,
            http_timeout_s: 30,
            webhook_url: None,
            webhook_secret: None,
            webhook_allow_hosts: Vec::new(),
            webhook_events: WEBHOOK_EVENTS[..3].iter().map(|s| s.to_string()).collect(),
            webhook_retry_delays_s: vec![5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0],
            export_formats: Vec::new(),
            retention_days: 0.0,
        }
    }
}

impl Config {
    /// Loads defaults, then `path` (if given and present), then `./.env`, then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_layered(path, Path::new(".env"), |k| std::env::var(k).ok())
    }

    /// Loads defaults, then `path`, then the `dotenv` file (if present), then `env`. The `.env`
    /// values are read into a map, never into the process environment (`set_var` is unsound
    /// while other threads run), and never override a variable `env` has.
    pub fn load_layered(
        path: Option<&Path>,
        dotenv: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        let file_env = read_dotenv(dotenv)?;
        cfg.apply_env(|k| env(k).or_else(|| file_env.get(k).cloned()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Applies environment overrides read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let text = |key: &str| get(key).filter(|v| !v.trim().is_empty());
        if let Some(v) = text("BIND") {
            self.bind = v;
        }
        if let Some(v) = text("UPLOAD_FOLDER") {
            self.upload_folder = v.into();
        }
        if let Some(v) = text("RESULTS_FOLDER") {
            self.results_folder = Some(v.into());
        }
        if let Some(v) = text("DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = text("MAX_CONTENT_LENGTH") {
            self.max_content_length = parse_num("MAX_CONTENT_LENGTH", &v)?;
        }
        if let Some(v) = text("MAX_AUDIO_SECONDS") {
            self.max_audio_seconds = parse_num("MAX_AUDIO_SECONDS", &v)?;
        }
        if let Some(v) = text("SETTLE_S") {
            self.settle_s = parse_num("SETTLE_S", &v)?;
        }
        if let Some(v) = text("ALLOWED_EXTENSIONS") {
            self.allowed_extensions = parse_extensions(&v);
        }
        if let Some(v) = text("SECRET_KEY") {
            self.secret_key = Some(v);
        }
        if let Some(v) = text("WORKERS") {
            self.workers = parse_num("WORKERS", &v)?;
        }
        if let Some(v) = text("GRACE_PERIOD_S") {
            self.grace_period_s = parse_num("GRACE_PERIOD_S", &v)?;
        }
        if let Some(v) = text("JOB_LEASE_S") {
            self.job_lease_s = parse_num("JOB_LEASE_S", &v)?;
        }
        if let Some(v) = text("LOG_DIR") {
            self.log_dir = (v != "none").then(|| v.into());
        }
        if let Some(v) = text("MODELS_DIR") {
            self.models_dir = v.into();
        }
        if let Some(v) = text("WHISPER_MODEL") {
            self.whisper_model = v;
        }
        if let Some(v) = text("WHISPER_THREADS") {
            self.whisper_threads = Some(parse_num("WHISPER_THREADS", &v)?);
        }
        if let Some(v) = text("WHISPER_DECODER_Q8") {
            self.whisper_decoder_q8 = parse_bool("WHISPER_DECODER_Q8", &v)?;
        }
        if let Some(v) = text("LANGUAGE") {
            self.language = (v != "auto").then_some(v);
        }
        if let Some(v) = text("DIARIZATION") {
            self.diarization = parse_bool("DIARIZATION", &v)?;
        }
        if let Some(v) = text("LLM_MODEL") {
            self.llm_model = v;
        }
        if let Some(v) = text("LLM_THREADS") {
            self.llm_threads = Some(parse_num("LLM_THREADS", &v)?);
        }
        if let Some(v) = text("GEMINI_API_KEY") {
            self.gemini_api_key = Some(v);
        }
        if let Some(v) = text("GEMINI_BASE_URL") {
            self.gemini_base_url = v;
        }
        if let Some(v) = text("HF_TOKEN") {
            self.hf_token = Some(v);
        }
        if let Some(v) = text("API_TOKEN") {
            self.api_token = ApiTokens::parse(&v);
        }
        if let Some(v) = text("ALLOW_UNAUTHENTICATED") {
            self.allow_unauthenticated = parse_bool("ALLOW_UNAUTHENTICATED", &v)?;
        }
        if let Some(v) = text("ALLOWED_HOSTS") {
            self.allowed_hosts = parse_list(&v);
        }
        if let Some(v) = text("ALLOWED_ORIGINS") {
            self.allowed_origins = parse_list(&v);
        }
        for (key, slot) in [
            ("HTTP_THREADS", &mut self.http_threads),
            ("MAX_CONNECTIONS", &mut self.max_connections),
            ("MAX_UPLOADS", &mut self.max_uploads),
            ("MAX_WAITS", &mut self.max_waits),
        ] {
            if let Some(v) = text(key) {
                *slot = parse_num(key, &v)?;
            }
        }
        if let Some(v) = text("HTTP_TIMEOUT_S") {
            self.http_timeout_s = parse_num("HTTP_TIMEOUT_S", &v)?;
        }
        if let Some(v) = text("WEBHOOK_URL") {
            self.webhook_url = Some(v);
        }
        if let Some(v) = text("WEBHOOK_SECRET") {
            self.webhook_secret = Some(WebhookSecret(v.trim().to_string()));
        }
        for (key, slot) in [
            ("WEBHOOK_ALLOW_HOSTS", &mut self.webhook_allow_hosts),
            ("WEBHOOK_EVENTS", &mut self.webhook_events),
            ("EXPORT_FORMATS", &mut self.export_formats),
        ] {
            if let Some(v) = text(key) {
                *slot = parse_list(&v);
            }
        }
        if let Some(v) = text("WEBHOOK_RETRY_DELAYS_S") {
            self.webhook_retry_delays_s = parse_list(&v)
                .iter()
                .map(|d| parse_num("WEBHOOK_RETRY_DELAYS_S", d))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = text("RETENTION_DAYS") {
            self.retention_days = parse_num("RETENTION_DAYS", &v)?;
        }
        Ok(())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return invalid("bind", "expected HOST:PORT, e.g. 127.0.0.1:5000");
        }
        if self.workers == 0 {
            return invalid("workers", "must be at least 1");
        }
        if self.max_content_length == 0 {
            return invalid("max_content_length", "must be positive");
        }
        if self.max_audio_seconds == 0 {
            return invalid("max_audio_seconds", "must be positive");
        }
        if self.allowed_extensions.is_empty() {
            return invalid("allowed_extensions", "no extension given");
        }
        if self.whisper_threads == Some(0) || self.llm_threads == Some(0) {
            return invalid("whisper_threads", "thread counts must be at least 1");
        }
        let hints = crate::model::SpeakerHints {
            num_speakers: self.num_speakers,
            min_speakers: self.min_speakers,
            max_speakers: self.max_speakers,
        };
        if let Err(e) = hints.check() {
            return invalid("min_speakers", e);
        }
        if self.job_lease_s == 0 {
            return invalid("job_lease_s", "must be at least 1 second");
        }
        if !is_postgres_url(&self.database_url) {
            self.database_path()?;
        }
        self.validate_http()?;
        self.validate_integrations()
    }

    /// Checks the webhook, export and retention keys.
    fn validate_integrations(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if let Some(url) = &self.webhook_url {
            crate::webhooks::check_url(url)
                .map_err(|message| ConfigError::Invalid { key: "webhook_url", message })?;
        }
        if let Some(secret) = &self.webhook_secret {
            crate::webhooks::signing_key(secret)
                .map_err(|message| ConfigError::Invalid { key: "webhook_secret", message })?;
        }
        if let Some(e) = self.webhook_events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            return invalid(
                "webhook_events",
                format!("unknown event {e:?} (one of {})", WEBHOOK_EVENTS.join(", ")),
            );
        }
        if self.webhook_retry_delays_s.len() > 20
            || self.webhook_retry_delays_s.iter().any(|d| !(0.0..=86_400.0).contains(d))
        {
            return invalid("webhook_retry_delays_s", "at most 20 delays of 0 to 86400 seconds".into());
        }
        if let Some(f) = self.export_formats.iter().find(|f| !EXPORT_FORMATS.contains(&f.as_str())) {
            return invalid(
                "export_formats",
                format!("unknown format {f:?} (one of {})", EXPORT_FORMATS.join(", ")),
            );
        }
        if !(self.retention_days.is_finite() && self.retention_days >= 0.0) {
            return invalid("retention_days", "must be 0 (keep forever) or a positive number of days".into());
        }
        Ok(())
    }

    /// Checks the HTTP keys: authentication, limits, host and origin lists.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self
            .api_token
            .0
            .iter()
            .any(|t| t.chars().count() < MIN_TOKEN_CHARS || t.contains(char::is_whitespace))
        {
            return invalid(
                "api_token",
                format!(
                    "each token needs {MIN_TOKEN_CHARS}+ characters and no spaces (e.g. `openssl rand -hex 32`)"
                ),
            );
        }
        let loopback = self.bind.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        if !loopback && self.api_token.is_empty() && !self.allow_unauthenticated {
            return invalid(
                "api_token",
                format!(
                    "bind {} is not a loopback address: set api_token (API_TOKEN) or allow_unauthenticated = true",
                    self.bind
                ),
            );
        }
        for (key, n) in [
            ("http_threads", self.http_threads),
            ("max_connections", self.max_connections),
            ("max_uploads", self.max_uploads),
            ("max_waits", self.max_waits),
        ] {
            if n == 0 {
                return invalid(key, "must be at least 1".into());
            }
        }
        if self.http_timeout_s == 0 {
            return invalid("http_timeout_s", "must be at least 1".into());
        }
        if let Some(o) =
            self.allowed_origins.iter().find(|o| !o.starts_with("http://") && !o.starts_with("https://"))
        {
            return invalid("allowed_origins", format!("{o:?} is not an origin like https://app.example"));
        }
        if let Some(h) = self.allowed_hosts.iter().find(|h| h.is_empty() || h.contains(['/', ' '])) {
            return invalid("allowed_hosts", format!("{h:?} is not a host name"));
        }
        Ok(())
    }

    /// The SQLite file named by `database_url`.
    pub fn database_path(&self) -> Result<PathBuf, ConfigError> {
        database_path(&self.database_url)
    }

    /// Threads for whisper.cpp.
    pub fn whisper_threads(&self) -> usize {
        self.whisper_threads.unwrap_or_else(cores)
    }

    /// Whether `ext` (any case, no dot) is accepted.
    pub fn extension_allowed(&self, ext: &str) -> bool {
        self.allowed_extensions.contains(&ext.to_ascii_lowercase())
    }
}

/// The variables of a `.env` file; a missing file is empty.
fn read_dotenv(path: &Path) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    // One line: dotenvy quotes the bad line with its newline.
    let parse = |e: dotenvy::Error| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().replace('\n', "\\n"),
    };
    match dotenvy::from_path_iter(path) {
        Ok(iter) => iter.map(|item| item.map_err(parse)).collect(),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(parse(e)),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Whether `url` names a PostgreSQL database (else it is SQLite).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Resolves `sqlite:///rel.db` (relative), `sqlite:////abs.db` (absolute) or a plain path.
pub fn database_path(url: &str) -> Result<PathBuf, ConfigError> {
    let path = match url.strip_prefix("sqlite://") {
        Some(rest) => rest.strip_prefix('/').unwrap_or(rest),
        None if url.contains("://") => {
            return Err(ConfigError::Invalid {
                key: "DATABASE_URL",
                message: format!("only sqlite URLs are supported, got {url:?}"),
            });
        }
        None => url,
    };
    if path.is_empty() || path == ":memory:" {
        return Err(ConfigError::Invalid { key: "DATABASE_URL", message: "needs a file path".into() });
    }
    Ok(PathBuf::from(path))
}

fn parse_num<T: std::str::FromStr>(key: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { key, message: format!("{v:?}: {e}") })
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid { key, message: format!("{v:?} is not a boolean") }),
    }
}

fn parse_list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect()
}

fn parse_extensions(v: &str) -> BTreeSet<String> {
    v.split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect()
}

/// The live configuration, reloadable on SIGHUP; readers take a cheap snapshot.
pub struct ConfigHandle {
    path: Option<PathBuf>,
    current: std::sync::RwLock<(u64, std::sync::Arc<Config>)>,
}

impl ConfigHandle {
    /// Wraps a loaded config; `path` is re-read by [`ConfigHandle::reload`].
    pub fn new(config: Config, path: Option<PathBuf>) -> Self {
        Self { path, current: std::sync::RwLock::new((0, std::sync::Arc::new(config))) }
    }

    /// The current settings.
    pub fn get(&self) -> std::sync::Arc<Config> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// Increases with every successful reload.
    pub fn generation(&self) -> u64 {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Re-reads file and environment; on error the running config stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let fresh = Config::load(self.path.as_deref())?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = (cur.0 + 1, std::sync::Arc::new(fresh));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            database_path("sqlite:///diarize_ai_agent.db").unwrap(),
            PathBuf::from("diarize_ai_agent.db")
        );
        assert_eq!(database_path("sqlite:////var/lib/d.db").unwrap(), PathBuf::from("/var/lib/d.db"));
        assert_eq!(database_path("/tmp/x.db").unwrap(), PathBuf::from("/tmp/x.db"));
        assert!(database_path("postgres://x").is_err());
    }

    #[test]
    fn env_overrides_file() {
        let mut cfg = Config::from_toml("max_content_length = 10\nworkers = 2\n").unwrap();
        assert_eq!(cfg.max_content_length, 10);
        cfg.apply_env(|k| match k {
            "MAX_CONTENT_LENGTH" => Some("99".into()),
            "ALLOWED_EXTENSIONS" => Some(" WAV, .mp3 ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.max_content_length, 99);
        assert_eq!(cfg.workers, 2);
        assert!(cfg.extension_allowed("wav") && cfg.extension_allowed("MP3"));
        assert!(!cfg.extension_allowed("ogg"));
    }

    #[test]
    fn dotenv_is_layered_under_the_environment_without_touching_it() {
        let dir = tempfile::tempdir().unwrap();
        let dotenv = dir.path().join(".env");
        std::fs::write(&dotenv, "WORKERS=3\nMAX_AUDIO_SECONDS=60\n# comment\nSETTLE_S=2\n").unwrap();
        let env = |k: &str| (k == "WORKERS").then(|| "2".to_string());
        let cfg = Config::load_layered(None, &dotenv, env).unwrap();
        assert_eq!((cfg.workers, cfg.max_audio_seconds, cfg.settle_s), (2, 60, 2), "env wins over .env");
        assert!(std::env::var_os("MAX_AUDIO_SECONDS").is_none(), ".env leaked into the process environment");
        // A changed file is seen on the next load (what SIGHUP does).
        std::fs::write(&dotenv, "MAX_AUDIO_SECONDS=90\n").unwrap();
        assert_eq!(Config::load_layered(None, &dotenv, |_| None).unwrap().max_audio_seconds, 90);
        let missing = Config::load_layered(None, &dir.path().join("none"), |_| None).unwrap();
        assert_eq!((missing.max_audio_seconds, missing.settle_s), (14_400, 5));
        std::fs::write(&dotenv, "MAX_AUDIO_SECONDS='unterminated\n").unwrap();
        assert!(Config::load_layered(None, &dotenv, |_| None).is_err());
    }

    #[test]
    fn http_keys() {
        let cfg = Config::from_toml("api_token = \"abcdefghijklmnop\"\nmax_waits = 3").unwrap();
        assert_eq!(cfg.api_token.0, ["abcdefghijklmnop"]);
        assert_eq!(format!("{:?}", cfg.api_token), "ApiTokens(1 redacted)");
        let mut cfg = Config::from_toml("api_token = [\"abcdefghijklmnop\", \"qrstuvwxyz012345\"]").unwrap();
        assert_eq!(cfg.api_token.0.len(), 2);
        cfg.apply_env(|k| match k {
            "API_TOKEN" => Some(" 0123456789abcdef ,, fedcba9876543210".into()),
            "ALLOWED_ORIGINS" => Some("https://a.example, http://b.example".into()),
            "MAX_UPLOADS" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.api_token.0, ["0123456789abcdef", "fedcba9876543210"]);
        assert_eq!(cfg.allowed_origins, ["https://a.example", "http://b.example"]);
        assert_eq!(cfg.max_uploads, 2);
        cfg.validate().unwrap();

        let key_of = |cfg: Config| match cfg.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let open = Config { bind: "0.0.0.0:5000".into(), ..Config::default() };
        assert_eq!(key_of(open.clone()), "api_token");
        Config { allow_unauthenticated: true, ..open.clone() }.validate().unwrap();
        Config { api_token: ApiTokens::parse("0123456789abcdef"), ..open }.validate().unwrap();
        assert_eq!(key_of(Config { api_token: ApiTokens::parse("short"), ..Config::default() }), "api_token");
        assert_eq!(key_of(Config { max_waits: 0, ..Config::default() }), "max_waits");
        assert_eq!(
            key_of(Config { allowed_origins: vec!["app.example".into()], ..Config::default() }),
            "allowed_origins"
        );
    }

    #[test]
    fn integration_keys() {
        let mut cfg = Config::default();
        cfg.apply_env(|k| match k {
            "WEBHOOK_URL" => Some("https://hooks.example/in".into()),
            "WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            "WEBHOOK_ALLOW_HOSTS" => Some("127.0.0.1, hooks.lan".into()),
            "WEBHOOK_RETRY_DELAYS_S" => Some("0.5, 2".into()),
            "EXPORT_FORMATS" => Some("srt,txt".into()),
            "RETENTION_DAYS" => Some("0.5".into()),
            _ => None,
        })
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.webhook_allow_hosts, ["127.0.0.1", "hooks.lan"]);
        assert_eq!((cfg.webhook_retry_delays_s, cfg.retention_days), (vec![0.5, 2.0], 0.5));
        assert_eq!(format!("{:?}", cfg.webhook_secret), "Some(WebhookSecret(redacted))");
        let key_of = |cfg: Config| match cfg.validate() {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let secret = Some(WebhookSecret("not-whsec".into()));
        assert_eq!(key_of(Config { webhook_secret: secret, ..Config::default() }), "webhook_secret");
        assert_eq!(
            key_of(Config { webhook_url: Some("file:///x".into()), ..Config::default() }),
            "webhook_url"
        );
        assert_eq!(
            key_of(Config { export_formats: vec!["json".into()], ..Config::default() }),
            "export_formats"
        );
        assert_eq!(
            key_of(Config { webhook_events: vec!["job.x".into()], ..Config::default() }),
            "webhook_events"
        );
        assert_eq!(key_of(Config { retention_days: -1.0, ..Config::default() }), "retention_days");
        let delays = vec![-1.0];
        assert_eq!(
            key_of(Config { webhook_retry_delays_s: delays, ..Config::default() }),
            "webhook_retry_delays_s"
        );
        assert!(Config::default().apply_env(|k| (k == "RETENTION_DAYS").then(|| "soon".into())).is_err());
    }

    #[test]
    fn example_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        assert_eq!(Config::from_file(&path).unwrap(), Config::default());
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Config::from_toml("no_such_key = 1").unwrap_err();
        assert!(err.contains("no_such_key"), "{err}");
        let mut cfg = Config::default();
        let err = cfg.apply_env(|k| (k == "MAX_CONTENT_LENGTH").then(|| "lots".into())).unwrap_err();
        assert!(err.to_string().contains("MAX_CONTENT_LENGTH"), "{err}");
        let cfg = Config { workers: 0, ..Config::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("workers"));
    }
}
