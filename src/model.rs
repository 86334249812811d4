//! Plain data shared by every module: jobs, segments, speaker turns, analysis.

use serde::{Deserialize, Serialize};

/// Lifecycle of a job. `Uploaded` → `Queued` → `Processing` → `Done` | `Error` | `Cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Uploaded,
    Queued,
    Processing,
    Done,
    Error,
    /// Stopped by `POST /api/jobs/<id>/cancel` (while queued, or at a stage boundary).
    Cancelled,
}

impl Status {
    /// The name stored in SQLite and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Uploaded => "uploaded",
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Done => "done",
            Status::Error => "error",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or user-supplied status name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uploaded" => Status::Uploaded,
            "queued" => Status::Queued,
            "processing" => Status::Processing,
            "done" => Status::Done,
            "error" => Status::Error,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// All statuses, in lifecycle order.
    pub const ALL: [Status; 6] = [
        Status::Uploaded,
        Status::Queued,
        Status::Processing,
        Status::Done,
        Status::Error,
        Status::Cancelled,
    ];
}

/// How a job entered the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Upload,
    Watch,
}

impl Source {
    /// The name stored in SQLite and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Watch => "watch",
        }
    }
}

/// Speaker-count hints for diarization (all optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerHints {
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
}

impl SpeakerHints {
    /// Rejects contradictory hints (`min_speakers` above `max_speakers`).
    pub fn check(&self) -> Result<(), &'static str> {
        match (self.min_speakers, self.max_speakers) {
            (Some(lo), Some(hi)) if lo > hi => Err("min_speakers is greater than max_speakers"),
            _ => Ok(()),
        }
    }
}

/// Per-job recognition settings; `None` keeps the transcriber's configured value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    /// ISO 639-1 code such as `en`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text given to Whisper as the previous context (style, spelling of names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Sampling temperature 0–1 of the first decoding attempt (the fallback still raises it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// Per-job processing options (set by the OpenAI-compatible API); the default follows the
/// configuration in everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Whisper model name for this job instead of the configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, flatten)]
    pub decode: DecodeOptions,
    /// Skip the analysis stage (the caller wants the transcript only).
    #[serde(default)]
    pub skip_analysis: bool,
}

/// One job row, as stored and as returned over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Integer id, as in the seed's API (`/api/jobs/1`); never reused after a delete.
    pub id: i64,
    /// Stable unique name; API uploads are stored as `<uuid>.<ext>`.
    pub uuid: String,
    pub audio_path: String,
    pub original_filename: Option<String>,
    pub sha256: String,
    pub source: Source,
    pub status: Status,
    pub error_message: Option<String>,
    pub conversation_type: Option<String>,
    pub summary: Option<String>,
    pub keypoints: Option<Vec<String>>,
    /// Tasks someone agreed or was asked to do.
    pub action_items: Option<Vec<ActionItem>>,
    /// Short phrases naming what is talked about.
    pub topics: Option<Vec<String>>,
    pub language: Option<String>,
    pub language_probability: Option<f32>,
    pub clean_transcript: Option<String>,
    pub transcript: Option<String>,
    pub duration_s: Option<f64>,
    /// Percent of the current run done (0–100) while processing.
    pub progress: Option<f32>,
    /// How many times a run of this job was started; a job interrupted twice is not retried.
    pub attempts: u32,
    #[serde(flatten)]
    pub speakers: SpeakerHints,
    /// The diarized speakers with the names they were matched to (or given) and their match
    /// scores; empty until diarized.
    #[serde(rename = "speakers", default)]
    pub speaker_names: Vec<JobSpeaker>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A word (or token) with its time span, where the recogniser gives one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    pub probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

/// One timestamped transcript segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    /// `Speaker00`, `Speaker01`, … once diarized.
    pub speaker: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<Word>,
}

/// A stretch of time in which one speaker talks (turns may overlap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerTurn {
    pub start_s: f64,
    pub end_s: f64,
    pub speaker: String,
}

/// What the recogniser produced for a whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// ISO 639-1 code, e.g. `en`.
    pub language: Option<String>,
    pub language_probability: Option<f32>,
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// The segments' text joined by single spaces.
    pub fn text(&self) -> String {
        let parts: Vec<&str> = self.segments.iter().map(|s| s.text.trim()).collect();
        parts.join(" ").trim().to_string()
    }
}

/// A diarized speaker of one job and the person it was matched to, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpeaker {
    /// The diarization's label, `Speaker00`, `Speaker01`, …
    pub label: String,
    /// The person's name when matched or given; segments, words and turns then carry it.
    pub name: Option<String>,
    /// Best cosine similarity to a known voice (null when no voice was known).
    pub score: Option<f32>,
}

/// One diarized speaker's voice: its label and L2-normalised CAM++ embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerVoice {
    pub label: String,
    pub embedding: Vec<f32>,
}

/// A known person's voiceprints (several clips each), matched against diarized speakers.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownVoice {
    pub name: String,
    pub prints: Vec<Vec<f32>>,
}

/// An enrolled person, as returned by `/api/speakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub id: i64,
    pub name: String,
    /// The person's voiceprints (the embeddings themselves are not shown).
    pub samples: Vec<Sample>,
    pub created_at: String,
    pub updated_at: String,
}

/// One stored voiceprint of a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub id: i64,
    /// Where it came from: a clip's file name or `job <id> <label>`.
    pub source: String,
    /// Seconds of audio it was computed from, when known.
    pub seconds: Option<f64>,
    pub created_at: String,
}

/// Structured analysis of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub conversation_type: Option<String>,
    pub summary: Option<String>,
    pub keypoints: Option<Vec<String>>,
    pub action_items: Option<Vec<ActionItem>>,
    pub topics: Option<Vec<String>>,
    pub language: Option<String>,
    pub clean_transcript: Option<String>,
}

/// A task from the conversation and who takes it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionItem {
    /// A speaker label (`Speaker01`), a name from the transcript, or `null` when unclear.
    pub owner: Option<String>,
    pub text: String,
}
