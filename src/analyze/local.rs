//! Local backend: a Qwen2.5-Coder GGUF run by llama.cpp in the `diarized-llm` worker process.
//!
//! The worker is started on the first job, spoken to in JSON lines over stdin/stdout, and
//! restarted on the next job if it crashed, timed out or exited after being idle. Output is
//! constrained by a grammar built for each transcript (types its speakers allow, 3–7 keypoints
//! or fewer for a short one, owners among its labels), the summary asked for after the lists;
//! the reply is checked
//! ([`super::checks`]): a wrong type or summary is asked for once more with a correction,
//! keypoints that break the rules are dropped and the missing ones asked for alone, the rest
//! is repaired. The clean transcript is built in Rust.
//! Transcripts longer than the context are analysed in parts and merged (map-reduce): the model
//! merges type and summary, the lists are combined from every part.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::checks::{self, Reviewed, Scope};
use super::facts::Facts;
use super::schema::{self, Reply};
use super::{clean_transcript, empty_analysis};
use crate::config::Config;
use crate::model::Analysis;
use crate::pipeline::{AnalysisInput, Analyzer, StageError};

/// Model names the local backend runs.
pub const LOCAL_MODELS: &[&str] = &["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"];

/// Environment variable naming the worker binary (default: `diarized-llm` beside the daemon).
pub const WORKER_BIN_ENV: &str = "DIARIZED_LLM_BIN";

/// Settings of the local backend.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Catalogue name, e.g. `qwen2.5-coder-1.5b`.
    pub model: String,
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The `diarized-llm` binary.
    pub worker_bin: PathBuf,
    /// llama.cpp threads.
    pub threads: usize,
    /// Largest context (prompt + output) of one call, in tokens; longer transcripts are split.
    pub max_context: u32,
    /// Output tokens allowed per call.
    pub max_new_tokens: u32,
    /// Longest a single call may take before the worker is killed.
    pub timeout: Duration,
    /// The worker exits (freeing its memory) after this long without a job.
    pub idle_exit: Duration,
    /// Whether llama.cpp's threads spin briefly between steps before they sleep (see
    /// [`wait_policy`]): on when jobs run one at a time (`WORKERS=1`), so no other stage
    /// competes for the cores while the model generates.
    pub spin: bool,
    /// Where the worker keeps the KV state of the system message between processes
    /// (`MODELS_DIR/llm/prefix-cache`; `None`: read it in every new worker).
    pub prefix_cache: Option<PathBuf>,
}

impl LocalOptions {
    /// Options for `model` from the config: model file in `models_dir`, `LLM_THREADS`.
    pub fn from_config(cfg: &Config, model: &str) -> Self {
        Self {
            model: model.to_string(),
            model_path: crate::models::llm::gguf_path(&cfg.models_dir, model),
            worker_bin: worker_bin(),
            threads: cfg.llm_threads.unwrap_or(DEFAULT_THREADS),
            max_context: 16_384,
            max_new_tokens: 768,
            timeout: Duration::from_secs(30 * 60),
            idle_exit: Duration::from_secs(300),
            spin: cfg.workers == 1,
            prefix_cache: Some(cfg.models_dir.join("llm").join("prefix-cache")),
        }
    }

    /// Whether the model file and the worker binary are where they should be.
    pub fn check(&self) -> Result<(), String> {
        if !self.model_path.is_file() {
            return Err(format!(
                "model file {} is missing (run `diarized models install {}`)",
                self.model_path.display(),
                self.model
            ));
        }
        if !self.worker_bin.is_file() {
            return Err(format!(
                "worker binary {} is missing (build the workspace, or set {WORKER_BIN_ENV})",
                self.worker_bin.display()
            ));
        }
        Ok(())
    }
}

/// OpenMP spin count between generation steps when [`LocalOptions::spin`] is on: about as fast
/// as spinning without end on an idle machine (generation 11–13 tok/s against 8 when sleeping
/// at once, 1.5B, 2 threads), while on a machine whose cores are busy the threads soon sleep
/// instead of starving everyone (endless spinning made generation 28× slower there; see
/// bench/analyze.results.md).
pub const SPIN_COUNT: &str = "3000";

/// The OpenMP wait setting the worker is started with: `None` when the environment already has
/// one (`OMP_WAIT_POLICY` or `GOMP_SPINCOUNT`, kept for benchmarks), else a brief spin
/// ([`SPIN_COUNT`]) or sleeping at once (`OMP_WAIT_POLICY=PASSIVE`).
pub fn wait_policy(spin: bool) -> Option<(&'static str, &'static str)> {
    wait_policy_in(spin, |key| std::env::var_os(key).is_some())
}

/// [`wait_policy`] with `has_env` saying which variables the environment sets.
fn wait_policy_in(spin: bool, has_env: impl Fn(&str) -> bool) -> Option<(&'static str, &'static str)> {
    if has_env("OMP_WAIT_POLICY") || has_env("GOMP_SPINCOUNT") {
        None
    } else if spin {
        Some(("GOMP_SPINCOUNT", SPIN_COUNT))
    } else {
        Some(("OMP_WAIT_POLICY", "PASSIVE"))
    }
}

/// Default llama.cpp threads when `LLM_THREADS` is unset. One: on a 2-core machine shared with
/// whisper and other jobs, a second spinning thread costs more than it gains (see bench/).
pub const DEFAULT_THREADS: usize = 1;

/// `$DIARIZED_LLM_BIN`, else `diarized-llm` next to the running executable (or one folder up,
/// for test and example binaries in `target/*/deps` and `target/*/examples`).
pub fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(WORKER_BIN_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let name = format!("diarized-llm{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().unwrap_or(Path::new("."));
    let beside = dir.join(&name);
    if !beside.is_file()
        && dir.file_name().is_some_and(|n| n == "deps" || n == "examples")
        && let Some(up) = dir.parent()
    {
        return up.join(&name);
    }
    beside
}

/// Timings of the last worker call, for benchmarks and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    pub prompt_tokens: u64,
    /// Prompt tokens already in the worker's cache from the previous call (not read again).
    pub reused_tokens: u64,
    pub generated_tokens: u64,
    pub prompt_ms: f64,
    pub generate_ms: f64,
    /// Steps where the greedy token broke the grammar and the whole vocabulary was filtered.
    pub full_grammar_checks: u64,
    /// Tokens proposed by prompt lookup, and how many of them greedy decoding kept.
    pub drafted_tokens: u64,
    pub accepted_tokens: u64,
}

/// The local analyzer. Holds at most one worker process.
pub struct LocalAnalyzer {
    opts: LocalOptions,
    worker: Option<Worker>,
    /// Stats of every call of the last `analyze` (several for a map-reduce or a retry).
    pub last_calls: Vec<CallStats>,
    /// Transcript text of each part the last `analyze` split into (empty: one call).
    pub last_parts: Vec<String>,
    /// How the last final reply fared in review.
    pub last_review: Option<Reviewed>,
    /// Whether `generate` uses the greedy-first grammar check (on by default; off for benches).
    pub greedy_first: bool,
}

impl std::fmt::Debug for LocalAnalyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAnalyzer").field("opts", &self.opts).finish_non_exhaustive()
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// One worker call failed: how, and whether a fresh worker may do better.
enum CallError {
    /// The worker exited on its own (idle) before answering: start a new one and ask again.
    Gone,
    Failed(String),
}

impl Worker {
    fn spawn(opts: &LocalOptions) -> Result<Self, String> {
        let mut command = Command::new(&opts.worker_bin);
        if let Some((key, value)) = wait_policy(opts.spin) {
            command.env(key, value);
        }
        let mut child = command
            .arg("--model")
            .arg(&opts.model_path)
            .args(["--threads", &opts.threads.to_string()])
            .args(["--max-context", &opts.max_context.to_string()])
            .args(["--idle-exit-s", &opts.idle_exit.as_secs().max(1).to_string()])
            .args(opts.prefix_cache.iter().flat_map(|dir| [OsStr::new("--prefix-cache"), dir.as_os_str()]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", opts.worker_bin.display()))?;
        let stdin = child.stdin.take().ok_or("worker has no stdin")?;
        let stdout = child.stdout.take().ok_or("worker has no stdout")?;
        let stderr_pipe = child.stderr.take().ok_or("worker has no stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                tracing::debug!(target: "diarized_llm", "{line}");
                if let Ok(mut t) = tail.lock() {
                    if t.len() == 20 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
        let mut w = Self { child, stdin, lines, stderr };
        // Loading a model file from a cold page cache can take a while.
        match w.read(Duration::from_secs(300)) {
            Ok(v) if v["ready"] == true => Ok(w),
            Ok(v) => Err(format!("unexpected greeting from the worker: {v}")),
            Err(CallError::Gone) => Err(format!("worker exited while loading the model{}", w.stderr_tail())),
            Err(CallError::Failed(e)) => Err(e),
        }
    }

    fn stderr_tail(&self) -> String {
        let t =
            self.stderr.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | ")).unwrap_or_default();
        if t.is_empty() { String::new() } else { format!(": {t}") }
    }

    fn read(&mut self, timeout: Duration) -> Result<Value, CallError> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line)
                .map_err(|e| CallError::Failed(format!("worker sent invalid JSON ({e}): {line}"))),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(CallError::Failed(format!(
                    "no answer within {} s; worker killed, a new one starts with the next job",
                    timeout.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                // Give the stderr thread a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(50));
                match status {
                    Ok(s) if s.success() => Err(CallError::Gone),
                    Ok(s) => Err(CallError::Failed(format!("worker crashed ({s}){}", self.stderr_tail()))),
                    Err(e) => Err(CallError::Failed(format!("worker vanished: {e}"))),
                }
            }
        }
    }

    fn call(&mut self, request: &Value, timeout: Duration) -> Result<Value, CallError> {
        if writeln!(self.stdin, "{request}").and_then(|_| self.stdin.flush()).is_err() {
            // The write fails when the worker has exited; `read` then says how.
            return match self.read(Duration::from_secs(5)) {
                Ok(v) => Err(CallError::Failed(format!("unexpected worker output: {v}"))),
                Err(e) => Err(e),
            };
        }
        let v = self.read(timeout)?;
        if v["ok"] == true {
            Ok(v)
        } else {
            Err(CallError::Failed(v["error"].as_str().unwrap_or("worker reported an error").to_string()))
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalAnalyzer {
    /// An analyzer that starts its worker on the first job.
    pub fn new(opts: LocalOptions) -> Self {
        Self {
            opts,
            worker: None,
            last_calls: Vec::new(),
            last_parts: Vec::new(),
            last_review: None,
            greedy_first: true,
        }
    }

    fn label(&self) -> String {
        format!("local LLM ({})", self.opts.model)
    }

    fn error(&self, message: impl std::fmt::Display) -> StageError {
        StageError::new("analyze", format!("{}: {message}", self.label()))
    }

    /// Sends one request, (re)starting the worker as needed; a worker that exited while idle
    /// is replaced once.
    fn call(&mut self, request: &Value) -> Result<Value, String> {
        for _ in 0..2 {
            if self.worker.as_mut().is_some_and(|w| !matches!(w.child.try_wait(), Ok(None))) {
                self.worker = None;
            }
            if self.worker.is_none() {
                self.opts.check()?;
                self.worker = Some(Worker::spawn(&self.opts)?);
            }
            let w = self.worker.as_mut().ok_or("no worker")?;
            match w.call(request, self.opts.timeout) {
                Ok(v) => return Ok(v),
                Err(CallError::Gone) => self.worker = None,
                Err(CallError::Failed(e)) => {
                    if !matches!(w.child.try_wait(), Ok(None)) {
                        self.worker = None;
                    }
                    return Err(e);
                }
            }
        }
        Err("worker keeps exiting before it answers".into())
    }

    fn count(&mut self, user: &str) -> Result<u32, String> {
        let v = self.call(&json!({"op": "count", "system": schema::system_prompt(false), "user": user}))?;
        v["tokens"].as_u64().map(|n| n as u32).ok_or_else(|| "worker sent no token count".into())
    }

    /// One generation; `turns` follow the user message (a correction round). Returns the text.
    fn generate(&mut self, user: &str, turns: &[(&str, &str)], grammar: &str) -> Result<String, String> {
        let turns: Vec<Value> =
            turns.iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
        let v = self.call(&json!({
            "op": "generate",
            "system": schema::system_prompt(false),
            "user": user,
            "turns": turns,
            "grammar": grammar,
            "max_tokens": self.opts.max_new_tokens,
            "greedy_first": self.greedy_first,
        }))?;
        let stats = CallStats {
            prompt_tokens: v["prompt_tokens"].as_u64().unwrap_or(0),
            reused_tokens: v["reused_tokens"].as_u64().unwrap_or(0),
            generated_tokens: v["generated_tokens"].as_u64().unwrap_or(0),
            prompt_ms: v["prompt_ms"].as_f64().unwrap_or(0.0),
            generate_ms: v["generate_ms"].as_f64().unwrap_or(0.0),
            full_grammar_checks: v["full_grammar_checks"].as_u64().unwrap_or(0),
            drafted_tokens: v["drafted_tokens"].as_u64().unwrap_or(0),
            accepted_tokens: v["accepted_tokens"].as_u64().unwrap_or(0),
        };
        tracing::info!(backend = %self.label(), ?stats, "local LLM call");
        self.last_calls.push(stats);
        v["text"].as_str().map(String::from).ok_or_else(|| "worker sent no text".into())
    }

    /// Asks for an analysis of `user` and reviews it. Type, topics, keypoints and action items
    /// come first, the summary in a second call of the same conversation (asked not to repeat
    /// the keypoints: written in one go, a small model's summary restates its keypoints fact by
    /// fact). Then one correction round at most for type and summary; keypoints that break the
    /// rules are dropped and the missing ones asked for alone, which costs far less than a whole
    /// new reply (see [`Scope::AllButLists`]).
    fn ask_reviewed(&mut self, user: &str, facts: &Facts) -> Result<Reviewed, String> {
        let grammar = schema::local_grammar(facts);
        let lists = self.generate(user, &[], &schema::lists_grammar(facts))?;
        // The conversation so far: later calls extend it, so the worker re-reads only new tokens.
        let mut turns: Vec<(&str, String)> =
            vec![("assistant", lists), ("user", schema::summary_prompt(facts))];
        let summary = self.generate(user, &as_turns(&turns), &schema::summary_grammar(facts))?;
        let first = schema::join_summary(&turns[0].1, &summary)?;
        turns.push(("assistant", summary));
        let language = first.language.clone();
        let mut reviewed = checks::review(first, facts, Scope::AllButLists, |correction| {
            turns.push(("user", correction.to_string()));
            let again = self.generate(user, &as_turns(&turns), &grammar);
            let again = again.inspect_err(|_| {
                turns.pop();
            })?;
            turns.push(("assistant", again.clone()));
            schema::parse_reply(&again, false)
        });
        if let Some(top_up) = checks::top_up_request(&reviewed.reply, facts, &language) {
            // Asked right after the lists (still in the worker's cache), before the summary was
            // written: shown its summary, the model offers its sentences again.
            turns.truncate(1);
            turns.push(("user", top_up.prompt));
            let more = self
                .generate(user, &as_turns(&turns), &schema::keypoints_grammar(top_up.min, top_up.max))
                .and_then(|t| schema::parse_keypoints(&t));
            match more {
                Ok(more) => {
                    tracing::debug!(backend = %self.label(), ?more, "more keypoints offered");
                    checks::add_keypoints(&mut reviewed, facts, &more);
                }
                Err(e) => {
                    tracing::warn!(backend = %self.label(), error = %e, "asking for more keypoints failed")
                }
            }
        }
        Ok(reviewed)
    }

    /// Tokens one call can spend on transcript text.
    fn budget(&mut self, facts: &Facts, language: Option<&str>) -> Result<u32, String> {
        let overhead = self.count(&schema::transcript_prompt(facts, "", language, Some((99, 99))))?;
        let budget = self.opts.max_context.saturating_sub(self.opts.max_new_tokens + overhead + 16);
        if budget < 128 {
            return Err(format!("max_context {} leaves no room for the transcript", self.opts.max_context));
        }
        Ok(budget)
    }

    /// Analyses `transcript`, splitting it into parts when it does not fit one context.
    fn run(&mut self, transcript: &str, facts: &Facts, language: Option<&str>) -> Result<Reply, String> {
        let whole = schema::transcript_prompt(facts, transcript, language, None);
        let needed = self.count(&whole)?;
        let mut reviewed = if needed + self.opts.max_new_tokens <= self.opts.max_context {
            self.ask_reviewed(&whole, facts)?
        } else {
            let budget = self.budget(facts, language)?;
            let parts = self.split(transcript, budget)?;
            tracing::info!(backend = %self.label(), parts = parts.len(), tokens = needed, "transcript exceeds the context; analysing in parts");
            let n = parts.len();
            let mut replies = Vec::with_capacity(n);
            for (i, part) in parts.iter().enumerate() {
                // Parts are settled without asking again: the merge reads only their gist.
                let pf = Facts::from_text(part);
                let prompt = schema::transcript_prompt(&pf, part, language, Some((i + 1, n)));
                let text = self.generate(&prompt, &[], &schema::local_grammar(&pf))?;
                let reply = checks::settle_part(schema::parse_reply(&text, false)?, &pf, part);
                tracing::debug!(part = i + 1, keypoints = ?reply.keypoints, "part analysed");
                replies.push(reply);
            }
            self.last_parts = parts;
            self.reduce(replies, facts)?
        };
        checks::fill_from_transcript(&mut reviewed, facts, transcript);
        let reply = reviewed.reply.clone();
        self.last_review = Some(reviewed);
        Ok(reply)
    }

    /// Merges part analyses, in groups that fit the context, until one is left; the last merge
    /// is reviewed against the whole recording's facts. When no two analyses fit one merge
    /// prompt, their gist (see [`checks::gist`]) is merged instead; if even that does not fit,
    /// the context is too small and the analysis fails (it never loops without progress).
    fn reduce(&mut self, mut replies: Vec<Reply>, facts: &Facts) -> Result<Reviewed, String> {
        // A merge prompt (its instructions included) and the reply must fit the context.
        let limit = self.opts.max_context.saturating_sub(self.opts.max_new_tokens + 16);
        let mut shortened = false;
        loop {
            let mut groups =
                group_by_budget(replies, limit, |g| self.count(&schema::merge_prompt(facts, g)))?;
            if groups.len() == 1 {
                let group = groups.pop().unwrap_or_default();
                return self.merge_last(&group, facts);
            }
            if groups.iter().all(|g| g.len() == 1) {
                if shortened {
                    return Err(format!(
                        "max_context {} is too small to merge the analyses of the transcript's parts",
                        self.opts.max_context
                    ));
                }
                tracing::info!(backend = %self.label(), parts = groups.len(), "part analyses too long to merge; merging their gist");
                shortened = true;
                replies = groups.into_iter().flatten().map(|r| checks::gist(&r)).collect();
                continue;
            }
            replies = Vec::with_capacity(groups.len());
            for g in groups {
                replies.push(match g.len() {
                    1 => g.into_iter().next().ok_or("empty group")?,
                    _ => {
                        let text = self.generate(
                            &schema::merge_prompt(facts, &g),
                            &[],
                            &schema::merge_grammar(facts),
                        )?;
                        checks::combine(&g, schema::parse_merge_reply(&text)?)
                    }
                });
            }
        }
    }

    /// The final merge: the model writes type and summary of the whole, reviewed (one
    /// correction round), the lists are combined from every part.
    fn merge_last(&mut self, group: &[Reply], facts: &Facts) -> Result<Reviewed, String> {
        if let [one] = group {
            return Ok(checks::review(one.clone(), facts, Scope::TypeAndSummary, |_| {
                Err("a single part has no merge to ask again".to_string())
            }));
        }
        let prompt = schema::merge_prompt(facts, group);
        let grammar = schema::merge_grammar(facts);
        let text = self.generate(&prompt, &[], &grammar)?;
        let first = checks::combine(group, schema::parse_merge_reply(&text)?);
        Ok(checks::review(first, facts, Scope::TypeAndSummary, |correction| {
            let again =
                self.generate(&prompt, &[("assistant", text.as_str()), ("user", correction)], &grammar)?;
            Ok(checks::combine(group, schema::parse_merge_reply(&again)?))
        }))
    }

    /// Splits the transcript at line (or, for very long lines, word) boundaries into parts of at
    /// most `budget` tokens each. Nothing is dropped.
    fn split(&mut self, transcript: &str, budget: u32) -> Result<Vec<String>, String> {
        let total = self.count(transcript)?.max(1);
        // Characters per token of this transcript, with a margin for uneven density.
        let chars_per_token = transcript.chars().count() as f64 / f64::from(total);
        let mut target = ((f64::from(budget) * chars_per_token * 0.9) as usize).max(200);
        loop {
            let parts = split_by_chars(transcript, target);
            let mut fits = true;
            for p in &parts {
                if self.count(p)? > budget {
                    fits = false;
                    break;
                }
            }
            if fits {
                return Ok(parts);
            }
            if target <= 200 {
                return Err("cannot split the transcript into parts that fit the context".into());
            }
            target = target * 3 / 4;
        }
    }
}

/// Borrowed view of a conversation's turns, as [`LocalAnalyzer::generate`] takes them.
fn as_turns<'a>(turns: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    turns.iter().map(|(role, text)| (*role, text.as_str())).collect()
}

/// Consecutive groups of `replies` whose merge prompt (`count` tokens) fits `budget`; a reply
/// that fits with no other forms a group alone.
fn group_by_budget(
    replies: Vec<Reply>,
    budget: u32,
    mut count: impl FnMut(&[Reply]) -> Result<u32, String>,
) -> Result<Vec<Vec<Reply>>, String> {
    let mut groups: Vec<Vec<Reply>> = Vec::new();
    let mut group: Vec<Reply> = Vec::new();
    for r in replies {
        group.push(r);
        if group.len() > 1 && count(&group)? > budget {
            let last = group.pop().ok_or("empty group")?;
            groups.push(std::mem::replace(&mut group, vec![last]));
        }
    }
    groups.push(group);
    Ok(groups)
}

/// Groups lines into parts of at most `target` characters; a longer line is cut between words
/// and its continuation keeps the speaker label.
fn split_by_chars(text: &str, target: usize) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.chars().count() <= target {
            pieces.push(line.to_string());
            continue;
        }
        let (label, body) = line.split_once(": ").map(|(l, b)| (format!("{l}: "), b)).unwrap_or_default();
        let mut cur = label.clone();
        for word in body.split_whitespace() {
            if cur.len() > label.len() && cur.chars().count() + word.chars().count() + 1 > target {
                pieces.push(std::mem::replace(&mut cur, label.clone()));
            }
            if cur.len() > label.len() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
        pieces.push(cur);
    }
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    for p in pieces {
        if !cur.is_empty() && cur.chars().count() + p.chars().count() + 1 > target {
            parts.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(&p);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

impl Analyzer for LocalAnalyzer {
    fn analyze(&mut self, input: &AnalysisInput<'_>) -> Result<Analysis, StageError> {
        self.last_calls.clear();
        self.last_parts.clear();
        self.last_review = None;
        let clean = clean_transcript(input.segments);
        if clean.is_empty() {
            return Ok(empty_analysis());
        }
        let facts = Facts::from_segments(input.segments, &clean);
        let reply = self.run(&clean, &facts, input.language).map_err(|e| self.error(e))?;
        Ok(reply.into_analysis(clean))
    }

    fn name(&self) -> String {
        self.label()
    }
}

#[cfg(test)]
mod tests;
