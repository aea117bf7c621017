//! Generation on any [`Backend`]: greedy continuations, teacher-forced scoring, and many
//! samples of one prompt computed once and forked.

use crate::backend::{Backend, BackendError, Batch, Logits, SeqId, Token};
use crate::sampling::{argmax, sample, top_logprobs, SampleKey, SamplingParams};
use rayon::prelude::*;

/// Why a sample stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It produced an end-of-generation token (included in its tokens).
    Eog,
    /// It reached the token limit.
    MaxTokens,
}

/// One generated continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its index among the samples of its prompt.
    pub index: u64,
    /// Generated tokens (the prompt excluded).
    pub tokens: Vec<Token>,
    /// Sum of the tokens' log-probabilities under the model.
    pub logprob: f64,
    /// Sum of the tokens' log-probabilities under the sampling distribution.
    pub sampling_logprob: f64,
    /// Why it stopped.
    pub stop: StopReason,
    /// Per generated token: its log-probabilities and the most likely alternatives.
    pub per_token: Vec<TokenLogprobs>,
}

/// One token's log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// Under the model (full-vocabulary log-softmax at temperature 1).
    pub logprob: f64,
    /// Under the distribution it was drawn from (0 for greedy, or when teacher-forced).
    pub sampling_logprob: f64,
    /// The most likely tokens at this step with their model log-probabilities, most likely
    /// first ([`GenerateOptions::top_logprobs`] or the scoring request's count of them).
    pub top: Vec<(Token, f64)>,
}

/// Evaluates `tokens` as one sequence (id 0) on an emptied cache and returns the logits of
/// every position: row `i` predicts token `i + 1`. Long inputs go in chunks of `chunk` rows.
pub fn score(
    backend: &mut dyn Backend,
    tokens: &[Token],
    chunk: usize,
) -> Result<Logits, BackendError> {
    if tokens.is_empty() {
        return Err(BackendError::InvalidBatch("nothing to score".into()));
    }
    backend.clear()?;
    let n_vocab = backend.info().n_vocab;
    let mut all = Logits::new(n_vocab);
    let mut part = Logits::new(n_vocab);
    let mut batch = Batch::new();
    for (c, piece) in tokens.chunks(chunk.max(1)).enumerate() {
        batch.clear();
        batch.add_sequence(piece, (c * chunk.max(1)) as u32, 0, true);
        backend.decode(&batch, &mut part)?;
        for r in 0..part.len() {
            all.push_row(part.row(r));
        }
    }
    Ok(all)
}

/// A continuation scored teacher-forced after its context.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Per continuation token: its log-probability given everything before it, and the most
    /// likely alternatives.
    pub per_token: Vec<TokenLogprobs>,
    /// Whether each continuation token is the model's argmax at its step.
    pub greedy: Vec<bool>,
    /// Sum of the continuation's log-probabilities (the loglikelihood lm-eval reports).
    pub logprob: f64,
    /// Whether greedy decoding would produce the whole continuation.
    pub is_greedy: bool,
}

/// Teacher-forced log-probabilities of `continuation` after `context` (which must hold at
/// least one token, BOS when the model uses it), with the `top_n` most likely alternatives at
/// each step. Evaluates on an emptied cache, `chunk` rows per call.
pub fn score_continuation(
    backend: &mut dyn Backend,
    context: &[Token],
    continuation: &[Token],
    top_n: usize,
    chunk: usize,
) -> Result<Scored, BackendError> {
    if context.is_empty() {
        return Err(BackendError::InvalidBatch(
            "scoring needs at least one context token (BOS, or the prompt)".into(),
        ));
    }
    if continuation.is_empty() {
        return Err(BackendError::InvalidBatch("nothing to score".into()));
    }
    let n_vocab = backend.info().n_vocab;
    if let Some(&token) = continuation.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(BackendError::InvalidToken {
            token,
            what: "the continuation".into(),
            n_vocab,
        });
    }
    let all: Vec<Token> = context.iter().chain(continuation).copied().collect();
    // The last token's logits predict nothing we score.
    let logits = score(backend, &all[..all.len() - 1], chunk)?;
    let mut out = Scored {
        per_token: Vec::with_capacity(continuation.len()),
        greedy: Vec::with_capacity(continuation.len()),
        logprob: 0.0,
        is_greedy: true,
    };
    for (i, &t) in continuation.iter().enumerate() {
        let row = logits.row(context.len() - 1 + i);
        let lp = row[t as usize] as f64 - crate::sampling::log_sum_exp(row)?;
        let g = argmax(row)? == t as usize;
        out.logprob += lp;
        out.is_greedy &= g;
        out.greedy.push(g);
        out.per_token.push(TokenLogprobs {
            logprob: lp,
            sampling_logprob: 0.0,
            top: top_logprobs(row, top_n)?,
        });
    }
    Ok(out)
}

/// Options for [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens per sample.
    pub max_tokens: usize,
    /// How tokens are drawn.
    pub sampling: SamplingParams,
    /// The run's seed.
    pub seed: u64,
    /// The problem id (part of each sample's random key).
    pub problem: u64,
    /// Stop a sample at an end-of-generation token.
    pub stop_at_eog: bool,
    /// How many most likely alternatives to report per generated token (0: none).
    pub top_logprobs: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 64,
            sampling: SamplingParams::default(),
            seed: 0,
            problem: 0,
            stop_at_eog: true,
            top_logprobs: 0,
        }
    }
}

/// Generates samples `first..first + n` of `prompt`. The prompt is evaluated once per wave and
/// its cache forked to every sequence of the wave; waves hold as many sequences as the
/// backend and its cache allow, so `n` may exceed the backend's sequence limit. Sample `i`
/// draws from `SampleKey { seed, problem, sample: i }`, so its tokens do not depend on `n`,
/// `first` or the wave it ran in.
pub fn generate(
    backend: &mut dyn Backend,
    prompt: &[Token],
    first: u64,
    n: u64,
    opts: &GenerateOptions,
) -> Result<Vec<Sample>, BackendError> {
    opts.sampling.validate()?;
    if prompt.is_empty() {
        return Err(BackendError::InvalidBatch("empty prompt".into()));
    }
    let info = backend.info().clone();
    let plen = prompt.len() as u64;
    let per_sample = opts.max_tokens.max(1) as u64;
    if plen + per_sample > info.n_ctx as u64 {
        return Err(BackendError::PositionPastContext {
            row: 0,
            pos: (plen + per_sample - 1) as u32,
            n_ctx: info.n_ctx,
        });
    }
    // Cells: the shared prompt once, plus each sample's own tokens.
    let fit = (info.n_ctx as u64 - plen) / per_sample;
    let wave = fit.min(info.max_sequences as u64).max(1);
    let mut out = Vec::with_capacity(n as usize);
    let mut start = first;
    while start < first + n {
        let w = wave.min(first + n - start);
        run_wave(backend, &info, prompt, start, w, opts, &mut out)?;
        start += w;
    }
    Ok(out)
}

fn run_wave(
    backend: &mut dyn Backend,
    info: &crate::backend::ModelInfo,
    prompt: &[Token],
    first: u64,
    w: u64,
    opts: &GenerateOptions,
    out: &mut Vec<Sample>,
) -> Result<(), BackendError> {
    backend.clear()?;
    let mut batch = Batch::new();
    let mut logits = Logits::new(info.n_vocab);
    batch.add_sequence(prompt, 0, 0, false);
    backend.decode(&batch, &mut logits)?;
    for s in 1..w as SeqId {
        backend.copy_sequence(0, s)?;
    }
    let mut samples: Vec<Sample> = (0..w)
        .map(|i| Sample {
            index: first + i,
            tokens: Vec::new(),
            logprob: 0.0,
            sampling_logprob: 0.0,
            stop: StopReason::MaxTokens,
            per_token: Vec::new(),
        })
        .collect();
    // Every sequence draws its first token from the prompt's last logits.
    let mut live: Vec<usize> = (0..w as usize).collect();
    let mut rows: Vec<usize> = vec![0; w as usize];
    let mut step = 0u64;
    loop {
        let mut next_live = Vec::with_capacity(live.len());
        // Each live sequence's draw (in parallel: a draw depends only on its own key, logits
        // and tokens), then the draws applied in order.
        let draws: Vec<_> = live
            .par_iter()
            .map(|&s| {
                let key = SampleKey {
                    seed: opts.seed,
                    problem: opts.problem,
                    sample: samples[s].index,
                };
                let d = sample(
                    logits.row(rows[s]),
                    &opts.sampling,
                    &[prompt, &samples[s].tokens],
                    key.uniform(step),
                )?;
                let top = top_logprobs(logits.row(rows[s]), opts.top_logprobs)?;
                Ok((d, top))
            })
            .collect::<Result<_, BackendError>>()?;
        for (&s, (d, top)) in live.iter().zip(draws) {
            let smp = &mut samples[s];
            smp.tokens.push(d.token as Token);
            smp.logprob += d.logprob;
            smp.sampling_logprob += d.sampling_logprob;
            smp.per_token.push(TokenLogprobs {
                logprob: d.logprob,
                sampling_logprob: d.sampling_logprob,
                top,
            });
            if opts.stop_at_eog && info.is_eog(d.token as Token) {
                smp.stop = StopReason::Eog;
            } else if smp.tokens.len() < opts.max_tokens {
                next_live.push(s);
            }
        }
        live = next_live;
        if live.is_empty() {
            break;
        }
        batch.clear();
        let pos = (prompt.len() + step as usize) as u32;
        for (k, &s) in live.iter().enumerate() {
            batch.add(
                *samples[s].tokens.last().expect("drawn"),
                pos,
                &[s as SeqId],
                true,
            );
            rows[s] = k;
        }
        backend.decode(&batch, &mut logits)?;
        step += 1;
    }
    out.extend(samples);
    Ok(())
}

/// The greedy continuation of `prompt` (sample 0 at temperature 0).
pub fn greedy(
    backend: &mut dyn Backend,
    prompt: &[Token],
    max_tokens: usize,
) -> Result<Sample, BackendError> {
    let opts = GenerateOptions {
        max_tokens,
        sampling: SamplingParams::greedy(),
        ..GenerateOptions::default()
    };
    Ok(generate(backend, prompt, 0, 1, &opts)?.remove(0))
}
