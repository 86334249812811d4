//! The stage traits and the runner that chains them:
//! decode → transcribe → diarize → analyze.

use crate::audio::Audio;
use crate::model::{Analysis, Segment, SpeakerHints, SpeakerTurn, Transcript};

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

/// Speech recognition: 16 kHz mono audio → timestamped segments.
pub trait Transcriber: Send {
    /// Transcribes the whole buffer.
    fn transcribe(&mut self, audio: &Audio, progress: Progress<'_>) -> Result<Transcript, StageError>;
    /// Model name, for status output.
    fn name(&self) -> String;
}

/// Speaker diarization: who spoke when.
pub trait Diarizer: Send {
    /// Returns speaker turns labelled `Speaker00`, `Speaker01`, … in order of first appearance.
    fn diarize(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Vec<SpeakerTurn>, StageError>;
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
