//! Giving transcript segments and words the speaker of the turns they overlap most.

use std::collections::HashMap;

use crate::model::{Segment, SpeakerTurn};

/// The speaker with the largest total overlap with `[start, end]`; if none overlaps, the speaker
/// of the nearest turn. `None` only when there are no turns.
fn best_speaker(turns: &[SpeakerTurn], start: f64, end: f64) -> Option<&str> {
    let mut overlap: HashMap<&str, f64> = HashMap::new();
    for t in turns {
        let o = end.min(t.end_s) - start.max(t.start_s);
        if o > 0.0 {
            *overlap.entry(t.speaker.as_str()).or_default() += o;
        }
    }
    // Ties go to the speaker that appears first in `turns`, so the result is deterministic.
    let first_index = |s: &str| turns.iter().position(|t| t.speaker == s).unwrap_or(usize::MAX);
    if let Some((s, _)) =
        overlap.iter().max_by(|a, b| a.1.total_cmp(b.1).then_with(|| first_index(b.0).cmp(&first_index(a.0))))
    {
        return Some(s);
    }
    let mid = 0.5 * (start + end);
    turns
        .iter()
        .map(|t| {
            let gap = if mid < t.start_s {
                t.start_s - mid
            } else if mid > t.end_s {
                mid - t.end_s
            } else {
                0.0
            };
            (gap, t)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, t)| t.speaker.as_str())
}

/// The speaker of one word. Whisper's word timestamps are contiguous within a segment, so a word
/// ending a turn usually stretches over the pause into the next speaker's turn (its end is the
/// next word's start). Its first half is where it was spoken: that half decides, and the whole
/// word only when no turn overlaps that half.
fn word_speaker(turns: &[SpeakerTurn], start: f64, end: f64) -> Option<&str> {
    let head_end = start + 0.5 * (end - start).max(0.0);
    let head_hit = turns.iter().any(|t| head_end.min(t.end_s) > start.max(t.start_s));
    if head_hit && head_end > start {
        best_speaker(turns, start, head_end)
    } else {
        best_speaker(turns, start, end)
    }
}

/// Sets `speaker` on every segment and on each of its words: the turn speaker with the largest
/// overlap (for a word, with the first half of the word, see [`word_speaker`]), or the nearest
/// turn's speaker when nothing overlaps. Labels are the turns' own (`Speaker00`, … in order of
/// first appearance, as the diarizer emits them), so segments, words and the RTTM export agree.
/// With no turns, nothing is changed.
pub fn assign_speakers(segments: &mut [Segment], turns: &[SpeakerTurn]) {
    if turns.is_empty() {
        return;
    }
    for seg in segments.iter_mut() {
        seg.speaker = best_speaker(turns, seg.start_s, seg.end_s).map(str::to_string);
        for w in &mut seg.words {
            w.speaker = word_speaker(turns, w.start_s, w.end_s).map(str::to_string);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Word;

    fn turn(s: f64, e: f64, who: &str) -> SpeakerTurn {
        SpeakerTurn { start_s: s, end_s: e, speaker: who.into() }
    }

    fn seg(s: f64, e: f64, words: Vec<Word>) -> Segment {
        Segment { start_s: s, end_s: e, text: "x".into(), speaker: None, words }
    }

    fn word(s: f64, e: f64) -> Word {
        Word { start_s: s, end_s: e, text: "w".into(), probability: 1.0, speaker: None }
    }

    #[test]
    fn largest_overlap_wins_and_words_follow_their_own_overlap() {
        let turns =
            vec![turn(0.0, 4.0, "Speaker00"), turn(3.0, 10.0, "Speaker01"), turn(12.0, 13.0, "Speaker00")];
        let mut segs = vec![
            seg(0.5, 3.5, vec![word(0.5, 1.0), word(3.2, 3.5)]),
            seg(3.5, 9.0, vec![]),
            seg(10.5, 11.0, vec![]), // no overlap: nearest turn ends at 10.0 (0.75 away) vs 12.0
            seg(14.0, 15.0, vec![]),
        ];
        assign_speakers(&mut segs, &turns);
        let who: Vec<_> = segs.iter().map(|s| s.speaker.as_deref().unwrap()).collect();
        assert_eq!(who, ["Speaker00", "Speaker01", "Speaker01", "Speaker00"]);
        assert_eq!(segs[0].words[0].speaker.as_deref(), Some("Speaker00"));
        // 3.2–3.5 overlaps both turns equally: the first-listed speaker wins the tie.
        assert_eq!(segs[0].words[1].speaker.as_deref(), Some("Speaker00"));
    }

    #[test]
    fn last_word_of_a_turn_stays_with_its_speaker() {
        // Speaker00 talks until 5.0 s, Speaker01 from 5.3 s. Whisper gives contiguous word times
        // within one segment, so the last word of the first turn runs 4.6–5.8 s (0.4 s in
        // Speaker00's turn, 0.5 s in Speaker01's); the next words start where it ends.
        let turns = vec![turn(0.0, 5.0, "Speaker00"), turn(5.3, 9.0, "Speaker01")];
        let words = vec![word(3.9, 4.6), word(4.6, 5.8), word(5.8, 6.3), word(6.3, 7.0)];
        let mut segs = vec![seg(3.9, 7.0, words)];
        assign_speakers(&mut segs, &turns);
        let who: Vec<_> = segs[0].words.iter().map(|w| w.speaker.as_deref().unwrap()).collect();
        assert_eq!(who, ["Speaker00", "Speaker00", "Speaker01", "Speaker01"]);
        // The first word of a turn that starts a little early still goes to the new speaker.
        let mut segs = vec![seg(5.2, 6.0, vec![word(5.2, 5.9)])];
        assign_speakers(&mut segs, &turns);
        assert_eq!(segs[0].words[0].speaker.as_deref(), Some("Speaker01"));
        // A word whose first half is in a pause takes the turn its second half overlaps.
        let mut segs = vec![seg(5.0, 5.6, vec![word(5.02, 5.5)])];
        assign_speakers(&mut segs, &turns);
        assert_eq!(segs[0].words[0].speaker.as_deref(), Some("Speaker01"));
    }

    #[test]
    fn overlap_is_summed_over_turns_and_no_turns_leaves_segments_alone() {
        let turns =
            vec![turn(0.0, 1.0, "Speaker00"), turn(1.0, 2.5, "Speaker01"), turn(2.5, 3.5, "Speaker00")];
        let mut segs = vec![seg(0.0, 3.5, vec![])];
        assign_speakers(&mut segs, &turns);
        assert_eq!(segs[0].speaker.as_deref(), Some("Speaker00"));
        let mut segs = vec![seg(0.0, 1.0, vec![])];
        assign_speakers(&mut segs, &[]);
        assert_eq!(segs[0].speaker, None);
    }
}
