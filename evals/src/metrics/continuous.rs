//! Continuous metrics (Schaeffer et al., "Are Emergent Abilities of Large Language Models a
//! Mirage?"): token edit distance, teacher-forced target probabilities, and the Brier score of
//! multiple-choice probabilities.

use super::MetricError;

/// Levenshtein distance between two token sequences (insert, delete, substitute cost 1).
pub fn token_edit_distance<T: PartialEq>(output: &[T], target: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=target.len()).collect();
    let mut cur = vec![0; target.len() + 1];
    for (i, a) in output.iter().enumerate() {
        cur[0] = i + 1;
        for (j, b) in target.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(a != b))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[target.len()]
}

/// Teacher-forced probabilities of a target, from its per-token log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetProbability {
    /// Σ ℓ_t.
    pub logprob: f64,
    /// exp(Σ ℓ_t): the probability of the whole target string.
    pub probability: f64,
    /// exp(mean ℓ_t): the geometric-mean per-token probability (the paper's p_N).
    pub per_token: f64,
}

/// Summarises the target's token log-probabilities `ℓ_t = log p(y_t | x, y_<t)`.
pub fn target_probability(token_logprobs: &[f64]) -> Result<TargetProbability, MetricError> {
    if token_logprobs.is_empty() {
        return Err(MetricError::TooFewPoints { needed: 1, got: 0 });
    }
    if token_logprobs.iter().any(|l| l.is_nan() || *l > 0.0) {
        return Err(MetricError::Domain(
            "log-probabilities must be ≤ 0 and not NaN".into(),
        ));
    }
    let s: f64 = token_logprobs.iter().sum();
    Ok(TargetProbability {
        logprob: s,
        probability: s.exp(),
        per_token: (s / token_logprobs.len() as f64).exp(),
    })
}

/// The Mirage paper's independence model for a target of `len` tokens each correct with
/// probability `p`: all-tokens accuracy `p^len` and expected token edit distance `len·(1−p)`.
pub fn mirage_model(p: f64, len: u32) -> (f64, f64) {
    (p.powi(len as i32), len as f64 * (1.0 - p))
}

/// Softmax over option log-likelihoods (max-subtracted).
pub fn option_probabilities(loglikelihoods: &[f64]) -> Vec<f64> {
    let m = loglikelihoods
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = loglikelihoods.iter().map(|l| (l - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// Multiple-choice Brier score of one item, lm-eval's form: `Σ_k (p_k − 1[k = gold])²` over
/// the softmax of the options' log-likelihoods. Divide by the number of options for the
/// per-option form.
pub fn brier_score(loglikelihoods: &[f64], gold: usize) -> Result<f64, MetricError> {
    if gold >= loglikelihoods.len() {
        return Err(MetricError::Domain(format!(
            "gold option {gold} of {} options",
            loglikelihoods.len()
        )));
    }
    Ok(option_probabilities(loglikelihoods)
        .iter()
        .enumerate()
        .map(|(k, p)| (p - f64::from(u8::from(k == gold))).powi(2))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_examples() {
        assert_eq!(token_edit_distance(&[1, 2, 3, 4], &[1, 3, 4, 5]), 2);
        assert_eq!(token_edit_distance(&["12", "34"], &["12", "35"]), 1);
        assert_eq!(token_edit_distance::<u32>(&[5, 6, 7], &[]), 3);
        assert_eq!(token_edit_distance::<u32>(&[], &[1]), 1);
    }
}
