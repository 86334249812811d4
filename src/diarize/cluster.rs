//! Agglomerative clustering of speaker embeddings (average linkage on cosine distance), cut by a
//! calibrated threshold or to a requested number of speakers.

/// Cosine similarity of two L2-normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length (left alone if it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// One merge of the dendrogram: the two cluster roots (item indices) and their linkage distance.
#[derive(Debug, Clone, Copy)]
struct Merge {
    a: usize,
    b: usize,
    dist: f32,
}

/// Average-linkage dendrogram by the nearest-neighbour-chain algorithm (O(n²) time and memory).
fn dendrogram(x: &[Vec<f32>]) -> Vec<Merge> {
    let n = x.len();
    let mut d = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = 1.0 - cosine(&x[i], &x[j]);
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let mut size = vec![1usize; n];
    let mut alive = vec![true; n];
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::new();
    let mut remaining = n;
    while remaining > 1 {
        if chain.is_empty() {
            chain.push((0..n).find(|&i| alive[i]).unwrap_or(0));
        }
        let a = chain[chain.len() - 1];
        let prev = if chain.len() >= 2 { Some(chain[chain.len() - 2]) } else { None };
        // Nearest alive neighbour of `a`, preferring the previous chain element on ties.
        let mut best = prev.unwrap_or(usize::MAX);
        let mut best_d = prev.map_or(f32::INFINITY, |p| d[a * n + p]);
        for j in 0..n {
            if alive[j] && j != a && d[a * n + j] < best_d {
                best = j;
                best_d = d[a * n + j];
            }
        }
        if Some(best) == prev {
            chain.pop();
            chain.pop();
            let b = best;
            // Merge b into a (Lance-Williams update for average linkage).
            let (sa, sb) = (size[a] as f32, size[b] as f32);
            for k in 0..n {
                if alive[k] && k != a && k != b {
                    let v = (sa * d[a * n + k] + sb * d[b * n + k]) / (sa + sb);
                    d[a * n + k] = v;
                    d[k * n + a] = v;
                }
            }
            alive[b] = false;
            size[a] += size[b];
            merges.push(Merge { a, b, dist: best_d });
            remaining -= 1;
        } else {
            chain.push(best);
        }
    }
    merges.sort_by(|p, q| p.dist.total_cmp(&q.dist));
    merges
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Clusters L2-normalised embeddings. Merges continue while the average cosine distance is below
/// `threshold`, then the count is pushed into `[min_k, max_k]`; `exact_k` overrides both.
/// Returns labels `0..k` in order of first occurrence.
pub fn agglomerative(
    x: &[Vec<f32>],
    threshold: f32,
    exact_k: Option<usize>,
    min_k: usize,
    max_k: usize,
) -> Vec<usize> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let merges = dendrogram(x);
    let target = match exact_k {
        Some(k) => k.clamp(1, n),
        None => {
            let natural = n - merges.iter().filter(|m| m.dist < threshold).count();
            natural.clamp(min_k.clamp(1, n), max_k.clamp(1, n).max(min_k.clamp(1, n)))
        }
    };
    let mut parent: Vec<usize> = (0..n).collect();
    for m in merges.iter().take(n - target) {
        let (ra, rb) = (find(&mut parent, m.a), find(&mut parent, m.b));
        parent[rb] = ra;
    }
    let roots: Vec<usize> = (0..n).map(|i| find(&mut parent, i)).collect();
    first_occurrence(&roots)
}

/// Normalised mean embedding of each cluster `0..k`.
pub fn centroids(x: &[Vec<f32>], labels: &[usize]) -> Vec<Vec<f32>> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let dim = x.first().map_or(0, Vec::len);
    let mut c = vec![vec![0f32; dim]; k];
    for (v, &l) in x.iter().zip(labels) {
        c[l].iter_mut().zip(v).for_each(|(s, x)| *s += x);
    }
    c.iter_mut().for_each(|v| normalize(v));
    c
}

/// Renumbers labels `0..k` in order of first occurrence.
pub fn first_occurrence(labels: &[usize]) -> Vec<usize> {
    let mut ids: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    labels
        .iter()
        .map(|&l| {
            let next = ids.len();
            *ids.entry(l).or_insert(next)
        })
        .collect()
}

/// Index of the most similar centroid.
pub fn nearest(centroids: &[Vec<f32>], v: &[f32]) -> usize {
    let mut best = 0;
    let mut best_s = f32::NEG_INFINITY;
    for (i, c) in centroids.iter().enumerate() {
        let s = cosine(c, v);
        if s > best_s {
            best = i;
            best_s = s;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        normalize(&mut v);
        v
    }

    #[test]
    fn two_groups_split_by_threshold_and_k() {
        let x = vec![
            unit(&[1.0, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.1]),
            unit(&[1.0, 0.0, 0.1]),
            unit(&[0.1, 1.0, 0.0]),
            unit(&[0.9, 0.1, 0.1]),
        ];
        assert_eq!(agglomerative(&x, 0.5, None, 1, 10), vec![0, 1, 0, 1, 0]);
        assert_eq!(agglomerative(&x, 0.5, Some(1), 1, 10), vec![0; 5]);
        assert_eq!(agglomerative(&x, 2.0, None, 2, 10), vec![0, 1, 0, 1, 0]);
        assert_eq!(agglomerative(&x, 0.0, None, 1, 3).iter().max(), Some(&2));
        let c = centroids(&x, &[0, 1, 0, 1, 0]);
        assert_eq!(nearest(&c, &unit(&[1.0, 0.2, 0.0])), 0);
    }
}
