//! What the pipeline knows about a transcript before any model reads it: speakers, their talk
//! time and turns, the duration, and from that whether it is a multi-party conversation.

use std::collections::{BTreeMap, BTreeSet};

use super::clean::speaker_labels;
use super::text::{content_words, labelled_sentences};
use crate::model::Segment;

/// A speaker counts as a participant with at least this many words…
const PARTICIPANT_MIN_WORDS: usize = 5;
/// …and at least this share of all words (a few words mis-assigned by diarization do not make
/// a monologue a conversation).
const PARTICIPANT_MIN_SHARE: f64 = 0.05;

/// One speaker's part of the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerShare {
    /// `Speaker00`, … as in the clean transcript.
    pub label: String,
    pub words: usize,
    /// Turns (lines of the clean transcript).
    pub turns: usize,
    /// Seconds of speech, when segment times are known.
    pub seconds: Option<f64>,
}

/// Speakers (most talk first) and duration of one transcript or one part of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub speakers: Vec<SpeakerShare>,
    /// Length of the recording, when segment times are known.
    pub duration_s: Option<f64>,
    /// Every word of the transcript, lower-cased (to tell a name it contains).
    pub vocabulary: BTreeSet<String>,
    /// Sentences of the transcript with at least two content words: what could state a fact.
    pub statements: usize,
}

impl Facts {
    /// Facts of diarized segments (talk time from segment times).
    pub fn from_segments(segments: &[Segment], clean: &str) -> Self {
        let label = speaker_labels(segments);
        let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
        for s in segments.iter().filter(|s| !s.text.trim().is_empty()) {
            *seconds.entry(label(s.speaker.as_deref())).or_default() += (s.end_s - s.start_s).max(0.0);
        }
        let mut facts = Self::from_text(clean);
        for sp in &mut facts.speakers {
            sp.seconds = seconds.get(&sp.label).copied();
        }
        facts.sort();
        let start = segments.iter().map(|s| s.start_s).fold(f64::INFINITY, f64::min);
        let end = segments.iter().map(|s| s.end_s).fold(0.0, f64::max);
        facts.duration_s = (end > start).then_some(end - start);
        facts
    }

    /// Facts of a clean transcript (`Label: text` lines) alone; talk share by words.
    pub fn from_text(clean: &str) -> Self {
        let mut speakers: Vec<SpeakerShare> = Vec::new();
        let mut vocabulary = BTreeSet::new();
        for (label, text) in clean.lines().filter_map(|l| l.split_once(':')) {
            let label = label.trim();
            vocabulary.extend(
                text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase),
            );
            let words = text.split_whitespace().count();
            match speakers.iter_mut().find(|s| s.label == label) {
                Some(s) => {
                    s.words += words;
                    s.turns += 1;
                }
                None => speakers.push(SpeakerShare { label: label.into(), words, turns: 1, seconds: None }),
            }
        }
        let statements = labelled_sentences(clean).filter(|(_, s)| content_words(s).len() >= 2).count();
        let mut facts = Self { speakers, duration_s: None, vocabulary, statements };
        facts.sort();
        facts
    }

    fn sort(&mut self) {
        self.speakers.sort_by(|a, b| {
            let key = |s: &SpeakerShare| s.seconds.unwrap_or(s.words as f64);
            key(b).total_cmp(&key(a)).then_with(|| a.label.cmp(&b.label))
        });
    }

    fn total_words(&self) -> usize {
        self.speakers.iter().map(|s| s.words).sum()
    }

    /// Share (0–1) of talk time, by seconds when known, else by words.
    pub fn share(&self, s: &SpeakerShare) -> f64 {
        let total_s: f64 = self.speakers.iter().filter_map(|s| s.seconds).sum();
        match s.seconds {
            Some(sec) if total_s > 0.0 => sec / total_s,
            _ => s.words as f64 / self.total_words().max(1) as f64,
        }
    }

    /// Speakers with real turns: enough words, and enough of the conversation.
    pub fn participants(&self) -> Vec<&str> {
        let total = self.total_words().max(1) as f64;
        self.speakers
            .iter()
            .filter(|s| s.words >= PARTICIPANT_MIN_WORDS && s.words as f64 / total >= PARTICIPANT_MIN_SHARE)
            .map(|s| s.label.as_str())
            .collect()
    }

    /// Two or more participants: a conversation, never a monologue type.
    pub fn is_multi_party(&self) -> bool {
        self.participants().len() >= 2
    }

    /// Whether the transcript says the content word `w` (or its plural).
    pub fn says(&self, w: &str) -> bool {
        self.vocabulary.contains(w) || self.vocabulary.contains(&format!("{w}s"))
    }

    /// Whether the lower-cased word `w` is a participant's label ("speaker01", "alice").
    pub fn is_label(&self, w: &str) -> bool {
        self.speakers.iter().any(|s| s.label.to_lowercase() == w)
    }

    /// Every label in the transcript (valid action-item owners).
    pub fn labels(&self) -> Vec<&str> {
        let mut l: Vec<&str> = self.speakers.iter().map(|s| s.label.as_str()).collect();
        l.sort_unstable();
        l
    }

    /// The lines of the prompt that tell the model what the pipeline knows.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(d) = self.duration_s {
            let d = d.round() as u64;
            s.push_str(&format!("Recording length: {} min {} s.\n", d / 60, d % 60));
        }
        let list: Vec<String> = self
            .speakers
            .iter()
            .map(|sp| {
                let turns = if sp.turns == 1 { "1 turn".to_string() } else { format!("{} turns", sp.turns) };
                format!("{} {:.0} % ({turns})", sp.label, 100.0 * self.share(sp))
            })
            .collect();
        s.push_str(&format!("Speakers: {}; share of talk time: {}.\n", self.speakers.len(), list.join(", ")));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(sp: &str, start: f64, end: f64, text: &str) -> Segment {
        Segment { start_s: start, end_s: end, text: text.into(), speaker: Some(sp.into()), words: vec![] }
    }

    #[test]
    fn shares_turns_and_participants() {
        let segs = [
            seg("Speaker00", 0.0, 6.0, "We should move the release to Friday because of the login bug."),
            seg("Speaker01", 6.0, 8.0, "Friday works for me and for the marketing newsletter too."),
            seg("Speaker00", 8.0, 12.0, "Then Maria reviews the payment code tomorrow morning, agreed."),
        ];
        let clean = super::super::clean_transcript(&segs);
        let f = Facts::from_segments(&segs, &clean);
        assert_eq!(f.speakers[0].label, "Speaker00");
        assert_eq!((f.speakers[0].turns, f.speakers[0].seconds), (2, Some(10.0)));
        assert!((f.share(&f.speakers[1]) - 2.0 / 12.0).abs() < 1e-9);
        assert_eq!(f.participants(), vec!["Speaker00", "Speaker01"]);
        assert!(f.is_multi_party());
        let d = f.describe();
        assert!(d.contains("0 min 12 s") && d.contains("Speaker00 83 % (2 turns)"), "{d}");
        assert_eq!(f.statements, 3);
    }

    #[test]
    fn a_few_misassigned_words_do_not_make_a_conversation() {
        let text = "Speaker00: And so my fellow Americans, ask not what your country can do for you, ask what you\n\
                    Speaker01: can do for\nSpeaker00: your country.";
        let f = Facts::from_text(text);
        assert_eq!(f.speakers.len(), 2);
        assert_eq!(f.participants(), vec!["Speaker00"]);
        assert!(!f.is_multi_party());
    }
}
