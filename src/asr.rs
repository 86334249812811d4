//! Speech recognition with whisper.cpp (through whisper-rs).
//!
//! The model is loaded once ([`WhisperTranscriber::load`]) and reused for every file. Each file
//! goes through a cheap energy voice-activity gate first: non-speech stretches longer than a
//! second are cut out, the remaining speech is packed into chunks of at most 30 s (one encoder
//! window), and each chunk is transcribed with timestamps mapped back to the original timeline.
//! With a multilingual model and no configured language, the language is detected per chunk, on
//! speech only. Silence-only audio never reaches the model and yields an empty transcript.

use std::ops::Range;
use std::path::Path;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::audio::{Audio, SAMPLE_RATE};
use crate::model::{Segment, Transcript, Word};
use crate::pipeline::{Progress, StageError, Transcriber};

const STAGE: &str = "transcribe";
/// One Whisper encoder window.
const WINDOW_S: f64 = 30.0;

/// Recognition settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsrOptions {
    /// ggml worker threads (at least 1).
    pub threads: usize,
    /// ISO 639-1 code such as `en`; `None` (or `auto`) detects it per chunk of speech.
    pub language: Option<String>,
    /// Beam width for beam search; `None` decodes greedily (faster, the default).
    pub beam_size: Option<usize>,
}

impl Default for AsrOptions {
    fn default() -> Self {
        Self { threads: 1, language: None, beam_size: None }
    }
}

/// Language found for one chunk of speech.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkLanguage {
    /// Span of the chunk in the original audio.
    pub start_s: f64,
    pub end_s: f64,
    /// ISO 639-1 code.
    pub language: String,
    /// Detection probability (`None` when configured or implied by an English-only model).
    pub probability: Option<f32>,
}

/// A loaded whisper.cpp model and its decoding state; implements [`Transcriber`].
pub struct WhisperTranscriber {
    // Field order matters: the state must be dropped before the context.
    state: WhisperState,
    ctx: WhisperContext,
    opts: AsrOptions,
    name: String,
    multilingual: bool,
}

impl WhisperTranscriber {
    /// Loads a ggml Whisper model file (see `models::whisper::resolve_whisper_model`).
    pub fn load(model_path: &Path, opts: AsrOptions) -> Result<Self, StageError> {
        whisper_rs::install_logging_hooks();
        let err = |m: String| StageError::new(STAGE, m);
        if opts.threads == 0 {
            return Err(err("threads must be at least 1".into()));
        }
        if opts.beam_size == Some(0) {
            return Err(err("beam size must be at least 1".into()));
        }
        let mut opts = opts;
        if opts.language.as_deref().is_some_and(|l| l.is_empty() || l == "auto") {
            opts.language = None;
        }
        if let Some(lang) = &opts.language
            && whisper_rs::get_lang_id(lang).is_none()
        {
            return Err(err(format!("unknown language code {lang:?}")));
        }
        let path =
            model_path.to_str().ok_or_else(|| err(format!("non-UTF-8 path {}", model_path.display())))?;
        if !model_path.is_file() {
            return Err(err(format!("model file {path} not found")));
        }
        // Flash attention: faster on CPU (whisper-cli's default too); we do not use DTW.
        let mut cparams = WhisperContextParameters::default();
        cparams.flash_attn(true);
        let ctx = WhisperContext::new_with_params(path, cparams)
            .map_err(|e| err(format!("cannot load Whisper model {path}: {e}")))?;
        let state = ctx.create_state().map_err(|e| err(format!("cannot create Whisper state: {e}")))?;
        let multilingual = ctx.is_multilingual();
        if !multilingual && opts.language.as_deref().is_some_and(|l| l != "en") {
            return Err(err(format!(
                "{path} is an English-only model; language {:?} is not possible",
                opts.language
            )));
        }
        let name = model_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { state, ctx, opts, name, multilingual })
    }

    /// Transcribes `audio` and also returns the language of every chunk of speech.
    pub fn transcribe_detailed(
        &mut self,
        audio: &Audio,
        progress: Progress<'_>,
    ) -> Result<(Transcript, Vec<ChunkLanguage>), StageError> {
        let chunks = speech_chunks(&audio.samples);
        let total: usize = chunks.iter().map(Chunk::len).sum::<usize>().max(1);
        let mut done = 0usize;
        let mut segments: Vec<Segment> = Vec::new();
        let mut languages = Vec::new();
        progress(0.0);
        for chunk in &chunks {
            let pcm: Vec<f32> =
                chunk.pieces.iter().flat_map(|r| audio.samples[r.clone()].iter().copied()).collect();
            let (language, probability) = self.chunk_language(&pcm)?;
            let span = (chunk.start_s(), chunk.end_s());
            languages.push(ChunkLanguage {
                start_s: span.0,
                end_s: span.1,
                language: language.clone(),
                probability,
            });
            let (before, len) = (done as f32 / total as f32, pcm.len() as f32 / total as f32);
            let found = self.run_chunk(&pcm, &language, |p| progress(before + len * p))?;
            for mut seg in found {
                seg.start_s = chunk.map_time(seg.start_s);
                seg.end_s = chunk.map_time(seg.end_s).max(seg.start_s);
                for w in &mut seg.words {
                    w.start_s = chunk.map_time(w.start_s);
                    w.end_s = chunk.map_time(w.end_s).max(w.start_s);
                }
                // Runaway-repetition guard: drop a segment repeating the previous one verbatim.
                if segments.last().is_some_and(|p| normalize(&p.text) == normalize(&seg.text)) {
                    continue;
                }
                segments.push(seg);
            }
            done += pcm.len();
        }
        progress(1.0);
        let (language, language_probability) = main_language(&languages, self.multilingual);
        Ok((Transcript { language, language_probability, segments }, languages))
    }

    /// Configured language, `en` for English-only models, else detection on this chunk.
    fn chunk_language(&mut self, pcm: &[f32]) -> Result<(String, Option<f32>), StageError> {
        if let Some(lang) = &self.opts.language {
            return Ok((lang.clone(), None));
        }
        if !self.multilingual {
            return Ok(("en".into(), None));
        }
        let err = |e| StageError::new(STAGE, format!("language detection failed: {e}"));
        let window = pcm.len().min(WINDOW_S as usize * SAMPLE_RATE as usize);
        self.state.pcm_to_mel(&pcm[..window], self.opts.threads).map_err(err)?;
        let (id, probs) = self.state.lang_detect(0, self.opts.threads).map_err(err)?;
        let code = whisper_rs::get_lang_str(id)
            .ok_or_else(|| StageError::new(STAGE, format!("bad language id {id}")))?;
        Ok((code.to_string(), probs.get(id as usize).copied()))
    }

    /// Runs whisper.cpp on one chunk; times are relative to the chunk.
    fn run_chunk(
        &mut self,
        pcm: &[f32],
        language: &str,
        progress: impl Fn(f32) + Sync,
    ) -> Result<Vec<Segment>, StageError> {
        let strategy = match self.opts.beam_size {
            Some(b) => SamplingStrategy::BeamSearch { beam_size: b as i32, patience: -1.0 },
            None => SamplingStrategy::Greedy { best_of: 5 },
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(self.opts.threads as i32);
        params.set_language(Some(language));
        params.set_translate(false);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_token_timestamps(true);
        // Hallucination guards (the values of OpenAI's reference decoder): temperature fallback on
        // repetitive (high compression / low entropy) or unlikely output, no-speech skipping, and a
        // bounded text context so one bad window cannot seed a repetition loop.
        params.set_temperature(0.0);
        params.set_temperature_inc(0.2);
        params.set_entropy_thold(2.4);
        params.set_logprob_thold(-1.0);
        params.set_no_speech_thold(0.6);
        params.set_n_max_text_ctx(64);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // whisper-rs wants a 'static progress closure (and never frees it): it only sends the
        // percentage to a channel, relayed to the caller's borrowed callback by a scoped thread
        // until the end marker is sent.
        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        let end = tx.clone();
        params.set_progress_callback_safe(move |p: i32| {
            let _ = tx.send(p.clamp(0, 100));
        });
        let result = std::thread::scope(|s| {
            let progress = &progress;
            s.spawn(move || {
                while let Ok(p) = rx.recv() {
                    if p < 0 {
                        break;
                    }
                    progress(p as f32 / 100.0);
                }
            });
            let r = self.state.full(params, pcm);
            let _ = end.send(-1);
            r
        });
        result.map_err(|e| StageError::new(STAGE, format!("whisper failed: {e}")))?;
        self.collect_segments()
    }

    fn collect_segments(&self) -> Result<Vec<Segment>, StageError> {
        let eot = self.ctx.token_eot();
        let mut out = Vec::new();
        for seg in self.state.as_iter() {
            let text =
                seg.to_str_lossy().map_err(|e| StageError::new(STAGE, format!("segment text: {e}")))?;
            let text = text.trim().to_string();
            if text.is_empty() {
                continue;
            }
            let mut words: Vec<Word> = Vec::new();
            let mut probs: Vec<f32> = Vec::new();
            for i in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(i) else { continue };
                let data = tok.token_data();
                if data.id >= eot {
                    continue; // special and timestamp tokens
                }
                let piece =
                    tok.to_bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let (t0, t1) = (data.t0 as f64 / 100.0, data.t1 as f64 / 100.0);
                let starts_word = piece.starts_with(' ') || words.is_empty();
                if starts_word && !piece.trim().is_empty() {
                    if let Some(w) = words.last_mut() {
                        w.probability = mean(&probs);
                    }
                    probs.clear();
                    words.push(Word {
                        start_s: t0,
                        end_s: t1,
                        text: piece.trim().to_string(),
                        probability: 0.0,
                        speaker: None,
                    });
                } else if let Some(w) = words.last_mut() {
                    // Continuation of a word (sub-word token or UTF-8 fragment).
                    w.text.push_str(piece.trim_end());
                    w.end_s = w.end_s.max(t1);
                }
                probs.push(data.p);
            }
            if let Some(w) = words.last_mut() {
                w.probability = mean(&probs);
            }
            out.push(Segment {
                start_s: seg.start_timestamp() as f64 / 100.0,
                end_s: seg.end_timestamp() as f64 / 100.0,
                text,
                speaker: None,
                words,
            });
        }
        Ok(out)
    }
}

impl Transcriber for WhisperTranscriber {
    fn transcribe(&mut self, audio: &Audio, progress: Progress<'_>) -> Result<Transcript, StageError> {
        self.transcribe_detailed(audio, progress).map(|(t, _)| t)
    }

    fn name(&self) -> String {
        format!("whisper.cpp {}", self.name)
    }
}

fn mean(v: &[f32]) -> f32 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f32>() / v.len() as f32 }
}

fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).flat_map(char::to_lowercase).collect()
}

/// The language with the most speech, and its duration-weighted mean detection probability.
fn main_language(chunks: &[ChunkLanguage], multilingual: bool) -> (Option<String>, Option<f32>) {
    let mut totals: Vec<(&str, f64, f64)> = Vec::new(); // (code, seconds, seconds × probability)
    for c in chunks {
        let d = c.end_s - c.start_s;
        let p = c.probability.unwrap_or(1.0) as f64;
        match totals.iter_mut().find(|t| t.0 == c.language) {
            Some(t) => {
                t.1 += d;
                t.2 += d * p;
            }
            None => totals.push((&c.language, d, d * p)),
        }
    }
    let Some(best) = totals.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
        return (None, None);
    };
    let detected = multilingual && chunks.iter().any(|c| c.probability.is_some());
    (Some(best.0.to_string()), detected.then(|| (best.2 / best.1.max(1e-9)) as f32))
}

/// Speech to transcribe in one whisper.cpp call: sample ranges of the original audio.
#[derive(Debug, Clone, PartialEq)]
struct Chunk {
    pieces: Vec<Range<usize>>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.pieces.iter().map(|r| r.len()).sum()
    }
    fn start_s(&self) -> f64 {
        self.pieces.first().map_or(0.0, |r| r.start as f64 / SAMPLE_RATE as f64)
    }
    fn end_s(&self) -> f64 {
        self.pieces.last().map_or(0.0, |r| r.end as f64 / SAMPLE_RATE as f64)
    }
    /// Maps a time inside the concatenated chunk back to the original audio.
    fn map_time(&self, t: f64) -> f64 {
        let sr = SAMPLE_RATE as f64;
        let mut offset = 0.0;
        for (i, r) in self.pieces.iter().enumerate() {
            let len = r.len() as f64 / sr;
            if t < offset + len || i + 1 == self.pieces.len() {
                return r.start as f64 / sr + (t - offset).clamp(0.0, len);
            }
            offset += len;
        }
        t
    }
}

/// 20 ms analysis frames.
const FRAME: usize = 320;
/// Absolute RMS below which a frame is never speech (about −54 dBFS).
const MIN_SPEECH_RMS: f32 = 0.002;
/// Speech is padded by this much on both sides.
const PAD_S: f64 = 0.4;
/// Non-speech gaps shorter than this are kept inside a piece.
const MIN_GAP_S: f64 = 1.0;

/// Energy-based voice activity: the speech pieces of `samples` packed into chunks of at most
/// 30 s (a single piece longer than that forms its own chunk; whisper.cpp slides over it).
fn speech_chunks(samples: &[f32]) -> Vec<Chunk> {
    let rms: Vec<f32> = samples
        .chunks(FRAME)
        .map(|f| (f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32).sqrt())
        .collect();
    if rms.is_empty() {
        return Vec::new();
    }
    let mut sorted = rms.clone();
    sorted.sort_by(f32::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    // Adaptive threshold: well above the noise floor, well below loud speech.
    let threshold = (pct(0.1) * 3.0).min(pct(0.95) * 0.1).max(MIN_SPEECH_RMS);

    let frames_per_s = SAMPLE_RATE as f64 / FRAME as f64;
    let pad = (PAD_S * frames_per_s) as usize;
    let min_gap = (MIN_GAP_S * frames_per_s) as usize;
    let mut regions: Vec<Range<usize>> = Vec::new(); // in frames
    for (i, _) in rms.iter().enumerate().filter(|(_, r)| **r >= threshold) {
        let (s, e) = (i.saturating_sub(pad), (i + 1 + pad).min(rms.len()));
        match regions.last_mut() {
            Some(last) if s <= last.end + min_gap => last.end = last.end.max(e),
            _ => regions.push(s..e),
        }
    }

    let window = (WINDOW_S * SAMPLE_RATE as f64) as usize;
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current = Chunk { pieces: Vec::new() };
    for r in regions {
        let piece = r.start * FRAME..(r.end * FRAME).min(samples.len());
        if !current.pieces.is_empty() && current.len() + piece.len() > window {
            chunks.push(std::mem::replace(&mut current, Chunk { pieces: Vec::new() }));
        }
        current.pieces.push(piece);
    }
    if !current.pieces.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize).map(|i| amp * (i as f32 * 0.05).sin()).collect()
    }

    #[test]
    fn silence_has_no_speech_chunks() {
        assert!(speech_chunks(&vec![0.0; 160_000]).is_empty());
        assert!(speech_chunks(&[]).is_empty());
    }

    #[test]
    fn long_pauses_are_cut_and_times_map_back() {
        let mut s = tone(2.0, 0.3);
        s.extend(vec![0.0; 16_000 * 5]);
        s.extend(tone(3.0, 0.3));
        let chunks = speech_chunks(&s);
        assert_eq!(chunks.len(), 1);
        let c = &chunks[0];
        assert_eq!(c.pieces.len(), 2);
        // 2 s of speech + 0.4 s padding, then the second piece starts 0.4 s before 7 s.
        assert!((c.map_time(1.0) - 1.0).abs() < 1e-6);
        let first_len = c.pieces[0].len() as f64 / 16_000.0;
        assert!((c.map_time(first_len + 0.5) - (7.0 - PAD_S + 0.5)).abs() < 0.03);
    }

    #[test]
    fn chunks_stay_within_one_window() {
        let mut s = Vec::new();
        for _ in 0..10 {
            s.extend(tone(8.0, 0.2));
            s.extend(vec![0.0; 16_000 * 2]);
        }
        let chunks = speech_chunks(&s);
        assert!(chunks.len() >= 3);
        for c in &chunks {
            assert!(c.len() <= 30 * 16_000);
        }
    }
}
