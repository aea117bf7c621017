//! Sampling-based uncertainty (Lin, Trivedi and Sun, "Generating with Confidence"; used by
//! Dhole for dynamic RAG), on the Jaccard similarity of sampled responses (EVALS-SPEC §6):
//! EigV, the degree-matrix measures and eccentricity, following UQ-NLG; and [`auroc`], how well
//! a score separates failures from successes.

use super::linalg::symmetric_eigen;
use super::MetricError;

/// Jaccard similarity of lower-cased whitespace-split word sets; `W_ii = 1`. Punctuation is
/// kept, as in the reference code ("Paris." ≠ "Paris").
pub fn jaccard_matrix(responses: &[&str]) -> Vec<f64> {
    let sets: Vec<std::collections::HashSet<String>> = responses
        .iter()
        .map(|r| {
            r.to_lowercase()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let m = sets.len();
    let mut w = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            w[i * m + j] = if i == j {
                1.0
            } else {
                let inter = sets[i].intersection(&sets[j]).count();
                let union = sets[i].union(&sets[j]).count();
                inter as f64 / union.max(1) as f64
            };
        }
    }
    w
}

/// Uncertainty measures of one input's sampled responses.
#[derive(Clone, Debug, PartialEq)]
pub struct Uncertainty {
    /// Laplacian eigenvalues, ascending.
    pub eigenvalues: Vec<f64>,
    /// U_EigV = Σ max(0, 1 − λ_k).
    pub eigv: f64,
    /// U_Deg = 1 − Σd_i/m² (paper / lm-polygraph form).
    pub degree: f64,
    /// C_Deg(s_j) = d_j/m.
    pub degree_confidence: Vec<f64>,
    /// UQ-NLG's degree form, mean_i(m − d_i) = m·U_Deg.
    pub degree_uqnlg: f64,
    /// U_Ecc: Frobenius norm of the centred spectral embedding.
    pub eccentricity: f64,
    /// ‖v'_j‖ per response (C_Ecc = −‖v'_j‖).
    pub eccentricity_norms: Vec<f64>,
}

/// Computes the measures from a symmetric similarity matrix `w` (m×m, unit diagonal), with
/// the eigenvalue threshold for eccentricity (UQ-NLG default 0.9).
pub fn uncertainty(w: &[f64], m: usize, threshold: f64) -> Result<Uncertainty, MetricError> {
    if m == 0 || w.len() != m * m {
        return Err(MetricError::Domain(
            "the similarity matrix must be m×m with m ≥ 1".into(),
        ));
    }
    let d: Vec<f64> = (0..m).map(|i| w[i * m..(i + 1) * m].iter().sum()).collect();
    let mut lap = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            let id = f64::from(u8::from(i == j));
            lap[i * m + j] = id - w[i * m + j] / (d[i] * d[j]).sqrt();
        }
    }
    let (vals, vecs) = symmetric_eigen(&lap, m);
    let eigv = vals.iter().map(|l| (1.0 - l).max(0.0)).sum();
    let mf = m as f64;
    let sum_d: f64 = d.iter().sum();
    let chosen: Vec<usize> = (0..m).filter(|&k| vals[k] < threshold).collect();
    let rows: Vec<Vec<f64>> = (0..m)
        .map(|j| chosen.iter().map(|&k| vecs[j][k]).collect())
        .collect();
    let mean: Vec<f64> = (0..chosen.len())
        .map(|c| rows.iter().map(|r| r[c]).sum::<f64>() / mf)
        .collect();
    let norms: Vec<f64> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(x, mu)| (x - mu).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    Ok(Uncertainty {
        eccentricity: norms.iter().map(|x| x * x).sum::<f64>().sqrt(),
        eccentricity_norms: norms,
        eigv,
        degree: 1.0 - sum_d / (mf * mf),
        degree_confidence: d.iter().map(|x| x / mf).collect(),
        degree_uqnlg: d.iter().map(|x| mf - x).sum::<f64>() / mf,
        eigenvalues: vals,
    })
}

/// Area under the ROC curve of `scores` for telling `positive` items from the rest: the
/// probability that a random positive scores above a random negative, ties counting one half
/// (the Mann–Whitney statistic over average ranks). `None` without both classes or with a
/// score that is NaN.
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let rank_sum_pos: f64 = ranks
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

/// 1-based ranks, equal values sharing the average of their ranks.
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of `a` and `b` (Pearson's on average ranks). `None` with fewer
/// than two pairs, a NaN, or a constant side.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|x| x.is_nan()) {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::{auroc, spearman};

    #[test]
    fn spearman_on_ranks_with_ties() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // Ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): Pearson = 4.5 / √(4.5·5).
        let r = spearman(&[1.0, 2.0, 2.0, 9.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((r - 4.5 / (4.5f64 * 5.0).sqrt()).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn auroc_counts_ordered_pairs_and_halves_ties() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        assert_eq!(auroc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
        // Positives 0.8, 0.4 against negatives 0.1, 0.9, 0.4: 0.8 beats 0.1 and 0.4, 0.4
        // beats 0.1 and ties 0.4 (½): 3.5 of 6 pairs.
        let a = auroc(
            &[0.8, 0.1, 0.4, 0.9, 0.4],
            &[true, false, true, false, false],
        )
        .unwrap();
        assert!(
            (a - (1.0 + 0.0 + 1.0 + 0.0 + 1.0 + 0.5) / 6.0).abs() < 1e-12,
            "{a}"
        );
        assert_eq!(auroc(&[1.0, 2.0], &[true, true]), None);
        assert_eq!(auroc(&[f64::NAN, 2.0], &[true, false]), None);
        assert_eq!(auroc(&[1.0], &[true, false]), None);
    }
}
