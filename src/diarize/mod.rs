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
pub mod reconstruct;
pub mod rttm;
pub mod runtime;
pub mod segmentation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

pub use assign::assign_speakers;
pub use rttm::{parse_rttm, to_rttm};

use crate::audio::{Audio, Samples};
use crate::model::{SpeakerHints, SpeakerTurn, SpeakerVoice};
use crate::pipeline::{Diarization, Diarizer, StageError};
use embedding::Embedder;
use fbank::{FRAME_LEN, FRAME_SHIFT, Fbank, NUM_BINS};
use reconstruct::Reconstructor;
use runtime::Engine;
use segmentation::{FRAME_CENTER, FRAME_STEP, FRAMES, LOCAL_SPEAKERS, Segmenter, WINDOW};

/// File name of the segmentation model inside the diarization models folder.
pub const SEGMENTATION_FILE: &str = "segmentation-3.0.onnx";
/// The segmentation model with 8-bit LSTM weights (`models/export/quantize_segmentation.py`),
/// which ONNX Runtime runs instead of [`SEGMENTATION_FILE`] when it is there.
pub const SEGMENTATION_INT8_FILE: &str = "segmentation-3.0-int8.onnx";
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
    /// ONNX Runtime's library could not be loaded or could not load a model.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
}

impl From<DiarizeError> for StageError {
    fn from(e: DiarizeError) -> Self {
        StageError::new("diarize", e.to_string())
    }
}

/// Tunable parameters (defaults calibrated on the AMI fixtures, see `bench/diarize.sh`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Segmentation frames between window starts (step = frames × 16.875 ms), for recordings
    /// shorter than `long_from_s`.
    pub step_frames: usize,
    /// Average-linkage cosine distance below which clusters merge.
    pub threshold: f32,
    /// Minimum seconds of solo speech for an embedding that trains the clustering.
    pub min_train_s: f32,
    /// Minimum seconds of solo speech in a block for any embedding.
    pub min_embed_s: f32,
    /// Clusters with fewer members than this are folded into the nearest larger one.
    pub min_cluster_size: usize,
    /// …and clusters with fewer than this share of the training embeddings too (the size grows
    /// with the recording: on an hour-long one, clusters of a few dozen embeddings are the same
    /// voices in rare conditions, not other people).
    pub min_cluster_share: f32,
    /// A unit farther than this (cosine distance) from every cluster starts a new speaker.
    pub new_speaker_distance: f32,
    /// Upper bound on the number of speakers when no hint is given.
    pub max_speakers: usize,
    /// Most fbank frames (10 ms) embedded per local speaker and window; the middle of longer
    /// selections is kept. Bounds the cost of CAM++, which grows with the input length. For
    /// recordings shorter than `long_from_s`.
    pub max_embed_frames: usize,
    /// Recordings at least this long (seconds) use `long_step_frames` and
    /// `long_max_embed_frames`: over many windows a voice is told apart more reliably by longer
    /// embeddings (two voices of one room otherwise share clusters), and sparser windows pay for
    /// them. In a short recording every window counts and the denser, shorter ones do better.
    pub long_from_s: f32,
    /// `step_frames` of long recordings.
    pub long_step_frames: usize,
    /// `max_embed_frames` of long recordings.
    pub long_max_embed_frames: usize,
}

impl Params {
    /// `min_cluster_share` of `n` training embeddings, rounded up.
    fn share_of(&self, n: usize) -> usize {
        (n as f32 * self.min_cluster_share).ceil() as usize
    }

    /// Window step and embedding length (frames) for a recording of `samples` samples.
    fn density(&self, samples: usize) -> (usize, usize) {
        if samples as f64 >= f64::from(self.long_from_s) * f64::from(crate::audio::SAMPLE_RATE) {
            (self.long_step_frames, self.long_max_embed_frames)
        } else {
            (self.step_frames, self.max_embed_frames)
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self {
            step_frames: 296,
            threshold: 0.55,
            min_train_s: 0.8,
            min_embed_s: 0.3,
            min_cluster_size: 2,
            min_cluster_share: 0.03,
            new_speaker_distance: 0.9,
            max_speakers: 20,
            max_embed_frames: 250,
            long_from_s: 60.0,
            long_step_frames: 444,
            long_max_embed_frames: 500,
        }
    }
}

/// The two ONNX models in their engine (read-only once loaded).
struct Models {
    seg: Segmenter,
    emb: Embedder,
    engine: Engine,
    /// The segmentation model's file (the f32 export, or its 8-bit-LSTM twin).
    seg_file: PathBuf,
}

/// The pyannote-style diarizer (segmentation-3.0 + CAM++ + agglomerative clustering).
pub struct PyannoteDiarizer {
    /// Shared by every diarizer of the process loaded from the same files (see [`shared_models`]).
    models: Arc<Models>,
    fbank: Fbank,
    threads: usize,
    /// Tunables; public so benchmarks can sweep them.
    pub params: Params,
}

/// The embedding of one local speaker of one window.
struct Unit {
    emb: Vec<f32>,
    /// Enough solo speech to train the clustering.
    trains: bool,
}

/// Per-window output of the first pass.
struct WindowOut {
    /// Global frame index of the window's first frame.
    start: usize,
    masks: Vec<u8>,
    /// Per local speaker, its embedding when it has enough speech.
    units: [Option<Unit>; LOCAL_SPEAKERS],
}

impl PyannoteDiarizer {
    /// Loads `segmentation-3.0.onnx` and `campplus-192.onnx` from `dir`: either the models
    /// folder (`config.models_dir`, into whose `diarization/` subfolder
    /// `diarized models install diarization` copies them) or a folder holding the files directly
    /// (such as the repository's `models/`). `threads` ≥ 1 windows run in parallel. They run in
    /// ONNX Runtime when the models folder has its library (`diarized models install
    /// onnxruntime`), else in tract; if that library cannot run them (broken, or built for
    /// another system), in tract with a warning. ONNX Runtime runs the segmentation model with
    /// 8-bit LSTM weights ([`SEGMENTATION_INT8_FILE`]) when the folder has it.
    pub fn load(dir: &Path, threads: usize) -> Result<Self, StageError> {
        let loaded = match Self::open(dir, threads, Engine::for_models_dir(dir)) {
            Err(DiarizeError::Runtime(e)) => {
                tracing::warn!(error = %e, "ONNX Runtime unusable: diarization runs in tract");
                Self::open(dir, threads, Engine::Tract)
            }
            loaded => loaded,
        };
        Ok(loaded?)
    }

    /// [`Self::load`] in the given engine, without falling back.
    pub fn load_with(dir: &Path, threads: usize, engine: Engine) -> Result<Self, StageError> {
        Ok(Self::open(dir, threads, engine)?)
    }

    /// The engine running the models.
    pub fn engine(&self) -> &Engine {
        &self.models.engine
    }

    /// The segmentation model's file: [`SEGMENTATION_INT8_FILE`] in ONNX Runtime when installed,
    /// else [`SEGMENTATION_FILE`].
    pub fn segmentation_file(&self) -> &Path {
        &self.models.seg_file
    }

    fn open(dir: &Path, threads: usize, engine: Engine) -> Result<Self, DiarizeError> {
        let dir = files_dir(dir);
        let (segmentation, embedding) = (segmentation_path(&dir, &engine), dir.join(EMBEDDING_FILE));
        for p in [&segmentation, &embedding] {
            if !p.is_file() {
                return Err(DiarizeError::Missing(p.to_owned()));
            }
        }
        Ok(Self {
            models: shared_models(&segmentation, &embedding, engine)?,
            fbank: Fbank::new(),
            threads: threads.max(1),
            params: Params::default(),
        })
    }

    /// Segmentation of one window, and one embedding per local speaker from the frames of the
    /// whole window where that speaker talks alone (overlap excluded), as pyannote does.
    fn process_window<S: Samples + ?Sized>(
        &self,
        samples: &S,
        start: usize,
        max_embed_frames: usize,
    ) -> Result<WindowOut, DiarizeError> {
        let end = (start + WINDOW).min(samples.len());
        let audio = samples.window(start..end);
        let mut masks = self.models.seg.run(&audio)?;
        // Frames centred past the end of the audio are padding.
        for (i, m) in masks.iter_mut().enumerate() {
            if FRAME_CENTER + i * FRAME_STEP >= audio.len() {
                *m = 0;
            }
        }
        let first = start / FRAME_STEP;
        let mut units: [Option<Unit>; LOCAL_SPEAKERS] = Default::default();
        if masks.iter().all(|&m| m == 0) {
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
        for (k, unit) in units.iter_mut().enumerate() {
            let bit = 1u8 << k;
            let pick = |solo: bool| -> Vec<usize> {
                (0..nfeat)
                    .filter(|&j| {
                        let m = masks[seg_frame(j)];
                        if solo { m == bit } else { m & bit != 0 }
                    })
                    .collect()
            };
            // Solo speech if there is enough; otherwise all of it (overlap included), which
            // only labels, never trains.
            let solo = pick(true);
            let (frames, clean) = if solo.len() >= min_embed { (solo, true) } else { (pick(false), false) };
            if frames.len() < min_embed {
                continue;
            }
            let keep = max_embed_frames.max(1);
            let skip = frames.len().saturating_sub(keep) / 2;
            let mut x = Vec::with_capacity(frames.len().min(keep) * NUM_BINS);
            for &j in frames.iter().skip(skip).take(keep) {
                x.extend_from_slice(&feats[j * NUM_BINS..(j + 1) * NUM_BINS]);
            }
            fbank::subtract_mean(&mut x);
            let mut e = self.models.emb.embed(&x)?;
            if e.iter().any(|v| !v.is_finite()) {
                // No voice to compare: the speaker is labelled like one with too little speech.
                tracing::warn!(
                    window_start_s = start as f64 / f64::from(crate::audio::SAMPLE_RATE),
                    "non-finite embedding skipped"
                );
                continue;
            }
            cluster::normalize(&mut e);
            *unit = Some(Unit { emb: e, trains: clean && frames.len() >= min_train });
        }
        Ok(WindowOut { start: first, masks, units })
    }

    /// Diarizes 16 kHz mono samples; turns are labelled in order of first appearance.
    pub fn diarize_samples<S: Samples + ?Sized>(
        &self,
        samples: &S,
        hints: SpeakerHints,
    ) -> Result<Vec<SpeakerTurn>, DiarizeError> {
        Ok(self.diarize_voices(samples, hints)?.turns)
    }

    /// Diarizes 16 kHz mono samples and returns each speaker's voice (the normalised mean of
    /// its window embeddings) with the turns.
    pub fn diarize_voices<S: Samples + ?Sized>(
        &self,
        samples: &S,
        hints: SpeakerHints,
    ) -> Result<Diarization, DiarizeError> {
        if samples.len() < FRAME_LEN {
            return Ok(Diarization::default());
        }
        let (step_frames, max_embed_frames) = self.params.density(samples.len());
        let starts = window_starts(samples.len(), step_frames);
        let mut windows: Vec<Option<WindowOut>> = (0..starts.len()).map(|_| None).collect();
        let threads = self.threads.min(starts.len()).max(1);
        let results: Vec<Result<Vec<(usize, WindowOut)>, DiarizeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let starts = &starts;
                    s.spawn(move || {
                        (t..starts.len())
                            .step_by(threads)
                            .map(|i| {
                                self.process_window(samples, starts[i], max_embed_frames).map(|w| (i, w))
                            })
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
        let units = || windows.iter().flat_map(|w| w.units.iter().flatten());

        // Cluster the embeddings with enough solo speech (all of them if none has).
        let mut train: Vec<Vec<f32>> = units().filter(|u| u.trains).map(|u| u.emb.clone()).collect();
        if train.is_empty() {
            train = units().map(|u| u.emb.clone()).collect();
        }
        // Clustering is O(n²) in memory: on long files keep an even subsample (the rest are
        // labelled through the centroids like every other unit).
        if train.len() > MAX_TRAIN {
            let n = train.len();
            train = (0..MAX_TRAIN).map(|i| std::mem::take(&mut train[i * n / MAX_TRAIN])).collect();
        }
        let labels = self.cluster(&train, hints);
        let mut cents = cluster::centroids(&train, &labels);
        let clustered = cents.len();
        // A unit unlike every cluster (e.g. a voice heard only in overlap) is a new speaker,
        // unless the speaker count is fixed or at its maximum.
        let max_k = hints.num_speakers.or(hints.max_speakers).unwrap_or(self.params.max_speakers);
        for u in units() {
            if cents.len() >= max_k {
                break;
            }
            let best = cents.iter().map(|c| cluster::cosine(c, &u.emb)).fold(f32::NEG_INFINITY, f32::max);
            if best < 1.0 - self.params.new_speaker_distance {
                cents.push(u.emb.clone());
            }
        }
        // Each window's local speakers → global speakers: distinct clusters for the speakers of
        // one window (optimal assignment on cosine similarity). The segmentation says they are
        // different voices, so one left over without a close cluster becomes a new speaker.
        let mut maps: Vec<[Option<usize>; LOCAL_SPEAKERS]> = Vec::with_capacity(windows.len());
        for w in &windows {
            let mut map = [None; LOCAL_SPEAKERS];
            let embedded: Vec<&[f32]> =
                w.units.iter().map(|u| u.as_ref().map_or(&[][..], |u| u.emb.as_slice())).collect();
            let local: Vec<usize> = (0..LOCAL_SPEAKERS).filter(|&j| w.units[j].is_some()).collect();
            if !local.is_empty() && !cents.is_empty() {
                let sims: Vec<Vec<f64>> = local
                    .iter()
                    .map(|&j| cents.iter().map(|c| 1.0 + cluster::cosine(c, embedded[j]) as f64).collect())
                    .collect();
                for (row, col) in der::max_weight_matching(&sims).into_iter().enumerate() {
                    map[local[row]] = col;
                }
                for (row, &j) in local.iter().enumerate() {
                    if map[j].is_some() {
                        continue;
                    }
                    let s = &sims[row];
                    let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
                    if s[best] - 1.0 < f64::from(1.0 - self.params.threshold) && cents.len() < max_k {
                        cents.push(embedded[j].to_vec());
                        map[j] = Some(cents.len() - 1);
                    } else {
                        map[j] = Some(best);
                    }
                }
            }
            maps.push(map);
        }
        if hints.num_speakers.is_none() {
            // A speaker added after the clustering needs the support a clustered voice needs.
            fold_thin_speakers(&windows, &mut maps, &mut cents, clustered, self.params.share_of(train.len()));
        }
        tracing::debug!(training = train.len(), clustered, speakers = cents.len(), "diarization speakers");
        let k = cents.len().max(1);
        // Active local speakers without an embedding (too little speech): the global speaker of
        // the neighbouring window's local speaker they share most active frames with; failing
        // that, the cluster most heard in the file (speech but no embedding anywhere, as with
        // only very short utterances, is one speaker: real speech is never dropped).
        let mut talk = vec![0usize; k];
        for (w, map) in windows.iter().zip(&maps) {
            for (j, c) in map.iter().enumerate() {
                if let Some(c) = c {
                    talk[*c] += w.masks.iter().filter(|&&m| m & (1 << j) != 0).count();
                }
            }
        }
        let most_heard = (0..k).max_by_key(|&c| talk[c]).unwrap_or(0);
        for wi in 0..windows.len() {
            for j in 0..LOCAL_SPEAKERS {
                let w = &windows[wi];
                if maps[wi][j].is_some() || !w.masks.iter().any(|&m| m & (1 << j) != 0) {
                    continue;
                }
                let mut votes = vec![0usize; k];
                for ni in [wi.wrapping_sub(1), wi + 1] {
                    let Some(nw) = windows.get(ni) else { continue };
                    let (lo, hi) = (w.start.max(nw.start), (w.start + FRAMES).min(nw.start + FRAMES));
                    for g in lo..hi {
                        if w.masks[g - w.start] & (1 << j) == 0 {
                            continue;
                        }
                        let m = nw.masks[g - nw.start];
                        for (jj, c) in maps[ni].iter().enumerate() {
                            if let Some(c) = c
                                && m & (1 << jj) != 0
                            {
                                votes[*c] += 1;
                            }
                        }
                    }
                }
                let best = (0..k).max_by_key(|&c| votes[c]).filter(|&c| votes[c] > 0);
                maps[wi][j] = Some(best.unwrap_or(most_heard));
            }
        }

        let mut rec = Reconstructor::new(k, samples.len());
        for (w, map) in windows.iter().zip(&maps) {
            rec.add_window(w.start, &w.masks, &vec![*map; FRAMES]);
        }
        let (turns, order) = label_turns(rec.finish());
        let mut embeddings = speaker_voices(&windows, &maps, k);
        let mut voices = Vec::new();
        for (i, &c) in order.iter().enumerate() {
            let embedding = std::mem::take(&mut embeddings[c]);
            if embedding.iter().any(|&x| x != 0.0) {
                voices.push(SpeakerVoice { label: speaker_label(i), embedding });
            }
        }
        Ok(Diarization { turns, voices })
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
            let min_size = p.min_cluster_size.max(p.share_of(x.len()));
            let big: Vec<usize> = (0..k).filter(|&c| size[c] >= min_size).collect();
            if !big.is_empty() && big.len() < k && big.len() >= min_k {
                let cents = cluster::centroids(x, &labels);
                let big_cents: Vec<Vec<f32>> = big.iter().map(|&c| cents[c].clone()).collect();
                for (l, v) in labels.iter_mut().zip(x) {
                    if size[*l] < min_size {
                        *l = big[cluster::nearest(&big_cents, v)];
                    }
                }
                labels = cluster::first_occurrence(&labels);
            }
        }
        labels
    }
}

/// Global-frame-aligned window starts (in samples) covering `n` samples, `step_frames` apart.
fn window_starts(n: usize, step_frames: usize) -> Vec<usize> {
    let step = step_frames.max(1) * FRAME_STEP;
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

/// Folds the speakers added after the clustering (indices from `clustered` on) that fewer than
/// `min_units` window units map to into their most similar clustered speaker, and renumbers the
/// rest: on a long recording one odd window must not make a speaker of its own, while on a
/// short one (`min_units` of 1) every added speaker stays.
fn fold_thin_speakers(
    windows: &[WindowOut],
    maps: &mut [[Option<usize>; LOCAL_SPEAKERS]],
    cents: &mut Vec<Vec<f32>>,
    clustered: usize,
    min_units: usize,
) {
    let mut support = vec![0usize; cents.len()];
    maps.iter().flat_map(|m| m.iter().flatten()).for_each(|&c| support[c] += 1);
    let thin: Vec<bool> = (0..cents.len()).map(|c| c >= clustered && support[c] < min_units).collect();
    if clustered == 0 || !thin.contains(&true) {
        return;
    }
    let mut renumbered = vec![0usize; cents.len()];
    for (next, c) in (0..cents.len()).filter(|&c| !thin[c]).enumerate() {
        renumbered[c] = next;
    }
    for (w, map) in windows.iter().zip(maps.iter_mut()) {
        for (slot, unit) in map.iter_mut().zip(&w.units) {
            if let Some(c) = *slot {
                *slot = match (thin[c], unit) {
                    (false, _) => Some(renumbered[c]),
                    (true, Some(u)) => Some(cluster::nearest(&cents[..clustered], &u.emb)),
                    // (Not reached: only embedded local speakers are mapped yet.)
                    (true, None) => None,
                };
            }
        }
    }
    let mut c = 0;
    cents.retain(|_| {
        c += 1;
        !thin[c - 1]
    });
}

/// The models for these files, shared by every diarizer alive in the process: with several
/// workers the plans (about 90 MB in tract) are in memory once. In ONNX Runtime each model has a
/// session per core, so that the windows diarized in parallel do not wait for each other (peak
/// RSS of the 5-minute meeting's diarization at 2 threads: 214 MiB, tract 206 MiB).
fn shared_models(segmentation: &Path, embedding: &Path, engine: Engine) -> Result<Arc<Models>, DiarizeError> {
    type Loaded = Vec<((PathBuf, PathBuf, Engine), Weak<Models>)>;
    static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());
    let key = (segmentation.to_path_buf(), embedding.to_path_buf(), engine.clone());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    loaded.retain(|(_, m)| m.strong_count() > 0);
    if let Some(models) = loaded.iter().find(|(k, _)| *k == key).and_then(|(_, m)| m.upgrade()) {
        return Ok(models);
    }
    let sessions = std::thread::available_parallelism().map_or(1, |n| n.get());
    let models = Arc::new(Models {
        seg: Segmenter::load(segmentation, &engine, sessions)?,
        emb: Embedder::load(embedding, &engine, sessions)?,
        engine,
        seg_file: segmentation.to_path_buf(),
    });
    tracing::info!(engine = %models.engine, segmentation = %segmentation.display(), "diarization models loaded");
    loaded.push((key, Arc::downgrade(&models)));
    Ok(models)
}

/// The folder holding the model files, given the models folder (its `diarization/` subfolder)
/// or a folder holding them directly (such as the repository's `models/`).
pub fn files_dir(dir: &Path) -> PathBuf {
    let sub = crate::models::diarization::install_dir(dir);
    if sub.join(SEGMENTATION_FILE).is_file() { sub } else { dir.to_owned() }
}

/// The segmentation model `engine` runs from the folder `dir` holding the model files: the
/// 8-bit-LSTM export in ONNX Runtime when the folder has it (tract cannot run it: its LSTM
/// operator is ONNX Runtime's own), else the f32 export.
pub fn segmentation_path(dir: &Path, engine: &Engine) -> PathBuf {
    let int8 = dir.join(SEGMENTATION_INT8_FILE);
    if matches!(engine, Engine::OnnxRuntime(_)) && int8.is_file() {
        int8
    } else {
        dir.join(SEGMENTATION_FILE)
    }
}

/// Names speakers `Speaker00`, `Speaker01`, … in order of their first turn; also returns the
/// cluster of each label.
fn label_turns(turns: Vec<(f64, f64, usize)>) -> (Vec<SpeakerTurn>, Vec<usize>) {
    let mut names: Vec<usize> = Vec::new();
    let turns = turns
        .into_iter()
        .filter(|t| t.1 > t.0)
        .map(|(s, e, c)| {
            let idx = names.iter().position(|&n| n == c).unwrap_or_else(|| {
                names.push(c);
                names.len() - 1
            });
            SpeakerTurn { start_s: s, end_s: e, speaker: speaker_label(idx) }
        })
        .collect();
    (turns, names)
}

/// `Speaker00`, `Speaker01`, …
fn speaker_label(i: usize) -> String {
    format!("Speaker{i:02}")
}

/// Each global speaker's voice: the normalised mean of its clean (training) embeddings, or of
/// all its embeddings when none is clean; all zeros for a speaker without any.
fn speaker_voices(
    windows: &[WindowOut],
    maps: &[[Option<usize>; LOCAL_SPEAKERS]],
    k: usize,
) -> Vec<Vec<f32>> {
    let mut clean = vec![vec![0f32; embedding::DIM]; k];
    let mut all = vec![vec![0f32; embedding::DIM]; k];
    for (w, map) in windows.iter().zip(maps) {
        for (unit, c) in w.units.iter().zip(map) {
            let (Some(u), Some(c)) = (unit, c) else { continue };
            let add = |t: &mut Vec<f32>| t.iter_mut().zip(&u.emb).for_each(|(s, x)| *s += x);
            add(&mut all[*c]);
            if u.trains {
                add(&mut clean[*c]);
            }
        }
    }
    clean
        .into_iter()
        .zip(all)
        .map(|(c, a)| {
            let mut v = if c.iter().any(|&x| x != 0.0) { c } else { a };
            cluster::normalize(&mut v);
            v
        })
        .collect()
}

impl Diarizer for PyannoteDiarizer {
    fn diarize(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Vec<SpeakerTurn>, StageError> {
        Ok(self.diarize_samples(audio, hints)?)
    }

    fn diarize_voices(&mut self, audio: &Audio, hints: SpeakerHints) -> Result<Diarization, StageError> {
        Ok(PyannoteDiarizer::diarize_voices(self, audio, hints)?)
    }

    fn name(&self) -> String {
        "pyannote-segmentation-3.0+campplus".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diarizers_of_the_same_files_share_their_models_while_alive() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let a = PyannoteDiarizer::load(&dir, 1).unwrap();
        let b = PyannoteDiarizer::load(&dir, 2).unwrap();
        assert!(Arc::ptr_eq(&a.models, &b.models));
        let weak = Arc::downgrade(&a.models);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the models are freed with the last diarizer");
    }

    /// A window whose local speakers 0 and 1 have these embeddings.
    fn window(a: [f32; 2], b: [f32; 2]) -> WindowOut {
        let unit = |e: [f32; 2]| Some(Unit { emb: e.to_vec(), trains: true });
        WindowOut { start: 0, masks: Vec::new(), units: [unit(a), unit(b), None] }
    }

    #[test]
    fn a_speaker_added_for_one_window_of_a_long_recording_is_folded() {
        // Two clustered voices (x and y axes), then two added: speaker 2 in one window (leaning
        // to y), speaker 3 in three.
        let windows = vec![
            window([1.0, 0.0], [0.6, 0.8]),
            window([1.0, 0.0], [0.0, -1.0]),
            window([0.0, 1.0], [0.0, -1.0]),
            window([1.0, 0.0], [0.0, -1.0]),
        ];
        let cents = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8], vec![0.0, -1.0]];
        let maps = vec![
            [Some(0), Some(2), None],
            [Some(0), Some(3), None],
            [Some(1), Some(3), None],
            [Some(0), Some(3), None],
        ];
        let (mut m, mut c) = (maps.clone(), cents.clone());
        fold_thin_speakers(&windows, &mut m, &mut c, 2, 3);
        assert_eq!(c, [vec![1.0, 0.0], vec![0.0, 1.0], vec![0.0, -1.0]]);
        let expected = [[Some(0), Some(1), None], [Some(0), Some(2), None], [Some(1), Some(2), None]];
        assert_eq!(m, [expected[0], expected[1], expected[2], expected[1]]);
        // A short recording (one unit is enough) keeps every speaker.
        let (mut m, mut c) = (maps.clone(), cents.clone());
        fold_thin_speakers(&windows, &mut m, &mut c, 2, 1);
        assert_eq!((m, c), (maps, cents));
    }

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
    fn long_recordings_get_sparser_windows_and_longer_embeddings() {
        let p = Params::default();
        let rate = crate::audio::SAMPLE_RATE as usize;
        let long = (p.long_from_s as usize) * rate;
        assert_eq!(p.density(long - 1), (p.step_frames, p.max_embed_frames));
        assert_eq!(p.density(long), (p.long_step_frames, p.long_max_embed_frames));
        assert!(p.long_step_frames > p.step_frames && p.long_max_embed_frames > p.max_embed_frames);
    }

    #[test]
    fn turns_are_labelled_by_first_appearance() {
        let (t, order) = label_turns(vec![(0.0, 1.0, 3), (0.5, 2.0, 0), (2.0, 3.0, 3), (3.0, 3.0, 1)]);
        assert_eq!(order, [3, 0]);
        let names: Vec<_> = t.iter().map(|t| t.speaker.as_str()).collect();
        assert_eq!(names, ["Speaker00", "Speaker01", "Speaker00"]);
    }
}
