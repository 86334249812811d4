//! diarized: recorded conversations → speaker-labelled transcripts and analysis.

pub mod analyze;
pub mod audio;
pub mod config;
pub mod model;
pub mod models;
pub mod pipeline;
