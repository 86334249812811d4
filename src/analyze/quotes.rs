//! Statements of the transcript that can stand as keypoints: when a model gives fewer keypoints
//! than the rules ask for, the transcript's own most informative sentences fill in, quoted and
//! attributed (`Speaker01: "The total comes to 320 euros."`). A quote is attributable by
//! construction; the checks still refuse one that repeats the summary or a kept keypoint.

use std::collections::HashSet;

use super::text::{content_words, labelled_sentences};

/// A sentence needs at least this many content words to say something on its own ("Okay, go for
/// it." does not).
const MIN_CONTENT_WORDS: usize = 4;

/// Longer sentences are rambling turns, not statements a reader takes in at a glance (nor
/// tasks: [`super::commitments`] uses the same bound).
pub(super) const MAX_WORDS: usize = 30;

/// Words of talk, not of content ("Okay, well, I think we're ready"): they do not make a
/// sentence informative. Contraction tails ("re" of "we're") included.
const DISCOURSE: &[&str] = &[
    "okay", "ok", "well", "yeah", "yes", "right", "oh", "like", "know", "think", "mean", "just", "really",
    "actually", "hello", "hi", "bye", "thank", "thanks", "re", "ll", "ve", "m", "d", "t", "s",
];

/// The quotable statements of a clean transcript (`Label: text` lines), most informative first:
/// ranked by content words, a number or a name (a capitalised word inside the sentence) counting
/// twice; ties keep transcript order. Each comes once, as `Label: "sentence"`.
pub fn statements(clean: &str) -> Vec<String> {
    let mut ranked: Vec<(usize, usize, String)> = Vec::new();
    let mut seen = HashSet::new();
    for (label, sentence) in labelled_sentences(clean) {
        if sentence.split_whitespace().count() > MAX_WORDS {
            continue;
        }
        let content = content_words(sentence).iter().filter(|w| !DISCOURSE.contains(&w.as_str())).count();
        if content < MIN_CONTENT_WORDS {
            continue;
        }
        let quote = format!("{label}: \"{sentence}\"");
        if !seen.insert(quote.clone()) {
            continue;
        }
        let order = ranked.len();
        ranked.push((content + details(sentence), order, quote));
    }
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranked.into_iter().map(|(_, _, q)| q).collect()
}

/// Words of `sentence` that carry a detail: numbers, and capitalised words after the first.
fn details(sentence: &str) -> usize {
    sentence
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .enumerate()
        .filter(|(i, w)| {
            w.chars().any(|c| c.is_ascii_digit())
                || (*i > 0 && !is_i(w) && w.chars().next().is_some_and(char::is_uppercase))
        })
        .count()
}

/// "I" and its contractions ("I'm", "I’ll"), capitalised but no name.
fn is_i(word: &str) -> bool {
    word == "I" || word.starts_with("I'") || word.starts_with("I\u{2019}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOICEMAIL: &str = "Speaker00: Hi Mr. Jensen, this is Tom from the Central Garage on Mill Street. \
        Your car is ready. We replaced the front brake pads and changed the oil as we discussed on Monday.\n\
        Speaker01: Okay, go for it.\n\
        Speaker00: The total comes to 320 euros. Thanks, bye!";

    #[test]
    fn informative_sentences_come_first_and_fillers_not_at_all() {
        let s = statements(VOICEMAIL);
        assert_eq!(
            s,
            [
                "Speaker00: \"Hi Mr. Jensen, this is Tom from the Central Garage on Mill Street.\"",
                "Speaker00: \"We replaced the front brake pads and changed the oil as we discussed on Monday.\"",
                "Speaker00: \"The total comes to 320 euros.\"",
            ]
        );
    }

    #[test]
    fn a_statement_repeated_by_its_speaker_is_quoted_once() {
        let s = statements(
            "Speaker00: The budget is 25 euros per unit.\nSpeaker00: The budget is 25 euros per unit.",
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn talk_without_content_is_not_quoted() {
        let s = statements(
            "Speaker00: Okay, well, I think we're ready, right?\nSpeaker01: I'm sure the budget is 25 euros.",
        );
        assert_eq!(s, ["Speaker01: \"I'm sure the budget is 25 euros.\""]);
        assert_eq!(details("I'm sure I'll pay Anna 25 euros."), 2);
    }

    #[test]
    fn long_rambling_turns_are_not_quoted() {
        let long = "word ".repeat(MAX_WORDS + 1);
        assert!(statements(&format!("Speaker00: {long}")).is_empty());
    }
}
