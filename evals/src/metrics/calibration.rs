//! Multiple-choice scoring and calibration (EVALS-SPEC §7): acc, acc_norm (per character, as
//! lm-eval), acc_bytes, MMLU-style letter probabilities, expected and maximum calibration error
//! with equal-width bins `[lo, hi)` (p = 1 in the last bin), and the error bars llama.cpp prints.

use super::MetricError;

/// Index of the largest value, the first on ties.
pub fn argmax_first(v: &[f64]) -> Option<usize> {
    (0..v.len()).reduce(|b, i| if v[i] > v[b] { i } else { b })
}

/// Per-item multiple-choice predictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChoicePredictions {
    /// argmax of the raw log-likelihoods.
    pub acc: usize,
    /// argmax of log-likelihood per character of the choice (lm-eval's acc_norm).
    pub acc_norm: usize,
    /// argmax of log-likelihood per UTF-8 byte of the choice.
    pub acc_bytes: usize,
}

/// Predictions from the choices' log-likelihoods (`ll_j` of `" " + choice_j`); lengths are
/// those of the choice strings without the delimiter.
pub fn predict(loglikelihoods: &[f64], choices: &[&str]) -> Result<ChoicePredictions, MetricError> {
    if loglikelihoods.len() != choices.len() || choices.is_empty() {
        return Err(MetricError::Domain(format!(
            "{} log-likelihoods for {} choices",
            loglikelihoods.len(),
            choices.len()
        )));
    }
    let per = |len: &dyn Fn(&str) -> usize| -> Vec<f64> {
        loglikelihoods
            .iter()
            .zip(choices)
            .map(|(ll, c)| ll / len(c).max(1) as f64)
            .collect()
    };
    Ok(ChoicePredictions {
        acc: argmax_first(loglikelihoods).unwrap_or(0),
        acc_norm: argmax_first(&per(&|c| c.chars().count())).unwrap_or(0),
        acc_bytes: argmax_first(&per(&|c| c.len())).unwrap_or(0),
    })
}

/// Calibration of confidences against correctness.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Expected calibration error.
    pub ece: f64,
    /// Maximum calibration error over non-empty bins.
    pub mce: f64,
    /// Per bin: (count, mean confidence, accuracy); empty bins have count 0.
    pub bins: Vec<(usize, f64, f64)>,
}

/// ECE and MCE with `m` equal-width bins; bin `min(⌊p·m⌋, m−1)`, i.e. `[lo, hi)` with p = 1
/// in the last bin.
pub fn calibration(
    confidence: &[f64],
    correct: &[bool],
    m: usize,
) -> Result<Calibration, MetricError> {
    if confidence.len() != correct.len() || confidence.is_empty() || m == 0 {
        return Err(MetricError::Domain(
            "need as many confidences as outcomes, and bins".into(),
        ));
    }
    if confidence.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(MetricError::Domain("confidences must lie in [0, 1]".into()));
    }
    let mut sum_conf = vec![0.0; m];
    let mut sum_acc = vec![0.0; m];
    let mut count = vec![0usize; m];
    for (&p, &c) in confidence.iter().zip(correct) {
        let b = ((p * m as f64).floor() as usize).min(m - 1);
        sum_conf[b] += p;
        sum_acc[b] += f64::from(u8::from(c));
        count[b] += 1;
    }
    let n = confidence.len() as f64;
    let (mut ece, mut mce) = (0.0f64, 0.0f64);
    let mut bins = Vec::with_capacity(m);
    for b in 0..m {
        if count[b] == 0 {
            bins.push((0, 0.0, 0.0));
            continue;
        }
        let (conf, acc) = (sum_conf[b] / count[b] as f64, sum_acc[b] / count[b] as f64);
        ece += count[b] as f64 / n * (acc - conf).abs();
        mce = mce.max((acc - conf).abs());
        bins.push((count[b], conf, acc));
    }
    Ok(Calibration { ece, mce, bins })
}

/// Standard error of an accuracy, `sqrt(p(1−p)/(n−1))`.
pub fn accuracy_se(correct: usize, n: usize) -> f64 {
    if n < 2 {
        return f64::NAN;
    }
    let p = correct as f64 / n as f64;
    (p * (1.0 - p) / (n as f64 - 1.0)).sqrt()
}

/// Wilson score interval for `k` of `n` with `z` (llama.cpp uses 1.95996).
pub fn wilson(k: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (nf, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    (centre - half, centre + half)
}
