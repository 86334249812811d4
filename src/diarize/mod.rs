//! Speaker diarization.

use crate::model::{Segment, SpeakerTurn};

/// Gives each segment the speaker whose turns overlap it most; nearest turn as fallback.
pub fn assign_speakers(segments: &mut [Segment], turns: &[SpeakerTurn]) {
    if turns.is_empty() {
        return;
    }
    for seg in segments.iter_mut() {
        let mut best: Option<(&str, f64)> = None;
        for t in turns {
            let overlap = seg.end_s.min(t.end_s) - seg.start_s.max(t.start_s);
            let gap = (t.start_s - seg.end_s).max(seg.start_s - t.end_s).max(0.0);
            let score = if overlap > 0.0 { overlap } else { -gap };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((&t.speaker, score));
            }
        }
        seg.speaker = best.map(|(s, _)| s.to_string());
    }
}
