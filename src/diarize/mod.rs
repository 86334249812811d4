//! Speaker diarization: who spoke when, offline, in pure Rust.
//!
//! In the spirit of pyannote 3.x: segmentation-3.0 on sliding 10 s windows gives up to three
//! local speakers per ~16.9 ms frame; CAM++ embeds each (window, local speaker) from the frames
//! where that speaker talks alone; agglomerative clustering maps local speakers to global ones;
//! the windows' activity is averaged on the global frame grid (overlap kept) into speaker turns.

pub mod assign;
pub mod cluster;
pub mod der;
pub mod embedding;
pub mod fbank;
pub mod install;
pub mod reconstruct;
pub mod rttm;
pub mod segmentation;

use std::path::{Path, PathBuf};

pub use assign::assign_speakers;
pub use rttm::{parse_rttm, to_rttm};

use crate::audio::Audio;
use crate::model::{SpeakerHints, SpeakerTurn};
use crate::pipeline::{Diarizer, StageError};
use embedding::Embedder;
use fbank::{FRAME_LEN, FRAME_SHIFT, Fbank, NUM_BINS};
use reconstruct::Reconstructor;
use segmentation::{FRAME_CENTER, FRAME_STEP, FRAMES, LOCAL_SPEAKERS, Segmenter, WINDOW};

/// File name of the segmentation model inside the diarization models folder.
pub const SEGMENTATION_FILE: &str = "segmentation-3.0.onnx";
/// File name of the embedding model inside the diarization models folder.
pub const EMBEDDING_FILE: &str = "campplus-192.onnx";

/// Most embeddings clustered directly (2 500² distances = 25 MB).
const MAX_TRAIN: usize = 2500;

/// What can go wrong inside the diarizer.
#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    #[error("model: {0}")]
    Model(String),
    #[error("missing model file {0} (run `diarized models install diarization`)")]
    Missing(PathBuf),
}

impl From<DiarizeError> for StageError {
    fn from(e: DiarizeError) -> Self {
        StageError::new("diarize", e.to_string())
    }
}

/// Tunable parameters (defaults calibrated on the AMI fixtures, see `bench/diarize.sh`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Segmentation frames between window starts (step = frames × 16.875 ms); also the length of
    /// the blocks that are embedded once each.
    pub step_frames: usize,
    /// Average-linkage cosine distance below which clusters merge.
    pub threshold: f32,
    /// Minimum seconds of solo speech for an embedding that trains the clustering.
    pub min_train_s: f32,
    /// Minimum seconds of solo speech in a block for any embedding.
    pub min_embed_s: f32,
    /// Clusters with fewer members than this are folded into the nearest larger one.
    pub min_cluster_size: usize,
    /// A unit farther than this (cosine distance) from every cluster starts a new speaker.
    pub new_speaker_distance: f32,
    /// Upper bound on the number of speakers when no hint is given.
    pub max_speakers: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            step_frames: 148,
            threshold: 0.65,
            min_train_s: 0.8,
            min_embed_s: 0.3,
            min_cluster_size: 2,
            new_speaker_distance: 0.9,
            max_speakers: 20,
        }
    }
}

/// The pyannote-style diarizer (segmentation-3.0 + CAM++ + agglomerative clustering).
pub struct PyannoteDiarizer {
    seg: Segmenter,
    emb: Embedder,
    fbank: Fbank,
    threads: usize,
    /// Tunables; public so benchmarks can sweep them.
    pub params: Params,
}

/// Per-window output of the first pass.
struct WindowOut {
    /// Global frame index of the window's first frame.
    start: usize,
    masks: Vec<u8>,
    /// Embeddings of the blocks this window owns: (block, local speaker, embedding, trains).
    units: Vec<(usize, usize, Vec<f32>, bool)>,
}

impl PyannoteDiarizer {
    /// Loads `segmentation-3.0.onnx` and `campplus-192.onnx` from `dir`: either the models
    /// folder (`config.models_dir`, into whose `diarization/` subfolder
    /// `diarized models install diarization` copies them) or a folder holding the files directly
    /// (such as the repository's `models/`). `threads` ≥ 1 windows run in parallel.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, StageError> {
        let sub = install::install_dir(dir);
        let dir = if sub.join(SEGMENTATION_FILE).is_file() { sub } else { dir.to_owned() };
        Self::load_files(&dir.join(SEGMENTATION_FILE), &dir.join(EMBEDDING_FILE), threads)
    }

    /// Loads the two models from explicit paths.
    pub fn load_files(segmentation: &Path, embedding: &Path, threads: usize) -> Result<Self, StageError> {
        for p in [segmentation, embedding] {
            if !p.is_file() {
                return Err(DiarizeError::Missing(p.to_owned()).into());
            }
        }
        Ok(Self {
            seg: Segmenter::load(segmentation)?,
            emb: Embedder::load(embedding)?,
            fbank: Fbank::new(),
            threads: threads.max(1),
            params: Params::default(),
        })
    }

    /// Global-frame-aligned window starts (in samples) covering `n` samples.
    fn window_starts(&self, n: usize) -> Vec<usize> {
        let step = self.params.step_frames.max(1) * FRAME_STEP;
        let mut starts = vec![0];
        while starts[starts.len() - 1] + WINDOW < n {
            let next = starts[starts.len() - 1] + step;
            if next + WINDOW >= n {
                // Last window: ends at (or just past) the audio end, on the frame grid.
                let last = (n - WINDOW).div_ceil(FRAME_STEP) * FRAME_STEP;
                starts.push(last.max(starts[starts.len() - 1] + FRAME_STEP));
            } else {
                starts.push(next);
            }
        }
        starts
    }

    /// Segmentation of one window, and embeddings of each local speaker's solo speech within
    /// every block (`block_frames` global frames) the window owns.
    fn process_window(
        &self,
        samples: &[f32],
        start: usize,
        owned: &[usize],
    ) -> Result<WindowOut, DiarizeError> {
        let end = (start + WINDOW).min(samples.len());
        let audio = &samples[start..end];
        let mut masks = self.seg.run(audio)?;
        // Frames centred past the end of the audio are padding.
        for (i, m) in masks.iter_mut().enumerate() {
            if FRAME_CENTER + i * FRAME_STEP >= audio.len() {
                *m = 0;
            }
        }
        let first = start / FRAME_STEP;
        let mut units = Vec::new();
        if owned.is_empty() {
            return Ok(WindowOut { start: first, masks, units });
        }
        // Kaldi's int16 scale, so the log floor bites where Kaldi's would.
        let scaled: Vec<f32> = audio.iter().map(|x| x * 32768.0).collect();
        let feats = self.fbank.compute_raw(&scaled);
        let nfeat = feats.len() / NUM_BINS;
        let seg_frame = |j: usize| -> usize {
            let c = j * FRAME_SHIFT + FRAME_LEN / 2;
            ((c.saturating_sub(FRAME_CENTER) + FRAME_STEP / 2) / FRAME_STEP).min(FRAMES - 1)
        };
        let fps = crate::audio::SAMPLE_RATE as f32 / FRAME_SHIFT as f32;
        let min_embed = (self.params.min_embed_s * fps).ceil() as usize;
        let min_train = (self.params.min_train_s * fps).ceil() as usize;
        let bf = self.params.step_frames.max(1);
        for &b in owned {
            let lo = (b * bf).saturating_sub(first);
            let hi = ((b + 1) * bf).saturating_sub(first).min(FRAMES);
            for k in 0..LOCAL_SPEAKERS {
                let bit = 1u8 << k;
                let pick = |solo: bool| -> Vec<usize> {
                    (0..nfeat)
                        .filter(|&j| {
                            let i = seg_frame(j);
                            i >= lo && i < hi && if solo { masks[i] == bit } else { masks[i] & bit != 0 }
                        })
                        .collect()
                };
                // Solo speech if there is enough; otherwise all of it (overlap included), which
                // only labels, never trains.
                let solo = pick(true);
                let (frames, clean) =
                    if solo.len() >= min_embed { (solo, true) } else { (pick(false), false) };
                if frames.len() < min_embed {
                    continue;
                }
                let mut x = Vec::with_capacity(frames.len() * NUM_BINS);
                for &j in &frames {
                    x.extend_from_slice(&feats[j * NUM_BINS..(j + 1) * NUM_BINS]);
                }
                fbank::subtract_mean(&mut x);
                let mut e = self.emb.embed(&x)?;
                cluster::normalize(&mut e);
                units.push((b, k, e, clean && frames.len() >= min_train));
            }
        }
        Ok(WindowOut { start: first, masks, units })
    }

    /// Diarizes 16 kHz mono samples; turns are labelled in order of first appearance.
    pub fn diarize_samples(
        &self,
        samples: &[f32],
        hints: SpeakerHints,
    ) -> Result<Vec<SpeakerTurn>, DiarizeError> {
        if samples.len() < FRAME_LEN {
            return Ok(Vec::new());
        }
        let starts = self.window_starts(samples.len());
        let firsts: Vec<usize> = starts.iter().map(|s| s / FRAME_STEP).collect();
        let bf = self.params.step_frames.max(1);
        let total_frames = samples.len().saturating_sub(FRAME_CENTER).div_ceil(FRAME_STEP).max(1);
        // Each block of `bf` frames is embedded once, by the window that covers it most centrally.
        let nblocks = total_frames.div_ceil(bf);
        let mut owner = vec![0usize; nblocks];
        let mut w0 = 0;
        for (b, o) in owner.iter_mut().enumerate() {
            let centre = (b * bf + bf / 2) as f64;
            while w0 + 1 < firsts.len() && firsts[w0] + FRAMES <= b * bf {
                w0 += 1;
            }
            let mut best = (f64::INFINITY, w0);
            for (w, &f) in firsts.iter().enumerate().skip(w0) {
                if f > b * bf + bf {
                    break;
                }
                let d = (f as f64 + FRAMES as f64 / 2.0 - centre).abs();
                if d < best.0 {
                    best = (d, w);
                }
            }
            *o = best.1;
        }
        let mut owned: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
        for (b, &w) in owner.iter().enumerate() {
            owned[w].push(b);
        }

        let mut windows: Vec<Option<WindowOut>> = (0..starts.len()).map(|_| None).collect();
        let threads = self.threads.min(starts.len()).max(1);
        let results: Vec<Result<Vec<(usize, WindowOut)>, DiarizeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (starts, owned) = (&starts, &owned);
                    s.spawn(move || {
                        (t..starts.len())
                            .step_by(threads)
                            .map(|i| self.process_window(samples, starts[i], &owned[i]).map(|w| (i, w)))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(DiarizeError::Model("worker panicked".into()))))
                .collect()
        });
        for r in results {
            for (i, w) in r? {
                windows[i] = Some(w);
            }
        }
        let windows: Vec<WindowOut> = windows.into_iter().flatten().collect();

        // Cluster the embeddings with enough solo speech, then label every unit.
        let mut train: Vec<Vec<f32>> = Vec::new();
        for w in &windows {
            train.extend(w.units.iter().filter(|u| u.3).map(|u| u.2.clone()));
        }
        if train.is_empty() {
            // Nothing long enough to tell voices apart: all units are one speaker.
            for w in &windows {
                train.extend(w.units.iter().map(|u| u.2.clone()));
            }
        }
        // Clustering is O(n²) in memory: on long files keep an even subsample (the rest are
        // labelled through the centroids below like every other unit).
        if train.len() > MAX_TRAIN {
            let n = train.len();
            train = (0..MAX_TRAIN).map(|i| std::mem::take(&mut train[i * n / MAX_TRAIN])).collect();
        }
        let labels = self.cluster(&train, hints);
        let mut cents = cluster::centroids(&train, &labels);
        // A unit unlike every cluster (e.g. a voice heard only in overlap) is a new speaker,
        // unless the speaker count is fixed or at its maximum.
        let max_k = hints.num_speakers.or(hints.max_speakers).unwrap_or(self.params.max_speakers);
        for w in &windows {
            for (_, _, e, _) in &w.units {
                if cents.len() >= max_k {
                    break;
                }
                let best = cents.iter().map(|c| cluster::cosine(c, e)).fold(f32::NEG_INFINITY, f32::max);
                if best < 1.0 - self.params.new_speaker_distance {
                    cents.push(e.clone());
                }
            }
        }
        let k = cents.len().max(1);
        // Label of (block, local speaker of the owner window).
        let mut unit_label: std::collections::HashMap<(usize, usize), usize> =
            std::collections::HashMap::new();
        for w in &windows {
            for (b, kk, e, _) in &w.units {
                if !cents.is_empty() {
                    unit_label.insert((*b, *kk), cluster::nearest(&cents, e));
                }
            }
        }

        let mut rec = Reconstructor::new(k, samples.len());
        for (wi, w) in windows.iter().enumerate() {
            let b_first = w.start / bf;
            let b_last = (w.start + FRAMES - 1) / bf;
            // labels[block - b_first][local speaker]
            let mut labels: Vec<[Option<usize>; LOCAL_SPEAKERS]> =
                vec![[None; LOCAL_SPEAKERS]; b_last - b_first + 1];
            for (bi, row) in labels.iter_mut().enumerate() {
                let b = b_first + bi;
                if b >= nblocks {
                    continue;
                }
                let o = owner[b];
                let (lo, hi) = (b * bf, (b + 1) * bf);
                for (kk, slot) in row.iter_mut().enumerate() {
                    *slot = if o == wi {
                        unit_label.get(&(b, kk)).copied()
                    } else {
                        // Match this local speaker to the owner's by shared active frames.
                        let ow = &windows[o];
                        let mut overlap = [0usize; LOCAL_SPEAKERS];
                        for g in
                            lo.max(w.start).max(ow.start)..hi.min(w.start + FRAMES).min(ow.start + FRAMES)
                        {
                            if w.masks[g - w.start] & (1 << kk) != 0 {
                                let m = ow.masks[g - ow.start];
                                for (j, c) in overlap.iter_mut().enumerate() {
                                    *c += usize::from(m & (1 << j) != 0);
                                }
                            }
                        }
                        let best = (0..LOCAL_SPEAKERS).max_by_key(|&j| overlap[j]).unwrap_or(0);
                        if overlap[best] > 0 { unit_label.get(&(b, best)).copied() } else { None }
                    };
                }
            }
            // Local speakers still unlabelled in a block take their most frequent label elsewhere
            // in the window.
            for kk in 0..LOCAL_SPEAKERS {
                let mut votes = vec![0usize; k];
                labels.iter().filter_map(|r| r[kk]).for_each(|c| votes[c] += 1);
                let fallback = (0..k).filter(|&c| votes[c] > 0).max_by_key(|&c| votes[c]);
                labels.iter_mut().for_each(|r| r[kk] = r[kk].or(fallback));
            }
            let map: Vec<[Option<usize>; LOCAL_SPEAKERS]> =
                (0..FRAMES).map(|i| labels[(w.start + i) / bf - b_first]).collect();
            rec.add_window(w.start, &w.masks, &map);
        }
        Ok(label_turns(rec.finish()))
    }

    /// Cluster labels for the training embeddings, honouring the speaker-count hints.
    fn cluster(&self, x: &[Vec<f32>], hints: SpeakerHints) -> Vec<usize> {
        if x.is_empty() {
            return Vec::new();
        }
        let p = &self.params;
        let min_k = hints.min_speakers.unwrap_or(1).max(1);
        let max_k = hints.max_speakers.unwrap_or(p.max_speakers).max(min_k);
        let mut labels = cluster::agglomerative(x, p.threshold, hints.num_speakers, min_k, max_k);
        // Fold tiny clusters into their nearest large one, unless a count was requested.
        if hints.num_speakers.is_none() {
            let k = labels.iter().max().map_or(0, |m| m + 1);
            let mut size = vec![0usize; k];
            labels.iter().for_each(|&l| size[l] += 1);
            let big: Vec<usize> = (0..k).filter(|&c| size[c] >= p.min_cluster_size).collect();
            if !big.is_empty() && big.len() < k && big.len() >= min_k {
                let cents = cluster::centroids(x, &labels);
                let big_cents: Vec<Vec<f32>> = big.iter().map(|&c| cents[c].clone()).collect();
                for (l, v) in labels.iter_mut().zip(x) {
                    if size[*l] < p.min_cluster_size {
                        *l = big[cluster::nearest(&big_cents, v)];
                    }
                }
                let mut ids: Vec<Option<usize>> = vec![None; k];
                let mut next = 0;
                for l in labels.iter_mut() {
                    *l = *ids[*l].get_or_insert_with(|| {
                        next += 1;
                        next - 1
                    });
                }
            }
        }
        labels
    }
}

/// Names speakers `Speaker00`, `Speaker01`, … in order of their first turn.
fn label_turns(turns: Vec<(f64, f64, usize)>) -> Vec<SpeakerTurn> {
    let mut names: Vec<usize> = Vec::new();
    turns
        .into_iter()
        .filter(|t| t.1 > t.0)
        .map(|(s, e, c)| {
            let idx = names.iter().position(|&n| n == c).unwrap_or_else(|| {
                names.push(c);
                names.len() - 1
            });
            SpeakerTurn { start_s: s, end_s: e, speaker: format!("Speaker{idx:02}") }
        })
        .collect()
}

impl Diarizer for PyannoteDiarizer {
    fn diarize(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Vec<SpeakerTurn>, StageError> {
        Ok(self.diarize_samples(&audio.samples, hints)?)
    }

    fn name(&self) -> String {
        "pyannote-segmentation-3.0+campplus".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fbank_matches_kaldi_reference() {
        let mut reader = hound::WavReader::open("../shared/fixtures/jfk.wav").unwrap();
        let pcm: Vec<f32> = reader.samples::<i16>().map(|s| s.unwrap() as f32).collect();
        let text = std::fs::read_to_string("tests/data/fbank_jfk_1s.txt").unwrap();
        let mut lines = text.lines();
        let dims: Vec<usize> = lines.next().unwrap().split(' ').map(|x| x.parse().unwrap()).collect();
        let expected: Vec<f32> =
            lines.flat_map(|l| l.split(' ').map(|x| x.parse::<f32>().unwrap())).collect();
        let ours = Fbank::new().compute_raw(&pcm[16_000..24_000]);
        assert_eq!(dims, [fbank::num_frames(8000), NUM_BINS]);
        assert_eq!(ours.len(), expected.len());
        let max = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-2, "max abs difference {max}");
    }

    #[test]
    fn turns_are_labelled_by_first_appearance() {
        let t = label_turns(vec![(0.0, 1.0, 3), (0.5, 2.0, 0), (2.0, 3.0, 3), (3.0, 3.0, 1)]);
        let names: Vec<_> = t.iter().map(|t| t.speaker.as_str()).collect();
        assert_eq!(names, ["Speaker00", "Speaker01", "Speaker00"]);
    }
}
