//! Kaldi-compatible log mel filterbank front-end for CAM++.
//!
//! 80 bins, 25 ms frames every 10 ms (`snip_edges`), DC removal, pre-emphasis 0.97, povey
//! window, 512-point FFT, power spectrum, mel filters between 20 Hz and Nyquist, natural log.
//! [`Fbank::compute`] then subtracts the per-utterance mean of every bin (CMN), as CAM++ expects.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per frame (25 ms at 16 kHz).
pub const FRAME_LEN: usize = 400;
/// Samples between frame starts (10 ms).
pub const FRAME_SHIFT: usize = 160;
/// Mel bins.
pub const NUM_BINS: usize = 80;
const FFT_LEN: usize = 512;
const PREEMPH: f32 = 0.97;
const LOW_HZ: f32 = 20.0;
const SAMPLE_RATE: f32 = 16_000.0;

/// A reusable filterbank extractor (FFT plan, window and mel matrix built once).
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Per bin: first FFT index and its weights.
    mel: Vec<(usize, Vec<f32>)>,
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

fn mel_scale(hz: f32) -> f32 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

/// Number of frames Kaldi produces for `n` samples (`snip_edges = true`).
pub fn num_frames(n: usize) -> usize {
    if n < FRAME_LEN { 0 } else { 1 + (n - FRAME_LEN) / FRAME_SHIFT }
}

impl Fbank {
    /// Builds the FFT plan, povey window and mel filters.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT_LEN);
        let window = (0..FRAME_LEN)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * i as f64 / (FRAME_LEN - 1) as f64;
                (0.5 - 0.5 * a.cos()).powf(0.85) as f32
            })
            .collect();
        let mel_low = mel_scale(LOW_HZ);
        let mel_high = mel_scale(SAMPLE_RATE / 2.0);
        let delta = (mel_high - mel_low) / (NUM_BINS + 1) as f32;
        let bin_width = SAMPLE_RATE / FFT_LEN as f32;
        let mel = (0..NUM_BINS)
            .map(|b| {
                let left = mel_low + b as f32 * delta;
                let center = left + delta;
                let right = center + delta;
                let mut first = usize::MAX;
                let mut weights = Vec::new();
                for i in 0..FFT_LEN / 2 {
                    let m = mel_scale(i as f32 * bin_width);
                    if m > left && m < right {
                        if first == usize::MAX {
                            first = i;
                        }
                        let w = if m <= center {
                            (m - left) / (center - left)
                        } else {
                            (right - m) / (right - center)
                        };
                        weights.push(w);
                    }
                }
                (first.min(FFT_LEN / 2), weights)
            })
            .collect();
        Self { fft, window, mel }
    }

    /// Log mel energies of `samples` (any scale), row-major `[frames][NUM_BINS]`, without CMN.
    pub fn compute_raw(&self, samples: &[f32]) -> Vec<f32> {
        let frames = num_frames(samples.len());
        let mut out = Vec::with_capacity(frames * NUM_BINS);
        let mut buf = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; FFT_LEN / 2 + 1];
        for f in 0..frames {
            let frame = &samples[f * FRAME_SHIFT..f * FRAME_SHIFT + FRAME_LEN];
            let mean = frame.iter().map(|&x| x as f64).sum::<f64>() as f32 / FRAME_LEN as f32;
            for (b, &x) in buf.iter_mut().zip(frame) {
                *b = x - mean;
            }
            for i in (1..FRAME_LEN).rev() {
                buf[i] -= PREEMPH * buf[i - 1];
            }
            buf[0] -= PREEMPH * buf[0];
            for (b, &w) in buf.iter_mut().zip(&self.window) {
                *b *= w;
            }
            buf[FRAME_LEN..].fill(0.0);
            // The input and scratch lengths come from the plan itself, so this cannot fail.
            let _ = self.fft.process_with_scratch(&mut buf, &mut spec, &mut scratch);
            for (p, c) in power.iter_mut().zip(&spec) {
                *p = c.norm_sqr();
            }
            for (first, weights) in &self.mel {
                let e: f32 = weights.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
                out.push(e.max(f32::EPSILON).ln());
            }
        }
        out
    }

    /// Log mel energies with the per-bin mean over all frames subtracted.
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let mut feats = self.compute_raw(samples);
        subtract_mean(&mut feats);
        feats
    }
}

/// Subtracts each bin's mean over the frames of `feats` (`[frames][NUM_BINS]`).
pub fn subtract_mean(feats: &mut [f32]) {
    let frames = feats.len() / NUM_BINS;
    if frames == 0 {
        return;
    }
    let mut mean = [0f64; NUM_BINS];
    for row in feats.chunks_exact(NUM_BINS) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64;
        }
    }
    for row in feats.chunks_exact_mut(NUM_BINS) {
        for (x, m) in row.iter_mut().zip(&mean) {
            *x -= (*m / frames as f64) as f32;
        }
    }
}
