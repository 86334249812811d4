//! Deterministic checks of a model's analysis against what the pipeline knows, the short
//! correction prompt for a reply that breaks them, the request for missing keypoints, the
//! repair applied when the one retry does not fix it, and transcript quotes and commitments as
//! the last source of keypoints and action items: nothing that breaks the rules is stored.
//!
//! Rules (issue 13): `conversation_type` fits the number of participants; the summary has 2–5
//! sentences and, for several participants, names at least two of them and never says "the
//! speaker"; 3–7 keypoints (at least one, and no more required than the transcript has
//! statements), each attributable to the transcript (most of its words occur there),
//! none a copy of a summary sentence (content-word overlap < 60 %), no two alike; 1–5 short
//! topics; action-item owners are speakers of the transcript, names it contains, or null.

use std::collections::BTreeSet;
use std::fmt;

use super::attribute::Attribution;
use super::facts::Facts;
use super::schema::{
    ACTION_ITEMS_MAX, KEYPOINTS_MAX, KEYPOINTS_MIN, MONOLOGUE_TYPES, MULTI_PARTY_TYPES, MergeReply, Reply,
    SUMMARY_SENTENCES_MAX, SUMMARY_SENTENCES_MIN, TOPIC_MAX_WORDS, TOPICS_MAX, TOPICS_MIN, allowed_types,
    constraints, keypoints_min,
};
use super::text::{STOPWORDS, content_words, overlap, sentences};
use super::{commitments, quotes};
use crate::model::ActionItem;

/// A keypoint sharing this share of its content words with a summary sentence (or another
/// keypoint) repeats it.
pub const MAX_OVERLAP: f64 = 0.6;

/// A keypoint is attributable to the transcript when at least this share of its content words
/// occur in it (participant labels count as occurring): a detail the model made up ("the
/// password is password456") falls below.
pub const MIN_KEYPOINT_GROUNDING: f64 = 0.7;

/// A keypoint sharing a run of this many words (labels aside) with the prompt's own lines
/// repeats the prompt, not the conversation.
const ECHO_WORDS: usize = 5;

/// Whether `summary` calls someone "the speaker" (singular).
fn says_the_speaker(summary: &str) -> bool {
    let lower = summary.to_lowercase();
    lower.match_indices("the speaker").any(|(i, m)| {
        let before_ok = i == 0 || !lower[..i].ends_with(char::is_alphanumeric);
        let after = lower[i + m.len()..].chars().next();
        before_ok && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

/// Participant labels the summary names.
fn named<'a>(summary: &str, facts: &'a Facts) -> Vec<&'a str> {
    facts.labels().into_iter().filter(|l| summary.contains(l)).collect()
}

/// Whether `summary` shares a content word with the transcript (always, when the facts carry no
/// vocabulary).
fn grounded(summary: &str, facts: &Facts) -> bool {
    facts.vocabulary.is_empty() || content_words(summary).iter().any(|w| facts.says(w))
}

/// Words a keypoint uses to report what was said rather than to say it ("Speaker01 proposed
/// …", "the team discussed …"): neither grounded nor ungrounded.
const REPORTING_WORDS: &[&str] = &[
    "speaker",
    "participant",
    "person",
    "people",
    "team",
    "conversation",
    "meeting",
    "call",
    "discussion",
    "say",
    "said",
    "mention",
    "mentioned",
    "mentioning",
    "discus",
    "discussed",
    "discussing",
    "propose",
    "proposed",
    "proposing",
    "proposal",
    "suggest",
    "suggested",
    "agree",
    "agreed",
    "agreeing",
    "ask",
    "asked",
    "asking",
    "explain",
    "explained",
    "decide",
    "decided",
    "decision",
    "raise",
    "raised",
    "note",
    "noted",
    "state",
    "stated",
    "want",
    "wanted",
    "plan",
    "planned",
    "talk",
    "talked",
    "question",
    "point",
];

/// Share of `keypoint`'s content words that occur in the transcript (reporting words it does not
/// contain aside; 1 when the facts carry no vocabulary).
fn grounding(keypoint: &str, facts: &Facts) -> f64 {
    if facts.vocabulary.is_empty() {
        return 1.0;
    }
    let said = |w: &String| facts.says(w) || facts.is_label(w);
    let mut words = content_words(keypoint);
    words.retain(|w| said(w) || !REPORTING_WORDS.contains(&w.as_str()));
    if words.is_empty() {
        return 1.0;
    }
    let found = words.iter().filter(|w| said(w)).count();
    found as f64 / words.len() as f64
}

/// Whether `keypoint` is attributable to the transcript (see [`MIN_KEYPOINT_GROUNDING`]).
fn keypoint_grounded(keypoint: &str, facts: &Facts) -> bool {
    grounding(keypoint, facts) >= MIN_KEYPOINT_GROUNDING
}

/// How many participants a multi-party summary must name.
fn names_needed(facts: &Facts) -> usize {
    if facts.is_multi_party() { 2 } else { 0 }
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    TypeForbidden {
        ty: String,
        multi_party: bool,
    },
    SummarySentences(usize),
    SummarySaysTheSpeaker,
    SummaryNamesTooFew {
        named: usize,
        needed: usize,
    },
    /// The summary shares no content word with the transcript (a reply about the rules, or in
    /// another language).
    SummaryUngrounded,
    KeypointCount {
        n: usize,
        min: usize,
    },
    KeypointCopiesSummary {
        index: usize,
        overlap: f64,
    },
    DuplicateKeypoint {
        index: usize,
        of: usize,
    },
    /// Too few of the keypoint's words occur in the transcript.
    KeypointUngrounded {
        index: usize,
        share: f64,
    },
    /// The keypoint repeats the prompt's own lines (see [`echoes_prompt`]).
    KeypointEchoesPrompt(usize),
    TopicCount(usize),
    TopicTooLong(usize),
    ActionItemOwner {
        index: usize,
        owner: String,
    },
    ActionItemCount(usize),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TypeForbidden { ty, multi_party: true } => write!(
                f,
                "conversation_type \"{ty}\" is for one person talking, but several people take turns here"
            ),
            Problem::TypeForbidden { ty, multi_party: false } => {
                write!(f, "conversation_type \"{ty}\" needs several people, but only one person talks here")
            }
            Problem::SummarySentences(n) => write!(
                f,
                "the summary has {n} sentences; write {SUMMARY_SENTENCES_MIN} to {SUMMARY_SENTENCES_MAX}"
            ),
            Problem::SummarySaysTheSpeaker => {
                write!(f, "the summary says \"the speaker\"; name each participant by label instead")
            }
            Problem::SummaryNamesTooFew { named, needed } => write!(
                f,
                "the summary names {named} participant(s); name at least {needed} and say what each raised, proposed or decided"
            ),
            Problem::SummaryUngrounded => write!(
                f,
                "the summary uses none of the transcript's words; summarise what is said, in its language"
            ),
            Problem::KeypointCount { n, min } => {
                write!(f, "there are {n} keypoints; give {min} to {KEYPOINTS_MAX}")
            }
            Problem::KeypointCopiesSummary { index, overlap } => write!(
                f,
                "keypoint {} repeats a summary sentence ({:.0} % the same words); give a different fact instead",
                index + 1,
                overlap * 100.0
            ),
            Problem::DuplicateKeypoint { index, of } => {
                write!(f, "keypoint {} says the same as keypoint {}", index + 1, of + 1)
            }
            Problem::KeypointUngrounded { index, share } => write!(
                f,
                "keypoint {} is not in the transcript (only {:.0} % of its words occur there); state only what is said",
                index + 1,
                share * 100.0
            ),
            Problem::KeypointEchoesPrompt(index) => write!(
                f,
                "keypoint {} repeats these instructions, not the conversation; give a fact from the transcript",
                index + 1
            ),
            Problem::TopicCount(n) => write!(f, "there are {n} topics; give {TOPICS_MIN} to {TOPICS_MAX}"),
            Problem::TopicTooLong(i) => {
                write!(f, "topic {} is longer than {TOPIC_MAX_WORDS} words", i + 1)
            }
            Problem::ActionItemOwner { index, owner } => write!(
                f,
                "action item {} has owner \"{owner}\", who is not in the transcript; use a speaker label or null",
                index + 1
            ),
            Problem::ActionItemCount(n) => {
                write!(f, "there are {n} action items; give at most {ACTION_ITEMS_MAX}")
            }
        }
    }
}

/// Whether an action-item owner is a speaker label of the transcript or a name it contains.
fn owner_known(owner: &str, facts: &Facts) -> bool {
    let owner = owner.trim();
    facts.labels().contains(&owner)
        || (!owner.starts_with("Speaker")
            && !owner.is_empty()
            && owner.split_whitespace().all(|w| facts.vocabulary.contains(&w.to_lowercase())))
}

/// Every rule `reply` breaks.
pub fn check(reply: &Reply, facts: &Facts) -> Vec<Problem> {
    let mut out = Vec::new();
    let multi_party = facts.is_multi_party();
    if !allowed_types(multi_party).contains(&reply.conversation_type.as_str()) {
        out.push(Problem::TypeForbidden { ty: reply.conversation_type.clone(), multi_party });
    }
    out.extend(check_summary(&reply.summary, facts));
    out.extend(check_keypoints(&reply.keypoints, &reply.summary, keypoints_min(facts)));
    for (index, k) in reply.keypoints.iter().enumerate() {
        let share = grounding(k, facts);
        if share < MIN_KEYPOINT_GROUNDING {
            out.push(Problem::KeypointUngrounded { index, share });
        }
        if echoes_prompt(k, facts) {
            out.push(Problem::KeypointEchoesPrompt(index));
        }
    }
    let n = reply.topics.len();
    if !(TOPICS_MIN..=TOPICS_MAX).contains(&n) {
        out.push(Problem::TopicCount(n));
    }
    for (i, t) in reply.topics.iter().enumerate() {
        if t.split_whitespace().count() > TOPIC_MAX_WORDS {
            out.push(Problem::TopicTooLong(i));
        }
    }
    if reply.action_items.len() > ACTION_ITEMS_MAX {
        out.push(Problem::ActionItemCount(reply.action_items.len()));
    }
    for (i, a) in reply.action_items.iter().enumerate() {
        if let Some(o) = a.owner.as_deref().filter(|o| !owner_known(o, facts)) {
            out.push(Problem::ActionItemOwner { index: i, owner: o.to_string() });
        }
    }
    out
}

/// The summary's problems: sentence count, "the speaker", participants named.
pub fn check_summary(summary: &str, facts: &Facts) -> Vec<Problem> {
    let mut out = Vec::new();
    let n = sentences(summary).len();
    if !(SUMMARY_SENTENCES_MIN..=SUMMARY_SENTENCES_MAX).contains(&n) {
        out.push(Problem::SummarySentences(n));
    }
    if !grounded(summary, facts) {
        out.push(Problem::SummaryUngrounded);
    }
    let needed = names_needed(facts);
    if needed > 0 {
        if says_the_speaker(summary) {
            out.push(Problem::SummarySaysTheSpeaker);
        }
        let named = named(summary, facts).len();
        if named < needed {
            out.push(Problem::SummaryNamesTooFew { named, needed });
        }
    }
    out
}

/// The keypoints' problems: count, copies of summary sentences, duplicates.
pub fn check_keypoints(keypoints: &[String], summary: &str, min: usize) -> Vec<Problem> {
    let mut out = Vec::new();
    if !(min..=KEYPOINTS_MAX).contains(&keypoints.len()) {
        out.push(Problem::KeypointCount { n: keypoints.len(), min });
    }
    let sents = sentences(summary);
    for (i, k) in keypoints.iter().enumerate() {
        let worst = sents.iter().map(|s| overlap(k, s)).fold(0.0, f64::max);
        if worst >= MAX_OVERLAP {
            out.push(Problem::KeypointCopiesSummary { index: i, overlap: worst });
        }
        if let Some(of) = (0..i).find(|&j| alike(&keypoints[j], k)) {
            out.push(Problem::DuplicateKeypoint { index: i, of });
        }
    }
    out
}

/// Two items say the same: equal ignoring case, or one shares ≥ `MAX_OVERLAP` of its content
/// words with the other.
fn alike(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim()) || overlap(a, b) >= MAX_OVERLAP || overlap(b, a) >= MAX_OVERLAP
}

/// The message asking the model to fix `problems` in the reply it just gave, in a conversation
/// in `language` (ISO 639-1; the fields stay in it, and nothing about the rules goes into them).
pub fn correction_prompt(problems: &[Problem], language: &str) -> String {
    let mut s = String::from("Your reply breaks these rules:\n");
    for p in problems {
        s.push_str(&format!("- {p}\n"));
    }
    s.push_str(
        "Write the whole JSON object again with these fixed and everything else kept. The fields \
         describe the conversation, never these rules",
    );
    match language.trim() {
        "" => s.push('.'),
        lang => s.push_str(&format!("; write them in the conversation's language ({lang}).")),
    }
    s
}

/// The monologue or multi-party type closest to `ty` that the facts allow.
fn allowed_type(ty: &str, facts: &Facts) -> String {
    let multi = facts.is_multi_party();
    if allowed_types(multi).contains(&ty) {
        return ty.to_string();
    }
    let mapped = if multi {
        match ty {
            "voicemail" | "dictation" => "phone_call",
            _ if facts.participants().len() >= 3 => "meeting",
            _ => "discussion",
        }
    } else {
        match ty {
            "phone_call" | "customer_support" => "voicemail",
            _ => "monologue",
        }
    };
    debug_assert!(MULTI_PARTY_TYPES.contains(&mapped) || MONOLOGUE_TYPES.contains(&mapped));
    mapped.to_string()
}

/// Most participants [`participants_sentence`] names; the rest are counted.
const PARTICIPANTS_NAMED_MAX: usize = 4;

/// A sentence naming the participants and their share of the talk, from the facts alone: the
/// [`PARTICIPANTS_NAMED_MAX`] who talk most, then how many more.
fn participants_sentence(facts: &Facts) -> String {
    let participants = facts.participants();
    let mut parts: Vec<String> = facts
        .speakers
        .iter()
        .filter(|s| participants.contains(&s.label.as_str()))
        .enumerate()
        .map(|(i, s)| {
            let unit = if i == 0 { " of the talk" } else { "" };
            format!("{} ({:.0} %{unit})", s.label, 100.0 * facts.share(s))
        })
        .collect();
    let more = parts.len().saturating_sub(PARTICIPANTS_NAMED_MAX);
    parts.truncate(PARTICIPANTS_NAMED_MAX);
    match (parts.len(), more) {
        (0, _) => String::new(),
        (1, _) => format!("{} speaks throughout.", parts.remove(0)),
        (_, 0) => {
            let last = parts.pop().unwrap_or_default();
            format!("{} and {last} take part.", parts.join(", "))
        }
        (_, 1) => format!("{} and one more participant take part.", parts.join(", ")),
        (_, n) => format!("{} and {n} more participants take part.", parts.join(", ")),
    }
}

/// Replaces every "the speaker" (not "the speakers") by "one participant".
fn replace_the_speaker(summary: &str) -> String {
    let mut out = String::new();
    let mut rest = summary;
    while let Some(i) = rest.to_ascii_lowercase().find("the speaker") {
        let (head, tail) = rest.split_at(i);
        let after = &tail["the speaker".len()..];
        let whole_word = after.chars().next().is_none_or(|c| !c.is_alphanumeric())
            && !head.ends_with(char::is_alphanumeric);
        out.push_str(head);
        if whole_word {
            out.push_str(if tail.starts_with('T') { "One participant" } else { "one participant" });
        } else {
            out.push_str(&tail[.."the speaker".len()]);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `topic` cut to [`TOPIC_MAX_WORDS`] words, without trailing punctuation or function words
/// ("sync for version 2.4," → "sync").
fn short_topic(topic: &str) -> String {
    let mut words: Vec<&str> = topic.split_whitespace().take(TOPIC_MAX_WORDS).collect();
    while let Some(last) = words.pop() {
        let last = last.trim_end_matches(|c: char| c.is_ascii_punctuation());
        if !last.is_empty() && !STOPWORDS.contains(&last.to_lowercase().as_str()) {
            words.push(last);
            break;
        }
    }
    words.join(" ")
}

/// Makes `reply` obey the rules without asking the model again: allowed type, summary cut to
/// five sentences and completed from the facts, offending keypoints dropped (and refilled from
/// `spare` ones that pass), topics and action items cleaned.
pub fn repair(mut reply: Reply, facts: &Facts, spare: &[String]) -> Reply {
    reply.conversation_type = allowed_type(&reply.conversation_type, facts);

    let mut summary =
        if facts.is_multi_party() { replace_the_speaker(&reply.summary) } else { reply.summary };
    let sents = sentences(&summary);
    if sents.len() > SUMMARY_SENTENCES_MAX {
        summary = sents[..SUMMARY_SENTENCES_MAX].join(" ");
    }
    let short = sentences(&summary).len() < SUMMARY_SENTENCES_MIN;
    if short || named(&summary, facts).len() < names_needed(facts) {
        let extra = participants_sentence(facts);
        if !extra.is_empty() && sentences(&summary).len() < SUMMARY_SENTENCES_MAX {
            summary = format!("{} {extra}", summary.trim()).trim().to_string();
        } else if !extra.is_empty() {
            let mut s = sentences(&summary)[..SUMMARY_SENTENCES_MAX - 1].to_vec();
            s.push(&extra);
            summary = s.join(" ");
        }
    }
    let candidates: Vec<&String> = reply.keypoints.iter().chain(spare).collect();
    reply.summary = make_room(&summary, &candidates, facts);

    let sents = sentences(&reply.summary);
    let mut kept = passing(&reply.summary, &candidates, facts);
    if kept.is_empty() {
        // No keypoint passes (a one-sentence recording restates its summary): keep the best
        // rather than store none: attributable before not, then the one adding the most.
        let rank = |k: &String| {
            let copies = sents.iter().map(|s| overlap(k, s)).fold(0.0, f64::max);
            (!keypoint_grounded(k, facts), copies)
        };
        kept.extend(
            candidates
                .iter()
                .filter(|k| !k.trim().is_empty())
                .min_by(|a, b| {
                    let (ra, rb) = (rank(a), rank(b));
                    ra.0.cmp(&rb.0).then(ra.1.total_cmp(&rb.1))
                })
                .map(|k| (*k).clone()),
        );
    }
    reply.keypoints = kept;

    let mut topics: Vec<String> = Vec::new();
    for t in &reply.topics {
        let t = short_topic(t);
        if !t.is_empty() && !topics.iter().any(|x| x.eq_ignore_ascii_case(&t)) && topics.len() < TOPICS_MAX {
            topics.push(t);
        }
    }
    reply.topics = topics;

    let mut items: Vec<ActionItem> = Vec::new();
    for a in &reply.action_items {
        let owner = a.owner.clone().filter(|o| owner_known(o, facts));
        let text = a.text.trim().to_string();
        if !text.is_empty() && !items.iter().any(|x| alike(&x.text, &text)) && items.len() < ACTION_ITEMS_MAX
        {
            items.push(ActionItem { owner, text });
        }
    }
    reply.action_items = items;
    reply
}

/// Which rules a review enforces by asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every rule.
    All,
    /// Type and summary; the lists' faults are repaired without a whole new reply: keypoints
    /// that break a rule are dropped and the missing ones asked for alone (see
    /// [`top_up_request`]), which costs a local model a fraction of a full reply; long topics
    /// are cut, unknown action-item owners become null. A correction round, when there is
    /// one, still names every fault.
    AllButLists,
    /// Type and summary only: the merge step's lists are combined without the model, so
    /// asking it again cannot change them.
    TypeAndSummary,
}

impl Problem {
    fn is_summary_or_type(&self) -> bool {
        matches!(
            self,
            Problem::TypeForbidden { .. }
                | Problem::SummarySentences(_)
                | Problem::SummarySaysTheSpeaker
                | Problem::SummaryNamesTooFew { .. }
                | Problem::SummaryUngrounded
        )
    }

    /// Whether this problem alone makes a review ask the model again.
    fn asks_again(&self, scope: Scope) -> bool {
        scope == Scope::All || self.is_summary_or_type()
    }

    /// Whether the correction prompt mentions this problem (when the model is asked again at
    /// all): every problem of a reply written again whole, only type and summary in a merge.
    fn mentioned(&self, scope: Scope) -> bool {
        scope != Scope::TypeAndSummary || self.is_summary_or_type()
    }
}

/// One analysis from the analyses of consecutive parts and the merge step's type, summary and
/// language: keypoints taken in turn from every part (first of each part, then second, …),
/// topics ranked by how many parts name them, action items in order; duplicates dropped. The
/// lists are not cut here: the review of the last merge drops what breaks a rule before it
/// cuts them to their limits, so a dropped keypoint gives way to the next in turn.
pub fn combine(parts: &[Reply], merged: MergeReply) -> Reply {
    let mut keypoints: Vec<String> = Vec::new();
    let rounds = parts.iter().map(|p| p.keypoints.len()).max().unwrap_or(0);
    for k in (0..rounds).flat_map(|i| parts.iter().filter_map(move |p| p.keypoints.get(i))) {
        if !keypoints.iter().any(|x| alike(x, k)) {
            keypoints.push(k.clone());
        }
    }
    let mut topics: Vec<(String, usize)> = Vec::new();
    for t in parts.iter().flat_map(|p| &p.topics) {
        match topics.iter_mut().find(|(x, _)| x.eq_ignore_ascii_case(t)) {
            Some((_, n)) => *n += 1,
            None => topics.push((t.clone(), 1)),
        }
    }
    topics.sort_by_key(|t| std::cmp::Reverse(t.1)); // stable: first mention first among equals
    let mut action_items: Vec<ActionItem> = Vec::new();
    for a in parts.iter().flat_map(|p| &p.action_items) {
        if !action_items.iter().any(|x| alike(&x.text, &a.text)) {
            action_items.push(a.clone());
        }
    }
    Reply {
        conversation_type: merged.conversation_type,
        summary: merged.summary,
        keypoints,
        language: merged.language,
        topics: topics.into_iter().map(|(t, _)| t).collect(),
        action_items,
        clean_transcript: None,
    }
}

/// The part of a reply a merge reads, shortened: the summary's first two sentences and the first
/// [`KEYPOINTS_MIN`] keypoints (topics and action items, which the merge prompt does not show,
/// are kept whole).
pub fn gist(reply: &Reply) -> Reply {
    let summary = sentences(&reply.summary).into_iter().take(2).collect::<Vec<_>>().join(" ");
    Reply {
        summary,
        keypoints: reply.keypoints.iter().take(KEYPOINTS_MIN).cloned().collect(),
        ..reply.clone()
    }
}

/// What happened to a reply on its way to the store.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub reply: Reply,
    /// Problems of the first reply.
    pub first_problems: Vec<Problem>,
    /// Whether the model was asked again.
    pub retried: bool,
    /// Whether the stored reply was repaired deterministically.
    pub repaired: bool,
    /// Keypoints added by a top-up request ([`add_keypoints`]); `None` when none was made.
    pub topped_up: Option<usize>,
    /// Keypoints quoted from the transcript ([`add_quotes`]).
    pub quoted: usize,
    /// Action items taken from the transcript's commitments ([`add_commitments`]).
    pub committed: usize,
}

impl Reviewed {
    /// A reviewed reply before any keypoints are topped up or quoted.
    fn new(reply: Reply, first_problems: Vec<Problem>, retried: bool, repaired: bool) -> Self {
        Self { reply, first_problems, retried, repaired, topped_up: None, quoted: 0, committed: 0 }
    }
}

/// Checks `first`; if it breaks a rule that `scope` asks again for, asks once more through
/// `retry` with the correction prompt, and if that fails too (or the retry errs) repairs the
/// reply with fewer problems (keypoints of the other reply may fill in for dropped ones). Other
/// rules are repaired without asking.
pub fn review(
    first: Reply,
    facts: &Facts,
    scope: Scope,
    retry: impl FnOnce(&str) -> Result<Reply, String>,
) -> Reviewed {
    let asking =
        |r: &Reply| -> Vec<Problem> { check(r, facts).into_iter().filter(|p| p.asks_again(scope)).collect() };
    let first_all = check(&first, facts);
    // The problems this scope answers for (a merge: only type and summary, what its model writes).
    let first_problems: Vec<Problem> = first_all.iter().filter(|p| p.mentioned(scope)).cloned().collect();
    if !first_problems.iter().any(|p| p.asks_again(scope)) {
        let repaired = !first_all.is_empty();
        let reply = if repaired { repair(first, facts, &[]) } else { first };
        return Reviewed::new(reply, first_problems, false, repaired);
    }
    tracing::info!(problems = ?first_problems, "analysis breaks the rules; asking once more");
    let asked = first_problems.iter().filter(|p| p.asks_again(scope)).count();
    let (best, spare) = match retry(&correction_prompt(&first_problems, &first.language)) {
        Ok(second) => {
            let second_problems = asking(&second);
            if second_problems.is_empty() {
                let repaired = !check(&second, facts).is_empty();
                let reply = if repaired { repair(second, facts, &first.keypoints) } else { second };
                return Reviewed::new(reply, first_problems, true, repaired);
            }
            tracing::info!(problems = ?second_problems, "retry still breaks the rules; repairing");
            // A summary about something else is the worst break: the other reply wins then.
            let weight = |ps: &[Problem], n: usize| (ps.contains(&Problem::SummaryUngrounded), n);
            if weight(&second_problems, second_problems.len()) <= weight(&first_problems, asked) {
                (second, first.keypoints)
            } else {
                (first, second.keypoints)
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "retry failed; repairing the first reply");
            (first, Vec::new())
        }
    };
    Reviewed::new(repair(best, facts, &spare), first_problems, true, true)
}

/// The distinct `candidates` that pass the rules against `summary`, in order, at most
/// [`KEYPOINTS_MAX`].
fn passing(summary: &str, candidates: &[&String], facts: &Facts) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for k in candidates {
        if passes(k, summary, facts) && !kept.iter().any(|x| alike(x, k)) && kept.len() < KEYPOINTS_MAX {
            kept.push(k.trim().to_string());
        }
    }
    kept
}

/// The keypoints of `reply` that pass against its own summary (see [`passing`]).
fn passing_keypoints(reply: &Reply, facts: &Facts) -> Vec<String> {
    passing(&reply.summary, &reply.keypoints.iter().collect::<Vec<_>>(), facts)
}

/// Gives keypoints room in the summary. A small model writes its summary from its keypoints, so
/// each fact ends up in both and every keypoint "copies" a summary sentence. The summary is the
/// overview and a keypoint the detail: while fewer than [`keypoints_min`] `candidates` pass, the
/// summary sentence whose removal lets the most of them pass is dropped, as long as the summary
/// names as many participants as it must (a dropped sentence's "who said what" lives on in the
/// keypoint that repeated it). A summary of [`SUMMARY_SENTENCES_MIN`] sentences keeps its length:
/// in a multi-party recording the sentence gives way to the participants sentence instead, once
/// (who took part and how much is news there; of one speaker it says nothing).
fn make_room(summary: &str, candidates: &[&String], facts: &Facts) -> String {
    let mut summary = summary.to_string();
    let needed = names_needed(facts).min(named(&summary, facts).len());
    let participants = if facts.is_multi_party() { participants_sentence(facts) } else { String::new() };
    loop {
        let now = passing(&summary, candidates, facts).len();
        let sents = sentences(&summary);
        // At its minimum length a sentence is replaced, not dropped; below it nothing changes.
        let short = sents.len() == SUMMARY_SENTENCES_MIN;
        if now >= keypoints_min(facts)
            || sents.len() < SUMMARY_SENTENCES_MIN
            || (short && (participants.is_empty() || summary.contains(&participants)))
        {
            return summary;
        }
        let best = (0..sents.len())
            .map(|i| {
                let mut rest: Vec<&str> =
                    sents.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, s)| *s).collect();
                if short {
                    rest.push(&participants);
                }
                rest.join(" ")
            })
            .filter(|rest| named(rest, facts).len() >= needed && grounded(rest, facts))
            .map(|rest| (passing(&rest, candidates, facts).len(), rest))
            .filter(|(n, _)| *n > now)
            .max_by_key(|(n, _)| *n);
        match best {
            Some((_, rest)) => summary = rest,
            None => return summary,
        }
    }
}

/// A request for the keypoints a reviewed reply still lacks.
#[derive(Debug, Clone, PartialEq)]
pub struct TopUp {
    /// The message to the model (after its first reply, the lists, in the same conversation).
    pub prompt: String,
    /// Fewest and most new keypoints to ask for (a few more than missing, as some may repeat).
    pub min: usize,
    pub max: usize,
}

/// Whether a keypoint passes the rules on its own: not empty, no copy of a summary sentence,
/// attributable to the transcript, no echo of the prompt.
fn passes(keypoint: &str, summary: &str, facts: &Facts) -> bool {
    !keypoint.trim().is_empty()
        && sentences(summary).iter().all(|s| overlap(keypoint, s) < MAX_OVERLAP)
        && keypoint_grounded(keypoint, facts)
        && !echoes_prompt(keypoint, facts)
}

/// Whether `keypoint` repeats the prompt rather than the conversation: it starts with the
/// prompt's `Transcript:` heading, or shares [`ECHO_WORDS`] words in a row (participant labels
/// aside) with what the prompt says about the speakers. A small model does both on long
/// transcripts, and the words of such lines are mostly labels and reporting words, so the
/// grounding rule lets them through.
fn echoes_prompt(keypoint: &str, facts: &Facts) -> bool {
    if keypoint.trim_start().to_lowercase().starts_with("transcript:") {
        return true;
    }
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .filter(|w| !facts.is_label(w))
            .collect()
    };
    let prompt = words(&constraints(facts));
    let runs: BTreeSet<&[String]> = prompt.windows(ECHO_WORDS).collect();
    words(keypoint).windows(ECHO_WORDS).any(|run| runs.contains(run))
}

/// The request for more keypoints when `reply` has fewer than [`keypoints_min`] that pass the
/// rules (a kept copy of the summary does not count); `None` when it has enough. It lists the
/// kept keypoints but not the summary (shown its summary, a small model offers its sentences
/// again); offered keypoints that repeat the summary are refused by [`add_keypoints`].
pub fn top_up_request(reply: &Reply, facts: &Facts, language: &str) -> Option<TopUp> {
    let good = passing_keypoints(reply, facts);
    let wanted = keypoints_min(facts);
    if good.len() >= wanted {
        return None;
    }
    let missing = wanted - good.len();
    let max = (KEYPOINTS_MAX - good.len()).min(missing + 2);
    let min = (missing + 1).min(max);
    let mut prompt = String::new();
    if !good.is_empty() {
        prompt.push_str("Keypoints kept so far:\n");
        for k in &good {
            prompt.push_str(&format!("- {k}\n"));
        }
    }
    prompt.push_str(&format!(
        "Give {min} to {max} more keypoints as a JSON array of strings: concrete facts, decisions, \
         numbers, names or open questions that the transcript states and that the keypoints kept \
         so far do not give. Use the transcript's own words; do not comment on how people speak."
    ));
    match language.trim() {
        "" => {}
        lang => prompt.push_str(&format!(" Write them in the conversation's language ({lang}).")),
    }
    Some(TopUp { prompt, min, max })
}

/// Adds the `more` keypoints that pass the rules (no copy of a summary sentence, attributable
/// to the transcript, not alike a kept one) to the reviewed reply, up to [`KEYPOINTS_MAX`]; a
/// summary sentence they repeat may give way as in the repair ([`make_room`]), and a kept copy
/// of the summary (the repair's last resort) gives way once a real keypoint exists.
pub fn add_keypoints(reviewed: &mut Reviewed, facts: &Facts, more: &[String]) {
    reviewed.topped_up = Some(extend_keypoints(reviewed, facts, more));
}

/// When fewer than [`keypoints_min`] keypoints pass, quotes the transcript's most informative
/// statements ([`quotes::statements`] of `clean`) that pass the rules, until enough do: the
/// last resort after the model's own keypoints and its top-up, for either backend.
pub fn add_quotes(reviewed: &mut Reviewed, facts: &Facts, clean: &str) {
    let have = passing_keypoints(&reviewed.reply, facts).len();
    let wanted = keypoints_min(facts);
    if have >= wanted {
        return;
    }
    let statements = quotes::statements(clean);
    let candidates: Vec<&String> = reviewed.reply.keypoints.iter().chain(&statements).collect();
    // The passing keypoints come first, then the passing quotes: keep those up to the minimum.
    let mut kept = passing(&reviewed.reply.summary, &candidates, facts);
    kept.truncate(wanted);
    let picked = kept.split_off(have);
    if !picked.is_empty() {
        reviewed.quoted = extend_keypoints(reviewed, facts, &picked);
    }
}

/// When the reply lists no action items, the transcript's own commitments stand in
/// ([`commitments::commitments`] of `clean`: "I will send the offer by Friday." owned by its
/// speaker, "Let's …" by no one); a list the model gave is left as it is.
fn add_commitments(reviewed: &mut Reviewed, clean: &str) {
    if reviewed.reply.action_items.is_empty() {
        reviewed.reply.action_items = commitments::commitments(clean, ACTION_ITEMS_MAX);
        reviewed.committed = reviewed.reply.action_items.len();
    }
}

/// In a multi-party recording, keypoints about "the speaker" name who from the transcript
/// ([`Attribution`]), where the named keypoint still passes the rules and is
/// like no other (a label can make it repeat a summary sentence); otherwise they stay.
fn name_speakers(reply: &mut Reply, facts: &Facts, clean: &str) {
    let Some(attribution) = Attribution::new(facts, clean) else { return };
    for i in 0..reply.keypoints.len() {
        let Some(named) = attribution.name(&reply.keypoints[i]) else { continue };
        let like_another = reply.keypoints.iter().enumerate().any(|(j, k)| j != i && alike(k, &named));
        if passes(&named, &reply.summary, facts) && !like_another {
            reply.keypoints[i] = named;
        }
    }
}

/// The transcript's own words as the last source of the lists, after the model and its top-up,
/// for either backend: quotes for missing keypoints ([`add_quotes`]), commitments for missing
/// action items ([`add_commitments`]), and who "the speaker" of a keypoint is
/// ([`name_speakers`]).
pub fn fill_from_transcript(reviewed: &mut Reviewed, facts: &Facts, clean: &str) {
    add_quotes(reviewed, facts, clean);
    add_commitments(reviewed, clean);
    name_speakers(&mut reviewed.reply, facts, clean);
}

/// One part of a long transcript made to obey the rules without asking the model again (the
/// merge reads only its gist): repaired, then quoted from `clean`, the part's own text, when
/// fewer than [`keypoints_min`] keypoints pass, so that every part brings facts of its own to
/// the merge; "the speaker" of its keypoints named ([`name_speakers`]).
pub fn settle_part(reply: Reply, facts: &Facts, clean: &str) -> Reply {
    let mut reviewed = Reviewed::new(repair(reply, facts, &[]), Vec::new(), false, true);
    add_quotes(&mut reviewed, facts, clean);
    name_speakers(&mut reviewed.reply, facts, clean);
    reviewed.reply
}

/// Adds the `more` keypoints that pass (see [`add_keypoints`]); returns how many passing
/// keypoints were gained.
fn extend_keypoints(reviewed: &mut Reviewed, facts: &Facts, more: &[String]) -> usize {
    let reply = &mut reviewed.reply;
    let before = passing_keypoints(reply, facts).len();
    let candidates: Vec<&String> = reply.keypoints.iter().chain(more).collect();
    let summary = make_room(&reply.summary, &candidates, facts);
    let kept = passing(&summary, &candidates, facts);
    let gained = kept.len().saturating_sub(before);
    if !kept.is_empty() {
        reviewed.repaired |= summary != reply.summary;
        reply.summary = summary;
        reply.keypoints = kept;
    }
    gained
}

#[cfg(test)]
mod tests;
