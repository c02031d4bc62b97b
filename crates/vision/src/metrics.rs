//! Calibration (Platt scaling) and validation metrics: AUROC, sensitivity/specificity at a
//! threshold, expected calibration error, Brier score, threshold choice.

use serde::{Deserialize, Serialize};

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Platt scaling of one label's logit: `p = σ(a·z + b)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Platt {
    pub const IDENTITY: Platt = Platt { a: 1.0, b: 0.0 };

    pub fn apply(&self, logit: f64) -> f64 {
        sigmoid(self.a * logit + self.b)
    }

    /// Fits `(a, b)` by Newton's method on the log-loss, with Platt's (1999) smoothed targets
    /// `(N₊+1)/(N₊+2)` and `1/(N₋+2)` so that a separable calibration set does not drive the
    /// slope to infinity.
    pub fn fit(logits: &[f64], labels: &[bool]) -> Platt {
        let n_pos = labels.iter().filter(|&&l| l).count() as f64;
        let n_neg = labels.len() as f64 - n_pos;
        let t_pos = (n_pos + 1.0) / (n_pos + 2.0);
        let t_neg = 1.0 / (n_neg + 2.0);
        let (mut a, mut b) = (1.0f64, 0.0f64);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
            for (&z, &l) in logits.iter().zip(labels) {
                let t = if l { t_pos } else { t_neg };
                let p = sigmoid(a * z + b);
                let d = p - t;
                let w = p * (1.0 - p);
                ga += d * z;
                gb += d;
                haa += w * z * z;
                hab += w * z;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-12 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            a -= da;
            b -= db;
            if da.abs() < 1e-10 && db.abs() < 1e-10 {
                break;
            }
        }
        Platt { a, b }
    }
}

/// Area under the ROC curve (Mann–Whitney, ties count one half). `None` if a class is absent.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&i, &j| scores[i].total_cmp(&scores[j]));
    // Average ranks over ties.
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let sum_pos: f64 = ranks.iter().zip(labels).filter(|(_, l)| **l).map(|(r, _)| r).sum();
    Some((sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// (sensitivity, specificity) of `p >= threshold`.
pub fn sens_spec(probs: &[f64], labels: &[bool], threshold: f64) -> (f64, f64) {
    let (mut tp, mut fn_, mut tn, mut fp) = (0f64, 0f64, 0f64, 0f64);
    for (&p, &l) in probs.iter().zip(labels) {
        match (p >= threshold, l) {
            (true, true) => tp += 1.0,
            (false, true) => fn_ += 1.0,
            (false, false) => tn += 1.0,
            (true, false) => fp += 1.0,
        }
    }
    (tp / (tp + fn_).max(1.0), tn / (tn + fp).max(1.0))
}

/// The threshold maximising Youden's J (sensitivity + specificity − 1), taken as the midpoint
/// between adjacent distinct scores.
pub fn youden_threshold(probs: &[f64], labels: &[bool]) -> f64 {
    let mut sorted: Vec<f64> = probs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let mut best = (f64::NEG_INFINITY, 0.5);
    for w in sorted.windows(2) {
        let t = (w[0] + w[1]) / 2.0;
        let (se, sp) = sens_spec(probs, labels, t);
        if se + sp - 1.0 > best.0 {
            best = (se + sp - 1.0, t);
        }
    }
    best.1
}

/// Expected calibration error with `bins` equal-width bins (weighted |accuracy − confidence|).
pub fn ece(probs: &[f64], labels: &[bool], bins: usize) -> f64 {
    let mut count = vec![0f64; bins];
    let mut conf = vec![0f64; bins];
    let mut pos = vec![0f64; bins];
    for (&p, &l) in probs.iter().zip(labels) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1.0;
        conf[b] += p;
        pos[b] += l as u8 as f64;
    }
    let n = probs.len() as f64;
    (0..bins).filter(|&b| count[b] > 0.0).map(|b| (pos[b] - conf[b]).abs() / n).sum()
}

/// Mean squared error of the probabilities.
pub fn brier(probs: &[f64], labels: &[bool]) -> f64 {
    probs.iter().zip(labels).map(|(&p, &l)| (p - l as u8 as f64).powi(2)).sum::<f64>() / probs.len() as f64
}

/// Spearman rank correlation (average ranks for ties).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    fn ranks(v: &[f32]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f64; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for k in i..=j {
                r[idx[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    if va == 0.0 || vb == 0.0 { 0.0 } else { cov / (va * vb).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_a_perfect_ranking_is_one_and_of_a_reversed_one_is_zero() {
        let labels = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5, 0.5, 0.5], &labels), Some(0.5));
    }

    #[test]
    fn platt_recovers_a_known_slope_and_offset() {
        // Labels drawn deterministically from p = σ(2z − 1).
        let mut rng = crate::rng::Pcg32::new(3, 0);
        let (mut z, mut l) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let zi = rng.range(-4.0, 4.0) as f64;
            z.push(zi);
            l.push((rng.uniform() as f64) < sigmoid(2.0 * zi - 1.0));
        }
        let p = Platt::fit(&z, &l);
        assert!((p.a - 2.0).abs() < 0.1 && (p.b + 1.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn spearman_is_one_for_monotone_and_minus_one_for_reversed() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 90.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }
}
