//! Speech recognition with whisper.cpp (through whisper-rs).
//!
//! The model is loaded once ([`WhisperTranscriber::load`]) and reused for every file. Each file
//! goes through a cheap energy voice-activity gate first: non-speech stretches longer than a
//! second are cut out and the remaining speech is joined into one continuous stream, decoded by
//! one `whisper_full` call per block of up to ten minutes (whisper.cpp seeks window by window, so
//! no encoder pass is spent on padding), with timestamps mapped back to the original timeline.
//! With a multilingual model and no configured language, the language is detected once on the
//! first speech; a window whose words come out doubtful is checked again and re-decoded only
//! when it is surely another language (code-switching). Silence-only audio never reaches the
//! model and yields an empty transcript.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use std::ffi::{c_int, c_void};

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState, WhisperTokenId,
};
use whisper_rs_sys as sys;

use crate::audio::{Audio, SAMPLE_RATE};
use crate::model::{DecodeOptions, Segment, Transcript, Word};
use crate::pipeline::{CANCELLED, Cancelled, Progress, SegmentSink, StageError, Transcriber};

const STAGE: &str = "transcribe";
/// One Whisper encoder window.
const WINDOW_S: f64 = 30.0;
/// Speech is decoded in blocks of at most this much, one continuous `whisper_full` call each:
/// whisper.cpp seeks through a block window by window, and the copy of the samples stays small.
const BLOCK_S: f64 = 600.0;
/// Language detection: a first window at least this sure decides alone; otherwise up to
/// [`LANGUAGE_VOTES`] windows vote.
const SURE_LANGUAGE: f32 = 0.5;
const LANGUAGE_VOTES: usize = 3;
/// A window is decoded in another language than the file's only when whisper.cpp's detection on
/// it is at least this sure.
const SWITCH_P: f32 = 0.8;

/// A stretch of the speech stream this long without any decoded segment is decoded again.
const REPAIR_GAP_S: f64 = 10.0;

/// Repetition loops: a segment of at least [`LOOP_MIN_WORDS`] words whose text comes back
/// [`LOOP_REPEATS`] times among [`LOOP_SPAN`] consecutive segments marks a loop.
const LOOP_SPAN: usize = 8;
const LOOP_REPEATS: usize = 3;
const LOOP_MIN_WORDS: usize = 2;

/// Recognition settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsrOptions {
    /// ggml worker threads (at least 1).
    pub threads: usize,
    /// ISO 639-1 code such as `en`; `None` (or `auto`) detects it per chunk of speech.
    pub language: Option<String>,
    /// Beam width for beam search; `None` decodes greedily (faster, the default).
    pub beam_size: Option<usize>,
    /// Hold the decoder's weights of a 16-bit model in q8_0 (see [`shared_context`]).
    pub decoder_q8: bool,
}

impl Default for AsrOptions {
    fn default() -> Self {
        Self { threads: 1, language: None, beam_size: None, decoder_q8: true }
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

/// A whisper.cpp model and this transcriber's own decoding state; implements [`Transcriber`].
/// Transcribers of the same model file share its weights (see [`shared_context`]).
pub struct WhisperTranscriber {
    // Field order matters: the state must be dropped before the context.
    state: WhisperState,
    ctx: Arc<WhisperContext>,
    opts: AsrOptions,
    name: String,
    multilingual: bool,
    decoder_q8_matrices: usize,
    /// The running job's own settings (set for each file).
    decode: DecodeOptions,
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
        let (ctx, decoder_q8_matrices) = shared_context(model_path, opts.decoder_q8)?;
        let state = ctx.create_state().map_err(|e| err(format!("cannot create Whisper state: {e}")))?;
        let multilingual = ctx.is_multilingual();
        if !multilingual && opts.language.as_deref().is_some_and(|l| l != "en") {
            return Err(err(format!(
                "{path} is an English-only model; language {:?} is not possible",
                opts.language
            )));
        }
        let name = model_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self {
            state,
            ctx,
            opts,
            name,
            multilingual,
            decoder_q8_matrices,
            decode: DecodeOptions::default(),
        })
    }

    /// How many of the model's weight matrices are held in q8_0 by [`AsrOptions::decoder_q8`]
    /// (0 when off, or when the file's weights are not 16-bit).
    pub fn decoder_q8_matrices(&self) -> usize {
        self.decoder_q8_matrices
    }

    /// Transcribes `audio` and also returns the language of every stretch of speech.
    pub fn transcribe_detailed(
        &mut self,
        audio: &Audio,
        progress: Progress<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<(Transcript, Vec<ChunkLanguage>), StageError> {
        self.decode = DecodeOptions::default();
        self.transcribe_file(audio, progress, &|_| {}, cancelled)
    }

    /// Checks a job's settings against this model and makes them the current ones.
    fn set_decode(&mut self, options: &DecodeOptions) -> Result<(), StageError> {
        let mut options = options.clone();
        if options.language.as_deref().is_some_and(|l| l.is_empty() || l == "auto") {
            options.language = None;
        }
        if let Some(lang) = &options.language {
            if !is_language_code(lang) {
                return Err(StageError::new(STAGE, format!("unknown language code {lang:?}")));
            }
            if !self.multilingual && lang != "en" {
                return Err(StageError::new(
                    STAGE,
                    format!("{} is an English-only model; language {lang:?} is not possible", self.name),
                ));
            }
        }
        if let Some(t) = options.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(StageError::new(STAGE, format!("temperature {t} is outside 0–1")));
        }
        self.decode = options;
        Ok(())
    }

    /// The language to decode in: the job's, else the configured one (`None`: detect).
    fn language(&self) -> Option<&str> {
        self.decode.language.as_deref().or(self.opts.language.as_deref())
    }

    /// The initial prompt of the current job as tokens: its last [`MAX_PROMPT_TOKENS`] (as
    /// OpenAI's reference decoder keeps them), with the leading space Whisper's text has.
    fn prompt_tokens(&self) -> Result<Vec<WhisperTokenId>, StageError> {
        let Some(prompt) = self.decode.prompt.as_deref().map(str::trim).filter(|p| !p.is_empty()) else {
            return Ok(Vec::new());
        };
        let text = format!(" {prompt}");
        // Never more tokens than bytes.
        let mut tokens = self
            .ctx
            .tokenize(&text, text.len() + 1)
            .map_err(|e| StageError::new(STAGE, format!("cannot tokenize the prompt: {e}")))?;
        let cut = tokens.len().saturating_sub(MAX_PROMPT_TOKENS);
        tokens.drain(..cut);
        Ok(tokens)
    }

    fn transcribe_file(
        &mut self,
        audio: &Audio,
        progress: Progress<'_>,
        live: SegmentSink<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<(Transcript, Vec<ChunkLanguage>), StageError> {
        let speech = Speech::detect(audio);
        let total = speech.len().max(1) as f32;
        let mut segments: Vec<Segment> = Vec::new();
        let mut languages = Vec::new();
        progress(0.0);
        let language = self.file_language(audio, &speech)?;
        let mut done = 0usize;
        for block in speech.blocks((BLOCK_S * SAMPLE_RATE as f64) as usize) {
            let pcm = block.pcm(audio);
            let (before, share) = (done as f32 / total, pcm.len() as f32 / total);
            let report = |p: f32| progress(before + share * p);
            let show = |mut seg: Segment| {
                retime(&mut seg, |t| block.map_time(t));
                live(&seg);
            };
            let probe = self.detects_language();
            let (mut found, windows) =
                self.run_whisper(&pcm, &language, probe, true, report, show, cancelled)?;
            let spans = self.switch_languages(&pcm, &language, windows, &mut found, cancelled)?;
            self.fill_gaps(&pcm, &language, &mut found, cancelled)?;
            self.break_loops(&pcm, &language, &mut found, cancelled)?;
            languages.extend(spans.into_iter().map(|(range, language, probability)| ChunkLanguage {
                start_s: block.map_time(range.start),
                end_s: block.map_time(range.end),
                language,
                probability,
            }));
            for mut seg in found {
                retime(&mut seg, |t| block.map_time(t));
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

    /// Whether the language is detected (multilingual model, none configured).
    fn detects_language(&self) -> bool {
        self.multilingual && self.language().is_none()
    }

    /// The language the whole file is decoded in: configured, `en` for English-only models, else
    /// detected once on the first window of speech, with up to [`LANGUAGE_VOTES`] windows voting
    /// (summed probabilities) when the first is unsure.
    fn file_language(&mut self, audio: &Audio, speech: &Speech) -> Result<String, StageError> {
        if let Some(lang) = self.language() {
            return Ok(lang.to_string());
        }
        if !self.detects_language() || speech.len() == 0 {
            return Ok("en".into());
        }
        let window = (WINDOW_S * SAMPLE_RATE as f64) as usize;
        let mut votes: Vec<(String, f32)> = Vec::new();
        for (i, w) in speech.blocks(window).into_iter().take(LANGUAGE_VOTES).enumerate() {
            let (code, p) = self.detect(&w.pcm(audio))?;
            match votes.iter_mut().find(|v| v.0 == code) {
                Some(v) => v.1 += p,
                None => votes.push((code, p)),
            }
            if i == 0 && p >= SURE_LANGUAGE {
                break;
            }
        }
        let best = votes.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one window");
        tracing::debug!(language = %best.0, summed_probability = best.1, "file language");
        Ok(best.0)
    }

    /// Language detection (one encoder pass) on the first 30 s of `pcm`.
    fn detect(&mut self, pcm: &[f32]) -> Result<(String, f32), StageError> {
        let err = |e| StageError::new(STAGE, format!("language detection failed: {e}"));
        let window = pcm.len().min(WINDOW_S as usize * SAMPLE_RATE as usize);
        self.state.pcm_to_mel(&pcm[..window], self.opts.threads).map_err(err)?;
        let (id, probs) = self.state.lang_detect(0, self.opts.threads).map_err(err)?;
        let code = whisper_rs::get_lang_str(id)
            .ok_or_else(|| StageError::new(STAGE, format!("bad language id {id}")))?;
        Ok((code.to_string(), probs.get(id as usize).copied().unwrap_or(0.0)))
    }

    /// Code-switching: the block was decoded in `language`; a window that whisper.cpp's own
    /// detection (see [`WindowProbe`]) finds surely in another language is decoded again in that
    /// language (adjacent ones together). Returns the language of every window, times in `pcm`;
    /// `found` is updated in place. Without detection (configured language, English-only model)
    /// the whole block is one span.
    #[allow(clippy::type_complexity)]
    fn switch_languages(
        &mut self,
        pcm: &[f32],
        language: &str,
        windows: Vec<Window>,
        found: &mut Vec<Segment>,
        cancelled: Cancelled<'_>,
    ) -> Result<Vec<(Range<f64>, String, Option<f32>)>, StageError> {
        let len_s = pcm.len() as f64 / SAMPLE_RATE as f64;
        if !self.detects_language() || windows.is_empty() {
            return Ok(vec![(0.0..len_s, language.to_string(), None)]);
        }
        let file_id = whisper_rs::get_lang_id(language).unwrap_or(0) as usize;
        // Each window's span and the language it is kept in.
        let mut spans: Vec<(Range<f64>, String, Option<f32>)> = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let start = spans.last().map_or(0.0, |s| s.0.end);
            let end = if i + 1 == windows.len() { len_s } else { w.end_s.max(start) };
            let (id, p) = w.best();
            let code = whisper_rs::get_lang_str(id as i32).unwrap_or(language);
            let keep = if code != language && p >= SWITCH_P {
                (code.to_string(), Some(p))
            } else {
                (language.to_string(), w.probs.get(file_id).copied())
            };
            spans.push((start..end, keep.0, keep.1));
        }
        // Decode runs of switched windows again, in their language.
        let mut i = 0;
        while i < spans.len() {
            if spans[i].1 == language {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < spans.len() && spans[j].1 == spans[i].1 {
                j += 1;
            }
            let range = spans[i].0.start..spans[j - 1].0.end;
            let code = spans[i].1.clone();
            tracing::debug!(start = range.start, end = range.end, language = %code, "language switch");
            let again = self.redecode(pcm, range.clone(), &code, true, cancelled)?;
            replace_segments(found, &range, again);
            i = j;
        }
        Ok(spans)
    }

    /// Gap repair: whisper.cpp sometimes skips a whole window of real speech (a no-speech verdict
    /// on far-field audio, or a timestamp jumping to the window's end), and which windows it skips
    /// changes with the smallest numeric difference. The stream holds speech only (the energy gate
    /// cut the pauses), so a stretch of at least [`REPAIR_GAP_S`] without any segment is decoded
    /// once more on its own, starting at the gap, without the previous text as context. Bounded:
    /// one extra pass per gap, at most the gaps' length of audio.
    fn fill_gaps(
        &mut self,
        pcm: &[f32],
        language: &str,
        found: &mut Vec<Segment>,
        cancelled: Cancelled<'_>,
    ) -> Result<(), StageError> {
        let len_s = pcm.len() as f64 / SAMPLE_RATE as f64;
        for gap in gaps(found, len_s, REPAIR_GAP_S) {
            let again: Vec<Segment> = self
                .redecode(pcm, gap.clone(), language, true, cancelled)?
                .into_iter()
                .map(|mut seg| {
                    retime(&mut seg, |t| t.min(gap.end));
                    seg
                })
                .filter(|seg| seg.start_s < gap.end)
                .collect();
            tracing::debug!(start = gap.start, end = gap.end, repaired = again.len(), "gap repair");
            replace_segments(found, &gap, again);
        }
        Ok(())
    }

    /// Loop repair: whisper.cpp can fall into a repetition loop that outlives its temperature
    /// fallback, because each window is prompted with the loop's own text ("And he said, he is
    /// a user." for a minute of a meeting). A stretch where [`loops`] finds one is decoded again
    /// without any previous text as context, and the new text is kept if it loops less.
    fn break_loops(
        &mut self,
        pcm: &[f32],
        language: &str,
        found: &mut Vec<Segment>,
        cancelled: Cancelled<'_>,
    ) -> Result<(), StageError> {
        for range in loops(found) {
            let before: Vec<Segment> = found.iter().filter(|s| range.contains(&s.start_s)).cloned().collect();
            let again: Vec<Segment> = self
                .redecode(pcm, range.clone(), language, false, cancelled)?
                .into_iter()
                .filter(|s| s.start_s < range.end)
                .collect();
            let (old, new) = (looping(&before), looping(&again));
            tracing::debug!(start = range.start, end = range.end, old, new, "loop repair");
            if new < old {
                replace_segments(found, &range, again);
            }
        }
        Ok(())
    }

    /// Decodes `range` (seconds) of `pcm` again on its own, in `language`, without the text
    /// before it as context (`chained`: each window after the first is prompted with the text
    /// of the one before, as whisper.cpp does by default; else no window gets any); times are
    /// relative to `pcm`.
    fn redecode(
        &mut self,
        pcm: &[f32],
        range: Range<f64>,
        language: &str,
        chained: bool,
        cancelled: Cancelled<'_>,
    ) -> Result<Vec<Segment>, StageError> {
        let slice = &pcm[samples_of(&range, pcm.len())];
        if slice.is_empty() {
            return Ok(Vec::new()); // a stretch past the audio's end: its segments were invented
        }
        let (mut again, _) = self.run_whisper(slice, language, false, chained, |_| {}, |_| {}, cancelled)?;
        for seg in &mut again {
            retime(seg, |t| t + range.start);
        }
        Ok(again)
    }

    /// Runs whisper.cpp over `pcm` (seeking continuously); times are relative to `pcm`. With
    /// language detection on, also returns the language of every window it decoded. Each
    /// segment is also shown to `live` as soon as whisper.cpp has it (text and times only).
    /// `chained`: each window is prompted with the text before it (else with none, not even the
    /// configured prompt).
    #[allow(clippy::too_many_arguments)]
    fn run_whisper(
        &mut self,
        pcm: &[f32],
        language: &str,
        probe_languages: bool,
        chained: bool,
        progress: impl Fn(f32) + Sync,
        live: impl Fn(Segment) + Sync,
        cancelled: Cancelled<'_>,
    ) -> Result<(Vec<Segment>, Vec<Window>), StageError> {
        let strategy = match self.opts.beam_size {
            Some(b) => SamplingStrategy::BeamSearch { beam_size: b as i32, patience: -1.0 },
            None => SamplingStrategy::Greedy { best_of: 5 },
        };
        let prompt = self.prompt_tokens()?;
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
        if !chained {
            params.set_no_context(true);
        } else if !prompt.is_empty() {
            params.set_tokens(&prompt);
        }
        params.set_temperature(self.decode.temperature.unwrap_or(0.0));
        params.set_temperature_inc(0.2);
        params.set_entropy_thold(2.4);
        params.set_logprob_thold(-1.0);
        params.set_no_speech_thold(0.6);
        params.set_n_max_text_ctx(64);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // whisper-rs wants 'static progress and segment closures (and never frees them): they
        // only send to a channel, relayed to the caller's borrowed callbacks by a scoped thread
        // until the end marker is sent.
        let (tx, rx) = std::sync::mpsc::channel::<Relay>();
        let end = tx.clone();
        let segment_tx = tx.clone();
        params.set_progress_callback_safe(move |p: i32| {
            let _ = tx.send(Relay::Progress(p.clamp(0, 100)));
        });
        params.set_segment_callback_safe_lossy(move |d: whisper_rs::SegmentCallbackData| {
            let _ = segment_tx.send(Relay::Segment(d));
        });
        let threads = self.opts.threads as i32;
        let mut probe =
            WindowProbe { sot: self.ctx.token_sot(), threads, encoded: false, windows: Vec::new() };
        if probe_languages {
            // SAFETY: `probe` outlives the `full` call below, the only user of the pointer.
            unsafe {
                params.set_start_encoder_callback(Some(on_encoder_begin));
                params.set_start_encoder_callback_user_data(&mut probe as *mut WindowProbe as *mut c_void);
            }
        }
        // SAFETY: `cancelled` outlives the `full` call below, the only user of the pointer.
        unsafe {
            params.set_abort_callback(Some(should_abort));
            params.set_abort_callback_user_data(&cancelled as *const Cancelled<'_> as *mut c_void);
        }
        let result = std::thread::scope(|s| {
            let (progress, live) = (&progress, &live);
            s.spawn(move || {
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Relay::Progress(p) => progress(p as f32 / 100.0),
                        Relay::Segment(d) if !d.text.trim().is_empty() => live(Segment {
                            start_s: d.start_timestamp as f64 / 100.0,
                            end_s: d.end_timestamp as f64 / 100.0,
                            text: d.text.trim().to_string(),
                            speaker: None,
                            words: Vec::new(),
                        }),
                        Relay::Segment(_) => {}
                        Relay::End => break,
                    }
                }
            });
            let r = self.state.full(params, pcm);
            let _ = end.send(Relay::End);
            r
        });
        if cancelled() {
            return Err(StageError::new(STAGE, CANCELLED));
        }
        result.map_err(|e| StageError::new(STAGE, format!("whisper failed: {e}")))?;
        if probe.encoded {
            // The last window's encoding is still in the state: its language costs one decoder step.
            let err = |e| StageError::new(STAGE, format!("language detection failed: {e}"));
            self.state.decode(&[probe.sot], 0, self.opts.threads).map_err(err)?;
            let logits = self.state.get_logits().map_err(err)?;
            let end_s = pcm.len() as f64 / SAMPLE_RATE as f64;
            probe.windows.push(Window { end_s, probs: language_probs(logits, probe.sot) });
        }
        Ok((self.collect_segments()?, probe.windows))
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
    fn transcribe(
        &mut self,
        audio: &Audio,
        progress: Progress<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<Transcript, StageError> {
        self.transcribe_detailed(audio, progress, cancelled).map(|(t, _)| t)
    }

    fn transcribe_with(
        &mut self,
        audio: &Audio,
        options: &DecodeOptions,
        progress: Progress<'_>,
        segments: SegmentSink<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<Transcript, StageError> {
        self.set_decode(options)?;
        self.transcribe_file(audio, progress, segments, cancelled).map(|(t, _)| t)
    }

    fn name(&self) -> String {
        format!("whisper.cpp {}", self.name)
    }
}

/// The loaded model for `path`, shared by every transcriber alive in the process: with several
/// workers the weights are in memory once and each worker adds only its decoding state.
///
/// With `decoder_q8` the decoder's weight matrices of a 16-bit model are quantized to q8_0 while
/// the file is read (cpp/whisper-decoder-q8.cmake); the encoder keeps its 16-bit weights.
/// Decoding reads every decoder weight once per token, and q8_0 halves that: the 5-minute
/// meeting transcribes in 0.77–0.81× the time, agreeing with faster-whisper's text within
/// 0.005 WER but with 2–4 % fewer words (bench/meeting.py, README).
/// Returns the context and how many matrices it holds in q8_0.
fn shared_context(path: &Path, decoder_q8: bool) -> Result<(Arc<WhisperContext>, usize), StageError> {
    type Loaded = Vec<((PathBuf, bool), Weak<WhisperContext>, usize)>;
    static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(_, ctx, _)| ctx.strong_count() > 0);
    let key = (path.to_path_buf(), decoder_q8);
    if let Some((ctx, q8)) =
        loaded.iter().find(|(k, _, _)| *k == key).and_then(|(_, ctx, q8)| Some((ctx.upgrade()?, *q8)))
    {
        return Ok((ctx, q8));
    }
    let name = path.to_string_lossy();
    // Flash attention on: the encoder's attention then runs in our tiled kernel (cpp/, built into
    // whisper.cpp's ggml), 1.5× faster transcription than ggml's kernel. Off, our decode of the
    // 5-minute meeting lost 28 % of its words (a 74-s stretch skipped) and was no faster than
    // ggml's kernel (bench/meeting.py, 2026-11-26 and 2026-11-27).
    let mut cparams = WhisperContextParameters::default();
    cparams.flash_attn(true);
    // The switch is the loading thread's own, so it is set and reset around this one load.
    // SAFETY: sets a thread-local flag of the patched loader; no pointers are involved.
    unsafe { diarized_whisper_decoder_q8(c_int::from(decoder_q8)) };
    let ctx = WhisperContext::new_with_params(path, cparams);
    // SAFETY: as above; the count is the same thread's, of the load just done.
    let q8 = unsafe {
        diarized_whisper_decoder_q8(0);
        usize::try_from(diarized_whisper_decoder_q8_matrices()).unwrap_or(0)
    };
    let ctx = ctx.map_err(|e| StageError::new(STAGE, format!("cannot load Whisper model {name}: {e}")))?;
    tracing::info!(model = %name, decoder_q8_matrices = q8, "Whisper model loaded");
    let ctx = Arc::new(ctx);
    loaded.push((key, Arc::downgrade(&ctx), q8));
    Ok((ctx, q8))
}

unsafe extern "C" {
    /// Added to whisper.cpp's loader by cpp/whisper-decoder-q8.cmake: whether this thread's next
    /// model loads hold a 16-bit model's decoder matrices in q8_0.
    fn diarized_whisper_decoder_q8(on: c_int);
    /// How many matrices this thread's last model load quantized to q8_0.
    fn diarized_whisper_decoder_q8_matrices() -> c_int;
}

/// What whisper.cpp's callbacks send to the relay thread of [`WhisperTranscriber::run_whisper`].
enum Relay {
    Progress(i32),
    Segment(whisper_rs::SegmentCallbackData),
    End,
}

/// Whether Whisper knows the ISO 639-1 code `code` (`en`, `de`, …).
pub fn is_language_code(code: &str) -> bool {
    // whisper-rs panics on a NUL byte.
    !code.contains('\0') && whisper_rs::get_lang_id(code).is_some()
}

/// The English name Whisper gives a language code (`en` → `english`), as OpenAI reports it.
pub fn language_name(code: &str) -> Option<&'static str> {
    is_language_code(code).then(|| whisper_rs::get_lang_id(code).and_then(whisper_rs::get_lang_str_full))?
}

/// Most prompt tokens given to Whisper (half its text context, as OpenAI's decoder allows).
const MAX_PROMPT_TOKENS: usize = 223;

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

/// One window whisper.cpp decoded: where its last segment ends and its language probabilities.
#[derive(Debug, Clone)]
struct Window {
    end_s: f64,
    probs: Vec<f32>,
}

impl Window {
    /// The likeliest language id and its probability.
    fn best(&self) -> (usize, f32) {
        self.probs.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((0, 0.0))
    }
}

/// Per-window language detection at no encoder cost. whisper.cpp calls [`on_encoder_begin`]
/// before it encodes each window; at that moment the state's cross-attention cache still holds
/// the previous window, so one decoder step on `<|startoftranscript|>` gives that window's
/// language probabilities — what `whisper_lang_auto_detect` computes after an encoder pass of its
/// own. (whisper.cpp clears the decoder cache and re-decodes the prompt for every window, so
/// the extra step leaves decoding untouched.)
struct WindowProbe {
    sot: WhisperTokenId,
    threads: i32,
    /// Whether a window of this call has been encoded yet.
    encoded: bool,
    windows: Vec<Window>,
}

/// whisper.cpp's abort callback (polled during encoding and decoding); `user` is the run's
/// [`Cancelled`] check.
unsafe extern "C" fn should_abort(user: *mut c_void) -> bool {
    // SAFETY: `run_whisper` set `user` to a `Cancelled` that outlives its `full` call.
    unsafe { (*(user as *const Cancelled<'_>))() }
}

/// The `encoder_begin_callback`; `user` is the [`WindowProbe`] of the running `whisper_full`.
unsafe extern "C" fn on_encoder_begin(
    ctx: *mut sys::whisper_context,
    state: *mut sys::whisper_state,
    user: *mut c_void,
) -> bool {
    // SAFETY: whisper.cpp passes back the pointer `run_whisper` set, to a probe that outlives
    // the call; ctx and state are the live objects of that call, between two windows.
    unsafe {
        let probe = &mut *(user as *mut WindowProbe);
        if !std::mem::replace(&mut probe.encoded, true) {
            return true; // nothing encoded yet in this call
        }
        let n = sys::whisper_full_n_segments_from_state(state);
        let end_s = if n > 0 {
            sys::whisper_full_get_segment_t1_from_state(state, n - 1) as f64 / 100.0
        } else {
            0.0
        };
        let end_s = end_s.max(probe.windows.last().map_or(0.0, |w| w.end_s));
        let sot = [probe.sot];
        if sys::whisper_decode_with_state(ctx, state, sot.as_ptr(), 1, 0, probe.threads) == 0 {
            let logits = sys::whisper_get_logits_from_state(state);
            let n_vocab = sys::whisper_n_vocab(ctx);
            if !logits.is_null() && n_vocab > 0 {
                let logits = std::slice::from_raw_parts(logits, n_vocab as usize);
                probe.windows.push(Window { end_s, probs: language_probs(logits, probe.sot) });
            }
        }
        true
    }
}

/// Softmax over the language tokens (they follow `<|startoftranscript|>`), indexed by language id.
fn language_probs(logits: &[f32], sot: WhisperTokenId) -> Vec<f32> {
    let n = whisper_rs::get_lang_max_id() as usize + 1;
    let first = sot as usize + 1;
    let Some(lang) = logits.get(first..first + n) else { return Vec::new() };
    let max = lang.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = lang.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Stretches of `0..len_s` of at least `min_s` that no segment covers.
fn gaps(segments: &[Segment], len_s: f64, min_s: f64) -> Vec<Range<f64>> {
    let mut out = Vec::new();
    let mut covered = 0.0f64;
    for seg in segments {
        if seg.start_s - covered >= min_s {
            out.push(covered..seg.start_s);
        }
        covered = covered.max(seg.end_s);
    }
    if len_s - covered >= min_s {
        out.push(covered..len_s);
    }
    out
}

/// The segments of a repetition loop: one whose text (of at least [`LOOP_MIN_WORDS`] words) is
/// the [`LOOP_REPEATS`]th or later occurrence of that text among [`LOOP_SPAN`] consecutive ones.
fn loop_marks(segments: &[Segment]) -> Vec<Option<usize>> {
    let texts: Vec<String> = segments.iter().map(|s| normalize(&s.text)).collect();
    (0..segments.len())
        .map(|k| {
            if texts[k].split_whitespace().count() < LOOP_MIN_WORDS {
                return None;
            }
            let from = (k + 1).saturating_sub(LOOP_SPAN);
            let same: Vec<usize> = (from..=k).filter(|&i| texts[i] == texts[k]).collect();
            (same.len() >= LOOP_REPEATS).then_some(same[0])
        })
        .collect()
}

/// How many segments are repeats inside a loop (see [`loop_marks`]).
fn looping(segments: &[Segment]) -> usize {
    loop_marks(segments).iter().flatten().count()
}

/// The samples of `range` (seconds) in audio of `len` samples, clamped to it: whisper.cpp's
/// segment times can run past the end of the audio it was given (a 60-minute meeting's loop did),
/// and a repair of such a stretch has no samples.
fn samples_of(range: &Range<f64>, len: usize) -> Range<usize> {
    let at = |t: f64| ((t.max(0.0) * SAMPLE_RATE as f64) as usize).min(len);
    let start = at(range.start);
    start..at(range.end).max(start)
}

/// The stretches (seconds) that repetition loops cover: from the first occurrence of a repeated
/// text to the end of its last repeat, overlapping stretches merged.
fn loops(segments: &[Segment]) -> Vec<Range<f64>> {
    let mut out: Vec<Range<f64>> = Vec::new();
    for (k, first) in loop_marks(segments).into_iter().enumerate() {
        let Some(first) = first else { continue };
        let range = segments[first].start_s..segments[k].end_s;
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

/// Puts `again` (sorted, decoded anew for `range`) in place of the segments of `found` that start
/// in `range`, keeping `found` in time order.
fn replace_segments(found: &mut Vec<Segment>, range: &Range<f64>, again: Vec<Segment>) {
    found.retain(|s| !range.contains(&s.start_s));
    let at = found.partition_point(|s| s.start_s < range.start);
    found.splice(at..at, again);
}

/// Maps the times of a segment and its words through `to` (an end never before its start).
fn retime(seg: &mut Segment, to: impl Fn(f64) -> f64) {
    seg.start_s = to(seg.start_s);
    seg.end_s = to(seg.end_s).max(seg.start_s);
    for w in &mut seg.words {
        w.start_s = to(w.start_s);
        w.end_s = to(w.end_s).max(w.start_s);
    }
}

/// Speech of a file as sample ranges of the original audio, joined into one continuous stream
/// (the pieces are padded, so the joints fall in short silences).
#[derive(Debug, Clone, PartialEq)]
struct Speech {
    pieces: Vec<Range<usize>>,
}

impl Speech {
    /// Samples of speech in the stream.
    fn len(&self) -> usize {
        self.pieces.iter().map(|r| r.len()).sum()
    }

    /// The stream's samples.
    fn pcm(&self, audio: &Audio) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len());
        for r in &self.pieces {
            audio.extend_f32(r.clone(), &mut out);
        }
        out
    }

    /// Consecutive parts of at most `max` samples each (pieces longer than that are split).
    fn blocks(&self, max: usize) -> Vec<Speech> {
        let mut blocks = Vec::new();
        let mut current = Speech { pieces: Vec::new() };
        let mut room = max;
        for r in &self.pieces {
            let mut r = r.clone();
            while !r.is_empty() {
                if room == 0 {
                    blocks.push(std::mem::replace(&mut current, Speech { pieces: Vec::new() }));
                    room = max;
                }
                let take = r.len().min(room);
                current.pieces.push(r.start..r.start + take);
                r.start += take;
                room -= take;
            }
        }
        if !current.pieces.is_empty() {
            blocks.push(current);
        }
        blocks
    }

    /// Maps a time in the stream back to the original audio.
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

    /// Energy-based voice activity: the speech of `audio` (empty for silence).
    fn detect(audio: &Audio) -> Speech {
        let rms: Vec<f32> = audio
            .pcm16()
            .chunks(FRAME)
            .map(|f| {
                let energy: f64 = f.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                ((energy / f.len() as f64).sqrt() / 32768.0) as f32
            })
            .collect();
        if rms.is_empty() {
            return Speech { pieces: Vec::new() };
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
        let pieces = regions.into_iter().map(|r| r.start * FRAME..(r.end * FRAME).min(audio.len()));
        Speech { pieces: pieces.collect() }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize).map(|i| amp * (i as f32 * 0.05).sin()).collect()
    }

    fn seg(start_s: f64, end_s: f64) -> Segment {
        Segment { start_s, end_s, text: "x".into(), speaker: None, words: Vec::new() }
    }

    /// A repair range past the end of the audio (whisper.cpp's times ran past it on a 60-minute
    /// meeting, and the repair asked whisper.cpp to decode no samples, failing the whole job) has
    /// no samples; one straddling the end is cut at it.
    #[test]
    fn a_repair_past_the_audio_end_has_no_samples() {
        let len = 16_000 * 10;
        assert_eq!(samples_of(&(2.0..3.5), len), 32_000..56_000);
        assert_eq!(samples_of(&(9.5..12.0), len), 152_000..len);
        assert!(samples_of(&(10.0..12.0), len).is_empty());
        assert!(samples_of(&(11.0..12.0), len).is_empty());
        assert!(samples_of(&(3.0..2.0), len).is_empty());
    }

    fn said(start_s: f64, text: &str) -> Segment {
        Segment { text: text.into(), ..seg(start_s, start_s + 1.0) }
    }

    #[test]
    fn a_repetition_loop_is_found_from_its_first_line_to_its_last() {
        // The loop of the 5-minute benchmark meeting: two lines taking turns for a minute.
        let mut segs =
            vec![said(0.0, "She had your dark suit in greasy wash water."), said(2.0, "And he said,")];
        for i in 0..6 {
            segs.push(said(4.0 + 2.0 * i as f64, "he is a user."));
            segs.push(said(5.0 + 2.0 * i as f64, "And he said,"));
        }
        segs.push(said(30.0, "And so my fellow Americans,"));
        assert_eq!(loops(&segs), vec![2.0..16.0]);
        assert_eq!(looping(&segs), 9);
        assert_eq!(looping(&segs[..3]), 0);
    }

    #[test]
    fn backchannels_and_distant_repeats_are_not_loops() {
        let mut segs: Vec<Segment> = (0..6).map(|i| said(i as f64, "Okay.")).collect();
        // A line said three times, but never three times within eight segments.
        for (i, t) in
            ["Ready to begin?", "a", "b", "c", "Ready to begin?", "d", "e", "f", "g", "Ready to begin?"]
                .iter()
                .enumerate()
        {
            segs.push(said(10.0 + i as f64, t));
        }
        assert!(loops(&segs).is_empty());
        assert_eq!(looping(&segs), 0);
    }

    #[test]
    fn gaps_are_the_long_uncovered_stretches() {
        let segs = [seg(0.0, 5.0), seg(4.0, 10.0), seg(12.0, 20.0), seg(40.0, 50.0)];
        assert_eq!(gaps(&segs, 60.0, 6.0), vec![20.0..40.0, 50.0..60.0]);
        assert_eq!(gaps(&segs, 55.0, 6.0), vec![20.0..40.0]);
        assert_eq!(gaps(&segs, 60.0, 10.0), vec![20.0..40.0, 50.0..60.0]);
        assert_eq!(gaps(&[], 8.0, 6.0), vec![0.0..8.0]);
        assert!(gaps(&[], 5.0, 6.0).is_empty());
    }

    #[test]
    fn silence_has_no_speech() {
        assert_eq!(Speech::detect(&Audio::from_f32(&vec![0.0; 160_000])).len(), 0);
        assert_eq!(Speech::detect(&Audio::default()).len(), 0);
        assert!(Speech::detect(&Audio::default()).blocks(100).is_empty());
    }

    #[test]
    fn long_pauses_are_cut_and_times_map_back() {
        let mut s = tone(2.0, 0.3);
        s.extend(vec![0.0; 16_000 * 5]);
        s.extend(tone(3.0, 0.3));
        let s = Audio::from_f32(&s);
        let speech = Speech::detect(&s);
        assert_eq!(speech.pieces.len(), 2);
        // 2 s of speech + 0.4 s padding, then the second piece starts 0.4 s before 7 s.
        assert!((speech.map_time(1.0) - 1.0).abs() < 1e-6);
        let first_len = speech.pieces[0].len() as f64 / 16_000.0;
        assert!((speech.map_time(first_len + 0.5) - (7.0 - PAD_S + 0.5)).abs() < 0.03);
        assert_eq!(speech.pcm(&s).len(), speech.len());
    }

    #[test]
    fn blocks_split_the_stream_without_loss() {
        let mut s = Vec::new();
        for _ in 0..10 {
            s.extend(tone(8.0, 0.2));
            s.extend(vec![0.0; 16_000 * 2]);
        }
        let speech = Speech::detect(&Audio::from_f32(&s));
        let max = 30 * 16_000;
        let blocks = speech.blocks(max);
        assert!(blocks.len() >= 3);
        assert!(blocks.iter().all(|b| b.len() <= max && b.len() > 0));
        assert_eq!(blocks.iter().map(Speech::len).sum::<usize>(), speech.len());
        // Block times map into the original audio in order.
        let starts: Vec<f64> = blocks.iter().map(|b| b.map_time(0.0)).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
        // A piece longer than a block is split across blocks.
        let one = Speech { pieces: std::iter::once(0..100).collect() }.blocks(30);
        let spans: Vec<Vec<(usize, usize)>> =
            one.iter().map(|b| b.pieces.iter().map(|r| (r.start, r.end)).collect()).collect();
        assert_eq!(spans, [[(0, 30)], [(30, 60)], [(60, 90)], [(90, 100)]]);
    }
}
