//! Gemini backend: `generateContent` over REST with structured JSON output, retries and
//! backoff as the API's error contract asks for.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use super::checks::{self, Scope};
use super::facts::Facts;
use super::schema::{self, Reply};
use super::{checked_transcript, empty_analysis, random_unit};
use crate::model::Analysis;
use crate::pipeline::{AnalysisInput, Analyzer, StageError};

/// An API key that never shows in `Debug`, `Display`, logs or errors.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// How failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total (first call included).
    pub max_attempts: u32,
    /// First backoff ceiling for 5xx/timeouts; doubles per attempt ("full jitter": a uniform
    /// random delay up to the ceiling).
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
    /// Multiplies the server's `retryDelay` (1.0 in production; tests shrink it).
    pub server_delay_scale: f64,
    /// A server-requested delay longer than this fails the job instead of waiting.
    pub max_server_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            server_delay_scale: 1.0,
            max_server_delay: Duration::from_secs(300),
        }
    }
}

/// Settings of the Gemini client.
#[derive(Debug, Clone)]
pub struct GeminiOptions {
    /// Model name, e.g. `gemini-2.5-flash`.
    pub model: String,
    /// Endpoint base URL, without `/v1beta`.
    pub base_url: String,
    /// Whole-request timeout (the reply includes a rewritten transcript, so it can be long).
    pub timeout: Duration,
    /// Token budget for thinking; output tokens come on top of it.
    pub thinking_budget: u32,
    pub retry: RetryPolicy,
}

impl GeminiOptions {
    /// Production defaults for `model` at `base_url`.
    pub fn new(model: &str, base_url: &str) -> Self {
        Self {
            model: model.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(300),
            thinking_budget: 1024,
            retry: RetryPolicy::default(),
        }
    }
}

/// The Gemini analyzer. Without a key every job fails with an error saying so.
pub struct GeminiAnalyzer {
    key: Option<ApiKey>,
    opts: GeminiOptions,
    client: Option<reqwest::blocking::Client>,
}

impl fmt::Debug for GeminiAnalyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiAnalyzer")
            .field("model", &self.opts.model)
            .field("base_url", &self.opts.base_url)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Why one attempt failed, and whether another may succeed.
enum Failure {
    Retry { message: String, delay: Duration },
    Fatal(String),
}

impl GeminiAnalyzer {
    /// Builds the client; `key` None makes every job fail with a clear error.
    pub fn new(key: Option<ApiKey>, opts: GeminiOptions) -> Self {
        Self { key, opts, client: None }
    }

    fn label(&self) -> String {
        format!("gemini ({})", self.opts.model)
    }

    fn error(&self, message: impl fmt::Display) -> StageError {
        let mut text = format!("{}: {message}", self.label());
        if let Some(key) = &self.key
            && !key.0.is_empty()
        {
            text = text.replace(&key.0, "[redacted]");
        }
        StageError::new("analyze", text)
    }

    fn client(&mut self) -> Result<reqwest::blocking::Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        // reqwest is built without a bundled crypto provider; ring is ours. A provider installed
        // earlier by someone else is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .timeout(self.opts.timeout)
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Request body for `transcript`; `turns` (role `model` or `user`, text) follow the
    /// transcript message (a correction round).
    fn body(&self, facts: &Facts, transcript: &str, language: Option<&str>, turns: &[(&str, &str)]) -> Value {
        // The rewritten transcript is about as long as the input (~4 chars per token); leave
        // room for it, the other fields and the thinking budget.
        let output = transcript.len() / 3 + 2048;
        let max_tokens = (output as u64 + u64::from(self.opts.thinking_budget)).min(65_536);
        let mut generation = json!({
            "responseMimeType": "application/json",
            "responseSchema": schema::gemini_response_schema(facts),
            "temperature": 0.2,
            "maxOutputTokens": max_tokens,
        });
        if supports_thinking(&self.opts.model) {
            generation["thinkingConfig"] = json!({"thinkingBudget": self.opts.thinking_budget});
        }
        let mut contents = vec![
            json!({"role": "user", "parts": [{"text": schema::transcript_prompt(facts, transcript, language, None)}]}),
        ];
        contents.extend(turns.iter().map(|(role, text)| json!({"role": role, "parts": [{"text": text}]})));
        json!({
            "systemInstruction": {"parts": [{"text": schema::system_prompt(true)}]},
            "contents": contents,
            "generationConfig": generation,
        })
    }

    /// One HTTP attempt.
    fn attempt(&mut self, body: &Value, attempt: u32) -> Result<(Reply, String), Failure> {
        let key = self.key.clone().ok_or_else(|| Failure::Fatal("GEMINI_API_KEY is not set".into()))?;
        let client = self.client().map_err(Failure::Fatal)?;
        let url = format!("{}/v1beta/models/{}:generateContent", self.opts.base_url, self.opts.model);
        let backoff = || backoff_delay(&self.opts.retry, attempt);
        let resp = match client.post(&url).header("x-goog-api-key", &key.0).json(body).send() {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(Failure::Retry { message: "request timed out".into(), delay: backoff() });
            }
            Err(e) if e.is_connect() || e.is_request() => {
                return Err(Failure::Retry { message: format!("network error: {e}"), delay: backoff() });
            }
            Err(e) => return Err(Failure::Fatal(format!("request failed: {e}"))),
        };
        let status = resp.status().as_u16();
        let text = match resp.text() {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Err(Failure::Retry {
                    message: "reading the reply timed out".into(),
                    delay: backoff(),
                });
            }
            Err(e) => {
                return Err(Failure::Retry { message: format!("reading the reply: {e}"), delay: backoff() });
            }
        };
        if status == 200 {
            return parse_generate_response(&text).map_err(Failure::Fatal);
        }
        let err = ApiError::parse(&text);
        let described = format!("HTTP {status} {}", err.describe());
        match status {
            429 => {
                if err.per_day_quota {
                    return Err(Failure::Fatal(format!("{described} (daily quota exhausted; not retrying)")));
                }
                let delay = match err.retry_delay {
                    Some(d) => {
                        if d > self.opts.retry.max_server_delay {
                            return Err(Failure::Fatal(format!(
                                "{described} (server asks to wait {:.0}s; not retrying)",
                                d.as_secs_f64()
                            )));
                        }
                        let scaled = d.mul_f64(self.opts.retry.server_delay_scale);
                        // Honour the delay, plus up to 10% jitter so parallel clients spread out.
                        scaled + scaled.mul_f64(0.1 * random_unit())
                    }
                    None => backoff(),
                };
                Err(Failure::Retry { message: described, delay })
            }
            500 | 502 | 503 | 504 => Err(Failure::Retry { message: described, delay: backoff() }),
            400 | 401 | 403 => {
                Err(Failure::Fatal(format!("{described} (check GEMINI_API_KEY and LLM_MODEL)")))
            }
            404 => Err(Failure::Fatal(format!("{described} (unknown or retired model? check LLM_MODEL)"))),
            _ => Err(Failure::Fatal(described)),
        }
    }
}

fn supports_thinking(model: &str) -> bool {
    !(model.starts_with("gemini-1") || model.starts_with("gemini-2.0"))
}

/// Full-jitter exponential backoff: uniform in [0, min(max, base·2^(attempt-1))].
fn backoff_delay(p: &RetryPolicy, attempt: u32) -> Duration {
    let ceiling = p.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(p.max_delay);
    ceiling.mul_f64(random_unit())
}

impl GeminiAnalyzer {
    /// Sends `body`, retrying as the error contract asks; returns the reply and its raw text.
    fn send(&mut self, body: &Value) -> Result<(Reply, String), StageError> {
        let max = self.opts.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.attempt(body, attempt) {
                Ok(r) => return Ok(r),
                Err(Failure::Fatal(m)) => return Err(self.error(m)),
                Err(Failure::Retry { message, .. }) if attempt >= max => {
                    return Err(self.error(format!("{message} (gave up after {attempt} attempts)")));
                }
                Err(Failure::Retry { message, delay }) => {
                    tracing::warn!(
                        backend = %self.label(),
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "{}; retrying",
                        self.error(&message).message
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
            }
        }
    }
}

impl Analyzer for GeminiAnalyzer {
    fn analyze(&mut self, input: &AnalysisInput<'_>) -> Result<Analysis, StageError> {
        if self.key.is_none() {
            return Err(self.error("GEMINI_API_KEY is not set; set it or choose a local LLM_MODEL"));
        }
        let clean = super::clean::clean_transcript(input.segments);
        if clean.is_empty() {
            return Ok(empty_analysis());
        }
        let facts = Facts::from_segments(input.segments, &clean);
        let body = self.body(&facts, &clean, input.language, &[]);
        let (first, text) = self.send(&body)?;
        let mut reviewed = checks::review(first, &facts, Scope::All, |correction| {
            let body =
                self.body(&facts, &clean, input.language, &[("model", text.as_str()), ("user", correction)]);
            self.send(&body).map(|(reply, _)| reply).map_err(|e| e.message)
        });
        checks::fill_from_transcript(&mut reviewed, &facts, &clean);
        let transcript = checked_transcript(reviewed.reply.clean_transcript.as_deref(), &clean);
        Ok(reviewed.reply.into_analysis(transcript))
    }

    fn name(&self) -> String {
        self.label()
    }
}

/// Extracts and validates the analysis from a `generateContent` reply; returns it with the
/// model's answer text.
fn parse_generate_response(text: &str) -> Result<(Reply, String), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("reply is not JSON: {e}"))?;
    let Some(cand) = v.get("candidates").and_then(|c| c.get(0)) else {
        let reason =
            v.pointer("/promptFeedback/blockReason").and_then(Value::as_str).unwrap_or("no candidates");
        return Err(format!("no answer ({reason})"));
    };
    let answer: String = cand
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter(|p| !p.get("thought").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let finish = cand.get("finishReason").and_then(Value::as_str).unwrap_or("none");
    if finish != "STOP" {
        let what = if answer.trim().is_empty() { "no text" } else { "incomplete text" };
        return Err(format!("generation stopped with finishReason {finish} ({what})"));
    }
    Ok((schema::parse_reply(&answer, true)?, answer))
}

/// The useful bits of a Google API error body.
#[derive(Debug, Default)]
struct ApiError {
    status: String,
    message: String,
    reason: Option<String>,
    retry_delay: Option<Duration>,
    per_day_quota: bool,
}

impl ApiError {
    fn parse(text: &str) -> Self {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            let snippet: String = text.chars().take(200).collect();
            return Self { message: snippet, ..Self::default() };
        };
        let e = &v["error"];
        let mut out = Self {
            status: e["status"].as_str().unwrap_or_default().to_string(),
            message: e["message"].as_str().unwrap_or_default().to_string(),
            ..Self::default()
        };
        for d in e["details"].as_array().into_iter().flatten() {
            let ty = d["@type"].as_str().unwrap_or_default();
            if ty.ends_with("google.rpc.RetryInfo") {
                out.retry_delay = d["retryDelay"].as_str().and_then(parse_duration);
            } else if ty.ends_with("google.rpc.QuotaFailure") {
                out.per_day_quota |= d["violations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|q| q["quotaId"].as_str().is_some_and(|id| id.contains("PerDay")));
            } else if ty.ends_with("google.rpc.ErrorInfo") {
                out.reason = d["reason"].as_str().map(String::from);
            }
        }
        out
    }

    fn describe(&self) -> String {
        let mut s = self.status.clone();
        if let Some(r) = &self.reason {
            s = format!("{s} {r}").trim().to_string();
        }
        if !self.message.is_empty() {
            s = format!("{s}: {}", self.message);
        }
        s
    }
}

/// Parses a protobuf JSON duration such as `38s` or `0.5s`.
fn parse_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests;
