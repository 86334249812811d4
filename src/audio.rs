//! Decoding every accepted format to 16 kHz mono f32.

use std::path::Path;

/// Sample rate of every buffer handed to the stages.
pub const SAMPLE_RATE: u32 = 16_000;

/// Decoded audio: 16 kHz, mono, f32 in [-1, 1].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
}

impl Audio {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / SAMPLE_RATE as f64
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open {0}: {1}")]
    Open(String, std::io::Error),
    #[error("not decodable audio: {0}")]
    Unsupported(String),
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// Decodes, down-mixes and resamples a file.
pub fn decode_file(path: &Path) -> Result<Audio, AudioError> {
    Err(AudioError::Unsupported(format!("{}: decoder not written yet", path.display())))
}
