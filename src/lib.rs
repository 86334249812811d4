//! diarized: recorded conversations → speaker-labelled transcripts and analysis.

pub mod analyze;
pub mod api;
pub mod asr;
pub mod audio;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod diarize;
pub mod events;
pub mod exports;
pub mod files;
pub mod model;
pub mod models;
pub mod notify;
pub mod pipeline;
pub mod queue;
pub mod render;
pub mod retention;
pub mod speakers;
pub mod sse;
pub mod store;
pub mod watch;
pub mod webhooks;
