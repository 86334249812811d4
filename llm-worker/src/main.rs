//! `diarized-llm`: runs a GGUF model with llama.cpp in its own process.
//!
//! The daemon starts it as `diarized-llm --model FILE [--threads N] [--max-context N]
//! [--idle-exit-s S] [--prefix-cache DIR]` and speaks JSON lines: one request per stdin line,
//! one reply per stdout line. After the model has loaded the worker prints
//! `{"ok":true,"ready":true,"n_ctx_train":…}`. Requests:
//! - `{"op":"count","system":…,"user":…}` → `{"ok":true,"tokens":N}` (the chat-formatted prompt)
//! - `{"op":"generate","system":…,"user":…,"grammar":…,"max_tokens":N,"greedy_first":true}` →
//!   `{"ok":true,"text":…,"prompt_tokens":…,"reused_tokens":…,"generated_tokens":…,"prompt_ms":…,
//!   "generate_ms":…,"n_ctx":…,"full_grammar_checks":…,"drafted_tokens":…,"accepted_tokens":…}`
//!   (`"speculate":false` turns prompt-lookup drafting off, for comparisons)
//!
//! Both take optional `"turns":[{"role":"assistant"|"user","content":…},…]` after the user
//! message (a correction round). The context of the last generation is kept: a prompt that
//! starts like the previous one (the same transcript asked again with a correction) only reads
//! its new tokens (`reused_tokens` says how many were kept). An assistant turn that repeats one
//! of the worker's last replies keeps the tokens it was generated as, so a follow-up question
//! after a reply reads only the question.
//!
//! With `--prefix-cache`, a new context starts from the saved KV state of its system message
//! (saved there by the first worker that read it), so a cold worker reads only the job's own
//! tokens; `reused_tokens` counts those loaded too.
//!
//! Errors are `{"ok":false,"error":…}`. The worker exits with status 0 when stdin closes or after
//! `--idle-exit-s` seconds without a request (freeing the model's memory).
//!
//! It is a separate process because whisper-rs and llama-cpp-2 each link a static ggml whose
//! symbols collide in one binary; it also keeps a crash or OOM out of the daemon.

use std::borrow::Cow;
use std::io::{BufRead, Write};
use std::num::NonZeroU32;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::vocab::LlamaVocab;
use serde::Deserialize;
use serde_json::{Value, json};

/// Tokens decoded per `llama_decode` call while reading the prompt.
const BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Llama(String),
}

fn llama<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> WorkerError + '_ {
    move |e| WorkerError::Llama(format!("{what}: {e}"))
}

struct Args {
    model: String,
    threads: i32,
    max_context: u32,
    idle_exit: Option<Duration>,
    prefix_cache: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, WorkerError> {
    let mut args =
        Args { model: String::new(), threads: 1, max_context: 16384, idle_exit: None, prefix_cache: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| WorkerError::Usage(format!("{flag} needs a value")));
        let bad = |v: &str| WorkerError::Usage(format!("bad value {v:?} for {flag}"));
        match flag.as_str() {
            "--model" => args.model = value()?,
            "--threads" => {
                let v = value()?;
                args.threads = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad(&v))?;
            }
            "--max-context" => {
                let v = value()?;
                args.max_context = v.parse().ok().filter(|n| *n >= 512).ok_or_else(|| bad(&v))?;
            }
            "--prefix-cache" => args.prefix_cache = Some(value()?.into()),
            "--idle-exit-s" => {
                let v = value()?;
                let s: u64 = v.parse().map_err(|_| bad(&v))?;
                args.idle_exit = (s > 0).then(|| Duration::from_secs(s));
            }
            _ => return Err(WorkerError::Usage(format!("unknown argument {flag}"))),
        }
    }
    if args.model.is_empty() {
        return Err(WorkerError::Usage("usage: diarized-llm --model FILE.gguf [--threads N]".into()));
    }
    Ok(args)
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Count {
        system: String,
        user: String,
        #[serde(default)]
        turns: Vec<Turn>,
    },
    Generate {
        system: String,
        user: String,
        #[serde(default)]
        turns: Vec<Turn>,
        grammar: String,
        max_tokens: u32,
        #[serde(default = "yes")]
        greedy_first: bool,
        /// Logits of tokens among the last `REPEAT_WINDOW` generated ones are divided (if
        /// positive) or multiplied by this; small models loop under greedy decoding without it.
        #[serde(default = "default_repeat_penalty")]
        repeat_penalty: f32,
        /// Prompt-lookup drafting (fewer decoding steps); off for comparisons.
        #[serde(default = "yes")]
        speculate: bool,
    },
}

/// A chat message after the first user message.
#[derive(Deserialize)]
struct Turn {
    role: String,
    content: String,
}

/// The context of the last generation and the tokens in its KV cache.
struct Cache<'m> {
    ctx: LlamaContext<'m>,
    tokens: Vec<LlamaToken>,
    /// The latest replies, newest last.
    replies: Vec<Reply>,
}

/// A reply this worker generated: its text and the tokens it was generated as.
struct Reply {
    text: String,
    tokens: Vec<LlamaToken>,
}

/// Replies remembered for [`Engine::prompt_tokens`] (a job's calls repeat the last few).
const REPLIES_KEPT: usize = 4;

/// Stands in for known reply `i` while the chat template is applied (private-use characters,
/// which no transcript or reply holds).
fn reply_mark(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

/// Context tokens reserved beyond a request, so a correction round fits the same context.
const ROUND_ROOM: u32 = 1024;

fn yes() -> bool {
    true
}

fn default_repeat_penalty() -> f32 {
    1.15
}

/// Generated tokens the repetition penalty looks back over.
const REPEAT_WINDOW: usize = 64;

struct Engine {
    backend: LlamaBackend,
    model: LlamaModel,
    threads: i32,
    max_context: u32,
    prefix_cache: Option<PrefixCache>,
}

impl Engine {
    /// The chat-formatted tokens of a request. An assistant turn that repeats a reply this
    /// worker generated (`replies`) gets the tokens it was generated as, not a fresh
    /// tokenization (which often splits the same text differently), so the KV entries of that
    /// reply, still in the context, are kept instead of read again.
    fn prompt_tokens(
        &self,
        system: &str,
        user: &str,
        turns: &[Turn],
        replies: &[Reply],
    ) -> Result<Vec<LlamaToken>, WorkerError> {
        // Known replies are replaced by marks, rendered, and their tokens put where the marks are.
        let mut spliced = Vec::new();
        let contents: Vec<(&str, Cow<str>)> = turns
            .iter()
            .map(|t| match replies.iter().find(|r| t.role == "assistant" && r.text == t.content) {
                Some(r) => {
                    spliced.push(r);
                    (t.role.as_str(), Cow::Owned(reply_mark(spliced.len() - 1)))
                }
                None => (t.role.as_str(), Cow::Borrowed(t.content.as_str())),
            })
            .collect();
        let head = [("system", system), ("user", user)];
        let text =
            self.chat_text(head.into_iter().chain(contents.iter().map(|(r, c)| (*r, c.as_ref()))), true)?;
        // Each mark must appear exactly once (a template that rewrote it, or a message that holds
        // one itself, gets the plain tokenization).
        if (0..spliced.len()).any(|i| text.matches(&reply_mark(i)).count() != 1) {
            let plain = head.into_iter().chain(turns.iter().map(|t| (t.role.as_str(), t.content.as_str())));
            return self.chat_tokens(plain, true);
        }
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        let mut rest = text.as_str();
        for (i, reply) in spliced.iter().enumerate() {
            let (before, after) = rest.split_once(&reply_mark(i)).unwrap_or((rest, ""));
            tokens.extend(vocab.tokenize(before.as_bytes(), tokens.is_empty(), true));
            tokens.extend_from_slice(&reply.tokens);
            rest = after;
        }
        tokens.extend(vocab.tokenize(rest.as_bytes(), tokens.is_empty(), true));
        Ok(tokens)
    }

    /// The chat-formatted tokens of `messages`, with the assistant's opening when `reply`.
    fn chat_tokens<'a>(
        &self,
        messages: impl Iterator<Item = (&'a str, &'a str)>,
        reply: bool,
    ) -> Result<Vec<LlamaToken>, WorkerError> {
        let text = self.chat_text(messages, reply)?;
        Ok(self.model.vocab().tokenize(text.as_bytes(), true, true))
    }

    /// `messages` in the model's chat template, with the assistant's opening when `reply`.
    fn chat_text<'a>(
        &self,
        messages: impl Iterator<Item = (&'a str, &'a str)>,
        reply: bool,
    ) -> Result<String, WorkerError> {
        Ok(match self.model.chat_template(None) {
            Ok(tmpl) => {
                let msgs = messages
                    .map(|(role, text)| {
                        LlamaChatMessage::new(role.into(), text.into()).map_err(llama("message"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.model.apply_chat_template(&tmpl, &msgs, reply).map_err(llama("chat template"))?
            }
            // Qwen's ChatML, for a model file without a template.
            Err(_) => {
                let mut p: String =
                    messages.map(|(role, text)| format!("<|im_start|>{role}\n{text}<|im_end|>\n")).collect();
                if reply {
                    p.push_str("<|im_start|>assistant\n");
                }
                p
            }
        })
    }

    /// How many leading tokens of `tokens` are the system message (0 when they are not).
    fn system_prefix(&self, system: &str, tokens: &[LlamaToken]) -> usize {
        match self.chat_tokens(std::iter::once(("system", system)), false) {
            Ok(prefix) if !prefix.is_empty() && tokens.starts_with(&prefix) => prefix.len(),
            _ => 0,
        }
    }

    /// Starts a new context from the system message's KV state saved by an earlier worker, or
    /// reads the system message and saves its state for the next one (the instructions are the
    /// same for every job). Returns the tokens loaded (not read) and the tokens now in the
    /// context; `(0, 0)` without a prefix cache or a system message to keep.
    fn start_from_system(
        &self,
        ctx: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch,
        system: &str,
        tokens: &[LlamaToken],
    ) -> Result<(usize, usize), WorkerError> {
        let Some(pc) = &self.prefix_cache else { return Ok((0, 0)) };
        let n = self.system_prefix(system, tokens);
        if n == 0 || n >= tokens.len() {
            return Ok((0, 0));
        }
        let path = pc.file(&tokens[..n]);
        if let Ok((saved, _)) = ctx.state_seq_load_file(&path, 0, n)
            && saved[..] == tokens[..n]
        {
            return Ok((n, n));
        }
        ctx.clear_kv_cache();
        read_prompt(ctx, batch, tokens, 0..n, tokens.len() - 1)?;
        if let Err(e) = pc.save(ctx, &path, &tokens[..n]) {
            eprintln!("diarized-llm: cannot save the prompt prefix to {}: {e}", path.display());
        }
        Ok((0, n))
    }

    #[allow(clippy::too_many_arguments)]
    fn generate<'m>(
        &'m self,
        cache: &mut Option<Cache<'m>>,
        system: &str,
        user: &str,
        turns: &[Turn],
        grammar: &str,
        max_tokens: u32,
        greedy_first: bool,
        repeat_penalty: f32,
        speculate: bool,
    ) -> Result<Value, WorkerError> {
        let tokens = self.prompt_tokens(system, user, turns, cache.as_ref().map_or(&[], |c| &c.replies))?;
        if tokens.is_empty() {
            return Err(WorkerError::Llama("empty prompt".into()));
        }
        let needed = tokens.len() as u64 + u64::from(max_tokens);
        let limit = self.max_context.min(self.model.n_ctx_train());
        if needed > u64::from(limit) {
            return Err(WorkerError::Llama(format!(
                "prompt of {} tokens plus {max_tokens} output tokens exceeds the context limit {limit}",
                tokens.len()
            )));
        }
        // Taken only now: a request refused above leaves the cache, replies included, as it was.
        let mut replies = cache.as_mut().map(|c| std::mem::take(&mut c.replies)).unwrap_or_default();
        // The cached context when it is big enough (keeping the prompt prefix it already holds,
        // but at least the last token is read again for its logits); else a new one sized to
        // the job plus room for a correction round, rounded up to 256 tokens.
        let mut reused = 0;
        let mut ctx = match cache.take() {
            Some(mut c) if u64::from(c.ctx.n_ctx()) >= needed => {
                let common = c.tokens.iter().zip(&tokens).take_while(|(a, b)| a == b).count();
                reused = common.min(tokens.len() - 1);
                if !c.ctx.clear_kv_cache_seq(Some(0), Some(reused as u32), None).unwrap_or(false) {
                    c.ctx.clear_kv_cache();
                    reused = 0;
                }
                c.ctx
            }
            _ => {
                let n_ctx = (needed as u32).saturating_add(ROUND_ROOM).div_ceil(256) * 256;
                let params = LlamaContextParams::default()
                    .with_n_ctx(NonZeroU32::new(n_ctx.min(limit)))
                    .with_n_batch(BATCH as u32)
                    .with_n_ubatch(BATCH as u32)
                    .with_n_threads(self.threads)
                    .with_n_threads_batch(self.threads);
                self.model.new_context(&self.backend, params).map_err(llama("context"))?
            }
        };

        let t0 = Instant::now();
        let mut batch = LlamaBatch::new(BATCH, 1);
        let last = tokens.len() - 1;
        let mut from = reused;
        if reused == 0 {
            (reused, from) = self.start_from_system(&mut ctx, &mut batch, system, &tokens)?;
        }
        read_prompt(&mut ctx, &mut batch, &tokens, from..tokens.len(), last)?;
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;

        let t1 = Instant::now();
        let sampler = LlamaSampler::grammar(&self.model, grammar, "root").map_err(llama("grammar"))?;
        let mut run = Generation {
            vocab: self.model.vocab(),
            sampler,
            greedy_first,
            repeat_penalty,
            max_tokens,
            history: tokens.clone(),
            recent: Vec::new(),
            out: Vec::new(),
            generated: 0,
            full_checks: 0,
            logits: Vec::new(),
        };
        let (mut drafted, mut accepted) = (0usize, 0usize);
        // The batch entry whose logits predict the next token, unless a rejected draft already
        // told it (`next`).
        let mut idx = batch.n_tokens() - 1;
        let mut next = None;
        'generation: loop {
            let token = match next.take() {
                Some(t) => t,
                None => run.choose(&ctx, idx)?,
            };
            if !run.accept(token)? {
                break;
            }
            // Prompt lookup: the tokens that followed the latest ones where they occurred before
            // (in the transcript or the reply so far) are decoded with the new token in one
            // batch and kept as far as greedy decoding agrees with them. A batch of a few tokens
            // costs little more than one, since reading the weights dominates a step. (A batch's
            // arithmetic differs from a single step's in the last bits, so where two tokens are
            // nearly tied the reply can differ, as it can when a cached prompt prefix is reused.)
            let room = (ctx.n_ctx() as usize).saturating_sub(run.history.len());
            let draft = if speculate {
                lookup(&run.history, DRAFT_MAX.min(room), |t| run.vocab.is_eog(t))
            } else {
                vec![]
            };
            let base = run.history.len() - 1;
            batch.clear();
            for (j, tok) in std::iter::once(token).chain(draft.iter().copied()).enumerate() {
                batch.add(tok, (base + j) as i32, &[0], true).map_err(llama("batch"))?;
            }
            ctx.decode(&mut batch).map_err(llama("decode"))?;
            drafted += draft.len();
            idx = 0;
            for (j, &guess) in draft.iter().enumerate() {
                // Entry j predicts draft token j.
                let t = run.choose(&ctx, j as i32)?;
                if t != guess {
                    // The rest of the draft is wrong: drop its KV entries.
                    let from = (base + j + 1) as u32;
                    if !ctx.clear_kv_cache_seq(Some(0), Some(from), None).unwrap_or(false) {
                        return Err(WorkerError::Llama("cannot drop rejected draft tokens".into()));
                    }
                    next = Some(t);
                    continue 'generation;
                }
                if !run.accept(t)? {
                    break 'generation;
                }
                accepted += 1;
                idx = j as i32 + 1;
            }
        }
        let Generation { out, generated, full_checks, history: in_cache, .. } = run;
        let generate_ms = t1.elapsed().as_secs_f64() * 1e3;
        let text =
            String::from_utf8(out).map_err(|e| WorkerError::Llama(format!("output is not UTF-8: {e}")))?;
        let n_ctx = ctx.n_ctx();
        if replies.len() == REPLIES_KEPT {
            replies.remove(0);
        }
        replies.push(Reply { text: text.clone(), tokens: in_cache[tokens.len()..].to_vec() });
        *cache = Some(Cache { ctx, tokens: in_cache, replies });
        Ok(json!({
            "ok": true,
            "text": text,
            "prompt_tokens": tokens.len(),
            "reused_tokens": reused,
            "generated_tokens": generated,
            "prompt_ms": prompt_ms,
            "generate_ms": generate_ms,
            "n_ctx": n_ctx,
            "full_grammar_checks": full_checks,
            "drafted_tokens": drafted,
            "accepted_tokens": accepted,
        }))
    }
}

/// Decodes `tokens[range]` in batches of [`BATCH`], with logits for entry `last` only. The last
/// batch stays in `batch`.
fn read_prompt(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
    range: std::ops::Range<usize>,
    last: usize,
) -> Result<(), WorkerError> {
    let start = range.start;
    for (c, chunk) in tokens[range].chunks(BATCH).enumerate() {
        batch.clear();
        for (j, tok) in chunk.iter().enumerate() {
            let pos = start + c * BATCH + j;
            batch.add(*tok, pos as i32, &[0], pos == last).map_err(llama("batch"))?;
        }
        ctx.decode(batch).map_err(llama("decode prompt"))?;
    }
    Ok(())
}

/// KV states of system messages, one file per model and message, kept across worker processes.
struct PrefixCache {
    dir: std::path::PathBuf,
    /// The model file's name and size: states of one model never load into another.
    model_tag: String,
}

impl PrefixCache {
    fn new(dir: std::path::PathBuf, model: &str) -> Self {
        let path = std::path::Path::new(model);
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self { dir, model_tag: format!("{name}-{size}") }
    }

    /// The file for the state after `tokens`.
    fn file(&self, tokens: &[LlamaToken]) -> std::path::PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        tokens.len().hash(&mut h);
        tokens.iter().for_each(|t| t.0.hash(&mut h));
        self.dir.join(format!("{}-{:016x}.kv", self.model_tag, h.finish()))
    }

    /// Writes the state of sequence 0 (holding `tokens`) to `path` through a temporary file, and
    /// removes this model's other states (left by other versions of the instructions).
    fn save(
        &self,
        ctx: &LlamaContext<'_>,
        path: &std::path::Path,
        tokens: &[LlamaToken],
    ) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        ctx.state_seq_save_file(&tmp, 0, tokens).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            e.to_string()
        })?;
        let ours = format!("{}-", self.model_tag);
        for entry in std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p != path && name.starts_with(&ours) && name.ends_with(".kv") {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }
}

/// Longest draft of a lookup step, in tokens.
const DRAFT_MAX: usize = 4;
/// Shortest and longest run of latest tokens looked up in the history.
const NGRAM_MIN: usize = 2;
const NGRAM_MAX: usize = 4;

/// Prompt lookup ("prompt lookup decoding"): finds the latest earlier occurrence of the last
/// `n` tokens of `history` (longest `n` first) and returns up to `max` tokens that followed it,
/// cut before an end-of-generation token.
fn lookup(history: &[LlamaToken], max: usize, is_eog: impl Fn(LlamaToken) -> bool) -> Vec<LlamaToken> {
    let len = history.len();
    for n in (NGRAM_MIN..=NGRAM_MAX.min(len.saturating_sub(1))).rev() {
        let tail = &history[len - n..];
        if let Some(start) = (0..len - n).rev().find(|&i| history[i..i + n] == *tail) {
            let follow = &history[start + n..(start + n + max).min(len)];
            return follow.iter().copied().take_while(|&t| !is_eog(t)).collect();
        }
    }
    Vec::new()
}

/// The state of one greedy, grammar-constrained generation.
struct Generation<'m> {
    vocab: LlamaVocab<'m>,
    sampler: LlamaSampler,
    greedy_first: bool,
    repeat_penalty: f32,
    max_tokens: u32,
    /// Every token whose KV entry is in the context: the prompt, then the accepted output.
    history: Vec<LlamaToken>,
    /// The latest generated tokens, for the repetition penalty.
    recent: Vec<LlamaToken>,
    out: Vec<u8>,
    generated: u32,
    full_checks: u32,
    logits: Vec<f32>,
}

impl Generation<'_> {
    /// The token greedy decoding picks from the logits of batch entry `idx`.
    fn choose(&mut self, ctx: &LlamaContext<'_>, idx: i32) -> Result<LlamaToken, WorkerError> {
        self.logits.clear();
        self.logits.extend_from_slice(ctx.get_logits_ith(idx));
        penalise(&mut self.logits, &self.recent, self.repeat_penalty);
        next_token(&self.logits, &mut self.sampler, self.greedy_first, &mut self.full_checks)
    }

    /// Takes `token` as the next output token; `false` when it ends the generation.
    fn accept(&mut self, token: LlamaToken) -> Result<bool, WorkerError> {
        if self.vocab.is_eog(token) {
            return Ok(false);
        }
        if self.generated >= self.max_tokens {
            return Err(WorkerError::Llama(format!("output exceeded {} tokens", self.max_tokens)));
        }
        self.sampler.accept(token);
        self.history.push(token);
        self.recent.push(token);
        if self.recent.len() > REPEAT_WINDOW {
            self.recent.remove(0);
        }
        self.out.extend(self.vocab.token_to_piece(token, false, None));
        self.generated += 1;
        Ok(true)
    }
}

/// Picks the most likely token the grammar allows. With `greedy_first` the plain argmax is tried
/// against the grammar alone (one candidate) and the whole vocabulary is only filtered when the
/// grammar rejects it — as llama.cpp's common sampler does, and ~10× cheaper per token.
fn next_token(
    logits: &[f32],
    grammar: &mut LlamaSampler,
    greedy_first: bool,
    full_checks: &mut u32,
) -> Result<LlamaToken, WorkerError> {
    if greedy_first {
        let (best, logit) = argmax(logits.iter().copied().enumerate())
            .ok_or_else(|| WorkerError::Llama("empty logits".into()))?;
        let mut one =
            LlamaTokenDataArray::new(vec![LlamaTokenData::new(LlamaToken(best as i32), logit, 0.0)], false);
        grammar.apply(&mut one);
        if one.data[0].logit().is_finite() {
            return Ok(LlamaToken(best as i32));
        }
    }
    *full_checks += 1;
    let mut all = LlamaTokenDataArray::from_iter(
        logits.iter().enumerate().map(|(i, l)| LlamaTokenData::new(LlamaToken(i as i32), *l, 0.0)),
        false,
    );
    grammar.apply(&mut all);
    let (best, _) = argmax(all.data.iter().map(|d| (d.id().0 as usize, d.logit())))
        .filter(|(_, l)| l.is_finite())
        .ok_or_else(|| WorkerError::Llama("the grammar allows no token".into()))?;
    Ok(LlamaToken(best as i32))
}

/// llama.cpp-style repetition penalty over the recent tokens (each penalised once).
fn penalise(logits: &mut [f32], recent: &[LlamaToken], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for t in recent {
        if let Some(l) = logits.get_mut(t.0 as usize)
            && seen.insert(t.0)
        {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

fn argmax(it: impl Iterator<Item = (usize, f32)>) -> Option<(usize, f32)> {
    it.fold(None, |best, (i, l)| match best {
        Some((_, bl)) if bl >= l => best,
        _ => Some((i, l)),
    })
}

fn reply(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    writeln!(out, "{v}")?;
    out.flush()
}

fn run() -> Result<(), WorkerError> {
    let args = parse_args()?;
    let mut backend = LlamaBackend::init().map_err(llama("backend"))?;
    backend.void_logs();
    let model = LlamaModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())
        .map_err(llama(&format!("loading {}", args.model)))?;
    let prefix_cache = args.prefix_cache.map(|dir| PrefixCache::new(dir, &args.model));
    let engine =
        Engine { backend, model, threads: args.threads, max_context: args.max_context, prefix_cache };
    let mut cache: Option<Cache<'_>> = None;

    let mut stdout = std::io::stdout().lock();
    let hello = json!({"ok": true, "ready": true, "n_ctx_train": engine.model.n_ctx_train()});
    reply(&mut stdout, &hello).map_err(llama("stdout"))?;

    // Stdin is read on a thread so the main loop can give up after the idle timeout.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = match args.idle_exit {
            Some(idle) => match rx.recv_timeout(idle) {
                Ok(l) => l,
                Err(_) => return Ok(()),
            },
            None => match rx.recv() {
                Ok(l) => l,
                Err(_) => return Ok(()),
            },
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(WorkerError::Usage(format!("bad request: {e}"))),
            Ok(Request::Count { system, user, turns }) => engine
                .prompt_tokens(&system, &user, &turns, &[])
                .map(|t| json!({"ok": true, "tokens": t.len()})),
            Ok(Request::Generate {
                system,
                user,
                turns,
                grammar,
                max_tokens,
                greedy_first,
                repeat_penalty,
                speculate,
            }) => engine.generate(
                &mut cache,
                &system,
                &user,
                &turns,
                &grammar,
                max_tokens,
                greedy_first,
                repeat_penalty,
                speculate,
            ),
        };
        let v = answer.unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()}));
        reply(&mut stdout, &v).map_err(llama("stdout"))?;
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("diarized-llm: {e}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&i| LlamaToken(i)).collect()
    }

    const NO_EOG: fn(LlamaToken) -> bool = |_| false;

    #[test]
    fn lookup_drafts_what_followed_the_latest_longest_match() {
        // "7 8" occurs twice before the end; the later occurrence (followed by 30 31…) wins.
        let h = toks(&[7, 8, 20, 21, 9, 7, 8, 30, 31, 32, 33, 34, 5, 7, 8]);
        assert_eq!(lookup(&h, 4, NO_EOG), toks(&[30, 31, 32, 33]));
        // A longer match beats a later, shorter one: "5 1 2" matches only at the start.
        let h = toks(&[5, 1, 2, 40, 41, 9, 1, 2, 50, 5, 1, 2]);
        assert_eq!(lookup(&h, 3, NO_EOG), toks(&[40, 41, 9]));
    }

    #[test]
    fn lookup_stops_at_the_history_end_and_before_end_of_generation() {
        // The match's continuation runs into the tail itself: only what exists is drafted.
        let h = toks(&[1, 2, 1, 2]);
        assert_eq!(lookup(&h, 4, NO_EOG), toks(&[1, 2]));
        let h = toks(&[3, 4, 60, 99, 61, 3, 4]);
        assert_eq!(lookup(&h, 4, |t| t.0 == 99), toks(&[60]));
    }

    #[test]
    fn lookup_without_a_match_drafts_nothing() {
        assert!(lookup(&toks(&[1, 2, 3, 4, 5]), 4, NO_EOG).is_empty());
        assert!(lookup(&toks(&[1, 1]), 4, NO_EOG).is_empty());
        assert!(lookup(&toks(&[1]), 4, NO_EOG).is_empty());
        assert!(lookup(&[], 4, NO_EOG).is_empty());
    }
}
