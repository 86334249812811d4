//! The stage traits and the runner that chains them:
//! decode → transcribe → diarize → name speakers → analyze.

use crate::audio::Audio;
use crate::model::{
    Analysis, DecodeOptions, JobOptions, JobSpeaker, KnownVoice, Segment, SpeakerHints, SpeakerTurn,
    SpeakerVoice, Transcript,
};

/// Error raised by a pipeline stage; the message ends up in the job's `error_message`.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    /// `decode`, `transcribe`, `diarize` or `analyze`.
    pub stage: &'static str,
    pub message: String,
}

impl StageError {
    /// Builds an error for `stage`.
    pub fn new(stage: &'static str, message: impl Into<String>) -> Self {
        Self { stage, message: message.into() }
    }
}

/// Progress callback: fraction 0.0–1.0 of the current stage.
pub type Progress<'a> = &'a (dyn Fn(f32) + Sync);

/// New segments as the transcriber decodes them, times in the file: a live preview (the final
/// transcript may still change: re-decoded windows, dropped repetitions).
pub type SegmentSink<'a> = &'a (dyn Fn(&Segment) + Sync);

/// Cancellation check: true once the run should stop (polled inside long stages).
pub type Cancelled<'a> = &'a (dyn Fn() -> bool + Sync);

/// Speech recognition: 16 kHz mono audio → timestamped segments.
pub trait Transcriber: Send {
    /// Transcribes the whole buffer; stops early with a [`CANCELLED`] error once `cancelled`.
    fn transcribe(
        &mut self,
        audio: &Audio,
        progress: Progress<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<Transcript, StageError>;
    /// Transcribes with per-job settings, showing segments as they are decoded (a transcriber
    /// that cannot shows none); one that has no settings refuses any but the default.
    fn transcribe_with(
        &mut self,
        audio: &Audio,
        options: &DecodeOptions,
        progress: Progress<'_>,
        _segments: SegmentSink<'_>,
        cancelled: Cancelled<'_>,
    ) -> Result<Transcript, StageError> {
        if *options != DecodeOptions::default() {
            return Err(StageError::new("transcribe", format!("{} takes no per-job options", self.name())));
        }
        self.transcribe(audio, progress, cancelled)
    }
    /// Model name, for status output.
    fn name(&self) -> String;
}

/// Who spoke when, and what each speaker sounds like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diarization {
    pub turns: Vec<SpeakerTurn>,
    /// One voice per speaker that has an embedding (labels as in `turns`).
    pub voices: Vec<SpeakerVoice>,
}

/// Speaker diarization: who spoke when.
pub trait Diarizer: Send {
    /// Returns speaker turns labelled `Speaker00`, `Speaker01`, … in order of first appearance.
    fn diarize(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Vec<SpeakerTurn>, StageError>;
    /// Turns plus each speaker's voice embedding, for matching known speakers; a diarizer
    /// without embeddings returns none.
    fn diarize_voices(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Diarization, StageError> {
        Ok(Diarization { turns: self.diarize(audio, hints)?, voices: Vec::new() })
    }
    /// Model name, for status output.
    fn name(&self) -> String;
}

/// What the analysis stage is given.
#[derive(Debug, Clone)]
pub struct AnalysisInput<'a> {
    /// Segments with their speaker labels set.
    pub segments: &'a [Segment],
    /// Language detected by the recogniser, if any.
    pub language: Option<&'a str>,
}

/// Conversation analysis: summary, keypoints, type, language, clean transcript.
pub trait Analyzer: Send {
    /// Analyses one diarized transcript.
    fn analyze(&mut self, input: &AnalysisInput<'_>) -> Result<Analysis, StageError>;
    /// Backend and model name, for status output.
    fn name(&self) -> String;
}

/// A stage as configured: ready, switched off, or unavailable (with the reason).
pub enum Slot<T: ?Sized> {
    Ready(Box<T>),
    Disabled,
    Unavailable(String),
}

impl<T: ?Sized> Slot<T> {
    /// Turns a model load into a slot; a failure is logged and kept as the reason every job
    /// will report.
    pub fn loaded(r: Result<Box<T>, StageError>) -> Self {
        r.map_or_else(
            |e| {
                tracing::error!(error = %e, "stage unavailable");
                Slot::Unavailable(e.message)
            },
            Slot::Ready,
        )
    }
}

/// Receives each stage's result as soon as it is ready, so a later failure loses nothing.
pub trait ResultSink: Sync {
    /// The decoded length.
    fn duration(&mut self, seconds: f64) -> Result<(), StageError>;
    /// Recogniser output (segments without speakers).
    fn transcript(&mut self, transcript: &Transcript) -> Result<(), StageError>;
    /// Speaker turns and the segments labelled with them.
    fn diarization(&mut self, turns: &[SpeakerTurn], segments: &[Segment]) -> Result<(), StageError>;
    /// Conversation analysis.
    fn analysis(&mut self, analysis: &Analysis) -> Result<(), StageError>;
    /// Voices this job's speakers are matched against (enrolled people and the job's own
    /// references).
    fn known_voices(&self) -> Result<Vec<KnownVoice>, StageError> {
        Ok(Vec::new())
    }
    /// The job's speakers with their names and scores, and their voices (kept so a speaker can
    /// be enrolled later).
    fn speakers(&mut self, _speakers: &[JobSpeaker], _voices: &[SpeakerVoice]) -> Result<(), StageError> {
        Ok(())
    }
    /// Overall progress, 0–100.
    fn progress(&self, percent: f32);
    /// A segment just decoded (a preview, replaced by [`ResultSink::transcript`]).
    fn partial_segment(&self, _segment: &Segment) {}
    /// Whether the run was cancelled; the runner checks it between stages.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Message of the error that ends a cancelled run.
pub const CANCELLED: &str = "cancelled";

/// Stops the run at a stage boundary once the sink says it was cancelled.
fn check_cancelled(sink: &dyn ResultSink, next: &'static str) -> Result<(), StageError> {
    if sink.cancelled() { Err(StageError::new(next, CANCELLED)) } else { Ok(()) }
}

/// The configured stages of one worker; models stay loaded across jobs.
pub struct Stages {
    pub transcriber: Slot<dyn Transcriber>,
    pub diarizer: Slot<dyn Diarizer>,
    pub analyzer: Slot<dyn Analyzer>,
}

// Share of overall progress reached when each stage ends.
const DECODED: f32 = 5.0;
const TRANSCRIBED: f32 = 80.0;
const DIARIZED: f32 = 92.0;

impl Stages {
    /// Runs decode → transcribe → diarize → name speakers → analyze on one file.
    pub fn run(
        &mut self,
        path: &std::path::Path,
        hints: SpeakerHints,
        sink: &mut dyn ResultSink,
    ) -> Result<(), StageError> {
        self.run_with(path, hints, &JobOptions::default(), sink)
    }

    /// [`Stages::run`] with a job's decoding options, analysis skipped if it asks so. (Its
    /// `model` is the caller's to honour, by putting that transcriber in place.)
    pub fn run_with(
        &mut self,
        path: &std::path::Path,
        hints: SpeakerHints,
        options: &JobOptions,
        sink: &mut dyn ResultSink,
    ) -> Result<(), StageError> {
        let audio = crate::audio::decode_file(path).map_err(|e| StageError::new("decode", e.to_string()))?;
        sink.duration(audio.duration_s())?;
        sink.progress(DECODED);
        check_cancelled(sink, "transcribe")?;

        let transcriber = match &mut self.transcriber {
            Slot::Ready(t) => t,
            Slot::Disabled => return Err(StageError::new("transcribe", "transcription is not configured")),
            Slot::Unavailable(why) => return Err(StageError::new("transcribe", why.clone())),
        };
        let report = |f: f32| sink.progress(DECODED + f.clamp(0.0, 1.0) * (TRANSCRIBED - DECODED));
        let partial = |s: &Segment| sink.partial_segment(s);
        let transcript =
            transcriber.transcribe_with(&audio, &options.decode, &report, &partial, &|| sink.cancelled())?;
        check_cancelled(sink, "transcribe")?;
        sink.transcript(&transcript)?;
        sink.progress(TRANSCRIBED);

        let mut segments = transcript.segments;
        match &mut self.diarizer {
            Slot::Ready(d) => {
                check_cancelled(sink, "diarize")?;
                let Diarization { mut turns, voices } = d.diarize_voices(&audio, hints)?;
                drop(audio);
                check_cancelled(sink, "diarize")?;
                crate::diarize::assign_speakers(&mut segments, &turns);
                // Known people get their names before anything is stored or analysed.
                let speakers = crate::speakers::name_speakers(&turns, &voices, &sink.known_voices()?);
                crate::speakers::apply_names(&speakers, &mut segments, &mut turns);
                sink.diarization(&turns, &segments)?;
                sink.speakers(&speakers, &voices)?;
            }
            Slot::Disabled => {}
            Slot::Unavailable(why) => return Err(StageError::new("diarize", why.clone())),
        }
        sink.progress(DIARIZED);
        if options.skip_analysis {
            return Ok(());
        }
        self.analyze(&segments, transcript.language.as_deref(), sink)
    }

    /// Runs the analysis stage alone on stored segments.
    pub fn analyze(
        &mut self,
        segments: &[Segment],
        language: Option<&str>,
        sink: &mut dyn ResultSink,
    ) -> Result<(), StageError> {
        match &mut self.analyzer {
            Slot::Ready(a) => {
                check_cancelled(sink, "analyze")?;
                let analysis = a.analyze(&AnalysisInput { segments, language })?;
                check_cancelled(sink, "analyze")?;
                sink.analysis(&analysis)
            }
            Slot::Disabled => Ok(()),
            Slot::Unavailable(why) => Err(StageError::new("analyze", why.clone())),
        }
    }
}

impl Stages {
    /// Builds the stages the configuration asks for.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Stages {
            transcriber: load_transcriber(cfg, &cfg.whisper_model),
            diarizer: diarizer(cfg),
            analyzer: analyzer(cfg),
        }
    }
}

fn analyzer(cfg: &crate::config::Config) -> Slot<dyn Analyzer> {
    match crate::analyze::build_analyzer(cfg).transpose() {
        None => Slot::Disabled,
        Some(built) => Slot::loaded(built),
    }
}

fn diarizer(cfg: &crate::config::Config) -> Slot<dyn Diarizer> {
    if !cfg.diarization {
        return Slot::Disabled;
    }
    Slot::loaded(
        crate::diarize::PyannoteDiarizer::load(&cfg.models_dir, cfg.whisper_threads())
            .map(|d| Box::new(d) as Box<dyn Diarizer>),
    )
}

/// The transcriber for Whisper model `model` (a name or a file) with the configuration's
/// other settings; a job asking for another model than the configured one runs with this.
pub fn load_transcriber(cfg: &crate::config::Config, model: &str) -> Slot<dyn Transcriber> {
    let loaded = crate::models::whisper::resolve_whisper_model(&cfg.models_dir, model)
        .map_err(|e| StageError::new("transcribe", e.to_string()))
        .and_then(|path| {
            let opts = crate::asr::AsrOptions {
                threads: cfg.whisper_threads(),
                language: cfg.language.clone(),
                beam_size: None,
                decoder_q8: cfg.whisper_decoder_q8,
            };
            crate::asr::WhisperTranscriber::load(&path, opts)
        });
    Slot::loaded(loaded.map(|t| Box::new(t) as Box<dyn Transcriber>))
}

/// Names of the configured models, for status output.
pub fn model_names(cfg: &crate::config::Config) -> serde_json::Value {
    serde_json::json!({
        "whisper": cfg.whisper_model,
        "diarization": cfg.diarization,
        "llm": cfg.llm_model,
    })
}
