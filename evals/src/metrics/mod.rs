//! Metrics as pure functions, following the shared EVALS-SPEC.md (formulas, stable ways to
//! compute them, and its test vectors, which the tests read from the spec itself).
//!
//! - [`pass_at_k`]: the unbiased pass@k estimator in product form, its unbiased within-problem
//!   variance, and dataset aggregates with standard errors.
//! - [`passuntil`]: PassUntil per instance (MLE r/K, unbiased (r−1)/(K−1), censored records
//!   with a one-sided upper bound), per task, the task scaling-law fit and the emergence test.
//! - [`continuous`]: the Mirage paper's continuous metrics (token edit distance, target
//!   probability, multiple-choice Brier score).
//! - [`calibration`]: acc / acc_norm / acc_bytes, ECE and MCE, accuracy error bars.
//! - [`consistency`]: majority vote, exact expected maj@k, rank-score@k, budget reallocation.
//! - [`entropy`]: matrix entropy and effective rank of hidden states.
//! - [`outliers`]: LLM.int8() outlier features, both readings of the 6% rule.
//! - [`uncertainty`]: EigV, degree and eccentricity of sampled responses.
//! - [`linalg`]: the symmetric eigensolver they share.
//! - [`perplexity`]: perplexity and KL-divergence statistics as llama.cpp's perplexity tool
//!   computes them.

pub mod calibration;
pub mod consistency;
pub mod continuous;
pub mod entropy;
pub mod linalg;
pub mod outliers;
pub mod pass_at_k;
pub mod passuntil;
pub mod perplexity;
pub mod uncertainty;

/// A metric's inputs are outside its domain.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricError {
    /// pass@k needs at least k samples.
    #[error("pass@{k} needs at least {k} samples, got n = {n}")]
    TooFewSamples {
        /// Samples drawn.
        n: u64,
        /// The k asked for.
        k: u64,
    },
    /// More successes than samples.
    #[error("{c} successes out of {n} samples")]
    SuccessesExceedSamples {
        /// Samples.
        n: u64,
        /// Successes.
        c: u64,
    },
    /// A parameter outside its range.
    #[error("{0}")]
    Domain(String),
    /// Too few points for a fit.
    #[error("a fit needs at least {needed} usable points, got {got}")]
    TooFewPoints {
        /// Points needed.
        needed: usize,
        /// Points given (after dropping unusable ones).
        got: usize,
    },
}

/// Mean of `x`.
pub(crate) fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator).
pub(crate) fn sd_ddof1(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)).sqrt()
}
