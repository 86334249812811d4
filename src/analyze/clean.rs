//! The deterministic clean transcript: `Speaker00: …` lines built from diarized segments.

use std::collections::HashMap;

use crate::model::Segment;

/// Filler words dropped from the clean transcript (compared case-insensitively, without
/// surrounding punctuation). Only sounds that are never real words in the languages we meet.
const FILLERS: &[&str] = &["um", "umm", "uh", "uhh", "uhm", "erm", "ehm", "äh", "ähm", "öhm", "hmm", "mhm"];

/// Builds the clean transcript: one `Label: text` line per speaker turn, consecutive segments of
/// one speaker merged, filler words removed, empty segments skipped.
///
/// Labels are the segments' own: `Speaker00`, `Speaker01`, … or a known person's name. Other
/// diarizers' machine labels (`SPEAKER_00`, `spk1`) are mapped to the `SpeakerNN` form in order
/// of first appearance. Segments without a speaker are `Speaker00` when nothing was diarized,
/// `Unknown` otherwise.
pub fn clean_transcript(segments: &[Segment]) -> String {
    let labels = speaker_labels(segments);
    let mut lines: Vec<(String, String)> = Vec::new();
    for seg in segments {
        let text = remove_fillers(&seg.text);
        if text.is_empty() {
            continue;
        }
        let label = labels(seg.speaker.as_deref());
        match lines.last_mut() {
            Some((last, body)) if *last == label => {
                body.push(' ');
                body.push_str(&text);
            }
            _ => lines.push((label, text)),
        }
    }
    lines.iter().map(|(label, text)| format!("{label}: {text}")).collect::<Vec<_>>().join("\n")
}

/// Returns the mapping from a segment's speaker to its clean-transcript label.
pub(crate) fn speaker_labels(segments: &[Segment]) -> impl Fn(Option<&str>) -> String {
    let any_labelled = segments.iter().any(|s| s.speaker.is_some());
    let canonical = segments.iter().filter_map(|s| s.speaker.as_deref()).all(|l| !is_machine_label(l));
    let mut map: HashMap<String, String> = HashMap::new();
    if !canonical {
        for name in segments.iter().filter_map(|s| s.speaker.as_deref()) {
            let next = format!("Speaker{:02}", map.len());
            map.entry(name.to_string()).or_insert(next);
        }
    }
    move |speaker| match speaker {
        None if any_labelled => "Unknown".to_string(),
        None => "Speaker00".to_string(),
        Some(s) if canonical => s.to_string(),
        Some(s) => map.get(s).cloned().unwrap_or_else(|| "Unknown".to_string()),
    }
}

/// Whether `label` is another tool's speaker id (`SPEAKER_00`, `spk1`, `S2`): letters, an
/// optional `_`, then digits, but not our own `SpeakerNN`.
fn is_machine_label(label: &str) -> bool {
    let digits = label.trim_end_matches(|c: char| c.is_ascii_digit());
    let stem = digits.strip_suffix('_').unwrap_or(digits);
    !is_canonical_label(label)
        && digits.len() < label.len()
        && !stem.is_empty()
        && stem.chars().all(|c| c.is_ascii_alphabetic())
}

/// Whether `label` reads `Speaker` followed by two or more digits.
pub(crate) fn is_canonical_label(label: &str) -> bool {
    label.strip_prefix("Speaker").is_some_and(|n| n.len() >= 2 && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_filler(word: &str) -> bool {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    !core.is_empty() && FILLERS.contains(&core.as_str())
}

/// Drops filler words; a sentence end they carried moves to the previous word, and a sentence
/// they started begins with a capital again.
fn remove_fillers(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut capitalise_next = false;
    for word in text.split_whitespace() {
        if is_filler(word) {
            let ends_sentence = word.ends_with(['.', '?', '!']);
            if ends_sentence && let Some(prev) = out.last_mut() {
                let end = word.chars().last().unwrap_or('.');
                let trimmed = prev.trim_end_matches([',', ';', ':']).to_string();
                *prev = format!("{trimmed}{end}");
            }
            let starts_sentence = out.last().is_none_or(|p| p.ends_with(['.', '?', '!']));
            if word.chars().next().is_some_and(char::is_uppercase) && starts_sentence {
                capitalise_next = true;
            }
            continue;
        }
        let mut w = word.to_string();
        if capitalise_next {
            let mut chars = w.chars();
            if let Some(first) = chars.next() {
                w = first.to_uppercase().chain(chars).collect();
            }
            capitalise_next = false;
        }
        out.push(w);
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(speaker: Option<&str>, text: &str) -> Segment {
        Segment {
            start_s: 0.0,
            end_s: 1.0,
            text: text.into(),
            speaker: speaker.map(String::from),
            words: vec![],
        }
    }

    #[test]
    fn merges_consecutive_turns_and_keeps_labels() {
        let segs = [
            seg(Some("Speaker00"), " Hello there."),
            seg(Some("Speaker00"), "How are you?"),
            seg(Some("Speaker01"), "Fine, thanks."),
            seg(Some("Speaker00"), "Good."),
        ];
        assert_eq!(
            clean_transcript(&segs),
            "Speaker00: Hello there. How are you?\nSpeaker01: Fine, thanks.\nSpeaker00: Good."
        );
    }

    #[test]
    fn removes_fillers() {
        let segs = [
            seg(Some("Speaker00"), "Um, so we, uh, start at nine."),
            seg(Some("Speaker01"), "Erm"),
            seg(Some("Speaker01"), "I think that works, uh."),
            seg(Some("Speaker00"), "Uhm. ähm Okay. Er kommt."),
        ];
        assert_eq!(
            clean_transcript(&segs),
            "Speaker00: So we, start at nine.\nSpeaker01: I think that works.\nSpeaker00: Okay. Er kommt."
        );
    }

    #[test]
    fn relabels_machine_labels_in_order_of_first_appearance_and_keeps_names() {
        let segs =
            [seg(Some("SPEAKER_1"), "first"), seg(Some("spk0"), "second"), seg(Some("SPEAKER_1"), "third")];
        assert_eq!(clean_transcript(&segs), "Speaker00: first\nSpeaker01: second\nSpeaker00: third");
        let named = [seg(Some("Alice"), "hello"), seg(Some("Speaker01"), "hi"), seg(Some("Bob Lee"), "bye")];
        assert_eq!(clean_transcript(&named), "Alice: hello\nSpeaker01: hi\nBob Lee: bye");
    }

    #[test]
    fn unlabelled_segments() {
        let segs = [seg(None, "one"), seg(None, "two")];
        assert_eq!(clean_transcript(&segs), "Speaker00: one two");
        let segs = [seg(Some("Speaker01"), "one"), seg(None, "two"), seg(Some("Speaker01"), "")];
        assert_eq!(clean_transcript(&segs), "Speaker01: one\nUnknown: two");
        assert_eq!(clean_transcript(&[]), "");
    }
}
