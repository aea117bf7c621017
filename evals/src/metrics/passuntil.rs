//! PassUntil (Hu et al., "Unlock Predictable Scaling from Emergent Abilities"): sample until
//! `r` samples pass, record the number of samples `K`, and estimate the pass rate.
//!
//! Per instance: the MLE `r/K` (the paper's PU, biased upward) and the unbiased `(r−1)/(K−1)`
//! for `r ≥ 2`. A problem that reaches the cap with fewer than `r` successes is a censored
//! record, reported with a one-sided 95% upper bound instead of a silent 0. `K` is the index
//! of the r-th success in sample-index order, never where a batch happened to end.
//! Per task: the mean of instance PUs; the scaling law `PU(N) = exp(−c·N^−α)` fitted as a line
//! in `(ln N, ln(−ln PU))`; and the emergence test, the sign of the quadratic term of that
//! curve with a bootstrap interval.

use super::{mean, MetricError};

/// What sampling one instance produced, in sample-index order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instance {
    /// Successes counted (≤ r).
    pub successes: u64,
    /// Samples counted: the index of the r-th success plus one, or the cap.
    pub trials: u64,
    /// The r the run asked for.
    pub r: u64,
}

impl Instance {
    /// Reads verdicts in sample-index order and stops at the r-th success or at `cap` samples.
    /// Verdicts past the stopping point (already in flight) are ignored.
    pub fn from_verdicts(
        verdicts: impl IntoIterator<Item = bool>,
        r: u64,
        cap: u64,
    ) -> Result<Self, MetricError> {
        if r == 0 {
            return Err(MetricError::Domain("r must be at least 1".into()));
        }
        let (mut successes, mut trials) = (0, 0);
        for pass in verdicts.into_iter().take(cap as usize) {
            trials += 1;
            successes += u64::from(pass);
            if successes == r {
                break;
            }
        }
        Ok(Instance {
            successes,
            trials,
            r,
        })
    }

    /// Whether sampling stopped at the cap before the r-th success.
    pub fn censored(&self) -> bool {
        self.successes < self.r
    }

    /// The paper's PU, `r/K` (MLE); for a censored record, `successes/trials` (0 for none).
    pub fn pu_mle(&self) -> f64 {
        if self.trials == 0 {
            return 0.0;
        }
        self.successes as f64 / self.trials as f64
    }

    /// The unbiased `(r−1)/(K−1)`; `None` for r = 1 (no useful unbiased estimator exists) or a
    /// censored record.
    pub fn pu_unbiased(&self) -> Option<f64> {
        (!self.censored() && self.r >= 2 && self.trials >= 2)
            .then(|| (self.r - 1) as f64 / (self.trials - 1) as f64)
    }

    /// The unbiased estimate of the pass rate under the run's own scheme, which stops at the
    /// r-th success or at the cap: `(r−1)/(K−1)` at the r-th success, `s/K` for a censored
    /// record (Girshick, Mosteller and Savage's path-counting estimator: paths to the stopping
    /// point through a first success over all paths to it). Its mean over problems is an
    /// unbiased estimate of the task's mean pass rate, censored problems included. `None` for
    /// r = 1, where the only unbiased estimator, `1[K = 1]`, is useless.
    pub fn pu_unbiased_capped(&self) -> Option<f64> {
        if self.r < 2 || self.trials == 0 {
            return None;
        }
        Some(if self.censored() {
            self.successes as f64 / self.trials as f64
        } else {
            (self.r - 1) as f64 / (self.trials - 1) as f64
        })
    }

    /// Exact two-sided interval (level `1 − alpha`) on the pass rate of a record that stopped
    /// at its r-th success in K samples, for inverse-binomial sampling: `p_L` with
    /// `P(K ≤ k | p_L) = alpha/2` and `p_U` with `P(K ≥ k | p_U) = alpha/2`. Narrower above
    /// than Clopper–Pearson for a fixed K, which over-covers here. `None` for a censored
    /// record.
    pub fn inverse_binomial_interval(&self, alpha: f64) -> Option<(f64, f64)> {
        if self.censored() || self.trials == 0 {
            return None;
        }
        let (r, k) = (self.r, self.trials);
        // K ≤ k ⇔ Binomial(k, p) ≥ r; K ≥ k ⇔ Binomial(k − 1, p) ≤ r − 1.
        let lo = 1.0 - binomial_upper_bound(k - r, k, alpha / 2.0);
        let hi = binomial_upper_bound(r - 1, k - 1, alpha / 2.0);
        Some((lo, hi))
    }

    /// One-sided 95% upper bound on the pass rate of a censored record (Clopper–Pearson:
    /// the p at which seeing at most `successes` in `trials` has probability 5%). For 0
    /// successes it is `1 − 0.05^{1/K}`.
    pub fn upper95(&self) -> f64 {
        binomial_upper_bound(self.successes, self.trials, 0.05)
    }
}

/// The `p` with `P(X ≤ s | n, p) = alpha` for `X ~ Binomial(n, p)`: a one-sided upper bound.
pub fn binomial_upper_bound(s: u64, n: u64, alpha: f64) -> f64 {
    if n == 0 || s >= n {
        return 1.0;
    }
    if s == 0 {
        return 1.0 - alpha.powf(1.0 / n as f64);
    }
    // P(X ≤ s) falls as p rises; bisect on it, summing the pmf in logs.
    let cdf = |p: f64| -> f64 {
        let (lp, lq) = (p.ln(), (-p).ln_1p());
        let mut log_binom = 0.0f64; // ln C(n, 0)
        let mut total = 0.0;
        for i in 0..=s {
            if i > 0 {
                log_binom += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            total += (log_binom + i as f64 * lp + (n - i) as f64 * lq).exp();
        }
        total
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `E[1/K]` when sampling until the first success at pass rate `p` (K geometric):
/// `−p·ln p/(1−p)`; its ratio to `p` is the upward bias of the r = 1 estimate `1/K`.
pub fn expected_inverse_k_r1(p: f64) -> Result<f64, MetricError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(MetricError::Domain(format!(
            "pass rate {p} must lie in (0, 1)"
        )));
    }
    Ok(-p * p.ln() / (1.0 - p))
}

/// Task PU at model size `n` from per-instance laws: the mean of each instance's prediction
/// (the paper's instance-level fitting).
pub fn predict_from_instances(laws: &[ScalingLaw], n: f64) -> Result<f64, MetricError> {
    if laws.is_empty() {
        return Err(MetricError::TooFewPoints { needed: 1, got: 0 });
    }
    Ok(laws.iter().map(|l| l.predict(n)).sum::<f64>() / laws.len() as f64)
}

/// Task-level PassUntil: the mean of instance PUs (MLE), with how many were censored.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPassUntil {
    /// Mean of the instances' `r/K` (censored ones count at their observed rate, usually 0).
    pub pu: f64,
    /// Mean of the unbiased estimates over the instances that have one.
    pub pu_unbiased: Option<f64>,
    /// Mean of [`Instance::pu_unbiased_capped`] over every instance, censored ones included:
    /// unbiased for the task's mean pass rate (r ≥ 2).
    pub pu_unbiased_all: Option<f64>,
    /// Instances.
    pub instances: usize,
    /// Instances that reached the cap.
    pub censored: usize,
}

/// Aggregates instances into the task-level PassUntil.
pub fn task(instances: &[Instance]) -> Result<TaskPassUntil, MetricError> {
    if instances.is_empty() {
        return Err(MetricError::TooFewPoints { needed: 1, got: 0 });
    }
    let mle: Vec<f64> = instances.iter().map(Instance::pu_mle).collect();
    let unbiased: Vec<f64> = instances.iter().filter_map(Instance::pu_unbiased).collect();
    let all: Option<Vec<f64>> = instances.iter().map(Instance::pu_unbiased_capped).collect();
    Ok(TaskPassUntil {
        pu: mean(&mle),
        pu_unbiased: (!unbiased.is_empty()).then(|| mean(&unbiased)),
        pu_unbiased_all: all.map(|v| mean(&v)),
        instances: instances.len(),
        censored: instances.iter().filter(|i| i.censored()).count(),
    })
}

/// A fitted task scaling law `PU(N) = exp(−c·N^−α)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalingLaw {
    /// c.
    pub c: f64,
    /// α.
    pub alpha: f64,
    /// Points used (those with 0 < PU < 1).
    pub points: usize,
}

impl ScalingLaw {
    /// Fits `ln(−ln PU) = ln c − α ln N` by ordinary least squares over the points with
    /// `0 < PU < 1` (others carry no information on this scale and are left out).
    pub fn fit(n: &[f64], pu: &[f64]) -> Result<Self, MetricError> {
        let (x, y) = transform(n, pu)?;
        if x.len() < 2 {
            return Err(MetricError::TooFewPoints {
                needed: 2,
                got: x.len(),
            });
        }
        let [a, b] = polyfit::<2>(&x, &y).ok_or(MetricError::Domain("all N are equal".into()))?;
        Ok(ScalingLaw {
            c: a.exp(),
            alpha: -b,
            points: x.len(),
        })
    }

    /// The predicted PU at model size `n`.
    pub fn predict(&self, n: f64) -> f64 {
        (-self.c * n.powf(-self.alpha)).exp()
    }
}

/// The emergence test: curvature of `ln(−ln PU)` against `ln N`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Emergence {
    /// The quadratic coefficient q of `y = a + b·x + q·x²`.
    pub q: f64,
    /// Bootstrap 95% interval of q (resampling points).
    pub q_ci95: (f64, f64),
    /// The verdict from the interval.
    pub class: Curvature,
}

/// How `ln(−ln PU)` bends in `ln N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curvature {
    /// The interval holds 0: consistent with the scaling law.
    Linear,
    /// q > 0: sub-scaling growth (as multi-step reasoning predicts).
    Convex,
    /// q < 0: super-scaling growth, "accelerated emergence".
    Concave,
}

/// Fits the quadratic and bootstraps q over points (`replicates` resamples, seeded).
pub fn emergence(
    n: &[f64],
    pu: &[f64],
    replicates: usize,
    seed: u64,
) -> Result<Emergence, MetricError> {
    let q = curvature(n, pu)?;
    let (x, y) = transform(n, pu)?;
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % m as u64) as usize
    };
    let mut qs = Vec::with_capacity(replicates);
    let (mut bx, mut by) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for _ in 0..replicates {
        for j in 0..x.len() {
            let i = next(x.len());
            bx[j] = x[i];
            by[j] = y[i];
        }
        // Resamples with fewer than 3 distinct N cannot fit a quadratic; they are skipped.
        if let Some([_, _, bq]) = polyfit::<3>(&bx, &by) {
            qs.push(bq);
        }
    }
    qs.sort_by(f64::total_cmp);
    let ci = if qs.is_empty() {
        (q, q)
    } else {
        let at = |f: f64| qs[((qs.len() - 1) as f64 * f).round() as usize];
        (at(0.025), at(0.975))
    };
    let class = if ci.0 > 0.0 {
        Curvature::Convex
    } else if ci.1 < 0.0 {
        Curvature::Concave
    } else {
        Curvature::Linear
    };
    Ok(Emergence {
        q,
        q_ci95: ci,
        class,
    })
}

/// The quadratic coefficient q of `ln(−ln PU) = a + b·ln N + q·(ln N)²`, fitted by least
/// squares over the points with `0 < PU < 1` (at least three distinct N): the emergence
/// test's statistic, for callers that bootstrap it their own way (over problems, say).
pub fn curvature(n: &[f64], pu: &[f64]) -> Result<f64, MetricError> {
    let (x, y) = transform(n, pu)?;
    if x.len() < 3 {
        return Err(MetricError::TooFewPoints {
            needed: 3,
            got: x.len(),
        });
    }
    let [_, _, q] =
        polyfit::<3>(&x, &y).ok_or(MetricError::Domain("fewer than 3 distinct N".into()))?;
    Ok(q)
}

fn transform(n: &[f64], pu: &[f64]) -> Result<(Vec<f64>, Vec<f64>), MetricError> {
    if n.len() != pu.len() {
        return Err(MetricError::Domain(format!(
            "{} model sizes but {} pass rates",
            n.len(),
            pu.len()
        )));
    }
    Ok(n.iter()
        .zip(pu)
        .filter(|(&n, &p)| n > 0.0 && p > 0.0 && p < 1.0)
        .map(|(&n, &p)| (n.ln(), (-p.ln()).ln()))
        .unzip())
}

/// Least-squares polynomial of degree `D − 1` (coefficients lowest power first), through the
/// normal equations solved by Gaussian elimination with partial pivoting; `None` if singular.
// Row/column indices are the natural notation for elimination on a small dense matrix.
#[allow(clippy::needless_range_loop)]
fn polyfit<const D: usize>(x: &[f64], y: &[f64]) -> Option<[f64; D]> {
    // Centre x for conditioning, then expand back.
    let xm = x.iter().sum::<f64>() / x.len() as f64;
    let mut a = [[0.0f64; D]; D];
    let mut rhs = [0.0f64; D];
    for (&xi, &yi) in x.iter().zip(y) {
        let t = xi - xm;
        let pows: [f64; D] = std::array::from_fn(|k| t.powi(k as i32));
        for r in 0..D {
            rhs[r] += pows[r] * yi;
            for c in 0..D {
                a[r][c] += pows[r] * pows[c];
            }
        }
    }
    let scale = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for col in 0..D {
        let piv = (col..D).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() <= 1e-12 * scale {
            return None;
        }
        a.swap(col, piv);
        rhs.swap(col, piv);
        for r in 0..D {
            if r != col {
                let f = a[r][col] / a[col][col];
                for c in col..D {
                    a[r][c] -= f * a[col][c];
                }
                rhs[r] -= f * rhs[col];
            }
        }
    }
    let centred: [f64; D] = std::array::from_fn(|k| rhs[k] / a[k][k]);
    // p(t) with t = x − xm: expand Σ c_k (x − xm)^k into powers of x.
    let mut out = [0.0f64; D];
    for (k, &ck) in centred.iter().enumerate() {
        let mut binom = 1.0;
        for j in 0..=k {
            // coefficient of x^j in (x − xm)^k: C(k, j)·(−xm)^(k−j)
            out[j] += ck * binom * (-xm).powi((k - j) as i32);
            binom = binom * (k - j) as f64 / (j + 1) as f64;
        }
    }
    Some(out)
}

/// A seeded percentile bootstrap over problems: the 2.5th and 97.5th percentiles of the mean
/// of `values` resampled with replacement `iters` times. The same seed gives the same
/// interval.
pub fn bootstrap_mean_ci95(values: &[f64], iters: usize, seed: u64) -> Option<(f64, f64)> {
    let n = values.len();
    bootstrap_ci95(n, iters, seed, |idx| {
        Some(idx.iter().map(|&i| values[i]).sum::<f64>() / n as f64)
    })
}

/// The percentile bootstrap's 95% interval of any statistic of `n` items: `iters` resamples
/// of `n` indices drawn with replacement (SplitMix64 from `seed`, so the interval is
/// reproducible), `stat` of each. Resamples where the statistic is undefined (`None`: one
/// class only, ...) are skipped; `None` when more than half are, or with no items.
pub fn bootstrap_ci95(
    n: usize,
    iters: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<(f64, f64)> {
    if n == 0 || iters == 0 {
        return None;
    }
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut idx = vec![0usize; n];
    let mut stats: Vec<f64> = Vec::with_capacity(iters);
    for _ in 0..iters {
        for i in idx.iter_mut() {
            *i = ((next() >> 11) as usize) % n;
        }
        if let Some(v) = stat(&idx).filter(|v| !v.is_nan()) {
            stats.push(v);
        }
    }
    if stats.len() * 2 < iters {
        return None;
    }
    stats.sort_by(f64::total_cmp);
    let m = stats.len();
    let at = |q: f64| stats[((q * (m - 1) as f64).round() as usize).min(m - 1)];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_rth_success_in_index_order() {
        let v = [false, true, false, false, true, true, true];
        let i = Instance::from_verdicts(v, 2, 100).unwrap();
        assert_eq!((i.successes, i.trials), (2, 5));
        assert!(!i.censored());
        let capped = Instance::from_verdicts(v, 2, 3).unwrap();
        assert_eq!((capped.successes, capped.trials), (1, 3));
        assert!(capped.censored());
        assert_eq!(capped.pu_unbiased(), None);
        assert!(Instance::from_verdicts(v, 0, 3).is_err());
    }

    #[test]
    fn upper_bound_is_a_5_percent_tail() {
        let i = Instance {
            successes: 3,
            trials: 1000,
            r: 5,
        };
        let p = i.upper95();
        // P(X ≤ 3 | 1000, p) = 0.05 at the bound: check with a direct sum.
        let cdf: f64 = (0..=3u64)
            .map(|k| {
                let lc: f64 = (0..k)
                    .map(|j| ((1000 - j) as f64 / (j + 1) as f64).ln())
                    .sum();
                (lc + k as f64 * p.ln() + (1000 - k) as f64 * (1.0 - p).ln()).exp()
            })
            .sum();
        assert!((cdf - 0.05).abs() < 1e-9, "{cdf}");
        assert!(p > 0.004 && p < 0.01);
    }

    #[test]
    fn polyfit_recovers_a_quadratic() {
        let x = [-2.0, -1.0, 0.5, 1.0, 3.0, 4.0];
        let y: Vec<f64> = x.iter().map(|&t| 1.5 - 0.25 * t + 0.125 * t * t).collect();
        let [a, b, c] = polyfit::<3>(&x, &y).unwrap();
        assert!((a - 1.5).abs() < 1e-10 && (b + 0.25).abs() < 1e-10 && (c - 0.125).abs() < 1e-10);
        assert!(polyfit::<3>(&[1.0, 1.0, 2.0], &[0.0, 1.0, 2.0]).is_none());
    }

    /// P(Binomial(n, p) ≤ s).
    fn binom_cdf(s: u64, n: u64, p: f64) -> f64 {
        let mut total = 0.0;
        let mut term = (1.0 - p).powi(n as i32);
        for i in 0..=s {
            if i > 0 {
                term *= (n - i + 1) as f64 / i as f64 * p / (1.0 - p);
            }
            total += term;
        }
        total
    }

    #[test]
    fn inverse_binomial_bounds_are_exact_tails() {
        let i = Instance {
            successes: 2,
            trials: 40,
            r: 2,
        };
        let (lo, hi) = i.inverse_binomial_interval(0.05).unwrap();
        // P(K ≤ 40 | lo) = P(Bin(40, lo) ≥ 2) = 2.5%; P(K ≥ 40 | hi) = P(Bin(39, hi) ≤ 1) = 2.5%.
        assert!((1.0 - binom_cdf(1, 40, lo) - 0.025).abs() < 1e-6, "{lo}");
        assert!((binom_cdf(1, 39, hi) - 0.025).abs() < 1e-6, "{hi}");
        // Narrower above than Clopper–Pearson on 2 of 40.
        assert!(hi < binomial_upper_bound(2, 40, 0.025));
        assert_eq!(
            Instance {
                successes: 2,
                trials: 2,
                r: 2
            }
            .inverse_binomial_interval(0.05)
            .unwrap()
            .1,
            1.0
        );
    }

    #[test]
    fn the_capped_estimator_is_unbiased() {
        // Every outcome of "sample until the r-th success or N samples", with its probability:
        // the estimator's expectation is p.
        for (r, cap, p) in [(2u64, 6u64, 0.3f64), (3, 8, 0.15), (2, 5, 0.8)] {
            let mut expect = 0.0;
            for k in r..=cap {
                // r-th success at sample k.
                let ways = (1..r).fold(1.0, |acc, j| acc * (k - j) as f64 / j as f64);
                let prob = ways * p.powi(r as i32) * (1.0 - p).powi((k - r) as i32);
                let inst = Instance {
                    successes: r,
                    trials: k,
                    r,
                };
                expect += prob * inst.pu_unbiased_capped().unwrap();
            }
            for s in 0..r {
                // Censored at the cap with s < r successes.
                let ways = (1..=s).fold(1.0, |acc, j| acc * (cap - j + 1) as f64 / j as f64);
                let prob = ways * p.powi(s as i32) * (1.0 - p).powi((cap - s) as i32);
                let inst = Instance {
                    successes: s,
                    trials: cap,
                    r,
                };
                expect += prob * inst.pu_unbiased_capped().unwrap();
            }
            assert!(
                (expect - p).abs() < 1e-12,
                "r {r} cap {cap} p {p}: {expect}"
            );
        }
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let v: Vec<f64> = (0..50).map(|i| (i % 7) as f64 / 7.0).collect();
        let a = bootstrap_mean_ci95(&v, 2000, 3).unwrap();
        assert_eq!(a, bootstrap_mean_ci95(&v, 2000, 3).unwrap());
        let m = mean(&v);
        assert!(a.0 < m && m < a.1, "{a:?} {m}");
        assert_eq!(bootstrap_mean_ci95(&[0.5; 5], 100, 1), Some((0.5, 0.5)));
        assert_eq!(bootstrap_mean_ci95(&[], 100, 1), None);
    }
}
