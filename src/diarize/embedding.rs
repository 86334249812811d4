//! CAM++ speaker embeddings from Kaldi fbank features.
//!
//! ONNX Runtime takes any length with one session: it embeds the frames as they are. tract
//! needs fixed-shape plans, one per length bucket: the features of one speaker are tiled
//! (repeated) up to the nearest bucket length, which keeps the frame statistics that the pooling
//! layer sees; plans are built when a bucket is first used (the smallest at load, which also
//! checks the model), and with embeddings capped at 250 frames the largest is never needed.
//! Tiling costs time in proportion to the bucket (a 0.4-s speaker pays for 1.5 s); untiled, the
//! 5-minute meeting diarizes ~10 % faster in ONNX Runtime with the same or lower DER on every
//! benchmark set (bench/diarize.md).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;

use super::DiarizeError;
use super::fbank::NUM_BINS;
use super::runtime::{Engine, OrtModel};

/// Input lengths (fbank frames) with a prepared tract plan; the last is the longest input
/// embedded in either engine.
pub const BUCKETS: [usize; 3] = [150, 250, 500];
/// Embedding dimension.
pub const DIM: usize = 192;
/// Frames of one segment of CAM++'s segment pooling (after its stride-2 layer).
const SEG_LEN: usize = 100;
/// Shortest input given to ONNX Runtime (shorter ones are tiled up to it): CAM++'s statistics
/// pooling turns one or two frames into a non-finite embedding. The diarizer's own minimum
/// (`Params::min_embed_s`, 0.3 s) is as long; this guards other callers and smaller settings.
const MIN_FRAMES: usize = 30;

/// One input length, with the segment-pooling inputs that go with it.
struct Bucket {
    frames: usize,
    /// `[t2, s]` averaging and `[s, t2]` expanding matrices (see [`seg_matrices`]).
    t2: usize,
    s: usize,
    seg_avg: Vec<f32>,
    seg_expand: Vec<f32>,
    /// tract's plan, built on first use; a failure is kept (as its message) and reported on
    /// every use.
    plan: OnceLock<Result<Arc<TypedSimplePlan>, String>>,
}

/// The model in its engine.
enum Net {
    /// The parsed model, from which each bucket's plan is built.
    Tract {
        proto: InferenceModel,
        buckets: Vec<Bucket>,
    },
    Ort(OrtModel),
}

/// A loaded CAM++ model.
pub struct Embedder {
    net: Net,
}

/// The segment-pooling matrices for `t` input frames: `[t2, s]` averaging and `[s, t2]` expanding.
fn seg_matrices(t: usize) -> (usize, usize, Vec<f32>, Vec<f32>) {
    let t2 = t.div_ceil(2);
    let s = t2.div_ceil(SEG_LEN);
    let mut avg = vec![0f32; t2 * s];
    let mut expand = vec![0f32; s * t2];
    for k in 0..s {
        let (lo, hi) = (k * SEG_LEN, ((k + 1) * SEG_LEN).min(t2));
        for i in lo..hi {
            avg[i * s + k] = 1.0 / (hi - lo) as f32;
            expand[k * t2 + i] = 1.0;
        }
    }
    (t2, s, avg, expand)
}

impl Embedder {
    /// Loads the ONNX export into `engine` (tract: with the smallest bucket's plan built;
    /// ONNX Runtime: `sessions` sessions for as many concurrent callers).
    pub fn load(path: &Path, engine: &Engine, sessions: usize) -> Result<Self, DiarizeError> {
        let net = match engine {
            Engine::OnnxRuntime(lib) => Net::Ort(OrtModel::load(lib, path, sessions)?),
            Engine::Tract => {
                let proto = tract_onnx::onnx()
                    .model_for_path(path)
                    .map_err(|e| DiarizeError::Model(format!("{}: {e:#}", path.display())))?;
                let buckets: Vec<Bucket> = BUCKETS
                    .iter()
                    .map(|&frames| {
                        let (t2, s, seg_avg, seg_expand) = seg_matrices(frames);
                        Bucket { frames, t2, s, seg_avg, seg_expand, plan: OnceLock::new() }
                    })
                    .collect();
                Self::plan(&proto, &buckets[0])
                    .map_err(|e| DiarizeError::Model(format!("{}: {e}", path.display())))?;
                Net::Tract { proto, buckets }
            }
        };
        Ok(Self { net })
    }

    /// The bucket's tract plan, built on first use.
    fn plan<'a>(
        proto: &InferenceModel,
        bucket: &'a Bucket,
    ) -> Result<&'a Arc<TypedSimplePlan>, DiarizeError> {
        let built = bucket.plan.get_or_init(|| {
            let (frames, t2, s) = (bucket.frames, bucket.t2, bucket.s);
            let build = || -> TractResult<Arc<TypedSimplePlan>> {
                proto
                    .clone()
                    .with_input_fact(0, f32::fact([1, frames, NUM_BINS]).into())?
                    .with_input_fact(1, f32::fact([t2, s]).into())?
                    .with_input_fact(2, f32::fact([s, t2]).into())?
                    .into_optimized()?
                    .into_runnable()
            };
            build().map_err(|e| format!("{frames}-frame plan: {e:#}"))
        });
        built.as_ref().map_err(|e| DiarizeError::Model(e.clone()))
    }

    /// Embeds mean-normalised features `[frames][NUM_BINS]` (at least one frame). Inputs longer than
    /// the largest bucket are truncated to it.
    pub fn embed(&self, feats: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        let n = (feats.len() / NUM_BINS).min(BUCKETS[BUCKETS.len() - 1]);
        if n == 0 {
            return Err(DiarizeError::Model("no frames to embed".into()));
        }
        let feats = &feats[..n * NUM_BINS];
        let v = match &self.net {
            Net::Tract { proto, buckets } => {
                let bucket = buckets.iter().find(|b| b.frames >= n).unwrap_or(&buckets[buckets.len() - 1]);
                let input = tiled(feats, bucket.frames);
                let (frames, t2, s) = (bucket.frames, bucket.t2, bucket.s);
                let err = |e: TractError| DiarizeError::Model(format!("{e:#}"));
                let plan = Self::plan(proto, bucket)?;
                let x = Tensor::from_shape(&[1, frames, NUM_BINS], &input).map_err(err)?;
                let avg = Tensor::from_shape(&[t2, s], &bucket.seg_avg).map_err(err)?;
                let expand = Tensor::from_shape(&[s, t2], &bucket.seg_expand).map_err(err)?;
                let out = plan.run(tvec!(x.into(), avg.into(), expand.into())).map_err(err)?;
                out[0].to_plain_array_view::<f32>().map_err(err)?.iter().copied().collect()
            }
            Net::Ort(model) => {
                let n = n.max(MIN_FRAMES);
                let input = tiled(feats, n);
                let (t2, s, avg, expand) = seg_matrices(n);
                model.run(&[(&[1, n, NUM_BINS], &input), (&[t2, s], &avg), (&[s, t2], &expand)])?.1
            }
        };
        if v.len() != DIM {
            return Err(DiarizeError::Model(format!("embedding has {} values, expected {DIM}", v.len())));
        }
        Ok(v)
    }
}

/// `feats` (whole frames) repeated until `frames` frames, the last copy cut short.
fn tiled(feats: &[f32], frames: usize) -> Vec<f32> {
    feats.iter().copied().cycle().take(frames * NUM_BINS).collect()
}

#[cfg(test)]
mod tests {
    use super::{NUM_BINS, seg_matrices, tiled};

    #[test]
    fn segment_matrices_average_and_expand() {
        let (t2, s, avg, expand) = seg_matrices(250);
        assert_eq!((t2, s), (125, 2));
        let col0: f32 = (0..t2).map(|i| avg[i * s]).sum();
        let col1: f32 = (0..t2).map(|i| avg[i * s + 1]).sum();
        assert!((col0 - 1.0).abs() < 1e-5 && (col1 - 1.0).abs() < 1e-5);
        assert_eq!(avg[100 * s + 1], 1.0 / 25.0);
        assert_eq!(expand.iter().sum::<f32>(), t2 as f32);
    }

    #[test]
    fn short_inputs_are_tiled_whole_frames_first() {
        let feats: Vec<f32> = (0..2 * NUM_BINS).map(|i| i as f32).collect();
        let t = tiled(&feats, 5);
        assert_eq!(t.len(), 5 * NUM_BINS);
        assert_eq!(&t[..2 * NUM_BINS], &feats[..]);
        assert_eq!(&t[2 * NUM_BINS..4 * NUM_BINS], &feats[..]);
        assert_eq!(&t[4 * NUM_BINS..], &feats[..NUM_BINS]);
        // Fewer frames asked than given: the first ones only.
        assert_eq!(tiled(&feats, 1), &feats[..NUM_BINS]);
    }
}
