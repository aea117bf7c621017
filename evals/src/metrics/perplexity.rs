//! Perplexity and KL-divergence statistics as llama.cpp's `llama-perplexity` computes them
//! (EVALS-SPEC §4): the scored half of each chunk, the uint16 encoding of base log-probs,
//! per-token KLD / Δp / same-top, and the aggregate block with its uncertainties.

use crate::metrics::MetricError;

/// Positions scored in a chunk of `n_ctx` tokens: `j ∈ [n_ctx/2, n_ctx − 2]`, logits at `j`
/// predicting token `j + 1`.
pub fn scored_positions(n_ctx: usize) -> std::ops::Range<usize> {
    n_ctx / 2..n_ctx.saturating_sub(1)
}

/// Strided perplexity windows (`--ppl-stride S`): with the context already grown to `n_ctx`,
/// `(n_tokens − n_ctx + S − 1)/S` windows start every S tokens, and the last S positions of
/// each are scored (`j ∈ [n_ctx − S − 1, n_ctx − 2]`).
pub fn strided_windows(
    n_tokens: usize,
    n_ctx: usize,
    stride: usize,
) -> (usize, std::ops::Range<usize>) {
    if stride == 0 || n_tokens < n_ctx || stride >= n_ctx {
        return (0, 0..0);
    }
    (
        (n_tokens - n_ctx).div_ceil(stride),
        n_ctx - stride - 1..n_ctx - 1,
    )
}

/// llama.cpp's HellaSwag scoring: the mean token log-probability of each ending; the
/// prediction is the best mean (first on ties).
pub fn token_mean_prediction(endings: &[&[f64]]) -> (Vec<f64>, usize) {
    let means: Vec<f64> = endings
        .iter()
        .map(|e| e.iter().sum::<f64>() / e.len().max(1) as f64)
        .collect();
    let pred = (0..means.len())
        .reduce(|b, i| if means[i] > means[b] { i } else { b })
        .unwrap_or(0);
    (means, pred)
}

/// `(x̄, sqrt((⟨x²⟩ − x̄²)/(n − 1)))`; the uncertainty is 0 unless the variance is positive
/// and n > 10, as llama.cpp reports it.
pub fn mean_and_uncertainty(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let m = sum / n as f64;
    let var = sum2 / n as f64 - m * m;
    let unc = if var > 0.0 && n > 10 {
        (var / (n as f64 - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, unc)
}

/// Perplexity from per-token negative log-likelihoods: `exp(mean)` and `PPL·σ`, where σ is
/// the standard error of the mean nll (llama.cpp's "Final estimate").
pub fn perplexity(nll: &[f64]) -> Result<(f64, f64), MetricError> {
    if nll.len() < 2 {
        return Err(MetricError::TooFewPoints {
            needed: 2,
            got: nll.len(),
        });
    }
    let n = nll.len() as f64;
    let m = nll.iter().sum::<f64>() / n;
    let m2 = nll.iter().map(|x| x * x).sum::<f64>() / n;
    let sigma = ((m2 - m * m) / (n - 1.0)).max(0.0).sqrt();
    let ppl = m.exp();
    Ok((ppl, ppl * sigma))
}

/// llama.cpp's percentile: linear interpolation at `f·(n−1)` over the sorted values.
pub fn percentile(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    if f <= 0.0 {
        return sorted[0];
    }
    if f >= 1.0 {
        return sorted[sorted.len() - 1];
    }
    let p = f * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let frac = p - i as f64;
    (1.0 - frac) * sorted[i] + frac * sorted[(i + 1).min(sorted.len() - 1)]
}

/// Median: the middle element, or the mean of the two middle ones.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Log-softmax of a logit row: `(max, lse)` with `log p_i = l_i − max − lse`.
fn max_lse(logits: &[f32]) -> (f64, f64) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln();
    (max, lse)
}

/// A base log-prob row encoded as llama.cpp stores it: `scale`, `min_log_prob` and uint16s.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedRow {
    /// `(max − min)/65535`.
    pub scale: f32,
    /// `min − max − lse`.
    pub min_log_prob: f32,
    /// Quantized values.
    pub q: Vec<u16>,
}

impl EncodedRow {
    /// Encodes logits (clamping log-probs more than 16 below the top).
    pub fn encode(logits: &[f32]) -> Self {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let min = logits
            .iter()
            .fold(f32::INFINITY, |m, &v| m.min(v))
            .max(max - 16.0);
        let lse = logits
            .iter()
            .map(|&l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
        let min_log_prob = min - max - lse;
        let scale = (max - min) / 65535.0;
        let q = logits
            .iter()
            .map(|&l| {
                if l > min {
                    let v = (l - min) / scale + 12_582_912.0;
                    ((v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000).clamp(0, 65535) as u16
                } else {
                    0
                }
            })
            .collect();
        EncodedRow {
            scale,
            min_log_prob,
            q,
        }
    }

    /// Decoded log-probs `scale·q + min_log_prob`.
    pub fn decode(&self) -> Vec<f64> {
        self.q
            .iter()
            .map(|&q| (self.scale * q as f32 + self.min_log_prob) as f64)
            .collect()
    }
}

/// Per-token comparison of a model Q with a base: KL(base‖Q), Δp of the correct token,
/// whether the top tokens agree, and both nlls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenComparison {
    /// KL(base ‖ Q) over entries with base log-prob above −16.
    pub kld: f64,
    /// p_Q(tok) − p_base(tok).
    pub delta_p: f64,
    /// argmax agreement (first index on ties).
    pub same_top: bool,
    /// −log p_Q(tok).
    pub nll_q: f64,
    /// −log p_base(tok).
    pub nll_base: f64,
}

/// Compares Q's logits with base log-probs at one position whose correct token is `tok`.
pub fn compare_token(
    base_logp: &[f64],
    q_logits: &[f32],
    tok: usize,
) -> Result<TokenComparison, MetricError> {
    if base_logp.len() != q_logits.len() || tok >= q_logits.len() {
        return Err(MetricError::Domain(
            "rows differ in length or the token is out of range".into(),
        ));
    }
    let (max, lse) = max_lse(q_logits);
    let logp_q = |i: usize| q_logits[i] as f64 - max - lse;
    let kld = base_logp
        .iter()
        .enumerate()
        .filter(|(_, &b)| b > -16.0)
        .map(|(i, &b)| b.exp() * (b - logp_q(i)))
        .sum();
    let first_max = |v: &mut dyn Iterator<Item = f64>| {
        v.enumerate()
            .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, x)| {
                if x > bv {
                    (i, x)
                } else {
                    (bi, bv)
                }
            })
            .0
    };
    let top_q = first_max(&mut q_logits.iter().map(|&x| x as f64));
    let top_b = first_max(&mut base_logp.iter().copied());
    Ok(TokenComparison {
        kld,
        delta_p: logp_q(tok).exp() - base_logp[tok].exp(),
        same_top: top_q == top_b,
        nll_q: -logp_q(tok),
        nll_base: -base_logp[tok],
    })
}

/// A value with its uncertainty.
pub type Estimate = (f64, f64);

/// llama.cpp's KL-divergence summary block.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KlSummary {
    /// Scored tokens.
    pub n: usize,
    /// PPL(Q) ± uncertainty.
    pub ppl_q: Estimate,
    /// PPL(base) ± uncertainty.
    pub ppl_base: Estimate,
    /// Correlation of the two nll series.
    pub cor: f64,
    /// ln(PPL(Q)/PPL(base)) ± uncertainty.
    pub ln_ppl_ratio: Estimate,
    /// PPL(Q)/PPL(base) ± uncertainty.
    pub ppl_ratio: Estimate,
    /// PPL(Q) − PPL(base) ± uncertainty.
    pub ppl_diff: Estimate,
    /// Mean KLD ± uncertainty.
    pub kld: Estimate,
    /// KLD at max, 99.9, 99, 95, 90, median, 10, 5, 1, 0.1 percent, min.
    pub kld_percentiles: Vec<(&'static str, f64)>,
    /// Mean Δp ± uncertainty.
    pub delta_p: Estimate,
    /// RMS Δp ± uncertainty.
    pub rms_delta_p: Estimate,
    /// Δp at max, 99.9, 99, 95, 90, 75, median, 25, 10, 5, 1, 0.1 percent, min.
    pub delta_p_percentiles: Vec<(&'static str, f64)>,
    /// Share of positions whose top tokens agree ± uncertainty.
    pub same_top: Estimate,
}

/// Aggregates per-token comparisons the way llama.cpp prints them.
pub fn summarize(tokens: &[TokenComparison]) -> Result<KlSummary, MetricError> {
    let n = tokens.len();
    if n < 2 {
        return Err(MetricError::TooFewPoints { needed: 2, got: n });
    }
    let nf = n as f64;
    let stat = |f: &dyn Fn(&TokenComparison) -> f64| {
        let (s, s2) = tokens
            .iter()
            .fold((0.0, 0.0), |(s, s2), t| (s + f(t), s2 + f(t) * f(t)));
        mean_and_uncertainty(s, s2, n)
    };
    let (mq, uq) = stat(&|t| t.nll_q);
    let (mb, ub) = stat(&|t| t.nll_base);
    let cross = tokens.iter().map(|t| t.nll_q * t.nll_base).sum::<f64>() / nf;
    let cov = (cross - mq * mb) / (nf - 1.0);
    let ppl_q = (mq.exp(), mq.exp() * uq);
    let ppl_b = (mb.exp(), mb.exp() * ub);
    let ln_ratio = (mq - mb, (uq * uq + ub * ub - 2.0 * cov).max(0.0).sqrt());
    let ratio = ln_ratio.0.exp();
    let diff_unc = (ppl_q.1 * ppl_q.1 + ppl_b.1 * ppl_b.1 - 2.0 * ppl_q.0 * ppl_b.0 * cov)
        .max(0.0)
        .sqrt();
    let mut kld: Vec<f64> = tokens.iter().map(|t| t.kld).collect();
    let mut dp: Vec<f64> = tokens.iter().map(|t| t.delta_p).collect();
    kld.sort_by(f64::total_cmp);
    dp.sort_by(f64::total_cmp);
    let (dp2_sum, dp4_sum) = dp
        .iter()
        .fold((0.0, 0.0), |(a, b), x| (a + x * x, b + x.powi(4)));
    let (dp2_mean, dp2_unc) = mean_and_uncertainty(dp2_sum, dp4_sum, n);
    let rms = dp2_mean.sqrt();
    let same = tokens.iter().filter(|t| t.same_top).count() as f64 / nf;
    let pct = |v: &[f64], list: &[(&'static str, f64)]| -> Vec<(&'static str, f64)> {
        list.iter()
            .map(|&(name, f)| {
                (
                    name,
                    if name == "median" {
                        median(v)
                    } else {
                        percentile(v, f)
                    },
                )
            })
            .collect()
    };
    Ok(KlSummary {
        n,
        ppl_q,
        ppl_base: ppl_b,
        cor: cov / (uq * ub),
        ln_ppl_ratio: ln_ratio,
        ppl_ratio: (ratio, ratio * ln_ratio.1),
        ppl_diff: (ppl_q.0 - ppl_b.0, diff_unc),
        kld: stat(&|t| t.kld),
        kld_percentiles: pct(
            &kld,
            &[
                ("max", 1.0),
                ("99.9%", 0.999),
                ("99%", 0.99),
                ("95%", 0.95),
                ("90%", 0.90),
                ("median", 0.5),
                ("10%", 0.10),
                ("5%", 0.05),
                ("1%", 0.01),
                ("0.1%", 0.001),
                ("min", 0.0),
            ],
        ),
        delta_p: stat(&|t| t.delta_p),
        rms_delta_p: (rms, if rms > 0.0 { 0.5 / rms * dp2_unc } else { 0.0 }),
        delta_p_percentiles: pct(
            &dp,
            &[
                ("max", 1.0),
                ("99.9%", 0.999),
                ("99%", 0.99),
                ("95%", 0.95),
                ("90%", 0.90),
                ("75%", 0.75),
                ("median", 0.5),
                ("25%", 0.25),
                ("10%", 0.10),
                ("5%", 0.05),
                ("1%", 0.01),
                ("0.1%", 0.001),
                ("min", 0.0),
            ],
        ),
        same_top: (same, (same * (1.0 - same) / (nf - 1.0)).sqrt()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_half_of_a_chunk() {
        assert_eq!(scored_positions(512).len(), 255);
        assert_eq!(scored_positions(512).start, 256);
    }
}
