//! Frame-level reconstruction: overlapping windows' local activity, mapped to global speakers,
//! is averaged on the global frame grid and turned into speaker turns. Streaming: frames are
//! finalised as soon as no later window can touch them, so memory is bounded by one window.

use std::collections::VecDeque;

use super::segmentation::{FRAME_CENTER, FRAME_STEP, FRAMES, LOCAL_SPEAKERS};
use crate::audio::SAMPLE_RATE;

#[derive(Clone)]
struct Acc {
    /// Sum over covering windows of the number of active local speakers.
    count: f32,
    /// Windows covering this frame.
    cover: u16,
    /// Per global speaker: sum over covering windows of its activity.
    score: Vec<f32>,
}

/// Accumulates windows in start order and emits turns `(start_s, end_s, speaker index)`.
pub struct Reconstructor {
    speakers: usize,
    /// Global index of `buf[0]`.
    base: usize,
    buf: VecDeque<Acc>,
    /// Open turn start frame per speaker.
    open: Vec<Option<usize>>,
    turns: Vec<(f64, f64, usize)>,
    /// Frames at or after this global index lie past the end of the audio.
    end_frame: usize,
}

fn frame_time(g: usize) -> f64 {
    (FRAME_CENTER as f64 + (g as f64 - 0.5) * FRAME_STEP as f64) / SAMPLE_RATE as f64
}

impl Reconstructor {
    /// For `speakers` global speakers on audio of `samples` samples.
    pub fn new(speakers: usize, samples: usize) -> Self {
        let end_frame = samples.saturating_sub(FRAME_CENTER).div_ceil(FRAME_STEP);
        Self {
            speakers,
            base: 0,
            buf: VecDeque::new(),
            open: vec![None; speakers],
            turns: Vec::new(),
            end_frame,
        }
    }

    /// Adds one window starting at global frame `start` with per-frame local masks and, per frame,
    /// the global speaker of each local speaker (`None`: ignored). Windows must come in
    /// increasing `start`.
    pub fn add_window(&mut self, start: usize, masks: &[u8], map: &[[Option<usize>; LOCAL_SPEAKERS]]) {
        while self.base < start {
            self.finalize_front();
        }
        let empty = Acc { count: 0.0, cover: 0, score: vec![0.0; self.speakers] };
        for (i, (&m, map)) in masks.iter().zip(map).enumerate().take(FRAMES) {
            let idx = start + i - self.base;
            while self.buf.len() <= idx {
                self.buf.push_back(empty.clone());
            }
            let acc = &mut self.buf[idx];
            acc.cover += 1;
            acc.count += m.count_ones() as f32;
            for (k, target) in map.iter().enumerate() {
                if let Some(c) = target
                    && m & (1 << k) != 0
                {
                    acc.score[*c] += 1.0;
                }
            }
        }
    }

    fn finalize_front(&mut self) {
        let g = self.base;
        let acc = self.buf.pop_front();
        self.base += 1;
        let mut active = vec![false; self.speakers];
        if let Some(acc) = acc
            && acc.cover > 0
            && g < self.end_frame
        {
            let count = (acc.count / acc.cover as f32).round() as usize;
            let mut order: Vec<usize> = (0..self.speakers).filter(|&c| acc.score[c] > 0.0).collect();
            order.sort_by(|&a, &b| acc.score[b].total_cmp(&acc.score[a]).then(a.cmp(&b)));
            for &c in order.iter().take(count) {
                active[c] = true;
            }
        }
        for (c, &on) in active.iter().enumerate() {
            match (on, self.open[c]) {
                (true, None) => self.open[c] = Some(g),
                (false, Some(s)) => {
                    self.turns.push((frame_time(s), frame_time(g), c));
                    self.open[c] = None;
                }
                _ => {}
            }
        }
    }

    /// Finalises every remaining frame and returns the turns sorted by start.
    pub fn finish(mut self) -> Vec<(f64, f64, usize)> {
        while !self.buf.is_empty() {
            self.finalize_front();
        }
        self.finalize_front(); // closes turns still open
        let end_s = self.end_frame as f64 * FRAME_STEP as f64 / SAMPLE_RATE as f64;
        let mut turns = self.turns;
        for t in &mut turns {
            t.0 = t.0.max(0.0);
            t.1 = t.1.min(end_s.max(t.0));
        }
        turns.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)));
        turns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_windows_average_and_map() {
        // Two windows 100 frames apart; local 0 → speaker 1 in both, local 1 → speaker 0 in the
        // second only, active over its first 50 frames (which the first window saw as silence).
        let mut r = Reconstructor::new(2, 16_000 * 20);
        let w1 = vec![0b001u8; FRAMES];
        let mut w2 = vec![0b001u8; FRAMES];
        w2[..50].iter_mut().for_each(|m| *m = 0b011);
        r.add_window(0, &w1, &vec![[Some(1), None, None]; FRAMES]);
        r.add_window(100, &w2, &vec![[Some(1), Some(0), None]; FRAMES]);
        let turns = r.finish();
        // Speaker 1 throughout; speaker 0 for frames 100..150 where average count is 1.5 → 2.
        assert_eq!(turns.len(), 2);
        let s1 = turns.iter().find(|t| t.2 == 1).unwrap();
        assert!(s1.0 < 0.03 && s1.1 > 11.0, "{s1:?}");
        let s0 = turns.iter().find(|t| t.2 == 0).unwrap();
        assert!((s0.0 - frame_time(100)).abs() < 1e-9 && (s0.1 - frame_time(150)).abs() < 1e-9, "{s0:?}");
    }
}
