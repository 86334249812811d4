//! RTTM reading and writing (`SPEAKER <file> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>`).

use std::fmt::Write;

use crate::model::SpeakerTurn;

/// A line of RTTM that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("RTTM line {line}: {message}")]
pub struct RttmError {
    pub line: usize,
    pub message: String,
}

/// Writes speaker turns as RTTM lines for `file_id` (times with millisecond precision).
pub fn to_rttm(turns: &[SpeakerTurn], file_id: &str) -> String {
    let file_id = if file_id.trim().is_empty() {
        "audio".to_string()
    } else {
        file_id.replace(char::is_whitespace, "_")
    };
    let mut out = String::new();
    for t in turns {
        let _ = writeln!(
            out,
            "SPEAKER {file_id} 1 {:.3} {:.3} <NA> <NA> {} <NA> <NA>",
            t.start_s,
            (t.end_s - t.start_s).max(0.0),
            t.speaker.replace(char::is_whitespace, "_")
        );
    }
    out
}

/// Reads the `SPEAKER` lines of an RTTM document (other record types and blank or `;;` lines
/// are skipped). File ids are not kept.
pub fn parse_rttm(text: &str) -> Result<Vec<SpeakerTurn>, RttmError> {
    let mut turns = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"SPEAKER") {
            continue;
        }
        let err = |message: &str| RttmError { line: i + 1, message: message.to_string() };
        if fields.len() < 8 {
            return Err(err("expected at least 8 fields"));
        }
        let start: f64 = fields[3].parse().map_err(|_| err("bad start time"))?;
        let dur: f64 = fields[4].parse().map_err(|_| err("bad duration"))?;
        if !start.is_finite() || !dur.is_finite() || dur < 0.0 {
            return Err(err("negative or non-finite time"));
        }
        turns.push(SpeakerTurn { start_s: start, end_s: start + dur, speaker: fields[7].to_string() });
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = vec![
            SpeakerTurn { start_s: 0.5, end_s: 2.25, speaker: "Speaker00".into() },
            SpeakerTurn { start_s: 2.0, end_s: 3.0, speaker: "Speaker01".into() },
        ];
        let text = to_rttm(&t, "my file");
        assert!(text.starts_with("SPEAKER my_file 1 0.500 1.750 <NA> <NA> Speaker00 <NA> <NA>\n"));
        assert_eq!(parse_rttm(&text).unwrap(), t);
        assert!(parse_rttm("SPEAKER f 1 x 1 <NA> <NA> A").is_err());
        assert!(parse_rttm(";; comment\n\n").unwrap().is_empty());
    }
}
