//! Action items the transcript states in so many words: when a model lists none, a speaker's
//! own commitment ("I will send you the written offer by Friday.") becomes one owned by that
//! speaker, and a plan of the group ("Let's move the release to Friday.") one without owner.
//! The last resort after the model, as [`super::quotes`] is for keypoints: the speaker's words
//! are kept as said, never rewritten.

use super::quotes::MAX_WORDS;
use super::text::{content_words, labelled_sentences};
use crate::model::ActionItem;

/// Openings of a commitment by the speaker, in lower case (curly apostrophes normalised).
const MINE: &[&str] = &["i'll ", "i will ", "i'm going to ", "i am going to ", "let me "];

/// Openings of a plan of the group: no one owns it.
const OURS: &[&str] = &["we'll ", "we will ", "we're going to ", "we are going to ", "we need to ", "let's "];

/// Words that may come before the opening without changing what is said ("Okay, so I'll …").
const LEAD: &[&str] =
    &["okay", "ok", "so", "and", "then", "well", "yes", "yeah", "sure", "right", "fine", "good", "great"];

/// Verbs after the opening that make talk, not a task ("I'll be honest", "let me think").
const TALK: &[&str] = &[
    "be", "say", "tell", "admit", "think", "see", "know", "guess", "ask", "start", "try", "just", "get",
    "have", "go",
];

/// A task names at least this many content words besides its opening ("I'll do it." does not).
const MIN_CONTENT_WORDS: usize = 3;

/// The commitments of a clean transcript (`Label: text` lines), in transcript order, at most
/// `max`, none said twice: statements (not questions) opening with a speaker's "I'll …",
/// "I will …", "I'm going to …", "Let me …" (owner: that speaker) or the group's "We'll …",
/// "We need to …", "Let's …" (no owner), after optional lead words ("Okay, so …").
pub fn commitments(clean: &str, max: usize) -> Vec<ActionItem> {
    let mut out: Vec<ActionItem> = Vec::new();
    for (label, sentence) in labelled_sentences(clean) {
        if out.len() >= max {
            break;
        }
        let Some((task, mine)) = task(sentence) else { continue };
        if !out.iter().any(|a| a.text.eq_ignore_ascii_case(task)) {
            out.push(ActionItem { owner: mine.then(|| label.to_string()), text: task.to_string() });
        }
    }
    out
}

/// The part of `sentence` from its commitment opening on, and whether the speaker owns it. The
/// opening may start the sentence or one of its clauses ("I have moved you to Thursday and I
/// will send a reminder the day before.").
fn task(sentence: &str) -> Option<(&str, bool)> {
    let sentence = sentence.trim();
    if sentence.ends_with('?') || sentence.split_whitespace().count() > MAX_WORDS {
        return None;
    }
    let mut starts: Vec<usize> = [", ", "; ", " and "]
        .iter()
        .flat_map(|sep| sentence.match_indices(sep).map(|(i, m)| i + m.len()))
        .collect();
    starts.push(0);
    starts.sort_unstable();
    starts.into_iter().find_map(|i| opening(without_lead(&sentence[i..])?))
}

/// `text` without its lead words ("Okay, so …"); `None` when nothing else is left.
fn without_lead(mut text: &str) -> Option<&str> {
    loop {
        text = text.trim_start();
        let word = text.split_whitespace().next()?;
        let bare = word.trim_end_matches([',', ';']).to_lowercase();
        if !LEAD.contains(&bare.as_str()) {
            return Some(text);
        }
        text = &text[word.len()..];
    }
}

/// `text` when it opens with a commitment that names a task, and whether the speaker owns it.
fn opening(text: &str) -> Option<(&str, bool)> {
    let lower = text.to_lowercase().replace('\u{2019}', "'");
    let (opening, mine) = MINE
        .iter()
        .map(|o| (o, true))
        .chain(OURS.iter().map(|o| (o, false)))
        .find(|(o, _)| lower.starts_with(**o))?;
    let after = &lower[opening.len()..];
    let verb = after.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    if TALK.contains(&verb) || content_words(after).len() < MIN_CONTENT_WORDS {
        return None;
    }
    Some((text, mine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(owner: Option<&str>, text: &str) -> ActionItem {
        ActionItem { owner: owner.map(str::to_string), text: text.to_string() }
    }

    #[test]
    fn a_speakers_commitment_is_theirs_and_a_plan_of_the_group_is_no_ones() {
        let clean = "Speaker00: That is fine. Okay, so I will send you the written offer by Friday.\n\
            Speaker01: Great. Let's meet again next Tuesday at ten.\n\
            Speaker00: I\u{2019}ll book the small meeting room for it.\n\
            Speaker01: I have moved you to Thursday and I will send a reminder text the day before.";
        assert_eq!(
            commitments(clean, 8),
            vec![
                item(Some("Speaker00"), "I will send you the written offer by Friday."),
                item(None, "Let's meet again next Tuesday at ten."),
                item(Some("Speaker00"), "I\u{2019}ll book the small meeting room for it."),
                item(Some("Speaker01"), "I will send a reminder text the day before."),
            ]
        );
    }

    #[test]
    fn talk_questions_and_empty_promises_are_not_tasks() {
        let clean = "Speaker00: I'll be honest, the first version was slow.\n\
            Speaker01: Let me think about that for a second.\n\
            Speaker00: Will you send me the numbers by Friday?\n\
            Speaker01: I'll do it.\n\
            Speaker00: We said we will look at the numbers.\n\
            Speaker01: Yeah, we need to talk.\n\
            Speaker00: The numbers are late, and let me know when they arrive.";
        assert_eq!(commitments(clean, 8), Vec::<ActionItem>::new());
    }

    /// Transcript text is input: odd whitespace before a lead word (an em space) must not cut a
    /// character in two.
    #[test]
    fn unusual_spaces_before_a_lead_word_do_not_panic() {
        let clean = "Speaker00: Thanks, \u{2003}ok I will send the report by Friday.";
        assert_eq!(commitments(clean, 8), vec![item(Some("Speaker00"), "I will send the report by Friday.")]);
    }

    #[test]
    fn a_named_speakers_task_is_owned_by_the_name_and_the_list_is_bounded() {
        let clean = "Maria: I'm going to look at the flaky checkout tests today.\n\
            Maria: I'm going to look at the flaky checkout tests today.\n\
            Ken: I will review the pricing change before Thursday's release.";
        assert_eq!(
            commitments(clean, 8),
            vec![
                item(Some("Maria"), "I'm going to look at the flaky checkout tests today."),
                item(Some("Ken"), "I will review the pricing change before Thursday's release."),
            ]
        );
        assert_eq!(commitments(clean, 1).len(), 1);
    }
}
