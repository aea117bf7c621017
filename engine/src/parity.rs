//! Parity between two backends on the same model: how far apart their logits and greedy
//! continuations are.
//!
//! Backend A greedily continues each prompt (all of them side by side where its context holds
//! them, [`greedy_each`]); then, prompt by prompt, both backends score the same tokens
//! (prompt plus A's continuation) teacher-forced, and the next-token distributions from the
//! last prompt position on are compared: max |Δlogit|, mean KL(A‖B), top-1 agreement, and how
//! many of A's greedy tokens B's argmax reproduces before the first divergence.

use crate::backend::{BackendError, Context, Token, TokenizeOptions};
use crate::generate::{greedy_each, score};
use crate::sampling::{argmax, log_sum_exp};

/// How two backends compare on one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptParity {
    /// The prompt.
    pub prompt: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Whether both backends tokenized the prompt identically.
    pub same_tokens: bool,
    /// Positions compared (A's greedy tokens).
    pub positions: usize,
    /// A's greedy tokens that B's argmax reproduces before the first divergence.
    pub greedy_agreement: usize,
    /// Largest |logit_A − logit_B| over compared positions and the whole vocabulary.
    pub max_abs_logit_diff: f32,
    /// Mean KL(A‖B) of the next-token distributions, in nats.
    pub mean_kl: f64,
    /// Share of positions where both argmaxes agree.
    pub top1_agreement: f64,
}

/// KL(p‖q) between the softmaxes of two logit rows, in nats.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> Result<f64, BackendError> {
    let lp = log_sum_exp(p_logits)?;
    let lq = log_sum_exp(q_logits)?;
    Ok(p_logits
        .iter()
        .zip(q_logits)
        .map(|(&a, &b)| {
            let log_p = a as f64 - lp;
            let log_q = b as f64 - lq;
            log_p.exp() * (log_p - log_q)
        })
        .sum::<f64>()
        .max(0.0))
}

/// Compares `a` and `b` on `prompts`, continuing each greedily for `n_tokens` with `a` (all side
/// by side where `a`'s context holds them, see [`greedy_each`]).
/// `chunk` is the number of rows `b` evaluates per call while scoring (vary it to see batch
/// effects).
pub fn compare(
    a: &mut dyn Context,
    b: &mut dyn Context,
    prompts: &[&str],
    n_tokens: usize,
    chunk: usize,
) -> Result<Vec<PromptParity>, BackendError> {
    let opts = TokenizeOptions::default();
    let mut out = Vec::with_capacity(prompts.len());
    let tokenized = prompts
        .iter()
        .map(|p| a.tokenize(p.as_bytes(), opts))
        .collect::<Result<Vec<_>, _>>()?;
    let continued = greedy_each(a, &tokenized, n_tokens)?;
    for ((&prompt, pa), sample) in prompts.iter().zip(tokenized).zip(continued) {
        let pb = b.tokenize(prompt.as_bytes(), opts)?;
        let cont = sample.tokens;
        let all: Vec<Token> = pa.iter().chain(&cont).copied().collect();
        let la = score(a, &all, all.len())?;
        let lb = score(b, &all, chunk)?;
        let first = pa.len() - 1;
        let positions = cont.len();
        let (mut max_diff, mut kl, mut top1) = (0.0f32, 0.0f64, 0usize);
        let mut agree = 0;
        let mut diverged = false;
        for (i, &want) in cont.iter().enumerate() {
            let (ra, rb) = (la.row(first + i), lb.row(first + i));
            for (x, y) in ra.iter().zip(rb) {
                max_diff = max_diff.max((x - y).abs());
            }
            kl += kl_divergence(ra, rb)?;
            let (ta, tb) = (argmax(ra)?, argmax(rb)?);
            top1 += usize::from(ta == tb);
            if !diverged && tb as Token == want {
                agree += 1;
            } else {
                diverged = true;
            }
        }
        out.push(PromptParity {
            prompt: prompt.to_owned(),
            prompt_tokens: pa.len(),
            same_tokens: pa == pb,
            positions,
            greedy_agreement: agree,
            max_abs_logit_diff: max_diff,
            mean_kl: kl / positions.max(1) as f64,
            top1_agreement: top1 as f64 / positions.max(1) as f64,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_identical_rows_is_zero() {
        let a = [0.5f32, -1.0, 2.0];
        assert!(kl_divergence(&a, &a).unwrap().abs() < 1e-12);
        // Shifting all logits does not change the distribution.
        let b = [1.5f32, 0.0, 3.0];
        assert!(kl_divergence(&a, &b).unwrap().abs() < 1e-9);
        let c = [2.0f32, -1.0, 0.5];
        assert!(kl_divergence(&a, &c).unwrap() > 0.1);
    }
}
