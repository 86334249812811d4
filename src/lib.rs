//! diarized: recorded conversations → speaker-labelled transcripts and analysis.

pub mod analyze;
pub mod api;
pub mod asr;
pub mod audio;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod diarize;
pub mod files;
pub mod model;
pub mod models;
pub mod notify;
pub mod pipeline;
pub mod queue;
pub mod render;
pub mod store;
pub mod watch;
