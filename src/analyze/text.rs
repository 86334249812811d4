//! Text measures shared by the checks, the facts and the transcript's own quotes and
//! commitments: content words, their overlap, and sentences.

use std::collections::BTreeSet;

/// Words that carry no fact (English and German function words).
pub const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "by", "from", "as",
    "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "they",
    "them", "their", "he", "she", "his", "her", "we", "our", "you", "your", "i", "my", "me", "will", "would",
    "should", "can", "could", "has", "have", "had", "do", "does", "did", "not", "no", "so", "also", "about",
    "into", "than", "then", "there", "which", "who", "what", "when", "how", "all", "any", "some", "more",
    "very", "if", "up", "out", "one", "der", "die", "das", "und", "ist", "ein", "eine", "zu", "den", "mit",
    "von", "nicht", "es", "sie", "wir", "auf", "für", "im", "dem", "des",
];

/// Lower-cased content words of `text` (stop words dropped, a plural `s` cut).
pub fn content_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
        .collect()
}

/// Share of `a`'s content words that also occur in `b` (0 when `a` has none).
pub fn overlap(a: &str, b: &str) -> f64 {
    let (a, b) = (content_words(a), content_words(b));
    if a.is_empty() {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / a.len() as f64
}

/// The sentences of `text`: split after `.`, `!` or `?` followed by a space and an upper-case
/// letter, a digit or a quote (so "e.g. this" and "2.5" stay whole), except after a title or an
/// initial ("Mr. Jensen", "J. Smith").
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for i in 0..chars.len() {
        let (pos, c) = chars[i];
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let next = chars.get(i + 1).map(|x| x.1);
        let after = chars.get(i + 2).map(|x| x.1);
        let boundary = match next {
            None => true,
            Some(n) if n.is_whitespace() => {
                after.is_none_or(|a| a.is_uppercase() || a.is_ascii_digit() || matches!(a, '"' | '\''))
            }
            _ => false,
        };
        if boundary && !(c == '.' && abbreviation_before(&text[start..pos])) {
            let s = text[start..pos + c.len_utf8()].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = pos + c.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Every sentence of a clean transcript (`Label: text` lines) with its speaker's label, in
/// transcript order: what quotes and commitments are taken from.
pub fn labelled_sentences(clean: &str) -> impl Iterator<Item = (&str, &str)> {
    clean
        .lines()
        .filter_map(|l| l.split_once(':'))
        .flat_map(|(label, text)| sentences(text.trim()).into_iter().map(move |s| (label.trim(), s)))
}

/// Titles and abbreviations after which a full stop ends no sentence ("Mr. Jensen").
const ABBREVIATIONS: &[&str] =
    &["mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "nr", "hr", "fr", "frau", "herr"];

/// Whether `text` ends in a word that a full stop abbreviates: a title from [`ABBREVIATIONS`] or
/// a single letter (an initial, "J. Smith").
fn abbreviation_before(text: &str) -> bool {
    let word = text.rsplit(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    let lower = word.to_lowercase();
    word.chars().count() == 1 && word.chars().all(char::is_alphabetic)
        || ABBREVIATIONS.contains(&lower.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_content_words_of_the_first_text() {
        assert_eq!(overlap("The release moves to Friday", "the RELEASE moves to friday!"), 1.0);
        // release, friday of release, moves, friday: 2 of 3.
        assert!((overlap("The release moves to Friday", "We release on Friday") - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(overlap("the and of", "anything"), 0.0);
        assert_eq!(content_words("Phones days"), content_words("phone day"));
    }

    #[test]
    fn sentences_split_at_real_ends_only() {
        assert_eq!(sentences("One. Two? Three! Four"), vec!["One.", "Two?", "Three!", "Four"]);
        assert_eq!(
            sentences("Costs rose 2.5 times, e.g. for servers. Done."),
            vec!["Costs rose 2.5 times, e.g. for servers.", "Done."]
        );
        assert!(sentences("  ").is_empty());
        // Titles and initials end no sentence (the old split made "Tom calls Mr." one).
        assert_eq!(
            sentences("Tom calls Mr. Jensen and Dr. Miller. J. F. Kennedy spoke. The answer was no. Then"),
            vec![
                "Tom calls Mr. Jensen and Dr. Miller.",
                "J. F. Kennedy spoke.",
                "The answer was no.",
                "Then"
            ]
        );
    }
}
