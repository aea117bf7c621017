//! Sampling with randomness that depends only on (seed, problem, sample, step).
//!
//! Each draw takes its uniform number from a counter-based generator: a hash of the run seed,
//! the problem id, the sample index and the step. A sample's tokens therefore never depend on
//! which other samples share its batch, on thread counts, or on where a run was interrupted.
//!
//! The transforms run in llama.cpp's common order: top-k, top-p and min-p on the model's
//! distribution, then temperature, then the draw. Temperature 0 is greedy. Log-probabilities
//! come from a max-subtracted log-softmax over the full vocabulary, so unlikely tokens keep
//! finite values.

/// Why a token could not be drawn.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A logit is NaN (a broken model or kernel).
    #[error("logit of token {token} is NaN")]
    NanLogit {
        /// The token.
        token: usize,
    },
    /// The logit row is empty.
    #[error("empty logit row")]
    Empty,
    /// A parameter is outside its range.
    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
}

/// Sampling parameters. Disabled transforms keep their neutral value.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 keeps all.
    pub min_p: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |m: String| Err(SamplingError::InvalidParameter(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        Ok(())
    }
}

/// Identifies one sample's random stream: the draw at step `t` is `uniform(key, t)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The run's seed.
    pub seed: u64,
    /// The problem.
    pub problem: u64,
    /// The sample's index within its problem.
    pub sample: u64,
}

fn mix(mut z: u64) -> u64 {
    // SplitMix64's finaliser: a bijection with full avalanche.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SampleKey {
    /// A uniform number in `[0, 1)` for step `step`, a pure function of the key and step.
    pub fn uniform(&self, step: u64) -> f64 {
        const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = mix(self.seed.wrapping_add(GOLDEN));
        h = mix(h ^ self.problem.wrapping_mul(GOLDEN).wrapping_add(1));
        h = mix(h ^ self.sample.wrapping_mul(GOLDEN).wrapping_add(2));
        h = mix(h ^ step.wrapping_mul(GOLDEN).wrapping_add(3));
        (h >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A drawn token with its log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: usize,
    /// Its log-probability under the model (full-vocabulary log-softmax at temperature 1).
    pub logprob: f64,
    /// Its log-probability under the distribution it was drawn from (after the transforms);
    /// 0 for greedy.
    pub sampling_logprob: f64,
}

/// `log Σ exp(x)`, stable; errors on NaN.
pub fn log_sum_exp(logits: &[f32]) -> Result<f64, SamplingError> {
    let mut max = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            return Err(SamplingError::NanLogit { token: i });
        }
        max = max.max(v);
    }
    if logits.is_empty() {
        return Err(SamplingError::Empty);
    }
    if max == f32::NEG_INFINITY {
        return Ok(f64::NEG_INFINITY);
    }
    let m = max as f64;
    let s: f64 = logits.iter().map(|&v| (v as f64 - m).exp()).sum();
    Ok(m + s.ln())
}

/// Index of the largest logit (the first one on ties); errors on NaN.
pub fn argmax(logits: &[f32]) -> Result<usize, SamplingError> {
    let mut best = None::<(usize, f32)>;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            return Err(SamplingError::NanLogit { token: i });
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i).ok_or(SamplingError::Empty)
}

/// Draws a token from `logits` with `params`, using the uniform number `u` in `[0, 1)`.
pub fn sample(logits: &[f32], params: &SamplingParams, u: f64) -> Result<Sampled, SamplingError> {
    let lse = log_sum_exp(logits)?;
    if params.temperature == 0.0 {
        let token = argmax(logits)?;
        return Ok(Sampled {
            token,
            logprob: logits[token] as f64 - lse,
            sampling_logprob: 0.0,
        });
    }
    let inv_t = 1.0 / params.temperature as f64;
    let truncates = params.top_k > 0 || params.top_p < 1.0 || params.min_p > 0.0;
    if !truncates {
        // The whole vocabulary, drawn in index order: no sort needed.
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let z: f64 = logits
            .iter()
            .map(|&l| ((l as f64 - max) * inv_t).exp())
            .sum();
        let target = u * z;
        let mut acc = 0.0;
        let mut pick = (logits.len() - 1, 0.0);
        for (i, &l) in logits.iter().enumerate() {
            let w = ((l as f64 - max) * inv_t).exp();
            acc += w;
            if target < acc && w > 0.0 {
                pick = (i, w);
                break;
            }
        }
        if pick.1 == 0.0 {
            // u·z rounded past the total: the last token with any weight.
            let i = logits
                .iter()
                .rposition(|&l| ((l as f64 - max) * inv_t).exp() > 0.0)
                .unwrap_or(logits.len() - 1);
            pick = (i, ((logits[i] as f64 - max) * inv_t).exp());
        }
        return Ok(Sampled {
            token: pick.0,
            logprob: logits[pick.0] as f64 - lse,
            sampling_logprob: (pick.1 / z).ln(),
        });
    }
    // Candidates, most likely first. Top-k and min-p cut before sorting (min-p keeps the
    // tokens within ln(min_p) of the best logit, a prefix of the sorted order).
    let best = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let floor = if params.min_p > 0.0 {
        best + (params.min_p as f64).ln()
    } else {
        f64::NEG_INFINITY
    };
    let mut cand: Vec<(usize, f32)> = logits
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, l)| l as f64 >= floor)
        .collect();
    let by_logit = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if params.top_k > 0 && params.top_k < cand.len() {
        cand.select_nth_unstable_by(params.top_k - 1, by_logit);
        cand.truncate(params.top_k);
    }
    cand.sort_unstable_by(by_logit);
    // top-p on the model's distribution over the candidates.
    let max = cand[0].1 as f64;
    let weights: Vec<f64> = cand.iter().map(|c| (c.1 as f64 - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut keep = cand.len();
    if params.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, w) in weights.iter().enumerate() {
            acc += w / total;
            if acc >= params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    cand.truncate(keep);
    // Temperature, then the draw.
    let scaled: Vec<f64> = cand
        .iter()
        .map(|c| ((c.1 as f64 - max) * inv_t).exp())
        .collect();
    let z: f64 = scaled.iter().sum();
    let target = u * z;
    let mut acc = 0.0;
    let mut pick = cand.len() - 1;
    for (i, w) in scaled.iter().enumerate() {
        acc += w;
        if target < acc {
            pick = i;
            break;
        }
    }
    let token = cand[pick].0;
    Ok(Sampled {
        token,
        logprob: logits[token] as f64 - lse,
        sampling_logprob: (scaled[pick] / z).ln(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_only_on_the_key_and_step() {
        let k = SampleKey {
            seed: 1,
            problem: 2,
            sample: 3,
        };
        assert_eq!(k.uniform(5), k.uniform(5));
        assert_ne!(k.uniform(5), k.uniform(6));
        assert_ne!(k.uniform(5), SampleKey { sample: 4, ..k }.uniform(5));
        assert_ne!(k.uniform(5), SampleKey { problem: 9, ..k }.uniform(5));
        // Roughly uniform.
        let mean: f64 = (0..10_000).map(|t| k.uniform(t)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn greedy_and_transforms() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let g = sample(&logits, &SamplingParams::greedy(), 0.7).unwrap();
        assert_eq!(g.token, 1);
        let lse = log_sum_exp(&logits).unwrap();
        assert!((g.logprob - (3.0 - lse)).abs() < 1e-12);
        let top1 = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(sample(&logits, &top1, u).unwrap().token, 1);
        }
        // top_p = 0.5: token 1 alone holds 66% of the mass.
        let p = SamplingParams {
            top_p: 0.5,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &p, 0.99).unwrap().token, 1);
        // min_p = 0.3 keeps tokens 1 (1.0) and 2 (e^-1 ≈ 0.37).
        let m = SamplingParams {
            min_p: 0.3,
            ..Default::default()
        };
        let drawn: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| sample(&logits, &m, i as f64 / 100.0).unwrap().token)
            .collect();
        assert_eq!(drawn, [1, 2].into());
    }

    #[test]
    fn full_distribution_matches_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let p = SamplingParams::default();
        let n = 30_000;
        let mut counts = [0usize; 3];
        let key = SampleKey {
            seed: 9,
            problem: 0,
            sample: 0,
        };
        for t in 0..n {
            counts[sample(&logits, &p, key.uniform(t)).unwrap().token] += 1;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = (logits[i] as f64).exp() / z;
            assert!((c as f64 / n as f64 - want).abs() < 0.01, "{i}: {c}");
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let logits = [
            f32::NEG_INFINITY,
            0.0,
            f32::NEG_INFINITY,
            1.0,
            f32::NEG_INFINITY,
        ];
        for params in [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.5,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.9,
                min_p: 0.01,
                ..Default::default()
            },
        ] {
            for i in 0..200 {
                let d = sample(&logits, &params, i as f64 / 200.0).unwrap();
                assert!(d.token == 1 || d.token == 3, "{params:?}: {d:?}");
                assert!(d.logprob.is_finite() && d.sampling_logprob.is_finite());
            }
        }
        // At temperature 1 with nothing cut, the sampling distribution is the model's.
        let d = sample(&logits, &SamplingParams::default(), 0.9).unwrap();
        assert!((d.logprob - d.sampling_logprob).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn nan_is_an_error() {
        assert_eq!(
            sample(&[0.0, f32::NAN], &SamplingParams::default(), 0.5),
            Err(SamplingError::NanLogit { token: 1 })
        );
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
