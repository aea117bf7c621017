//! Self-consistency and budget reallocation (EVALS-SPEC §9): majority vote over parsed
//! answers, the exact expected maj@k over all k-subsets of n samples (the maj@k analogue of
//! the unbiased pass@k), rank-score@k, and how many small-model samples a large-model budget
//! buys.

use std::collections::HashMap;

use super::MetricError;

/// The most frequent answer among `answers`; ties go to the answer seen first.
pub fn majority<'a>(answers: &[&'a str]) -> Option<&'a str> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for a in answers {
        *counts.entry(a).or_default() += 1;
    }
    let mut best: Option<(&str, usize)> = None;
    for &a in answers {
        let c = counts[a];
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((a, c));
        }
    }
    best.map(|(a, _)| a)
}

/// Weighted self-consistency: each path votes for its answer with weight
/// `exp(mean token logprob)`; returns the winner (first seen on ties) and the weight sums.
pub fn weighted_majority<'a>(
    paths: &[(&'a str, &[f64])],
) -> Option<(&'a str, Vec<(&'a str, f64)>)> {
    let mut sums: Vec<(&str, f64)> = Vec::new();
    for &(answer, lps) in paths {
        let w = if lps.is_empty() {
            1.0
        } else {
            (lps.iter().sum::<f64>() / lps.len() as f64).exp()
        };
        match sums.iter_mut().find(|(a, _)| *a == answer) {
            Some((_, s)) => *s += w,
            None => sums.push((answer, w)),
        }
    }
    let best = sums
        .iter()
        .copied()
        .reduce(|b, x| if x.1 > b.1 { x } else { b })?;
    Some((best.0, sums))
}

fn binom(n: u64, k: u64) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Expected maj@k over all `C(n, k)` subsets of the `n` answers, ties broken uniformly at
/// random: the mean of `[gold ∈ winners]/|winners|`, computed from answer counts
/// (multivariate hypergeometric) rather than by listing subsets.
pub fn expected_maj_at_k(answers: &[&str], gold: &str, k: usize) -> Result<f64, MetricError> {
    let n = answers.len();
    if k == 0 || k > n {
        return Err(MetricError::TooFewSamples {
            n: n as u64,
            k: k as u64,
        });
    }
    // (is gold, how many samples gave this answer), in order of first appearance.
    let mut groups: Vec<(bool, u64)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for &a in answers {
        let i = *index.entry(a).or_insert_with(|| {
            groups.push((a == gold, 0));
            groups.len() - 1
        });
        groups[i].1 += 1;
    }
    let mut taken = vec![0u64; groups.len()];
    let mut total = 0.0;
    walk(&groups, 0, k as u64, &mut taken, &mut total);
    Ok(total / binom(n as u64, k as u64))
}

/// Visits every way to take `left` more samples from groups `g..`, adding each outcome's
/// weight `Π C(count_i, taken_i)` times the gold answer's share of the win.
fn walk(groups: &[(bool, u64)], g: usize, left: u64, taken: &mut [u64], total: &mut f64) {
    if g == groups.len() {
        if left == 0 {
            let top = taken.iter().copied().max().unwrap_or(0);
            let winners = taken.iter().filter(|&&t| t == top).count() as f64;
            let gold_wins = groups
                .iter()
                .zip(taken.iter())
                .any(|(gr, &t)| gr.0 && t == top && top > 0);
            if gold_wins {
                let weight: f64 = groups
                    .iter()
                    .zip(taken.iter())
                    .map(|(gr, &t)| binom(gr.1, t))
                    .product();
                *total += weight / winners;
            }
        }
        return;
    }
    for x in 0..=groups[g].1.min(left) {
        taken[g] = x;
        walk(groups, g + 1, left - x, taken, total);
    }
    taken[g] = 0;
}

/// rank-score@k (Hassid et al.): the expected correctness of the best-ranked item in a random
/// k-subset, ×100; `pass_sorted` is pass (1) / fail (0) ordered by the ranker, best first.
pub fn rank_score_at_k(pass_sorted: &[bool], k: usize) -> Result<f64, MetricError> {
    let n = pass_sorted.len();
    if k == 0 || k > n {
        return Err(MetricError::TooFewSamples {
            n: n as u64,
            k: k as u64,
        });
    }
    let s: f64 = (1..=n - k + 1)
        .filter(|&i| pass_sorted[i - 1])
        .map(|i| binom((n - i) as u64, (k - 1) as u64))
        .sum();
    Ok(100.0 * s / binom(n as u64, k as u64))
}

/// Samples of a small model that a budget of `b` large-model samples buys under a FLOPs
/// budget: `⌊b·N_large/N_small⌋`.
pub fn small_model_samples(b: u64, n_large: f64, n_small: f64) -> u64 {
    (b as f64 * n_large / n_small + 1e-9).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_ties_go_first() {
        assert_eq!(majority(&["42", "41", "42", "7", "42"]), Some("42"));
        assert_eq!(majority(&["7", "42"]), Some("7"));
        assert_eq!(majority(&[]), None);
    }

    #[test]
    fn expected_maj_examples() {
        let a = ["A", "A", "B", "B", "C"];
        let want = [0.4, 0.4, 13.0 / 30.0, 0.5, 0.5];
        for (k, w) in want.iter().enumerate() {
            let got = expected_maj_at_k(&a, "A", k + 1).unwrap();
            assert!((got - w).abs() < 1e-12, "k={}: {got}", k + 1);
        }
        let b = ["A", "A", "A", "B", "C", "D"];
        for (k, w) in [(1, 0.5), (3, 0.65), (5, 1.0)] {
            assert!((expected_maj_at_k(&b, "A", k).unwrap() - w).abs() < 1e-12);
        }
    }

    #[test]
    fn rank_score_examples() {
        let p = [false, true, true, false, false];
        for (k, w) in [(1, 40.0), (2, 50.0), (5, 0.0)] {
            assert!((rank_score_at_k(&p, k).unwrap() - w).abs() < 1e-9);
        }
        let q = [true, false, false, false, false];
        assert!((rank_score_at_k(&q, 3).unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(small_model_samples(1, 70.0, 13.0), 5);
        assert_eq!(small_model_samples(1, 70.0, 7.0), 10);
    }
}
