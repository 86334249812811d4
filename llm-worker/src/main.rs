//! `diarized-llm`: runs a GGUF model with llama.cpp in its own process.
//!
//! The daemon starts it as `diarized-llm --model FILE [--threads N] [--max-context N]
//! [--idle-exit-s S]` and speaks JSON lines: one request per stdin line, one reply per stdout
//! line. After the model has loaded the worker prints
//! `{"ok":true,"ready":true,"n_ctx_train":…}`. Requests:
//! - `{"op":"count","system":…,"user":…}` → `{"ok":true,"tokens":N}` (the chat-formatted prompt)
//! - `{"op":"generate","system":…,"user":…,"grammar":…,"max_tokens":N,"greedy_first":true}` →
//!   `{"ok":true,"text":…,"prompt_tokens":…,"reused_tokens":…,"generated_tokens":…,"prompt_ms":…,
//!   "generate_ms":…,"n_ctx":…,"full_grammar_checks":…}`
//!
//! Both take optional `"turns":[{"role":"assistant"|"user","content":…},…]` after the user
//! message (a correction round). The context of the last generation is kept: a prompt that
//! starts like the previous one (the same transcript asked again with a correction) only reads
//! its new tokens (`reused_tokens` says how many were kept).
//!
//! Errors are `{"ok":false,"error":…}`. The worker exits with status 0 when stdin closes or after
//! `--idle-exit-s` seconds without a request (freeing the model's memory).
//!
//! It is a separate process because whisper-rs and llama-cpp-2 each link a static ggml whose
//! symbols collide in one binary; it also keeps a crash or OOM out of the daemon.

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
}

fn parse_args() -> Result<Args, WorkerError> {
    let mut args = Args { model: String::new(), threads: 1, max_context: 16384, idle_exit: None };
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
}

impl Engine {
    fn prompt_tokens(
        &self,
        system: &str,
        user: &str,
        turns: &[Turn],
    ) -> Result<Vec<LlamaToken>, WorkerError> {
        let all = [("system", system), ("user", user)]
            .into_iter()
            .chain(turns.iter().map(|t| (t.role.as_str(), t.content.as_str())));
        let prompt = match self.model.chat_template(None) {
            Ok(tmpl) => {
                let msgs = all
                    .map(|(role, text)| {
                        LlamaChatMessage::new(role.into(), text.into()).map_err(llama("message"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.model.apply_chat_template(&tmpl, &msgs, true).map_err(llama("chat template"))?
            }
            // Qwen's ChatML, for a model file without a template.
            Err(_) => {
                let mut p: String =
                    all.map(|(role, text)| format!("<|im_start|>{role}\n{text}<|im_end|>\n")).collect();
                p.push_str("<|im_start|>assistant\n");
                p
            }
        };
        Ok(self.model.vocab().tokenize(prompt.as_bytes(), true, true))
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
    ) -> Result<Value, WorkerError> {
        let tokens = self.prompt_tokens(system, user, turns)?;
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
        for (c, chunk) in tokens[reused..].chunks(BATCH).enumerate() {
            batch.clear();
            for (j, tok) in chunk.iter().enumerate() {
                let pos = reused + c * BATCH + j;
                batch.add(*tok, pos as i32, &[0], pos == last).map_err(llama("batch"))?;
            }
            ctx.decode(&mut batch).map_err(llama("decode prompt"))?;
        }
        let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut in_cache = tokens.clone();

        let t1 = Instant::now();
        let mut sampler = LlamaSampler::grammar(&self.model, grammar, "root").map_err(llama("grammar"))?;
        let vocab = self.model.vocab();
        let mut out = Vec::new();
        let mut pos = tokens.len();
        let mut idx = batch.n_tokens() - 1;
        let mut generated = 0u32;
        let mut full_checks = 0u32;
        let mut recent: Vec<LlamaToken> = Vec::new();
        let mut logits = Vec::new();
        loop {
            logits.clear();
            logits.extend_from_slice(ctx.get_logits_ith(idx));
            penalise(&mut logits, &recent, repeat_penalty);
            let token = next_token(&logits, &mut sampler, greedy_first, &mut full_checks)?;
            if vocab.is_eog(token) {
                break;
            }
            if generated >= max_tokens {
                return Err(WorkerError::Llama(format!("output exceeded {max_tokens} tokens")));
            }
            sampler.accept(token);
            in_cache.push(token);
            recent.push(token);
            if recent.len() > REPEAT_WINDOW {
                recent.remove(0);
            }
            out.extend(vocab.token_to_piece(token, false, None));
            generated += 1;
            batch.clear();
            batch.add(token, pos as i32, &[0], true).map_err(llama("batch"))?;
            ctx.decode(&mut batch).map_err(llama("decode"))?;
            pos += 1;
            idx = 0;
        }
        let generate_ms = t1.elapsed().as_secs_f64() * 1e3;
        let text =
            String::from_utf8(out).map_err(|e| WorkerError::Llama(format!("output is not UTF-8: {e}")))?;
        let n_ctx = ctx.n_ctx();
        *cache = Some(Cache { ctx, tokens: in_cache });
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
        }))
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
    let engine = Engine { backend, model, threads: args.threads, max_context: args.max_context };
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
            Ok(Request::Count { system, user, turns }) => {
                engine.prompt_tokens(&system, &user, &turns).map(|t| json!({"ok": true, "tokens": t.len()}))
            }
            Ok(Request::Generate {
                system,
                user,
                turns,
                grammar,
                max_tokens,
                greedy_first,
                repeat_penalty,
            }) => engine.generate(
                &mut cache,
                &system,
                &user,
                &turns,
                &grammar,
                max_tokens,
                greedy_first,
                repeat_penalty,
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
