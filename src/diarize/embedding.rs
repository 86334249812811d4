//! CAM++ speaker embeddings from Kaldi fbank features, with fixed-shape plans per length bucket.
//!
//! The features of one speaker are tiled (repeated) up to the nearest bucket length, which keeps
//! the frame statistics that the pooling layer sees, so each bucket needs only one plan. Plans
//! are built when a bucket is first used (the smallest at load, which also checks the model):
//! with embeddings capped at 250 frames the largest is never needed.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;

use super::DiarizeError;
use super::fbank::NUM_BINS;

/// Input lengths (fbank frames) with a prepared plan.
pub const BUCKETS: [usize; 3] = [150, 250, 500];
/// Embedding dimension.
pub const DIM: usize = 192;
/// Frames of one segment of CAM++'s segment pooling (after its stride-2 layer).
const SEG_LEN: usize = 100;

/// The runnable model for one input length.
struct Plan {
    plan: Arc<TypedSimplePlan>,
    seg_avg: Tensor,
    seg_expand: Tensor,
}

struct Bucket {
    frames: usize,
    /// Built on first use; a failure is kept (as its message) and reported on every use.
    plan: OnceLock<Result<Plan, String>>,
}

/// A loaded CAM++ model.
pub struct Embedder {
    proto: InferenceModel,
    buckets: Vec<Bucket>,
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
    /// Loads the ONNX export and builds the smallest bucket's plan.
    pub fn load(path: &Path) -> Result<Self, DiarizeError> {
        let proto = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| DiarizeError::Model(format!("{}: {e:#}", path.display())))?;
        let buckets = BUCKETS.iter().map(|&frames| Bucket { frames, plan: OnceLock::new() }).collect();
        let embedder = Self { proto, buckets };
        embedder
            .plan(&embedder.buckets[0])
            .map_err(|e| DiarizeError::Model(format!("{}: {e}", path.display())))?;
        Ok(embedder)
    }

    /// The bucket's plan, built on first use.
    fn plan<'a>(&'a self, bucket: &'a Bucket) -> Result<&'a Plan, DiarizeError> {
        let built = bucket.plan.get_or_init(|| {
            let frames = bucket.frames;
            let (t2, s, avg, expand) = seg_matrices(frames);
            let build = || -> TractResult<Plan> {
                let plan = self
                    .proto
                    .clone()
                    .with_input_fact(0, f32::fact([1, frames, NUM_BINS]).into())?
                    .with_input_fact(1, f32::fact([t2, s]).into())?
                    .with_input_fact(2, f32::fact([s, t2]).into())?
                    .into_optimized()?
                    .into_runnable()?;
                let seg_avg = Tensor::from_shape(&[t2, s], &avg)?;
                let seg_expand = Tensor::from_shape(&[s, t2], &expand)?;
                Ok(Plan { plan, seg_avg, seg_expand })
            };
            build().map_err(|e| format!("{frames}-frame plan: {e:#}"))
        });
        built.as_ref().map_err(|e| DiarizeError::Model(e.clone()))
    }

    /// Embeds mean-normalised features `[frames][NUM_BINS]` (at least one frame). Inputs longer than
    /// the largest bucket are truncated to it.
    pub fn embed(&self, feats: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        let n = feats.len() / NUM_BINS;
        if n == 0 {
            return Err(DiarizeError::Model("no frames to embed".into()));
        }
        let bucket =
            self.buckets.iter().find(|b| b.frames >= n).unwrap_or(&self.buckets[self.buckets.len() - 1]);
        let mut input = Vec::with_capacity(bucket.frames * NUM_BINS);
        while input.len() < bucket.frames * NUM_BINS {
            let take = (bucket.frames * NUM_BINS - input.len()).min(n * NUM_BINS);
            input.extend_from_slice(&feats[..take]);
        }
        let err = |e: TractError| DiarizeError::Model(format!("{e:#}"));
        let x = Tensor::from_shape(&[1, bucket.frames, NUM_BINS], &input).map_err(err)?;
        let plan = self.plan(bucket)?;
        let out = plan
            .plan
            .run(tvec!(x.into(), plan.seg_avg.clone().into(), plan.seg_expand.clone().into()))
            .map_err(err)?;
        let emb = out[0].to_plain_array_view::<f32>().map_err(err)?;
        let v: Vec<f32> = emb.iter().copied().collect();
        if v.len() != DIM {
            return Err(DiarizeError::Model(format!("embedding has {} values, expected {DIM}", v.len())));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::seg_matrices;

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
}
