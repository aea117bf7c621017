//! Sampling with randomness that depends only on (seed, problem, sample, step).
//!
//! Each draw takes its uniform number from a counter-based generator: a hash of the run seed,
//! the problem id, the sample index and the step. A sample's tokens therefore never depend on
//! which other samples share its batch, on thread counts, or on where a run was interrupted.
//!
//! The transforms run in llama.cpp's common order: logit bias, then the repetition,
//! frequency and presence penalties over the last tokens, then top-k, typical, top-p and
//! min-p, then temperature, then the draw. Temperature 0 is greedy (after bias and
//! penalties). Log-probabilities come from a max-subtracted log-softmax over the full
//! vocabulary, so unlikely tokens keep finite values: [`Sampled::logprob`] is the raw model's,
//! [`Sampled::sampling_logprob`] that of the distribution the token was drawn from. Both are
//! computed in f64 with [`crate::weights`]' exponential and summation order, the same bits on
//! every machine.

use std::borrow::Cow;

use crate::backend::Token;
use crate::weights::exp;

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
    /// Logit biases masked every token.
    #[error("every token is masked (logit bias −inf on the whole vocabulary)")]
    AllMasked,
}

/// A bias added to one token's logit before sampling (−inf bans the token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogitBias {
    /// The token.
    pub token: Token,
    /// Added to its logit.
    pub bias: f32,
}

impl std::str::FromStr for LogitBias {
    type Err = String;
    /// `TOKEN=BIAS`, `TOKEN+BIAS` or `TOKEN-BIAS` (`15043=-inf`, `15043-inf`, `29+2.5`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not TOKEN=BIAS (e.g. 15043=-inf or 29+2.5)");
        let at = s.find(['=', '+', '-']).ok_or_else(bad)?;
        let token = s[..at].trim().parse::<Token>().map_err(|_| bad())?;
        let rest = if s.as_bytes()[at] == b'=' {
            &s[at + 1..]
        } else {
            &s[at..]
        };
        let bias = match rest.trim().to_ascii_lowercase().as_str() {
            "-inf" => f32::NEG_INFINITY,
            v => v
                .trim_start_matches('+')
                .parse::<f32>()
                .map_err(|_| bad())?,
        };
        Ok(LogitBias { token, bias })
    }
}

/// JSON has no infinities: a bias is a number, or the string `"-inf"`.
mod bias_serde {
    use super::LogitBias;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f32),
        S(String),
    }

    #[derive(Serialize, Deserialize)]
    struct Entry {
        token: u32,
        bias: Num,
    }

    pub fn serialize<S: Serializer>(v: &[LogitBias], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|b| Entry {
                token: b.token,
                bias: if b.bias.is_finite() {
                    Num::F(b.bias)
                } else {
                    Num::S(if b.bias > 0.0 { "inf" } else { "-inf" }.into())
                },
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LogitBias>, D::Error> {
        Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| {
                let bias = match e.bias {
                    Num::F(f) => f,
                    Num::S(s) if s == "-inf" => f32::NEG_INFINITY,
                    Num::S(s) if s == "inf" => f32::INFINITY,
                    Num::S(s) => {
                        return Err(serde::de::Error::custom(format!("bad logit bias {s:?}")))
                    }
                };
                Ok(LogitBias {
                    token: e.token,
                    bias,
                })
            })
            .collect()
    }
}

/// Sampling parameters. Disabled transforms keep their neutral value; a record written
/// before a field existed reads it as neutral.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (after top-p, as in
    /// llama.cpp); 0 keeps all.
    pub min_p: f32,
    /// Locally typical sampling: keep the tokens whose surprise is closest to the
    /// distribution's entropy, up to `typical_p` of the mass; 1 keeps all.
    pub typical_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens among the last
    /// `penalty_last_n` by this; 1 is off.
    pub repeat_penalty: f32,
    /// Subtract `frequency_penalty × count` from a recent token's logit; 0 is off.
    pub frequency_penalty: f32,
    /// Subtract `presence_penalty` from the logit of any recent token; 0 is off.
    pub presence_penalty: f32,
    /// How many of the latest tokens (prompt included) the penalties look at; 0: none.
    pub penalty_last_n: usize,
    /// Biases added to logits first.
    #[serde(with = "bias_serde")]
    pub logit_bias: Vec<LogitBias>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
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
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(format!("typical_p {} must be in (0, 1]", self.typical_p));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(format!(
                "repeat_penalty {} must be positive",
                self.repeat_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("frequency and presence penalties must be finite".into());
        }
        if let Some(b) = self
            .logit_bias
            .iter()
            .find(|b| b.bias.is_nan() || b.bias == f32::INFINITY)
        {
            return bad(format!(
                "logit bias {} for token {} must be a number or -inf",
                b.bias, b.token
            ));
        }
        Ok(())
    }

    fn penalizes(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
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
    Ok(lse_with_max(logits, checked_max(logits)?))
}

/// `log Σ exp(x)` given the largest logit `max`.
fn lse_with_max(logits: &[f32], max: f32) -> f64 {
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    crate::weights::log_sum_exp(logits, max)
}

/// The largest logit; errors on NaN and on an empty row.
fn checked_max(logits: &[f32]) -> Result<f32, SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::Empty);
    }
    crate::weights::max_or_nan(logits).map_err(|token| SamplingError::NanLogit { token })
}

thread_local! {
    /// A draw's weights over the whole vocabulary, reused from draw to draw.
    static WEIGHTS: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `n` most likely tokens of a logit row with their log-probabilities (full-vocabulary
/// log-softmax), most likely first, ties by lower id; errors on NaN.
pub fn top_logprobs(logits: &[f32], n: usize) -> Result<Vec<(Token, f64)>, SamplingError> {
    let lse = log_sum_exp(logits)?;
    let n = n.min(logits.len());
    if n == 0 {
        return Ok(Vec::new());
    }
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, by_logit);
        idx.truncate(n);
    }
    idx.sort_unstable_by(by_logit);
    Ok(idx
        .into_iter()
        .map(|i| (i as Token, logits[i] as f64 - lse))
        .collect())
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

/// The logits after bias and penalties (borrowed unchanged when neither applies).
fn adjusted<'a>(
    logits: &'a [f32],
    params: &SamplingParams,
    prev: &[&[Token]],
) -> Result<Cow<'a, [f32]>, SamplingError> {
    if params.logit_bias.is_empty() && !params.penalizes() {
        return Ok(Cow::Borrowed(logits));
    }
    let mut work = logits.to_vec();
    for b in &params.logit_bias {
        let slot = work.get_mut(b.token as usize).ok_or_else(|| {
            SamplingError::InvalidParameter(format!(
                "logit bias names token {} outside the vocabulary of {}",
                b.token,
                logits.len()
            ))
        })?;
        *slot += b.bias;
    }
    if params.penalizes() {
        // Counts over the last `penalty_last_n` tokens, newest pieces last.
        let mut counts = std::collections::HashMap::<Token, u32>::new();
        let mut left = params.penalty_last_n;
        for piece in prev.iter().rev() {
            let take = left.min(piece.len());
            for &t in &piece[piece.len() - take..] {
                *counts.entry(t).or_default() += 1;
            }
            left -= take;
            if left == 0 {
                break;
            }
        }
        for (&t, &c) in &counts {
            let Some(l) = work.get_mut(t as usize) else {
                continue;
            };
            if *l <= 0.0 {
                *l *= params.repeat_penalty;
            } else {
                *l /= params.repeat_penalty;
            }
            *l -= c as f32 * params.frequency_penalty + params.presence_penalty;
        }
    }
    Ok(Cow::Owned(work))
}

/// The candidates llama.cpp's chain keeps (top-k, typical, top-p, min-p; before temperature)
/// from `logits` (already penalized and biased, best logit `best`), most likely first.
fn truncated(logits: &[f32], params: &SamplingParams, best: f64) -> Vec<(usize, f32)> {
    // llama.cpp's chain: top-k, typical, top-p, min-p, then temperature. Top-p normalizes over
    // what top-k (and typical) left, so min-p must not cut before it. Without typical, min-p's
    // survivors are still a prefix of the sorted candidates (the tokens within ln(min_p) of
    // the best logit), and top-p's cut is a prefix too, so their intersection is the shorter
    // prefix: only min-p's survivors need sorting, with top-p's masses taken over the whole
    // top-k set (its normalizer summed without a sort).
    let early_min_p = params.typical_p >= 1.0;
    let floor = if params.min_p > 0.0 && early_min_p {
        best + (params.min_p as f64).ln()
    } else {
        f64::NEG_INFINITY
    };
    let by_logit = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let finite = |&(_, l): &(usize, f32)| l > f32::NEG_INFINITY;
    // Top-k's survivors (every finite logit without top-k) and, for top-p, their total weight.
    let (mut cand, top_k_mass): (Vec<(usize, f32)>, f64) =
        if params.top_k > 0 && params.top_k < logits.len() {
            let mut all: Vec<(usize, f32)> =
                logits.iter().copied().enumerate().filter(finite).collect();
            if params.top_k < all.len() {
                all.select_nth_unstable_by(params.top_k - 1, by_logit);
                all.truncate(params.top_k);
            }
            let mass = all.iter().map(|c| exp(c.1 as f64 - best)).sum();
            all.retain(|&(_, l)| l as f64 >= floor);
            (all, mass)
        } else {
            if params.top_p < 1.0 && early_min_p {
                let mass = logits.iter().map(|&l| exp(l as f64 - best)).sum();
                return top_p_prefix(logits, params.top_p as f64, best, floor, mass);
            }
            let cand = logits
                .iter()
                .copied()
                .enumerate()
                .filter(|&(_, l)| l as f64 >= floor && l > f32::NEG_INFINITY)
                .collect();
            // Top-p with early min-p returned above: its mass is not needed here.
            (cand, f64::NAN)
        };
    cand.sort_unstable_by(by_logit);
    let probs = |cand: &[(usize, f32)]| -> Vec<f64> {
        let max = cand[0].1 as f64;
        let w: Vec<f64> = cand.iter().map(|c| exp(c.1 as f64 - max)).collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    };
    if params.typical_p < 1.0 && cand.len() > 1 {
        // Keep the tokens whose surprise −log p is closest to the entropy, until they hold
        // typical_p of the mass; then back to most-likely-first order.
        let p = probs(&cand);
        let entropy: f64 = p.iter().filter(|&&x| x > 0.0).map(|&x| -x * x.ln()).sum();
        let mut order: Vec<usize> = (0..cand.len()).collect();
        let shift = |i: usize| (-p[i].ln() - entropy).abs();
        order.sort_by(|&a, &b| shift(a).total_cmp(&shift(b)).then(a.cmp(&b)));
        let mut acc = 0.0;
        let mut keep = order.len();
        for (n, &i) in order.iter().enumerate() {
            acc += p[i];
            if acc >= params.typical_p as f64 {
                keep = n + 1;
                break;
            }
        }
        order.truncate(keep);
        order.sort_unstable();
        cand = order.into_iter().map(|i| cand[i]).collect();
    }
    // top-p on the model's distribution over what top-k and typical left.
    if params.top_p < 1.0 {
        let p: Vec<f64> = if early_min_p {
            cand.iter()
                .map(|c| exp(c.1 as f64 - best) / top_k_mass)
                .collect()
        } else {
            probs(&cand)
        };
        let mut acc = 0.0;
        for (i, w) in p.iter().enumerate() {
            acc += w;
            if acc >= params.top_p as f64 {
                cand.truncate(i + 1);
                break;
            }
        }
    }
    if params.min_p > 0.0 && !early_min_p {
        let floor = cand[0].1 as f64 + (params.min_p as f64).ln();
        cand.retain(|c| c.1 as f64 >= floor);
    }
    cand
}

/// Top-p (after min-p's `floor`) over the whole row, whose weights `e^(l − best)` sum to
/// `mass`: the most likely tokens, most likely first, until their share of `mass` reaches
/// `top_p` (all of them if it never does). The cut is a prefix of the row sorted by logit, and
/// so is every set of the logits above a threshold: only the logits within `delta` of the best
/// are sorted, `delta` growing fourfold until the cut falls inside them. The same candidates,
/// shares and sums, in the same order, as sorting the whole row.
fn top_p_prefix(logits: &[f32], top_p: f64, best: f64, floor: f64, mass: f64) -> Vec<(usize, f32)> {
    let by_logit = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    // Below the lowest finite logit (or min-p's floor) a threshold keeps every candidate.
    let lowest = logits
        .iter()
        .copied()
        .filter(|&l| l > f32::NEG_INFINITY)
        .fold(f32::INFINITY, f32::min) as f64;
    let mut delta = 4.0f64;
    loop {
        let lo = (best - delta).max(floor);
        let every = !lo.is_finite();
        let mut cand: Vec<(usize, f32)> = logits
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, l)| l > f32::NEG_INFINITY && (every || l as f64 >= lo))
            .collect();
        cand.sort_unstable_by(by_logit);
        let mut acc = 0.0;
        for (i, c) in cand.iter().enumerate() {
            acc += exp(c.1 as f64 - best) / mass;
            if acc >= top_p {
                cand.truncate(i + 1);
                return cand;
            }
        }
        // Every candidate is in: nothing is cut.
        if every || lo <= floor || lo <= lowest {
            return cand;
        }
        delta *= 4.0;
    }
}

/// The distribution a draw takes at temperature > 0: the tokens llama.cpp's sampler chain
/// keeps from `logits` (penalties over `prev`, logit biases, then top-k, typical, top-p,
/// min-p), each with its probability after temperature, most likely first. What [`sample`]
/// draws from, for checks against other samplers.
pub fn distribution(
    logits: &[f32],
    params: &SamplingParams,
    prev: &[&[Token]],
) -> Result<Vec<(Token, f64)>, SamplingError> {
    params.validate()?;
    if let Some(t) = logits.iter().position(|l| l.is_infinite() && *l > 0.0) {
        return Err(SamplingError::InvalidParameter(format!(
            "logit of token {t} is +inf: no distribution"
        )));
    }
    log_sum_exp(logits)?;
    let work = adjusted(logits, params, prev)?;
    let best = work.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    if best == f64::NEG_INFINITY {
        return Err(SamplingError::AllMasked);
    }
    if params.temperature == 0.0 {
        return Ok(vec![(argmax(&work)? as Token, 1.0)]);
    }
    let cand = truncated(&work, params, best);
    let inv_t = 1.0 / params.temperature as f64;
    let max = cand[0].1 as f64;
    let w: Vec<f64> = cand
        .iter()
        .map(|c| exp((c.1 as f64 - max) * inv_t))
        .collect();
    let z: f64 = w.iter().sum();
    Ok(cand
        .iter()
        .zip(w)
        .filter(|(_, w)| *w > 0.0)
        .map(|(c, w)| (c.0 as Token, w / z))
        .collect())
}

/// Draws a token from `logits` with `params`, using the uniform number `u` in `[0, 1)`.
/// `prev` holds the tokens before this one, oldest first, in pieces (a prompt, then what
/// was generated after it); only the penalties read it.
pub fn sample(
    logits: &[f32],
    params: &SamplingParams,
    prev: &[&[Token]],
    u: f64,
) -> Result<Sampled, SamplingError> {
    let max_raw = checked_max(logits)?;
    let work = adjusted(logits, params, prev)?;
    let unadjusted = matches!(work, Cow::Borrowed(_));
    // The log-sum-exp of the raw logits, for the token's log-probability; computed on demand
    // (a draw at temperature 1 from the unadjusted logits has its terms already).
    let lse_of_raw = || lse_with_max(logits, max_raw);
    let logits_raw = logits;
    let logits: &[f32] = &work;
    // The adjusted logits hold no NaN (the raw ones were checked; biases and penalties are
    // finite), so this is their maximum.
    let best = crate::weights::max_or_nan(logits).unwrap_or(f32::NAN) as f64;
    if best == f64::NEG_INFINITY {
        return Err(SamplingError::AllMasked);
    }
    if params.temperature == 0.0 {
        let token = argmax(logits)?;
        return Ok(Sampled {
            token,
            logprob: logits_raw[token] as f64 - lse_of_raw(),
            sampling_logprob: 0.0,
        });
    }
    let inv_t = 1.0 / params.temperature as f64;
    let truncates =
        params.top_k > 0 || params.top_p < 1.0 || params.min_p > 0.0 || params.typical_p < 1.0;
    if !truncates {
        // The whole vocabulary, drawn in index order: no sort needed. Each weight is computed
        // once, kept for the walk; their sum is `log_sum_exp`'s sequence of additions.
        let max = best;
        return WEIGHTS.with_borrow_mut(|w| {
            let z = crate::weights::weights(logits, max, inv_t, w);
            let pick = crate::weights::pick(w, u * z).unwrap_or_else(|| {
                // u·z rounded past the total: the last token with any weight.
                let i = w
                    .iter()
                    .rposition(|&wi| wi > 0.0)
                    .unwrap_or(logits.len() - 1);
                (i, w[i])
            });
            // At temperature 1 on the raw logits the weights are exp(l − max) and `z` their
            // sum: exactly the terms and order of `log_sum_exp`.
            let lse = if unadjusted && inv_t == 1.0 {
                max + z.ln()
            } else {
                lse_of_raw()
            };
            Ok(Sampled {
                token: pick.0,
                logprob: logits_raw[pick.0] as f64 - lse,
                sampling_logprob: (pick.1 / z).ln(),
            })
        });
    }
    let raw = |t: usize| logits_raw[t] as f64 - lse_of_raw();
    let cand = truncated(logits, params, best);
    // Temperature, then the draw.
    let max = cand[0].1 as f64;
    let scaled: Vec<f64> = cand
        .iter()
        .map(|c| exp((c.1 as f64 - max) * inv_t))
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
        logprob: raw(token),
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
        let g = sample(&logits, &SamplingParams::greedy(), &[], 0.7).unwrap();
        assert_eq!(g.token, 1);
        let lse = log_sum_exp(&logits).unwrap();
        assert!((g.logprob - (3.0 - lse)).abs() < 1e-12);
        let top1 = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        for u in [0.0, 0.5, 0.999] {
            assert_eq!(sample(&logits, &top1, &[], u).unwrap().token, 1);
        }
        // top_p = 0.5: token 1 alone holds 66% of the mass.
        let p = SamplingParams {
            top_p: 0.5,
            ..Default::default()
        };
        assert_eq!(sample(&logits, &p, &[], 0.99).unwrap().token, 1);
        // min_p = 0.3 keeps tokens 1 (1.0) and 2 (e^-1 ≈ 0.37).
        let m = SamplingParams {
            min_p: 0.3,
            ..Default::default()
        };
        let drawn: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| sample(&logits, &m, &[], i as f64 / 100.0).unwrap().token)
            .collect();
        assert_eq!(drawn, [1, 2].into());
    }

    /// `distribution` is what `sample` draws from: walking u over [0, 1) picks each kept
    /// token for a share of u equal to its probability, and nothing else.
    #[test]
    fn draws_follow_the_distribution() {
        let logits: Vec<f32> = (0..200).map(|i| ((i * 37 % 101) as f32) / 9.0).collect();
        for params in [
            SamplingParams {
                temperature: 0.8,
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.3,
                top_p: 0.7,
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                ..Default::default()
            },
        ] {
            let d = distribution(&logits, &params, &[]).unwrap();
            assert!((d.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-12);
            let n = 100_000;
            let mut counts = std::collections::HashMap::new();
            for i in 0..n {
                let u = (i as f64 + 0.5) / n as f64;
                let t = sample(&logits, &params, &[], u).unwrap().token;
                *counts.entry(t as Token).or_insert(0usize) += 1;
            }
            assert!(
                counts.keys().all(|t| d.iter().any(|x| x.0 == *t)),
                "{params:?}"
            );
            for (t, p) in &d {
                let got = counts.get(t).copied().unwrap_or(0) as f64 / n as f64;
                assert!((got - p).abs() < 2.0 / n as f64, "{t}: {got} vs {p}");
            }
        }
    }

    #[test]
    fn distribution_refuses_what_has_none() {
        let logits = [1.0f32, 2.0, 3.0];
        let bad = SamplingParams {
            min_p: 2.0,
            ..Default::default()
        };
        assert!(distribution(&logits, &bad, &[]).is_err());
        let inf = [1.0f32, f32::INFINITY, 3.0];
        let e = distribution(&inf, &SamplingParams::default(), &[]).unwrap_err();
        assert!(e.to_string().contains("token 1"), "{e}");
        let greedy = SamplingParams::greedy();
        assert_eq!(distribution(&logits, &greedy, &[]).unwrap(), vec![(2, 1.0)]);
    }

    #[test]
    fn top_p_runs_before_min_p_as_in_llama_cpp() {
        // p = [0.45, 0.30, 0.20, 0.05], top-p 0.78, min-p 0.2. llama.cpp's chain: top-p over
        // all four keeps {0, 1, 2} (0.45, 0.75, 0.95), then min-p (floor 0.09) keeps them all.
        // Cutting min-p first would drop token 3, renormalize (0.474, 0.789) and lose token 2.
        // With top-k 3 first, top-p normalizes over those three (0.474, 0.789) and keeps two,
        // as llama.cpp does.
        let logits = [0.45f32.ln(), 0.30f32.ln(), 0.20f32.ln(), 0.05f32.ln()];
        for (top_k, kept) in [(0, &[0, 1, 2][..]), (4, &[0, 1, 2]), (3, &[0, 1])] {
            let params = SamplingParams {
                top_k,
                top_p: 0.78,
                min_p: 0.2,
                ..Default::default()
            };
            let mut seen = std::collections::BTreeMap::new();
            for i in 0..1000 {
                let s = sample(&logits, &params, &[], i as f64 / 1000.0).unwrap();
                seen.insert(s.token, s.sampling_logprob);
            }
            assert_eq!(
                seen.keys().copied().collect::<Vec<_>>(),
                kept,
                "top-k {top_k}"
            );
            let z: f64 = [0.45, 0.30, 0.20][..kept.len()].iter().sum();
            assert!((seen[&1] - (0.30f64 / z).ln()).abs() < 1e-6, "{seen:?}");
        }
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
            counts[sample(&logits, &p, &[], key.uniform(t)).unwrap().token] += 1;
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
                let d = sample(&logits, &params, &[], i as f64 / 200.0).unwrap();
                assert!(d.token == 1 || d.token == 3, "{params:?}: {d:?}");
                assert!(d.logprob.is_finite() && d.sampling_logprob.is_finite());
            }
        }
        // At temperature 1 with nothing cut, the sampling distribution is the model's.
        let d = sample(&logits, &SamplingParams::default(), &[], 0.9).unwrap();
        assert!((d.logprob - d.sampling_logprob).abs() < 1e-12, "{d:?}");
    }

    #[test]
    fn nan_is_an_error() {
        assert_eq!(
            sample(&[0.0, f32::NAN], &SamplingParams::default(), &[], 0.5),
            Err(SamplingError::NanLogit { token: 1 })
        );
        assert!(SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn logit_bias_and_bans() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let mut p = SamplingParams::greedy();
        p.logit_bias = vec!["1=-inf".parse().unwrap(), "3+5".parse().unwrap()];
        let d = sample(&logits, &p, &[], 0.5).unwrap();
        assert_eq!(d.token, 3);
        // The reported log-probability is the raw model's.
        let lse = log_sum_exp(&logits).unwrap();
        assert!((d.logprob - (-1.0 - lse)).abs() < 1e-12);
        // A banned token is never drawn, at any temperature.
        p.temperature = 1.5;
        p.logit_bias.truncate(1);
        for i in 0..100 {
            assert_ne!(sample(&logits, &p, &[], i as f64 / 100.0).unwrap().token, 1);
        }
        p.logit_bias = (0..4)
            .map(|t| LogitBias {
                token: t,
                bias: f32::NEG_INFINITY,
            })
            .collect();
        assert_eq!(sample(&logits, &p, &[], 0.5), Err(SamplingError::AllMasked));
        p.logit_bias = vec![LogitBias {
            token: 9,
            bias: 1.0,
        }];
        assert!(sample(&logits, &p, &[], 0.5).is_err());
        assert!("x=1".parse::<LogitBias>().is_err());
        assert_eq!(
            "7-2.5".parse::<LogitBias>().unwrap(),
            LogitBias {
                token: 7,
                bias: -2.5
            }
        );
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        // Token 1 leads (3.0) ahead of token 2 (2.0).
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let greedy =
            |p: &SamplingParams, prev: &[&[Token]]| sample(&logits, p, prev, 0.0).unwrap().token;
        let base = SamplingParams::greedy();
        assert_eq!(greedy(&base, &[&[1, 1]]), 1);
        // Repetition: 3 / 2 = 1.5 < 2.
        let rep = SamplingParams {
            repeat_penalty: 2.0,
            ..base.clone()
        };
        assert_eq!(greedy(&rep, &[&[1]]), 2);
        // Frequency: once, 3 − 0.6 = 2.4 still leads; twice, 1.8 does not.
        let freq = SamplingParams {
            frequency_penalty: 0.6,
            ..base.clone()
        };
        assert_eq!(greedy(&freq, &[&[1]]), 1);
        assert_eq!(greedy(&freq, &[&[1], &[0, 1]]), 2);
        // Presence: once is enough.
        let pres = SamplingParams {
            presence_penalty: 1.5,
            ..base.clone()
        };
        assert_eq!(greedy(&pres, &[&[1]]), 2);
        // Only the last `penalty_last_n` tokens count, across pieces.
        let window = SamplingParams {
            penalty_last_n: 2,
            ..pres.clone()
        };
        assert_eq!(greedy(&window, &[&[1, 0], &[0]]), 1);
        assert_eq!(greedy(&window, &[&[0, 1], &[0]]), 2);
        let off = SamplingParams {
            penalty_last_n: 0,
            ..pres
        };
        assert_eq!(greedy(&off, &[&[1]]), 1);
        // Negative logits are multiplied: token 3 at −1 becomes −2.
        let neg = [-1.0f32, -1.5];
        let d = sample(&neg, &rep, &[&[0]], 0.0).unwrap();
        assert_eq!(d.token, 1);
    }

    #[test]
    fn typical_keeps_the_typical_tokens() {
        // p = [1/2, 1/4, 1/8, 1/8]: entropy 1.75 ln 2; token 1's surprise (2 ln 2) is the
        // closest to it, then token 0's (ln 2).
        let logits = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let p = SamplingParams {
            typical_p: 0.2,
            ..Default::default()
        };
        for i in 0..50 {
            assert_eq!(sample(&logits, &p, &[], i as f64 / 50.0).unwrap().token, 1);
        }
        // min-p then applies to what typical kept (token 1 alone), not to the full row.
        let pm = SamplingParams { min_p: 0.6, ..p };
        assert_eq!(sample(&logits, &pm, &[], 0.3).unwrap().token, 1);
        let wide = SamplingParams {
            typical_p: 0.7,
            ..Default::default()
        };
        let drawn: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| sample(&logits, &wide, &[], i as f64 / 100.0).unwrap().token)
            .collect();
        assert_eq!(drawn, [0, 1].into());
    }

    #[test]
    fn params_round_trip_through_json_and_old_records_read() {
        let p = SamplingParams {
            typical_p: 0.9,
            repeat_penalty: 1.1,
            logit_bias: vec![
                LogitBias {
                    token: 3,
                    bias: f32::NEG_INFINITY,
                },
                LogitBias {
                    token: 5,
                    bias: 0.5,
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"-inf\""), "{json}");
        let back: SamplingParams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        // A record from before the penalties existed.
        let old: SamplingParams =
            serde_json::from_str(r#"{"temperature":0.7,"top_k":5,"top_p":1.0,"min_p":0.0}"#)
                .unwrap();
        assert_eq!(old.temperature, 0.7);
        assert_eq!(old.repeat_penalty, 1.0);
        assert!(old.logit_bias.is_empty());
        let bad = SamplingParams {
            typical_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = SamplingParams {
            logit_bias: vec![LogitBias {
                token: 0,
                bias: f32::NAN,
            }],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn top_logprobs_are_sorted_and_normalized() {
        let logits = [0.0f32, 2.0, 1.0, 2.0];
        let top = top_logprobs(&logits, 3).unwrap();
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let all = top_logprobs(&logits, 10).unwrap();
        let mass: f64 = all.iter().map(|t| t.1.exp()).sum();
        assert!((mass - 1.0).abs() < 1e-12);
        assert!(top_logprobs(&logits, 0).unwrap().is_empty());
    }

    /// Top-p sorting only the logits near the best keeps what sorting the whole row keeps.
    #[test]
    fn top_p_over_a_prefix_is_top_p_over_the_sorted_row() {
        let by_logit = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        for seed in 0..6u32 {
            let spread = [0.5f32, 3.0, 9.0, 30.0, 0.0, 1e-3][seed as usize];
            let mut logits: Vec<f32> = (0..20_000u32)
                .map(|i| {
                    let h = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761) >> 8;
                    (h % 10_000) as f32 / 10_000.0 * spread
                })
                .collect();
            logits[17] = f32::NEG_INFINITY;
            let best = *logits.iter().max_by(|a, b| a.total_cmp(b)).unwrap() as f64;
            for (top_p, min_p) in [(0.95f32, 0.0f32), (0.5, 0.0), (0.999_999, 0.0), (0.9, 0.05)] {
                let params = SamplingParams {
                    top_p,
                    min_p,
                    ..Default::default()
                };
                let floor = if min_p > 0.0 {
                    best + (min_p as f64).ln()
                } else {
                    f64::NEG_INFINITY
                };
                let mass: f64 = logits.iter().map(|&l| exp(l as f64 - best)).sum();
                let mut all: Vec<(usize, f32)> = logits
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|&(_, l)| l as f64 >= floor && l > f32::NEG_INFINITY)
                    .collect();
                all.sort_unstable_by(by_logit);
                let mut acc = 0.0;
                for i in 0..all.len() {
                    acc += exp(all[i].1 as f64 - best) / mass;
                    if acc >= top_p as f64 {
                        all.truncate(i + 1);
                        break;
                    }
                }
                assert_eq!(
                    truncated(&logits, &params, best),
                    all,
                    "spread {spread}, {top_p}, {min_p}"
                );
            }
        }
    }

    /// A draw's log-probability is the full log-softmax of the raw logits, to the bit, whether
    /// the draw reuses its own weights (temperature 1, nothing adjusted) or not.
    #[test]
    fn logprobs_of_draws_are_the_log_softmax_to_the_bit() {
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2000) as f32 / 97.0 - 9.0)
            .collect();
        let lse = log_sum_exp(&logits).unwrap();
        let hot = SamplingParams {
            temperature: 1.7,
            ..Default::default()
        };
        let penalized = SamplingParams {
            repeat_penalty: 1.3,
            ..Default::default()
        };
        let prev: &[&[Token]] = &[&[3, 4, 5]];
        for params in [SamplingParams::default(), hot, penalized] {
            for u in [0.0, 0.25, 0.5, 0.999_999] {
                let d = sample(&logits, &params, prev, u).unwrap();
                let want = logits[d.token] as f64 - lse;
                assert_eq!(d.logprob.to_bits(), want.to_bits(), "{params:?} at {u}");
            }
        }
    }
}
