//! What the models are asked for and how their replies are checked: prompts, the Gemini
//! `responseSchema`, the llama.cpp grammar and reply validation.

use serde::Deserialize;
use serde_json::{Value, json};

/// Values allowed for `conversation_type`.
pub const CONVERSATION_TYPES: &[&str] = &[
    "meeting",
    "interview",
    "phone_call",
    "lecture",
    "presentation",
    "speech",
    "podcast",
    "debate",
    "discussion",
    "casual_conversation",
    "customer_support",
    "dictation",
    "other",
];

/// Types that need more than one speaker.
pub const MULTI_SPEAKER_TYPES: &[&str] =
    &["meeting", "interview", "debate", "discussion", "casual_conversation", "customer_support"];

/// Most keypoints a reply may carry.
pub const MAX_KEYPOINTS: usize = 8;

/// Longest summary the local grammar lets a model write (a looping model is cut off here).
pub const SUMMARY_MAX_CHARS: usize = 600;

/// Longest keypoint the local grammar allows.
pub const KEYPOINT_MAX_CHARS: usize = 200;

/// A model's analysis, checked against the schema.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub conversation_type: String,
    pub summary: String,
    pub keypoints: Vec<String>,
    pub language: String,
    /// Only Gemini is asked for this.
    #[serde(default)]
    pub clean_transcript: Option<String>,
}

/// Parses and validates a model's JSON text. `with_transcript` requires `clean_transcript`.
pub fn parse_reply(text: &str, with_transcript: bool) -> Result<Reply, String> {
    let mut r: Reply =
        serde_json::from_str(text.trim()).map_err(|e| format!("reply does not match the schema: {e}"))?;
    r.conversation_type = r.conversation_type.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    if !CONVERSATION_TYPES.contains(&r.conversation_type.as_str()) {
        return Err(format!("reply has unknown conversation_type {:?}", r.conversation_type));
    }
    r.summary = r.summary.trim().to_string();
    if r.summary.is_empty() {
        return Err("reply has an empty summary".into());
    }
    r.keypoints = r.keypoints.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
    if r.keypoints.len() > 2 * MAX_KEYPOINTS {
        return Err(format!("reply has {} keypoints", r.keypoints.len()));
    }
    // Accept `en-US` or `EN`, store `en`.
    let lang = r.language.trim().to_ascii_lowercase();
    let code = lang.split(['-', '_']).next().unwrap_or_default();
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("reply language {:?} is not an ISO 639-1 code", r.language));
    }
    r.language = code.to_string();
    if with_transcript && r.clean_transcript.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err("reply has no clean_transcript".into());
    }
    Ok(r)
}

/// System instruction shared by both backends. `with_transcript` adds the Gemini-only field.
pub fn system_prompt(with_transcript: bool) -> String {
    let mut s = format!(
        "You analyse transcripts of recorded conversations. Each transcript line is \
         `SpeakerNN: what that speaker said`, or the speaker's name instead of `SpeakerNN` when \
         the speaker is known (then call them by that name). Reply with one JSON object with these fields:\n\
         - conversation_type: one of {types}. A meeting, interview, debate or discussion has \
         several speakers; a speech, lecture, presentation or dictation is one person talking.\n\
         - summary: two to four sentences saying what is discussed and concluded, written in the \
         language of the conversation, using its key terms.\n\
         - keypoints: one to {max} short items with the main points, in the language of the \
         conversation.\n\
         - language: the ISO 639-1 code of the language spoken (for example en, de, fr, es).\n",
        types = CONVERSATION_TYPES.join(", "),
        max = MAX_KEYPOINTS
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

/// User message for one transcript (or one part of a long one).
pub fn transcript_prompt(
    transcript: &str,
    hint_language: Option<&str>,
    part: Option<(usize, usize)>,
) -> String {
    let mut s = String::new();
    if let Some((i, n)) = part {
        s.push_str(&format!("This is part {i} of {n} of a longer conversation; analyse this part only.\n"));
    }
    let speakers: std::collections::BTreeSet<&str> =
        transcript.lines().filter_map(|l| l.split_once(": ").map(|(label, _)| label)).collect();
    if !speakers.is_empty() {
        s.push_str(&format!("Number of speakers: {}.\n", speakers.len()));
    }
    if let Some(lang) = hint_language {
        s.push_str(&format!("The speech recogniser detected the language `{lang}`.\n"));
    }
    s.push_str("Transcript:\n");
    s.push_str(transcript);
    s
}

/// User message that merges the analyses of consecutive parts (the reduce step).
pub fn merge_prompt(parts: &[Reply]) -> String {
    let mut s = String::from(
        "Below are analyses of consecutive parts of one conversation, in order. Merge them into \
         one analysis of the whole conversation.\n",
    );
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

/// Gemini `responseSchema` (OpenAPI subset, upper-case type names).
pub fn gemini_response_schema() -> Value {
    json!({
        "type": "OBJECT",
        "properties": {
            "conversation_type": {"type": "STRING", "enum": CONVERSATION_TYPES},
            "summary": {"type": "STRING"},
            "keypoints": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": MAX_KEYPOINTS},
            "language": {"type": "STRING", "description": "ISO 639-1 code"},
            "clean_transcript": {"type": "STRING"}
        },
        "required": ["conversation_type", "summary", "keypoints", "language", "clean_transcript"],
        "propertyOrdering": ["conversation_type", "summary", "keypoints", "language", "clean_transcript"]
    })
}

/// llama.cpp GBNF grammar for the local reply: the four fields in a fixed order, an enum for
/// the type, 1..=MAX_KEYPOINTS keypoints, bounded string lengths, a two-letter language code.
///
/// With `one_speaker` (the diarization found a single voice) the types that need several
/// speakers are left out, so a small model cannot call a monologue a meeting.
pub fn local_grammar(one_speaker: bool) -> String {
    let types = CONVERSATION_TYPES
        .iter()
        .filter(|t| !(one_speaker && MULTI_SPEAKER_TYPES.contains(t)))
        .map(|t| format!("\"\\\"{t}\\\"\""))
        .collect::<Vec<_>>()
        .join(" | ");
    let more = MAX_KEYPOINTS - 1;
    format!(
        r#"root ::= "{{" ws "\"conversation_type\":" ws ctype "," ws "\"summary\":" ws summary "," ws "\"keypoints\":" ws "[" ws point ("," ws point){{0,{more}}} ws "]" "," ws "\"language\":" ws lang ws "}}"
ctype ::= {types}
lang ::= "\"" [a-z] [a-z] "\""
summary ::= "\"" char{{1,{SUMMARY_MAX_CHARS}}} "\""
point ::= "\"" char{{1,{KEYPOINT_MAX_CHARS}}} "\""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
ws ::= [ \n]{{0,3}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_replies() {
        let ok =
            r#"{"conversation_type":"Phone call","summary":" S ","keypoints":["a",""],"language":"en-US"}"#;
        let r = parse_reply(ok, false).unwrap();
        assert_eq!((r.conversation_type.as_str(), r.summary.as_str()), ("phone_call", "S"));
        assert_eq!((r.keypoints, r.language.as_str()), (vec!["a".to_string()], "en"));
        assert!(parse_reply(ok, true).unwrap_err().contains("clean_transcript"));
        let bad_type = r#"{"conversation_type":"chat","summary":"S","keypoints":[],"language":"en"}"#;
        assert!(parse_reply(bad_type, false).unwrap_err().contains("conversation_type"));
        let missing = r#"{"conversation_type":"other","summary":"S","language":"en"}"#;
        assert!(parse_reply(missing, false).unwrap_err().contains("keypoints"));
        let bad_lang = r#"{"conversation_type":"other","summary":"S","keypoints":[],"language":"English"}"#;
        assert!(parse_reply(bad_lang, false).unwrap_err().contains("ISO 639-1"));
        let extra = r#"{"conversation_type":"other","summary":"S","keypoints":[],"language":"en","x":1}"#;
        assert!(parse_reply(extra, false).is_err());
    }

    #[test]
    fn grammar_names_every_type() {
        let g = local_grammar(false);
        assert!(CONVERSATION_TYPES.iter().all(|t| g.contains(&format!("\\\"{t}\\\""))));
        assert!(g.contains("{0,7}") && g.contains("char{1,600}"));
        let one = local_grammar(true);
        assert!(!one.contains("\\\"meeting\\\"") && one.contains("\\\"speech\\\""));
    }
}
