//! Who a keypoint is about. A small model writes "The speaker asked …" or "The speaker01 …" even
//! for a conversation of several people, and a reader cannot tell who. In a multi-party
//! transcript the speaker is named from the transcript itself: a label the model half-wrote
//! ("the speaker01") becomes the label, and a bare "the speaker" becomes the participant whose
//! own sentences hold most of the keypoint's words, or "one participant" when no one clearly does.
//! A transcript in which someone says "the speaker" (a loudspeaker, a talk's speaker) keeps its
//! keypoints' bare "the speaker" as it is: there it may mean what was said.

use std::collections::BTreeSet;

use super::facts::Facts;
use super::text::{content_words, labelled_sentences};

/// Share of a keypoint's words (those the transcript says) that one participant's own sentences
/// must hold, more than anyone else's, for the keypoint to be theirs.
const MIN_SHARE: f64 = 0.5;

/// What [`Attribution::name`] replaces.
const PHRASE: &str = "the speaker";

/// What a transcript tells about who said what, gathered once for all keypoints of a reply.
pub struct Attribution<'a> {
    facts: &'a Facts,
    /// Someone in the transcript says "the speaker": a keypoint's bare phrase stays.
    said: bool,
    /// Each participant's label with the content words of their own sentences.
    own: Vec<(&'a str, BTreeSet<String>)>,
}

impl<'a> Attribution<'a> {
    /// The attribution for a transcript (`clean`, with its `facts`); `None` with fewer than two
    /// participants, where there is no one to tell apart.
    pub fn new(facts: &'a Facts, clean: &str) -> Option<Self> {
        if !facts.is_multi_party() {
            return None;
        }
        let said = labelled_sentences(clean).any(|(_, s)| !phrases(&s.to_ascii_lowercase()).is_empty());
        let own = facts
            .participants()
            .into_iter()
            .map(|label| {
                let words = labelled_sentences(clean)
                    .filter(|(l, _)| *l == label)
                    .flat_map(|(_, s)| content_words(s))
                    .collect();
                (label, words)
            })
            .collect();
        Some(Self { facts, said, own })
    }

    /// `keypoint` with every "the speaker" and "the speakerNN" naming a participant (see the
    /// module documentation); `None` when it says neither.
    pub fn name(&self, keypoint: &str) -> Option<String> {
        // ASCII lower-casing keeps byte offsets, so matches index the keypoint itself.
        let lower = keypoint.to_ascii_lowercase();
        let mut out = String::new();
        let mut last = 0;
        let mut bare_owner: Option<Option<&str>> = None;
        for (i, digits) in phrases(&lower) {
            let end = i + PHRASE.len() + digits.len();
            let name = if digits.is_empty() {
                if self.said {
                    continue;
                }
                match *bare_owner.get_or_insert_with(|| self.owner(keypoint)) {
                    Some(label) => label.to_string(),
                    None if keypoint[i..].starts_with('T') => "One participant".to_string(),
                    None => "one participant".to_string(),
                }
            } else {
                let label = format!("Speaker{digits}");
                match self.facts.labels().into_iter().find(|l| *l == label) {
                    Some(l) => l.to_string(),
                    None => continue,
                }
            };
            out.push_str(&keypoint[last..i]);
            out.push_str(&name);
            last = end;
        }
        if last == 0 {
            return None;
        }
        out.push_str(&keypoint[last..]);
        Some(out)
    }

    /// The participant whose own sentences hold the largest share of the keypoint's words that
    /// the transcript says, when that share is at least [`MIN_SHARE`] and no one else's is as
    /// large.
    fn owner(&self, keypoint: &str) -> Option<&'a str> {
        let said: BTreeSet<String> = content_words(keypoint)
            .into_iter()
            .filter(|w| w != "speaker" && !self.facts.is_label(w) && self.facts.says(w))
            .collect();
        if said.is_empty() {
            return None;
        }
        let mut shares: Vec<(f64, &'a str)> = self
            .own
            .iter()
            .map(|(label, own)| (said.intersection(own).count() as f64 / said.len() as f64, *label))
            .collect();
        shares.sort_by(|a, b| b.0.total_cmp(&a.0));
        match shares.as_slice() {
            [(best, label), rest @ ..]
                if *best >= MIN_SHARE && rest.first().is_none_or(|(next, _)| next < best) =>
            {
                Some(label)
            }
            _ => None,
        }
    }
}

/// Where lower-cased `text` says "the speaker" (as whole words) or "the speakerNN": each byte
/// offset with the digits that follow (empty for the bare phrase).
fn phrases(text: &str) -> Vec<(usize, &str)> {
    text.match_indices(PHRASE)
        .filter(|&(i, _)| !text[..i].ends_with(char::is_alphanumeric))
        .filter_map(|(i, _)| {
            let after = &text[i + PHRASE.len()..];
            let digits = &after[..after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len())];
            // "the speakers", "the speakerphone" are other words.
            (!after[digits.len()..].starts_with(char::is_alphanumeric)).then_some((i, digits))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL: &str = "Speaker00: Dental practice Weber, good morning.\n\
        Speaker01: Good morning, I would like an appointment for a checkup on Friday at ten.\n\
        Speaker00: Friday at ten works. Please bring your new insurance card.\n\
        Speaker01: Thank you, I will bring the card.";

    /// `keypoint` named against `clean`; `None` also when `clean` has one participant.
    fn named_in(clean: &str, keypoint: &str) -> Option<String> {
        Attribution::new(&Facts::from_text(clean), clean)?.name(keypoint)
    }

    fn named(keypoint: &str) -> Option<String> {
        named_in(CALL, keypoint)
    }

    #[test]
    fn the_speaker_is_named_by_whose_words_the_keypoint_holds() {
        assert_eq!(
            named("The speaker asked for a checkup appointment on Friday.").as_deref(),
            Some("Speaker01 asked for a checkup appointment on Friday.")
        );
        assert_eq!(
            named("The caller was told by the speaker to bring the new insurance card.").as_deref(),
            Some("The caller was told by Speaker00 to bring the new insurance card.")
        );
        // A half-written label is the label.
        assert_eq!(
            named("The speaker00 answers for the dental practice.").as_deref(),
            Some("Speaker00 answers for the dental practice.")
        );
    }

    #[test]
    fn no_clear_owner_is_one_participant_and_other_phrases_stay() {
        // "good morning" is said by both: no one's more than the other's.
        assert_eq!(
            named("The speaker says good morning.").as_deref(),
            Some("One participant says good morning.")
        );
        assert_eq!(named("The speakers agree on Friday at ten."), None);
        assert_eq!(named("Speaker01 books Friday at ten."), None);
        // An unknown label is left alone.
        assert_eq!(named("The speaker07 books Friday."), None);
        // Someone says "the speaker" (here a loudspeaker): a keypoint's bare phrase stays, a
        // half-written label is still named.
        let room = format!("{CALL}\nSpeaker00: The speaker in the waiting room is broken.");
        assert_eq!(named_in(&room, "The speaker in the waiting room is broken."), None);
        assert_eq!(
            named_in(&room, "The speaker01 books Friday at ten.").as_deref(),
            Some("Speaker01 books Friday at ten.")
        );
        // One participant: nothing to tell apart.
        let solo = "Speaker00: Hi, this is Tom from the garage, your car is ready.";
        assert_eq!(named_in(solo, "The speaker says the car is ready."), None);
    }
}
