//! pyannote segmentation-3.0 on fixed 10 s windows: local speaker activity per ~16.9 ms frame.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::DiarizeError;
use super::runtime::{Engine, OrtModel};

/// Samples per window (10 s at 16 kHz), the static input size of the exported model.
pub const WINDOW: usize = 160_000;
/// Output frames per window.
pub const FRAMES: usize = 589;
/// Samples between output frames (16.875 ms).
pub const FRAME_STEP: usize = 270;
/// Centre of frame 0's receptive field, in samples from the window start.
pub const FRAME_CENTER: usize = 495;
/// Local speakers per window.
pub const LOCAL_SPEAKERS: usize = 3;

/// Powerset class → bitmask of active local speakers: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}.
const POWERSET: [u8; 7] = [0b000, 0b001, 0b010, 0b100, 0b011, 0b101, 0b110];

/// A loaded segmentation model.
pub struct Segmenter {
    net: Net,
}

/// The model in its engine: a fixed-shape tract plan, or ONNX Runtime sessions.
enum Net {
    Tract(Arc<TypedSimplePlan>),
    Ort(OrtModel),
}

impl Segmenter {
    /// Loads the ONNX export into `engine` (tract: optimised for one `[1, 1, 160000]` window;
    /// ONNX Runtime: `sessions` sessions for as many concurrent callers).
    pub fn load(path: &Path, engine: &Engine, sessions: usize) -> Result<Self, DiarizeError> {
        if let Engine::OnnxRuntime(lib) = engine {
            return Ok(Self { net: Net::Ort(OrtModel::load(lib, path, sessions)?) });
        }
        let err = |e: TractError| DiarizeError::Model(format!("{}: {e:#}", path.display()));
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(err)?
            .with_input_fact(0, f32::fact([1, 1, WINDOW]).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Self { net: Net::Tract(plan) })
    }

    /// Runs one window (zero-padded if shorter than 10 s) and returns, per frame, the bitmask of
    /// active local speakers (the most likely powerset class).
    pub fn run(&self, window: &[f32]) -> Result<Vec<u8>, DiarizeError> {
        let mut input = vec![0f32; WINDOW];
        let n = window.len().min(WINDOW);
        input[..n].copy_from_slice(&window[..n]);
        let (shape, flat) = match &self.net {
            Net::Tract(plan) => {
                let err = |e: TractError| DiarizeError::Model(format!("{e:#}"));
                let tensor = Tensor::from_shape(&[1, 1, WINDOW], &input).map_err(err)?;
                let out = plan.run(tvec!(tensor.into())).map_err(err)?;
                let logp = out[0].to_plain_array_view::<f32>().map_err(err)?;
                (logp.shape().to_vec(), logp.iter().copied().collect::<Vec<f32>>())
            }
            Net::Ort(model) => model.run(&[(&[1, 1, WINDOW], &input)])?,
        };
        if shape != [1, FRAMES, 7] {
            return Err(DiarizeError::Model(format!("segmentation output shape {shape:?}")));
        }
        Ok(flat
            .chunks_exact(7)
            .map(|row| {
                let best = (0..7).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                POWERSET[best]
            })
            .collect())
    }
}
