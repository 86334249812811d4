//! What the models are asked for and how their replies are checked: prompts, the Gemini
//! `responseSchema`, the llama.cpp grammar and reply validation.

use serde::Deserialize;
use serde_json::{Value, json};

use super::facts::Facts;
use crate::model::{ActionItem, Analysis};

/// Types for two or more people taking turns.
pub const MULTI_PARTY_TYPES: &[&str] = &[
    "meeting",
    "interview",
    "phone_call",
    "debate",
    "discussion",
    "casual_conversation",
    "customer_support",
];

/// Types for one person talking.
pub const MONOLOGUE_TYPES: &[&str] =
    &["speech", "lecture", "presentation", "monologue", "voicemail", "dictation"];

/// Types that fit either.
pub const EITHER_TYPES: &[&str] = &["podcast", "other"];

/// Every value `conversation_type` takes: the three lists above, in order.
pub const CONVERSATION_TYPES: &[&str] = &ALL_TYPES;

const ALL_TYPES: [&str; MULTI_PARTY_TYPES.len() + MONOLOGUE_TYPES.len() + EITHER_TYPES.len()] =
    concat_types([MULTI_PARTY_TYPES, MONOLOGUE_TYPES, EITHER_TYPES]);

/// The lists one after the other, at compile time.
const fn concat_types<const N: usize>(lists: [&[&'static str]; 3]) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut l) = (0, 0);
    while l < lists.len() {
        let mut j = 0;
        while j < lists[l].len() {
            out[i] = lists[l][j];
            i += 1;
            j += 1;
        }
        l += 1;
    }
    assert!(i == N, "the type lists do not fill the array");
    out
}

/// The types a transcript with (`multi_party`) or without several participants may get.
pub fn allowed_types(multi_party: bool) -> Vec<&'static str> {
    let own = if multi_party { MULTI_PARTY_TYPES } else { MONOLOGUE_TYPES };
    own.iter().chain(EITHER_TYPES).copied().collect()
}

/// Keypoints a reply carries.
pub const KEYPOINTS_MIN: usize = 3;
pub const KEYPOINTS_MAX: usize = 7;
/// Sentences of a summary.
pub const SUMMARY_SENTENCES_MIN: usize = 2;
pub const SUMMARY_SENTENCES_MAX: usize = 5;
/// Topics and their length in words.
pub const TOPICS_MIN: usize = 1;
pub const TOPICS_MAX: usize = 5;
pub const TOPIC_MAX_WORDS: usize = 6;

/// The fewest keypoints the transcript of `facts` must give: [`KEYPOINTS_MIN`], or as many as
/// it has statements when that is fewer (at least one). One sentence does not hold three
/// distinct facts; asked for three anyway, a model repeats or invents, and asking again for the
/// missing ones only adds more of that.
pub fn keypoints_min(facts: &Facts) -> usize {
    facts.statements.clamp(1, KEYPOINTS_MIN)
}

/// Most action items.
pub const ACTION_ITEMS_MAX: usize = 8;

/// Longest summary the local grammar lets a model write (a looping model is cut off here).
pub const SUMMARY_MAX_CHARS: usize = 900;

/// Longest keypoint or action item the local grammar allows.
pub const KEYPOINT_MAX_CHARS: usize = 200;

/// A model's analysis, checked against the schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub conversation_type: String,
    pub summary: String,
    pub keypoints: Vec<String>,
    pub language: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub action_items: Vec<ActionItem>,
    /// Only Gemini is asked for this.
    #[serde(default)]
    pub clean_transcript: Option<String>,
}

impl Reply {
    /// The analysis to store, with `clean_transcript` as its transcript.
    pub fn into_analysis(self, clean_transcript: String) -> Analysis {
        Analysis {
            conversation_type: Some(self.conversation_type),
            summary: Some(self.summary),
            keypoints: Some(self.keypoints),
            action_items: Some(self.action_items),
            topics: Some(self.topics),
            language: Some(self.language),
            clean_transcript: Some(clean_transcript),
        }
    }
}

/// The merge step's reply: the lists of the parts are combined without the model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeReply {
    pub conversation_type: String,
    pub summary: String,
    pub language: String,
}

fn conversation_type(raw: &str) -> Result<String, String> {
    let t = raw.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    if CONVERSATION_TYPES.contains(&t.as_str()) {
        Ok(t)
    } else {
        Err(format!("reply has unknown conversation_type {t:?}"))
    }
}

/// Accepts `en-US` or `EN`, returns `en`.
fn language_code(raw: &str) -> Result<String, String> {
    let lang = raw.trim().to_ascii_lowercase();
    let code = lang.split(['-', '_']).next().unwrap_or_default();
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("reply language {raw:?} is not an ISO 639-1 code"));
    }
    Ok(code.to_string())
}

fn trimmed(list: &[String]) -> Vec<String> {
    list.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect()
}

/// Parses and validates a model's JSON text. `with_transcript` requires `clean_transcript`.
pub fn parse_reply(text: &str, with_transcript: bool) -> Result<Reply, String> {
    let mut r: Reply =
        serde_json::from_str(text.trim()).map_err(|e| format!("reply does not match the schema: {e}"))?;
    r.conversation_type = conversation_type(&r.conversation_type)?;
    r.summary = r.summary.trim().to_string();
    if r.summary.is_empty() {
        return Err("reply has an empty summary".into());
    }
    r.keypoints = trimmed(&r.keypoints);
    if r.keypoints.len() > 3 * KEYPOINTS_MAX {
        return Err(format!("reply has {} keypoints", r.keypoints.len()));
    }
    r.topics = trimmed(&r.topics);
    for a in &mut r.action_items {
        a.text = a.text.trim().to_string();
        a.owner =
            a.owner.as_deref().map(str::trim).filter(|o| !o.is_empty() && *o != "null").map(String::from);
    }
    r.action_items.retain(|a| !a.text.is_empty());
    r.language = language_code(&r.language)?;
    if with_transcript && r.clean_transcript.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err("reply has no clean_transcript".into());
    }
    Ok(r)
}

/// Parses and validates the merge step's JSON text.
pub fn parse_merge_reply(text: &str) -> Result<MergeReply, String> {
    let mut r: MergeReply =
        serde_json::from_str(text.trim()).map_err(|e| format!("reply does not match the schema: {e}"))?;
    r.conversation_type = conversation_type(&r.conversation_type)?;
    r.summary = r.summary.trim().to_string();
    if r.summary.is_empty() {
        return Err("reply has an empty summary".into());
    }
    r.language = language_code(&r.language)?;
    Ok(r)
}

/// System instruction shared by both backends. `with_transcript` adds the Gemini-only field.
pub fn system_prompt(with_transcript: bool) -> String {
    let mut s = format!(
        "You analyse transcripts of recorded conversations. Each transcript line is \
         `SpeakerNN: what that speaker said`, or the speaker's name instead of `SpeakerNN` when \
         the speaker is known (then call them by that name). Before the transcript you are told how long the \
         recording is and how much each speaker talks. Reply with one JSON object with these fields:\n\
         - conversation_type: one of the types the message allows for this recording.\n\
         - topics: {TOPICS_MIN} to {TOPICS_MAX} short noun phrases (at most {TOPIC_MAX_WORDS} words) naming what is talked about.\n\
         - keypoints: {KEYPOINTS_MIN} to {KEYPOINTS_MAX} distinct items, each one concrete fact, decision or open \
         question from the transcript, with its names, numbers and dates. A keypoint adds a detail \
         the summary does not give; never repeat a summary sentence or another keypoint.\n\
         - action_items: tasks someone agreed or was asked to do, each {{\"owner\": the label \
         (Speaker01) or name of who does it, or null if unclear, \"text\": the task}}; an empty \
         list if there are none.\n\
         - summary: {SUMMARY_SENTENCES_MIN} to {SUMMARY_SENTENCES_MAX} sentences about the participants: name them \
         by label (Speaker00, Speaker01, …) and say who raised, proposed or decided what. When \
         several people talk, never write \"the speaker\".\n\
         - language: the ISO 639-1 code of the language spoken (for example en, de, fr, es).\n\
         Write topics, keypoints, action items and summary in the language of the conversation.\n"
    );
    if with_transcript {
        s.push_str(
            "- clean_transcript: the transcript with obvious recognition errors, stutters and \
             filler words fixed, one line per turn, each line starting with exactly the speaker \
             label given in the input (never rename, merge or invent speakers).\n",
        );
    }
    s.push_str("Use only what the transcript says; do not invent names or facts.");
    s
}

/// What the prompt says about the speakers and the types allowed.
pub(super) fn constraints(facts: &Facts) -> String {
    let mut s = facts.describe();
    let participants = facts.participants();
    if facts.is_multi_party() {
        s.push_str(&format!(
            "{} people take part ({}): conversation_type is one of {}. The summary names who raised, \
             proposed or decided what.\n",
            participants.len(),
            participants.join(", "),
            allowed_types(true).join(", ")
        ));
    } else {
        s.push_str(&format!(
            "One person talks{}: conversation_type is one of {}.\n",
            participants.first().map(|p| format!(" ({p})")).unwrap_or_default(),
            allowed_types(false).join(", ")
        ));
    }
    let min = keypoints_min(facts);
    if min < KEYPOINTS_MIN {
        s.push_str(&format!(
            "The transcript is short: give {min} to {KEYPOINTS_MAX} keypoints, no more than the distinct facts it states.\n"
        ));
    }
    s
}

/// User message for one transcript (or one part of a long one).
pub fn transcript_prompt(
    facts: &Facts,
    transcript: &str,
    hint_language: Option<&str>,
    part: Option<(usize, usize)>,
) -> String {
    let mut s = String::new();
    if let Some((i, n)) = part {
        s.push_str(&format!("This is part {i} of {n} of a longer recording; analyse this part only.\n"));
    }
    s.push_str(&constraints(facts));
    if let Some(lang) = hint_language {
        s.push_str(&format!(
            "The conversation is in {} (`{lang}`): write summary, keypoints, topics and action items in {0}.\n",
            language_name(lang)
        ));
    }
    s.push_str("Transcript:\n");
    s.push_str(transcript);
    s
}

/// English name of an ISO 639-1 code as whisper knows it ("de" → "German"); the code itself
/// when unknown.
fn language_name(code: &str) -> String {
    let name = crate::asr::language_name(code).unwrap_or(code);
    let mut chars = name.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// User message that merges the analyses of consecutive parts (the reduce step). `facts` are
/// those of the whole recording.
pub fn merge_prompt(facts: &Facts, parts: &[Reply]) -> String {
    let mut s = String::from(
        "Below are analyses of consecutive parts of one recording, in order. Merge them into one \
         analysis of the whole recording: reply with a JSON object with only conversation_type, \
         summary (covering every part, naming the participants and who raised, proposed or \
         decided what) and language.\n",
    );
    s.push_str(&constraints(facts));
    for (i, p) in parts.iter().enumerate() {
        s.push_str(&format!(
            "\nPart {} ({}, language {}):\nSummary: {}\nKeypoints:\n",
            i + 1,
            p.conversation_type,
            p.language,
            p.summary
        ));
        for k in &p.keypoints {
            s.push_str(&format!("- {k}\n"));
        }
    }
    s
}

/// Gemini `responseSchema` (OpenAPI subset, upper-case type names) for this transcript: the
/// type enum holds only the types its speakers allow.
pub fn gemini_response_schema(facts: &Facts) -> Value {
    let order = [
        "conversation_type",
        "topics",
        "keypoints",
        "action_items",
        "summary",
        "language",
        "clean_transcript",
    ];
    json!({
        "type": "OBJECT",
        "properties": {
            "conversation_type": {"type": "STRING", "enum": allowed_types(facts.is_multi_party())},
            "topics": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": TOPICS_MIN, "maxItems": TOPICS_MAX},
            "keypoints": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": keypoints_min(facts), "maxItems": KEYPOINTS_MAX},
            "action_items": {"type": "ARRAY", "maxItems": ACTION_ITEMS_MAX, "items": {
                "type": "OBJECT",
                "properties": {
                    "owner": {"type": "STRING", "nullable": true, "description": "speaker label or name, null if unclear"},
                    "text": {"type": "STRING"}
                },
                "required": ["owner", "text"],
                "propertyOrdering": ["owner", "text"]
            }},
            "summary": {"type": "STRING"},
            "language": {"type": "STRING", "description": "ISO 639-1 code"},
            "clean_transcript": {"type": "STRING"}
        },
        "required": order,
        "propertyOrdering": order
    })
}

fn quoted(items: &[&str]) -> String {
    items.iter().map(|t| format!("\"\\\"{t}\\\"\"")).collect::<Vec<_>>().join(" | ")
}

/// GBNF rules for JSON string characters and optional whitespace, shared by every grammar.
const STRING_RULES: &str = r#"char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
ws ::= [ \n]{0,3}
"#;

/// GBNF rule for one keypoint string.
fn point_rule() -> String {
    format!("point ::= \"\\\"\" char{{8,{KEYPOINT_MAX_CHARS}}} \"\\\"\"\n")
}

/// GBNF rules shared by the reply and merge grammars.
fn common_rules(facts: &Facts) -> String {
    let multi = facts.is_multi_party();
    // At least two sentences (a full stop, a space, then a capital or digit); a multi-party
    // summary starts with a participant's label: it is about people.
    let half = SUMMARY_MAX_CHARS / 2;
    let body = format!("char{{10,{half}}} \". \" [A-Z0-9] char{{8,{half}}}");
    let summary = if multi {
        let labels = facts.participants().iter().map(|l| format!("\"{l}\"")).collect::<Vec<_>>().join(" | ");
        format!("\"\\\"\" ({labels}) \" \" {body} \"\\\"\"")
    } else {
        format!("\"\\\"\" {body} \"\\\"\"")
    };
    format!(
        r#"ctype ::= {types}
lang ::= "\"" [a-z] [a-z] "\""
summary ::= {summary}
{STRING_RULES}"#,
        types = quoted(&allowed_types(multi)),
    )
}

/// llama.cpp GBNF grammar for the local reply: the fields in a fixed order (topics, keypoints
/// and action items before the summary that sums them up), only the types this transcript's
/// speakers allow, [`keypoints_min`] to 7 keypoints, owners among its labels or null, bounded
/// string lengths.
pub fn local_grammar(facts: &Facts) -> String {
    reply_grammar(facts, true)
}

/// The grammar of [`local_grammar`] without the summary: the first of two calls, the summary
/// asked for next on its own (see [`summary_prompt`]).
pub fn lists_grammar(facts: &Facts) -> String {
    reply_grammar(facts, false)
}

fn reply_grammar(facts: &Facts, with_summary: bool) -> String {
    let owners = quoted(&facts.labels());
    let more_kp = KEYPOINTS_MAX - 1;
    let min_kp = keypoints_min(facts) - 1;
    let more_topics = TOPICS_MAX - 1;
    let more_items = ACTION_ITEMS_MAX - 1;
    let summary = if with_summary { r#" "," ws "\"summary\":" ws summary"# } else { "" };
    format!(
        r#"root ::= "{{" ws "\"conversation_type\":" ws ctype "," ws "\"topics\":" ws "[" ws topic ("," ws topic){{0,{more_topics}}} ws "]" "," ws "\"keypoints\":" ws "[" ws point ("," ws point){{{min_kp},{more_kp}}} ws "]" "," ws "\"action_items\":" ws "[" ws (item ("," ws item){{0,{more_items}}})? ws "]"{summary} "," ws "\"language\":" ws lang ws "}}"
topic ::= "\"" char{{2,60}} "\""
{point}item ::= "{{" ws "\"owner\":" ws owner "," ws "\"text\":" ws itemtext ws "}}"
owner ::= "null" | {owners}
itemtext ::= "\"" char{{3,{KEYPOINT_MAX_CHARS}}} "\""
{common}"#,
        point = point_rule(),
        common = common_rules(facts)
    )
}

/// Grammar of the summary asked for after the lists: `{"summary": …}`.
pub fn summary_grammar(facts: &Facts) -> String {
    format!(
        r#"root ::= "{{" ws "\"summary\":" ws summary ws "}}"
{common}"#,
        common = common_rules(facts)
    )
}

/// The message asking for the summary once the model has written type, topics, keypoints and
/// action items: the keypoints hold the details, the summary says who did what. A small model
/// asked for everything at once writes its summary from its keypoints, fact by fact.
pub fn summary_prompt(facts: &Facts) -> String {
    let who = if facts.is_multi_party() {
        format!(
            "the participants ({}): who raised, proposed, asked or decided what",
            facts.participants().join(", ")
        )
    } else {
        "what the recording is and what it asks or tells the listener".to_string()
    };
    format!(
        "Now write the summary: {SUMMARY_SENTENCES_MIN} to {SUMMARY_SENTENCES_MAX} short sentences \
         about {who}, in general words. Leave numbers, times, prices and other details to your \
         keypoints: do not repeat a keypoint. Reply as {{\"summary\": \"…\"}}."
    )
}

/// The summary of a summary reply (`{"summary": …}`), trimmed, not empty.
pub fn parse_summary(text: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct SummaryReply {
        summary: String,
    }
    let r: SummaryReply = serde_json::from_str(text.trim())
        .map_err(|e| format!("summary reply does not match the schema: {e}"))?;
    match r.summary.trim() {
        "" => Err("reply has an empty summary".into()),
        s => Ok(s.to_string()),
    }
}

/// The whole reply from the lists reply and the summary reply (see [`lists_grammar`]).
pub fn join_summary(lists: &str, summary: &str) -> Result<Reply, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(lists.trim()).map_err(|e| format!("reply does not match the schema: {e}"))?;
    let obj = v.as_object_mut().ok_or("reply is not a JSON object")?;
    obj.insert("summary".into(), parse_summary(summary)?.into());
    parse_reply(&v.to_string(), false)
}

/// Grammar of a top-up reply: a JSON array of `min` to `max` keypoints.
pub fn keypoints_grammar(min: usize, max: usize) -> String {
    let (min, max) = (min.max(1), max.max(min.max(1)));
    format!(
        r#"root ::= "[" ws point ("," ws point){{{},{}}} ws "]"
{}{STRING_RULES}"#,
        min - 1,
        max - 1,
        point_rule()
    )
}

/// Parses a top-up reply: the keypoints, trimmed, empty ones dropped.
pub fn parse_keypoints(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = serde_json::from_str(text.trim())
        .map_err(|e| format!("keypoints are not a JSON array of strings: {e}"))?;
    Ok(trimmed(&list))
}

/// Grammar of the merge step: type, summary and language.
pub fn merge_grammar(facts: &Facts) -> String {
    format!(
        r#"root ::= "{{" ws "\"conversation_type\":" ws ctype "," ws "\"summary\":" ws summary "," ws "\"language\":" ws lang ws "}}"
{common}"#,
        common = common_rules(facts)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_replies() {
        let ok = r#"{"conversation_type":"Phone call","summary":" S ","keypoints":["a",""],"language":"en-US",
            "topics":[" release "],"action_items":[{"owner":"null","text":" review "},{"owner":"Speaker01","text":""}]}"#;
        let r = parse_reply(ok, false).unwrap();
        assert_eq!((r.conversation_type.as_str(), r.summary.as_str()), ("phone_call", "S"));
        assert_eq!((r.keypoints, r.language.as_str()), (vec!["a".to_string()], "en"));
        assert_eq!(r.topics, vec!["release".to_string()]);
        assert_eq!(r.action_items, vec![ActionItem { owner: None, text: "review".into() }]);
        assert!(parse_reply(ok, true).unwrap_err().contains("clean_transcript"));
        let bad_type = r#"{"conversation_type":"chat","summary":"S","keypoints":[],"language":"en"}"#;
        assert!(parse_reply(bad_type, false).unwrap_err().contains("conversation_type"));
        let missing = r#"{"conversation_type":"other","summary":"S","language":"en"}"#;
        assert!(parse_reply(missing, false).unwrap_err().contains("keypoints"));
        let bad_lang = r#"{"conversation_type":"other","summary":"S","keypoints":[],"language":"English"}"#;
        assert!(parse_reply(bad_lang, false).unwrap_err().contains("ISO 639-1"));
        let extra = r#"{"conversation_type":"other","summary":"S","keypoints":[],"language":"en","x":1}"#;
        assert!(parse_reply(extra, false).is_err());
        let bad_item = r#"{"conversation_type":"other","summary":"S","keypoints":[],"language":"en","action_items":[{"who":"x","text":"t"}]}"#;
        assert!(parse_reply(bad_item, false).is_err());
        let merge = parse_merge_reply(r#"{"conversation_type":"meeting","summary":" S ","language":"EN"}"#);
        assert_eq!(merge.unwrap().summary, "S");
    }

    #[test]
    fn vocabulary_is_split_into_monologue_multi_party_and_either() {
        let mut all: Vec<&str> =
            MULTI_PARTY_TYPES.iter().chain(MONOLOGUE_TYPES).chain(EITHER_TYPES).copied().collect();
        all.sort_unstable();
        let mut listed = CONVERSATION_TYPES.to_vec();
        listed.sort_unstable();
        assert_eq!(all, listed);
        let multi = allowed_types(true);
        assert!(multi.contains(&"meeting") && !multi.contains(&"speech") && !multi.contains(&"voicemail"));
        let solo = allowed_types(false);
        assert!(solo.contains(&"speech") && !solo.contains(&"meeting") && solo.contains(&"other"));
    }

    fn facts(text: &str) -> Facts {
        Facts::from_text(text)
    }

    const MEETING: &str = "Speaker00: Let us move the release to Friday because of the login bug.\n\
        Speaker01: Friday works for me and for the marketing newsletter as well.\n\
        Speaker00: Then Maria reviews the payment code tomorrow morning.";

    #[test]
    fn grammar_allows_only_the_types_the_speakers_fit() {
        let g = local_grammar(&facts(MEETING));
        assert!(allowed_types(true).iter().all(|t| g.contains(&format!("\\\"{t}\\\""))));
        assert!(!g.contains("\\\"speech\\\"") && !g.contains("\\\"monologue\\\""), "{g}");
        assert!(g.contains("point (\",\" ws point){2,6}"), "{g}");
        assert!(g.contains("owner ::= \"null\" | \"\\\"Speaker00\\\"\" | \"\\\"Speaker01\\\"\""), "{g}");
        let summary = "summary ::= \"\\\"\" (\"Speaker00\" | \"Speaker01\") \" \" char{10,450} \". \" [A-Z0-9] char{8,450}";
        assert!(g.contains(summary), "{g}");
        let one = local_grammar(&facts(
            "Speaker00: Ask not what your country can do for you, ask what you can do.",
        ));
        assert!(!one.contains("\\\"meeting\\\"") && one.contains("\\\"speech\\\""));
        assert!(one.contains("\\\"voicemail\\\"") && !one.contains("(\"Speaker00\")"));
        // One sentence: one keypoint is enough, and the prompt says so; three sentences need three.
        assert!(one.contains("point (\",\" ws point){0,6}"), "{one}");
        let short = facts("Speaker00: Ask not what your country can do for you, ask what you can do.");
        assert_eq!(keypoints_min(&short), 1);
        assert!(constraints(&short).contains("give 1 to 7 keypoints"));
        assert_eq!(keypoints_min(&facts(MEETING)), 3);
        assert!(!constraints(&facts(MEETING)).contains("short"));
        let m = merge_grammar(&facts(MEETING));
        assert!(m.contains("\\\"summary\\\":") && !m.contains("keypoints"));
    }

    #[test]
    fn the_summary_comes_in_a_second_reply_and_joins_the_first() {
        let f = facts(MEETING);
        let lists = lists_grammar(&f);
        assert!(!lists.contains("\\\"summary\\\":") && lists.contains("\\\"keypoints\\\":"), "{lists}");
        assert!(local_grammar(&f).contains("\\\"summary\\\":"));
        let g = summary_grammar(&f);
        assert!(g.starts_with("root ::= \"{\" ws \"\\\"summary\\\":\" ws summary ws \"}\""), "{g}");
        assert!(g.contains("(\"Speaker00\" | \"Speaker01\")"), "{g}");
        let p = summary_prompt(&f);
        assert!(
            p.contains("(Speaker00, Speaker01): who raised") && p.contains("do not repeat a keypoint"),
            "{p}"
        );
        let first = r#"{"conversation_type":"meeting","topics":["release"],"keypoints":["a","b","c"],
            "action_items":[],"language":"en"}"#;
        let r = join_summary(first, r#"{"summary": " Speaker00 moves it. Speaker01 agrees. "}"#).unwrap();
        assert_eq!((r.summary.as_str(), r.keypoints.len()), ("Speaker00 moves it. Speaker01 agrees.", 3));
        assert!(join_summary(first, r#"{"summary": "  "}"#).unwrap_err().contains("empty summary"));
        assert!(join_summary(first, "[]").is_err() && join_summary("[]", r#"{"summary": "S."}"#).is_err());
    }

    #[test]
    fn top_ups_are_keypoint_arrays() {
        let k = keypoints_grammar(2, 4);
        assert!(k.starts_with("root ::= \"[\" ws point (\",\" ws point){1,3} ws \"]\""), "{k}");
        assert!(k.contains("point ::= ") && k.contains("char ::= "), "{k}");
        assert_eq!(parse_keypoints(" [\" a fact \", \"\"] ").unwrap(), vec!["a fact".to_string()]);
        assert!(parse_keypoints("{\"keypoints\": []}").is_err());
    }

    #[test]
    fn gemini_schema_enum_follows_the_speakers() {
        let s = gemini_response_schema(&facts(MEETING));
        let types: Vec<&str> = s["properties"]["conversation_type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(types, allowed_types(true));
        assert_eq!(s["properties"]["keypoints"]["minItems"], 3);
        assert_eq!(s["properties"]["action_items"]["items"]["properties"]["owner"]["nullable"], true);
        let one = gemini_response_schema(&facts("Speaker00: Ask not what your country can do for you, ask."));
        assert!(
            !one["properties"]["conversation_type"]["enum"].as_array().unwrap().contains(&json!("meeting"))
        );
    }

    #[test]
    fn prompt_tells_the_speakers_and_allowed_types() {
        let p = transcript_prompt(&facts(MEETING), MEETING, Some("en"), None);
        assert!(p.contains("2 people take part (Speaker00, Speaker01)"), "{p}");
        assert!(p.contains("Speakers: 2; share of talk time: Speaker00 "), "{p}");
        assert!(p.contains("conversation_type is one of meeting, interview"), "{p}");
        assert!(p.ends_with(MEETING));
    }
}
