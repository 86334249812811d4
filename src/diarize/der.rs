//! Diarization error rate, as NIST md-eval defines it: (missed + false alarm + speaker confusion)
//! over total reference speech, with overlapped speech scored, an optimal one-to-one mapping of
//! hypothesis to reference speakers, and an optional no-score collar around reference boundaries.

use std::collections::BTreeMap;

use crate::model::SpeakerTurn;

/// The components of one DER computation, in seconds (speaker-weighted).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DerReport {
    /// Reference speech scored (sum over speakers, overlap counts twice).
    pub total: f64,
    pub missed: f64,
    pub false_alarm: f64,
    pub confusion: f64,
}

impl DerReport {
    /// (missed + false alarm + confusion) / total; 0 when there is no reference speech.
    pub fn der(&self) -> f64 {
        if self.total > 0.0 { (self.missed + self.false_alarm + self.confusion) / self.total } else { 0.0 }
    }

    /// Adds another file's components (for a corpus-wide DER).
    pub fn add(&mut self, other: &DerReport) {
        self.total += other.total;
        self.missed += other.missed;
        self.false_alarm += other.false_alarm;
        self.confusion += other.confusion;
    }
}

/// Per-speaker sorted, merged intervals.
fn by_speaker(turns: &[SpeakerTurn]) -> Vec<Vec<(f64, f64)>> {
    let mut map: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for t in turns.iter().filter(|t| t.end_s > t.start_s) {
        map.entry(t.speaker.as_str()).or_default().push((t.start_s, t.end_s));
    }
    map.into_values()
        .map(|mut v| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut merged: Vec<(f64, f64)> = Vec::with_capacity(v.len());
            for (s, e) in v {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            merged
        })
        .collect()
}

fn active(intervals: &[(f64, f64)], t: f64) -> bool {
    let i = intervals.partition_point(|iv| iv.1 <= t);
    i < intervals.len() && intervals[i].0 <= t
}

/// Scores `hypothesis` against `reference` with a no-score `collar` (seconds, each side of every
/// reference boundary; md-eval's usual value is 0.25).
pub fn score(reference: &[SpeakerTurn], hypothesis: &[SpeakerTurn], collar: f64) -> DerReport {
    let refs = by_speaker(reference);
    let hyps = by_speaker(hypothesis);
    let mut no_score: Vec<(f64, f64)> = Vec::new();
    if collar > 0.0 {
        for iv in refs.iter().flatten() {
            no_score.push((iv.0 - collar, iv.0 + collar));
            no_score.push((iv.1 - collar, iv.1 + collar));
        }
        no_score.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for (s, e) in no_score {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        no_score = merged;
    }
    let mut bounds: Vec<f64> =
        refs.iter().chain(&hyps).flatten().chain(&no_score).flat_map(|iv| [iv.0, iv.1]).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();

    // Elementary pieces: duration and who is active; the overlap matrix decides the mapping.
    let mut pieces: Vec<(f64, Vec<usize>, Vec<usize>)> = Vec::new();
    let mut overlap = vec![vec![0.0f64; hyps.len()]; refs.len()];
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mid = 0.5 * (a + b);
        if b <= a || active(&no_score, mid) {
            continue;
        }
        let r: Vec<usize> = (0..refs.len()).filter(|&i| active(&refs[i], mid)).collect();
        let h: Vec<usize> = (0..hyps.len()).filter(|&j| active(&hyps[j], mid)).collect();
        if r.is_empty() && h.is_empty() {
            continue;
        }
        for &i in &r {
            for &j in &h {
                overlap[i][j] += b - a;
            }
        }
        pieces.push((b - a, r, h));
    }
    let mapping = max_weight_matching(&overlap);

    let mut rep = DerReport::default();
    for (d, r, h) in pieces {
        let (nr, nh) = (r.len(), h.len());
        let correct = r.iter().filter(|&&i| mapping[i].is_some_and(|j| h.contains(&j))).count();
        rep.total += d * nr as f64;
        rep.missed += d * nr.saturating_sub(nh) as f64;
        rep.false_alarm += d * nh.saturating_sub(nr) as f64;
        rep.confusion += d * (nr.min(nh) - correct) as f64;
    }
    rep
}

/// One-to-one assignment of rows to columns maximising the summed weight (Hungarian algorithm on
/// the padded square cost matrix). Returns, per row, its column if it got one.
pub fn max_weight_matching(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    let n = rows.max(cols);
    if n == 0 {
        return vec![None; rows];
    }
    let max = weights.iter().flatten().fold(0.0f64, |m, &w| m.max(w));
    let cost = |i: usize, j: usize| -> f64 { if i < rows && j < cols { max - weights[i][j] } else { max } };
    // Classic O(n^3) potentials formulation, 1-based with a dummy column 0.
    let inf = f64::INFINITY;
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let (mut p, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![None; rows];
    for j in 1..=n {
        let i = p[j];
        if i >= 1 && i <= rows && j <= cols && weights[i - 1][j - 1] > 0.0 {
            out[i - 1] = Some(j - 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diarize::rttm::parse_rttm;

    fn turns(text: &str) -> Vec<SpeakerTurn> {
        parse_rttm(text).unwrap()
    }

    #[test]
    fn perfect_hypothesis_with_other_labels_scores_zero() {
        let r =
            turns("SPEAKER f 1 0.0 5.0 <NA> <NA> A <NA> <NA>\nSPEAKER f 1 5.0 5.0 <NA> <NA> B <NA> <NA>\n");
        let h =
            turns("SPEAKER f 1 0.0 5.0 <NA> <NA> x <NA> <NA>\nSPEAKER f 1 5.0 5.0 <NA> <NA> y <NA> <NA>\n");
        let rep = score(&r, &h, 0.0);
        assert!((rep.total - 10.0).abs() < 1e-9);
        assert!(rep.der().abs() < 1e-9, "{rep:?}");
    }

    #[test]
    fn missed_false_alarm_and_confusion_are_separated() {
        // Ref: A 0-10, B 10-20. Hyp: x 0-12, y 12-18, x 25-27.
        let r = turns("SPEAKER f 1 0 10 <NA> <NA> A <NA> <NA>\nSPEAKER f 1 10 10 <NA> <NA> B <NA> <NA>\n");
        let h = turns(
            "SPEAKER f 1 0 12 <NA> <NA> x <NA> <NA>\nSPEAKER f 1 12 6 <NA> <NA> y <NA> <NA>\n\
             SPEAKER f 1 25 2 <NA> <NA> x <NA> <NA>\n",
        );
        let rep = score(&r, &h, 0.0);
        assert!((rep.total - 20.0).abs() < 1e-9);
        assert!((rep.missed - 2.0).abs() < 1e-9, "{rep:?}");
        assert!((rep.false_alarm - 2.0).abs() < 1e-9, "{rep:?}");
        assert!((rep.confusion - 2.0).abs() < 1e-9, "{rep:?}");
        assert!((rep.der() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn overlap_is_scored_and_collar_excludes_boundaries() {
        // Ref: A 0-10, B 5-10 (5 s of overlap). Hyp: one speaker 0-10.
        let r = turns("SPEAKER f 1 0 10 <NA> <NA> A <NA> <NA>\nSPEAKER f 1 5 5 <NA> <NA> B <NA> <NA>\n");
        let h = turns("SPEAKER f 1 0 10 <NA> <NA> s <NA> <NA>\n");
        let rep = score(&r, &h, 0.0);
        assert!((rep.total - 15.0).abs() < 1e-9);
        assert!((rep.missed - 5.0).abs() < 1e-9);
        assert_eq!(rep.confusion, 0.0);
        // A collar of 0.5 s takes [0, 0.5], [4.5, 5.5] and [9.5, 10] out of scoring for everyone:
        // A keeps 8 s, B keeps 5.5–9.5.
        let rep = score(&r, &h, 0.5);
        assert!((rep.total - 12.0).abs() < 1e-9, "{rep:?}");
        assert!((rep.missed - 4.0).abs() < 1e-9, "{rep:?}");
    }

    #[test]
    fn mapping_is_optimal_not_greedy() {
        let w = vec![vec![5.0, 4.0], vec![4.0, 0.0]];
        assert_eq!(max_weight_matching(&w), vec![Some(1), Some(0)]);
        let w = vec![vec![1.0], vec![3.0], vec![2.0]];
        assert_eq!(max_weight_matching(&w), vec![None, Some(0), None]);
    }
}
