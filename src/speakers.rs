//! Known speakers: voiceprints (CAM++ embeddings of enrolment clips) matched against a job's
//! diarized speakers, and the renaming that follows a match or a user's edit.
//!
//! A clip's voiceprint is computed exactly like a diarized speaker's voice (the diarizer's mean
//! of its window embeddings), so both sides of a comparison come from the same code. A person
//! keeps every print (one per clip or enrolled job speaker); a speaker's score against a person
//! is the best cosine similarity over that person's prints.

use std::collections::HashMap;
use std::path::Path;

use crate::audio::Audio;
use crate::diarize::PyannoteDiarizer;
use crate::diarize::cluster::cosine;
use crate::model::{JobSpeaker, KnownVoice, Segment, SpeakerHints, SpeakerTurn, SpeakerVoice};
use crate::pipeline::Diarization;

/// Cosine similarity at or above which a diarized speaker is taken to be a known person.
/// Calibrated on same/different-speaker scores cut from the fixtures (`bench/speakers.md`).
pub const MATCH_THRESHOLD: f32 = 0.47;

/// Shortest enrolment clip, seconds.
pub const MIN_CLIP_S: f64 = 2.0;
/// Longest enrolment clip, seconds.
pub const MAX_CLIP_S: f64 = 30.0;
/// Longest person name, characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Least speech a clip must have, seconds.
const MIN_SPEECH_S: f64 = 1.0;
/// A second voice in a clip counts once it talks this long and this share of the clip's speech
/// (shorter stray labels are the diarizer's noise, not a second person).
const OTHER_VOICE_S: f64 = 1.0;
const OTHER_VOICE_SHARE: f64 = 0.2;

/// What can be wrong with a name or a clip.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("{0}")]
    BadName(String),
    #[error("the clip is {0:.1} s long; clips must be {MIN_CLIP_S:.0} to {MAX_CLIP_S:.0} s of one person")]
    Length(f64),
    #[error("no speech found in the clip ({0:.1} s of speech; at least {MIN_SPEECH_S:.0} s needed)")]
    NoSpeech(f64),
    #[error("the clip has several voices ({0} speakers found); a clip must hold one person only")]
    SeveralVoices(usize),
    #[error("not decodable audio: {0}")]
    Audio(String),
    #[error("speaker model unavailable: {0}")]
    Model(String),
    #[error("this job has no speaker {0:?}")]
    UnknownSpeaker(String),
}

/// Computes voiceprints of enrolment clips with the diarization models.
pub struct VoiceEmbedder {
    diarizer: PyannoteDiarizer,
}

impl VoiceEmbedder {
    /// Loads the diarization models from the models folder (as the diarize stage does).
    pub fn load(models_dir: &Path) -> Result<Self, SpeakerError> {
        let diarizer = PyannoteDiarizer::load(models_dir, 1).map_err(|e| SpeakerError::Model(e.message))?;
        Ok(Self { diarizer })
    }

    /// The voiceprint of a clip of one person: 2–30 s, with speech, one voice.
    pub fn voiceprint(&self, audio: &Audio) -> Result<Vec<f32>, SpeakerError> {
        let secs = audio.duration_s();
        if !(MIN_CLIP_S..=MAX_CLIP_S).contains(&secs) {
            return Err(SpeakerError::Length(secs));
        }
        let d = self
            .diarizer
            .diarize_voices(audio, SpeakerHints::default())
            .map_err(|e| SpeakerError::Model(e.to_string()))?;
        single_voice(&d)
    }
}

/// The one voice of a clip's diarization: no speech and several voices are errors.
pub fn single_voice(d: &Diarization) -> Result<Vec<f32>, SpeakerError> {
    let mut talk: Vec<(&str, f64)> = Vec::new();
    for t in &d.turns {
        match talk.iter_mut().find(|(l, _)| *l == t.speaker) {
            Some((_, s)) => *s += t.end_s - t.start_s,
            None => talk.push((t.speaker.as_str(), t.end_s - t.start_s)),
        }
    }
    let total: f64 = talk.iter().map(|(_, s)| s).sum();
    if total < MIN_SPEECH_S {
        return Err(SpeakerError::NoSpeech(total));
    }
    let voices = talk.iter().filter(|(_, s)| *s >= OTHER_VOICE_S.max(OTHER_VOICE_SHARE * total)).count();
    if voices > 1 {
        return Err(SpeakerError::SeveralVoices(voices));
    }
    let main = talk.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(l, _)| *l).unwrap_or_default();
    d.voices
        .iter()
        .find(|v| v.label == main)
        .map(|v| v.embedding.clone())
        .ok_or(SpeakerError::NoSpeech(total))
}

/// Best cosine similarity of `voice` to any of `prints` (`None` without prints).
pub fn best_score(voice: &[f32], prints: &[Vec<f32>]) -> Option<f32> {
    prints.iter().filter(|p| p.len() == voice.len()).map(|p| cosine(voice, p)).reduce(f32::max)
}

/// One-to-one assignment of rows (speakers) to columns (people), greedy by descending score:
/// the best remaining pair at or above `threshold` is taken until none is left. Each person is
/// given to one speaker at most, and a speaker below the threshold for everyone gets nobody.
pub fn assign(scores: &[Vec<Option<f32>>], threshold: f32) -> Vec<Option<usize>> {
    let mut pairs: Vec<(f32, usize, usize)> = scores
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().filter_map(move |(j, s)| s.map(|s| (s, i, j))))
        .filter(|&(s, _, _)| s >= threshold)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut row = vec![None; scores.len()];
    let mut taken = vec![false; scores.iter().map(Vec::len).max().unwrap_or(0)];
    for (_, i, j) in pairs {
        if row[i].is_none() && !taken[j] {
            row[i] = Some(j);
            taken[j] = true;
        }
    }
    row
}

/// Known voices with the same name are one person (an enrolled person and a job's reference).
fn by_name(known: &[KnownVoice]) -> Vec<KnownVoice> {
    let mut out: Vec<KnownVoice> = Vec::new();
    for k in known {
        match out.iter_mut().find(|o| o.name == k.name) {
            Some(o) => o.prints.extend(k.prints.iter().cloned()),
            None => out.push(k.clone()),
        }
    }
    out
}

/// Names a job's speakers after the known voices at [`MATCH_THRESHOLD`]. Speakers come in
/// order of first turn; each carries its score (the matched person's, else its best).
pub fn name_speakers(
    turns: &[SpeakerTurn],
    voices: &[SpeakerVoice],
    known: &[KnownVoice],
) -> Vec<JobSpeaker> {
    name_speakers_at(turns, voices, known, MATCH_THRESHOLD)
}

/// [`name_speakers`] with an explicit threshold.
pub fn name_speakers_at(
    turns: &[SpeakerTurn],
    voices: &[SpeakerVoice],
    known: &[KnownVoice],
    threshold: f32,
) -> Vec<JobSpeaker> {
    let known = by_name(known);
    let mut labels: Vec<&str> = Vec::new();
    for l in turns.iter().map(|t| t.speaker.as_str()).chain(voices.iter().map(|v| v.label.as_str())) {
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let scores: Vec<Vec<Option<f32>>> = labels
        .iter()
        .map(|l| {
            let voice = voices.iter().find(|v| v.label == *l);
            known.iter().map(|k| voice.and_then(|v| best_score(&v.embedding, &k.prints))).collect()
        })
        .collect();
    let chosen = assign(&scores, threshold);
    labels
        .iter()
        .zip(&scores)
        .zip(chosen)
        .map(|((label, row), pick)| JobSpeaker {
            label: label.to_string(),
            name: pick.map(|j| known[j].name.clone()),
            score: match pick {
                Some(j) => row[j],
                None => row.iter().flatten().copied().reduce(f32::max),
            },
        })
        .collect()
}

/// Puts the matched names into segments, words and turns.
pub fn apply_names(speakers: &[JobSpeaker], segments: &mut [Segment], turns: &mut [SpeakerTurn]) {
    let map: HashMap<String, String> =
        speakers.iter().filter_map(|s| Some((s.label.clone(), s.name.clone()?))).collect();
    rename_labels(&map, segments, turns);
}

/// Replaces speaker labels (old → new) in segments, their words and turns.
pub fn rename_labels(map: &HashMap<String, String>, segments: &mut [Segment], turns: &mut [SpeakerTurn]) {
    if map.is_empty() {
        return;
    }
    let sub = |s: &mut String| {
        if let Some(n) = map.get(s.as_str()) {
            *s = n.clone();
        }
    };
    for seg in segments {
        seg.speaker.iter_mut().for_each(sub);
        seg.words.iter_mut().for_each(|w| w.speaker.iter_mut().for_each(sub));
    }
    turns.iter_mut().for_each(|t| sub(&mut t.speaker));
}

/// Replaces the `Label:` at the start of clean-transcript lines (all renames at once, so
/// swapping two names works).
pub fn rename_lines(text: &str, map: &HashMap<String, String>) -> String {
    text.split('\n')
        .map(|line| match line.split_once(':') {
            Some((label, rest)) if map.contains_key(label.trim()) => format!("{}:{rest}", map[label.trim()]),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replaces whole-word occurrences of the old names in free text (summary, keypoints), all at
/// once, longest name first.
pub fn rename_words(text: &str, map: &HashMap<String, String>) -> String {
    let mut olds: Vec<&String> = map.keys().filter(|k| !k.is_empty()).collect();
    olds.sort_by_key(|k| std::cmp::Reverse(k.len()));
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let before = text[..i].chars().next_back();
        let hit = (!is_word(before))
            .then(|| {
                olds.iter().find(|o| {
                    text[i..].starts_with(o.as_str()) && !is_word(text[i + o.len()..].chars().next())
                })
            })
            .flatten();
        match hit {
            Some(old) => {
                out.push_str(&map[old.as_str()]);
                i += old.len();
            }
            None => {
                let c = text[i..].chars().next().unwrap_or_default();
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    out
}

/// Checks and tidies a person's name: 1–64 characters, no control characters or `:` (it ends
/// a transcript label), and not a diarization label such as `Speaker01`.
pub fn check_name(name: &str) -> Result<String, SpeakerError> {
    let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
    let bad = |why: &str| Err(SpeakerError::BadName(format!("name {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad(&format!("is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(|c| c.is_control() || c == ':') {
        return bad("must not contain ':' or control characters");
    }
    if crate::analyze::clean::is_canonical_label(&name) || name == "Unknown" {
        return bad(&format!("{name:?} is reserved for unnamed speakers"));
    }
    Ok(name)
}

/// A job's stored result as far as speaker names reach: what a rename rewrites.
#[derive(Debug, Clone, Default)]
pub struct NamedResult {
    pub speakers: Vec<JobSpeaker>,
    pub segments: Vec<Segment>,
    pub turns: Vec<SpeakerTurn>,
    pub clean_transcript: Option<String>,
    pub summary: Option<String>,
    pub keypoints: Option<Vec<String>>,
}

impl NamedResult {
    /// Renames speakers at once: each key is a label (`Speaker01`) or the name shown now, each
    /// value the new name (`None` goes back to the label). Returns the labels renamed, in
    /// order, with their new names.
    pub fn rename(
        &mut self,
        renames: &[(String, Option<String>)],
    ) -> Result<Vec<(String, Option<String>)>, SpeakerError> {
        if self.speakers.is_empty() {
            // Diarized before names were kept: the labels of the turns.
            self.speakers = name_speakers(&self.turns, &[], &[]);
        }
        let mut map: HashMap<String, String> = HashMap::new();
        let mut done = Vec::new();
        for (key, new) in renames {
            let at = (self.speakers.iter().position(|s| s.label == *key))
                .or_else(|| self.speakers.iter().position(|s| s.name.as_deref() == Some(key.as_str())))
                .ok_or_else(|| SpeakerError::UnknownSpeaker(key.clone()))?;
            let sp = &mut self.speakers[at];
            let shown = sp.name.clone().unwrap_or_else(|| sp.label.clone());
            let new = new.as_deref().map(check_name).transpose()?;
            map.insert(shown, new.clone().unwrap_or_else(|| sp.label.clone()));
            sp.name = new.clone();
            done.push((sp.label.clone(), new));
        }
        map.retain(|old, new| old != new);
        rename_labels(&map, &mut self.segments, &mut self.turns);
        if let Some(t) = &mut self.clean_transcript {
            *t = rename_lines(t, &map);
        }
        if let Some(s) = &mut self.summary {
            *s = rename_words(s, &map);
        }
        if let Some(k) = &mut self.keypoints {
            k.iter_mut().for_each(|p| *p = rename_words(p, &map));
        }
        Ok(done)
    }
}

/// A voiceprint as stored: little-endian f32s.
pub fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored voiceprint back as floats (`None` if the bytes are not whole f32s).
pub fn decode(b: &[u8]) -> Option<Vec<f32>> {
    (b.len().is_multiple_of(4) && !b.is_empty())
        .then(|| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        crate::diarize::cluster::normalize(&mut v);
        v
    }

    fn turn(a: f64, b: f64, who: &str) -> SpeakerTurn {
        SpeakerTurn { start_s: a, end_s: b, speaker: who.into() }
    }

    fn voice(label: &str, v: &[f32]) -> SpeakerVoice {
        SpeakerVoice { label: label.into(), embedding: unit(v) }
    }

    fn person(name: &str, prints: &[&[f32]]) -> KnownVoice {
        KnownVoice { name: name.into(), prints: prints.iter().map(|p| unit(p)).collect() }
    }

    #[test]
    fn best_print_counts_and_assignment_is_one_to_one() {
        // Alice has two prints; the speaker is close to her second one only.
        let alice = person("Alice", &[&[0.0, 1.0, 0.0], &[1.0, 0.05, 0.0]]);
        assert!(best_score(&unit(&[1.0, 0.0, 0.0]), &alice.prints).unwrap() > 0.99);
        assert_eq!(best_score(&unit(&[1.0, 0.0, 0.0]), &[]), None);

        // Both speakers resemble Alice; only the closer one gets her, the other gets Bob.
        let scores = vec![vec![Some(0.7), Some(0.6)], vec![Some(0.9), Some(0.2)]];
        assert_eq!(assign(&scores, 0.5), vec![Some(1), Some(0)]);
        // Below the threshold nobody is forced onto the nearest name.
        assert_eq!(assign(&scores, 0.8), vec![None, Some(0)]);
        assert_eq!(assign(&[vec![None, Some(0.4)]], 0.5), vec![None]);
        assert_eq!(assign(&[], 0.5), Vec::<Option<usize>>::new());
    }

    #[test]
    fn speakers_are_named_scored_and_strangers_stay_unnamed() {
        let turns = [turn(0.0, 1.0, "Speaker00"), turn(1.0, 2.0, "Speaker01"), turn(2.0, 3.0, "Speaker02")];
        let voices = [
            voice("Speaker00", &[0.0, 1.0, 0.1]),
            voice("Speaker01", &[1.0, 0.1, 0.0]),
            voice("Speaker02", &[0.0, 0.0, 1.0]),
        ];
        let known = [
            person("Alice", &[&[1.0, 0.0, 0.0]]),
            person("Bob", &[&[0.0, 1.0, 0.0]]),
            // A job reference under an enrolled name adds to that person.
            person("Alice", &[&[0.9, 0.2, 0.0]]),
        ];
        let named = name_speakers_at(&turns, &voices, &known, 0.5);
        let got: Vec<(&str, Option<&str>)> =
            named.iter().map(|s| (s.label.as_str(), s.name.as_deref())).collect();
        assert_eq!(got, [("Speaker00", Some("Bob")), ("Speaker01", Some("Alice")), ("Speaker02", None)]);
        assert!(named[1].score.unwrap() > 0.99);
        assert!(named[2].score.unwrap() < 0.2, "a stranger keeps its best score: {:?}", named[2]);
        // Nothing known: labels only, no scores.
        let plain = name_speakers_at(&turns, &voices, &[], 0.5);
        assert!(plain.iter().all(|s| s.name.is_none() && s.score.is_none()));
    }

    #[test]
    fn names_reach_segments_words_turns_and_texts() {
        let word = |t: &str, sp: &str| crate::model::Word {
            start_s: 0.0,
            end_s: 1.0,
            text: t.into(),
            probability: 1.0,
            speaker: Some(sp.into()),
        };
        let mut r = NamedResult {
            speakers: name_speakers(&[turn(0.0, 1.0, "Speaker00"), turn(1.0, 2.0, "Speaker01")], &[], &[]),
            segments: vec![Segment {
                start_s: 0.0,
                end_s: 1.0,
                text: "hi".into(),
                speaker: Some("Speaker01".into()),
                words: vec![word("hi", "Speaker01")],
            }],
            turns: vec![turn(0.0, 1.0, "Speaker00"), turn(1.0, 2.0, "Speaker01")],
            clean_transcript: Some("Speaker00: hello Speaker01\nSpeaker01: hi".into()),
            summary: Some("Speaker01 greets Speaker00; Speaker010 is not a speaker.".into()),
            keypoints: Some(vec!["Speaker01 said hi".into()]),
        };
        let done = r.rename(&[("Speaker01".into(), Some("  Alice   Smith ".into()))]).unwrap();
        assert_eq!(done, [("Speaker01".to_string(), Some("Alice Smith".to_string()))]);
        assert_eq!(r.segments[0].speaker.as_deref(), Some("Alice Smith"));
        assert_eq!(r.segments[0].words[0].speaker.as_deref(), Some("Alice Smith"));
        assert_eq!(r.turns[1].speaker, "Alice Smith");
        assert_eq!(r.clean_transcript.as_deref(), Some("Speaker00: hello Speaker01\nAlice Smith: hi"));
        assert_eq!(r.summary.as_deref(), Some("Alice Smith greets Speaker00; Speaker010 is not a speaker."));
        assert_eq!(r.keypoints.as_ref().unwrap()[0], "Alice Smith said hi");
        // By the shown name, and a swap happens at once.
        r.rename(&[
            ("Alice Smith".into(), Some("Bob".into())),
            ("Speaker00".into(), Some("Alice Smith".into())),
        ])
        .unwrap();
        assert_eq!(r.clean_transcript.as_deref(), Some("Alice Smith: hello Speaker01\nBob: hi"));
        // Back to the label.
        r.rename(&[("Speaker01".into(), None)]).unwrap();
        assert_eq!(r.turns[1].speaker, "Speaker01");
        assert!(matches!(
            r.rename(&[("Speaker07".into(), Some("X".into()))]),
            Err(SpeakerError::UnknownSpeaker(_))
        ));
        assert!(matches!(
            r.rename(&[("Speaker00".into(), Some("Speaker03".into()))]),
            Err(SpeakerError::BadName(_))
        ));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(" Ada  Lovelace ").unwrap(), "Ada Lovelace");
        for bad in ["", "   ", "a:b", "Speaker01", "Unknown", "x\u{7}", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_clip_needs_speech_and_one_voice() {
        let d = |turns: Vec<SpeakerTurn>| Diarization {
            voices: vec![voice("Speaker00", &[1.0, 0.0]), voice("Speaker01", &[0.0, 1.0])],
            turns,
        };
        assert!(matches!(single_voice(&d(vec![])), Err(SpeakerError::NoSpeech(_))));
        assert!(matches!(
            single_voice(&d(vec![turn(0.0, 0.5, "Speaker00")])),
            Err(SpeakerError::NoSpeech(_))
        ));
        // A stray 0.4 s label beside 6 s of one voice is noise, not a second person.
        let one = d(vec![turn(0.0, 6.0, "Speaker01"), turn(6.0, 6.4, "Speaker00")]);
        assert_eq!(single_voice(&one).unwrap(), unit(&[0.0, 1.0]));
        let two = d(vec![turn(0.0, 4.0, "Speaker00"), turn(4.0, 7.0, "Speaker01")]);
        assert!(matches!(single_voice(&two), Err(SpeakerError::SeveralVoices(2))));
    }

    #[test]
    fn prints_round_trip() {
        let v = vec![0.25f32, -1.5, 3.0];
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert!(decode(&[1, 2, 3]).is_none() && decode(&[]).is_none());
    }
}
