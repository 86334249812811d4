//! diarized: recorded conversations → speaker-labelled transcripts and analysis.

pub mod audio;
pub mod config;
pub mod diarize;
pub mod model;
pub mod models;
pub mod pipeline;
