//! Generation on any [`Context`]: greedy continuations, teacher-forced scoring, and many
//! samples of one prompt computed once and forked.
//!
//! [`Sequence`] is the one sampling loop's body: every caller that draws tokens ([`generate`],
//! the runner's continuous batching in `evals`, the benches) steps a `Sequence` per sample,
//! which draws from the sample's own random stream, keeps its log-probabilities, watches its
//! stop strings and says why it stopped.

use crate::backend::{BackendError, Batch, Context, Logits, ModelInfo, Pos, SeqId, Token};
use crate::sampling::{argmax, sample, top_logprobs, SampleKey, Sampled, SamplingParams};
use rayon::prelude::*;

/// Why a sample stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It produced an end-of-generation token (included in its tokens).
    Eog,
    /// It reached the token limit.
    MaxTokens,
    /// Its text reached this stop string (the token that completed it is included in its
    /// tokens; its text is cut before the stop string).
    Stop(String),
}

impl StopReason {
    /// `eog`, `max_tokens` or `stop_string`, as run records and reports write it.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Eog => "eog",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Stop(_) => "stop_string",
        }
    }
}

/// When a [`Sequence`] stops, and whether it keeps its text.
#[derive(Clone, Copy, Debug)]
pub struct StopRules<'a> {
    /// Most generated tokens.
    pub max_tokens: usize,
    /// Stop at an end-of-generation token.
    pub stop_at_eog: bool,
    /// Stop strings: the sample stops at the first token whose text completes one.
    pub stop: &'a [Vec<u8>],
    /// Keep the generated text (pieces of the tokens, end-of-generation excluded) even with
    /// no stop strings to watch.
    pub keep_text: bool,
    /// Where a stop string of `stop` counts.
    pub stop_where: StopWhere,
    /// More stop strings, which count anywhere whatever `stop_where` says (a run's own,
    /// beside a task's).
    pub anywhere: &'a [Vec<u8>],
}

/// Where in the text a stop string ends a sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopWhere {
    /// Anywhere.
    #[default]
    Anywhere,
    /// Anywhere but at the very start, and a text that opens with a stop string then runs to
    /// its limit: BIG-bench's `stop_string`, which cuts the output at its first occurrence
    /// only when that occurrence is not at the start.
    NotFirst,
    /// Only after some text that is not itself made of stop strings: leading stop strings
    /// are passed over (BIG-bench's default `output_regex`, the first run of characters
    /// other than `.?!;` and newlines, which skips leading ones).
    AfterText,
}

/// One sample being generated: its random stream, its tokens and text so far, and their
/// log-probabilities. Drawing is a pure function of the logits, the history and the sample's
/// key, so a sample is the same whatever batch, thread or wave it is stepped in.
#[derive(Clone, Debug)]
pub struct Sequence {
    key: SampleKey,
    tokens: Vec<Token>,
    bytes: Vec<u8>,
    cut: Option<usize>,
    /// Stop strings no longer count ([`StopWhere::NotFirst`] after an opening one).
    stops_off: bool,
    logprob: f64,
    sampling_logprob: f64,
    per_token: Vec<TokenLogprobs>,
    stop: Option<StopReason>,
}

impl Sequence {
    /// A sample with no tokens yet, drawing from `key`'s stream.
    pub fn new(key: SampleKey) -> Self {
        Sequence {
            key,
            tokens: Vec::new(),
            bytes: Vec::new(),
            cut: None,
            stops_off: false,
            logprob: 0.0,
            sampling_logprob: 0.0,
            per_token: Vec::new(),
            stop: None,
        }
    }

    /// Its key.
    pub fn key(&self) -> SampleKey {
        self.key
    }

    /// Generated tokens so far.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// Why it stopped, once it has.
    pub fn stopped(&self) -> Option<&StopReason> {
        self.stop.as_ref()
    }

    /// The next token's draw from `logits` (the model's output after `prompt` and the tokens
    /// so far), with the `top_n` most likely alternatives. Pure: it changes nothing, so the
    /// draws of many sequences can run in parallel before [`Sequence::accept`] applies them.
    pub fn draw(
        &self,
        logits: &[f32],
        params: &SamplingParams,
        prompt: &[Token],
        top_n: usize,
    ) -> Result<(Sampled, Vec<(Token, f64)>), BackendError> {
        let d = sample(
            logits,
            params,
            &[prompt, &self.tokens],
            self.key.uniform(self.tokens.len() as u64),
        )?;
        let top = if top_n > 0 {
            top_logprobs(logits, top_n)?
        } else {
            Vec::new()
        };
        Ok((d, top))
    }

    /// Appends a drawn token (`piece` is its text, asked for only when the rules need text)
    /// and says why the sample stops here, if it does.
    pub fn accept(
        &mut self,
        (d, top): (Sampled, Vec<(Token, f64)>),
        info: &ModelInfo,
        rules: &StopRules<'_>,
        piece: &mut dyn FnMut(Token) -> Result<Vec<u8>, BackendError>,
    ) -> Result<Option<&StopReason>, BackendError> {
        debug_assert!(self.stop.is_none(), "a stopped sequence takes no tokens");
        let token = d.token as Token;
        self.tokens.push(token);
        self.logprob += d.logprob;
        self.sampling_logprob += d.sampling_logprob;
        self.per_token.push(TokenLogprobs {
            logprob: d.logprob,
            sampling_logprob: d.sampling_logprob,
            top,
        });
        if rules.stop_at_eog && info.is_eog(token) {
            self.stop = Some(StopReason::Eog);
            return Ok(self.stop.as_ref());
        }
        if rules.keep_text || !rules.stop.is_empty() {
            let before = self.bytes.len();
            self.bytes.extend(piece(token)?);
            let from = match rules.stop_where {
                StopWhere::Anywhere => 0,
                StopWhere::NotFirst => 1,
                StopWhere::AfterText => leading_stops(&self.bytes, rules.stop),
            };
            if rules.stop_where == StopWhere::NotFirst
                && find_stop(&self.bytes, before, 0, rules.stop).is_some_and(|(at, _)| at == 0)
            {
                self.stops_off = true;
            }
            let own = if self.stops_off {
                None
            } else {
                find_stop(&self.bytes, before, from, rules.stop).map(|(at, k)| (at, &rules.stop[k]))
            };
            let other = find_stop(&self.bytes, before, 0, rules.anywhere)
                .map(|(at, k)| (at, &rules.anywhere[k]));
            let found = match (own, other) {
                (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                (a, b) => a.or(b),
            };
            if let Some((at, which)) = found {
                self.cut = Some(at);
                self.stop = Some(StopReason::Stop(
                    String::from_utf8_lossy(which).into_owned(),
                ));
                return Ok(self.stop.as_ref());
            }
        }
        if self.tokens.len() >= rules.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
        }
        Ok(self.stop.as_ref())
    }

    /// Draws and accepts the next token: one step of one sample.
    pub fn step(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
        prompt: &[Token],
        backend: &dyn Context,
        rules: &StopRules<'_>,
    ) -> Result<Option<&StopReason>, BackendError> {
        let d = self.draw(logits, params, prompt, 0)?;
        self.accept(d, backend.info(), rules, &mut |t| backend.token_piece(t))
    }

    /// The finished sample (a sequence that never stopped counts as stopped at its limit).
    pub fn finish(self) -> Sample {
        let text = if self.bytes.is_empty() && self.cut.is_none() {
            None
        } else {
            let end = self.cut.unwrap_or(self.bytes.len());
            let mut bytes = self.bytes;
            bytes.truncate(end);
            Some(bytes)
        };
        Sample {
            index: self.key.sample,
            tokens: self.tokens,
            text,
            logprob: self.logprob,
            sampling_logprob: self.sampling_logprob,
            stop: self.stop.unwrap_or(StopReason::MaxTokens),
            per_token: self.per_token,
        }
    }
}

/// The earliest stop string that starts at or after byte `min_start` and ends after byte
/// `new_from` (older bytes were searched before): where it starts, and which one it is.
fn find_stop(
    bytes: &[u8],
    new_from: usize,
    min_start: usize,
    stops: &[Vec<u8>],
) -> Option<(usize, usize)> {
    stops
        .iter()
        .enumerate()
        .filter(|(_, st)| !st.is_empty())
        .filter_map(|(k, st)| {
            let from = new_from.saturating_sub(st.len() - 1).max(min_start);
            bytes
                .get(from..)?
                .windows(st.len())
                .position(|w| w == st.as_slice())
                .map(|i| (from + i, k))
        })
        .min()
}

/// Where the text's leading run of stop strings ends (0 when it opens with none).
fn leading_stops(bytes: &[u8], stops: &[Vec<u8>]) -> usize {
    let mut at = 0;
    while let Some(st) = stops
        .iter()
        .find(|st| !st.is_empty() && bytes[at..].starts_with(st))
    {
        at += st.len();
    }
    at
}

/// One generated continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its index among the samples of its prompt.
    pub index: u64,
    /// Generated tokens (the prompt excluded).
    pub tokens: Vec<Token>,
    /// The generated text (the tokens' pieces, end-of-generation excluded, cut before a stop
    /// string), when stop strings were watched or text was asked for.
    pub text: Option<Vec<u8>>,
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
    backend: &mut dyn Context,
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
    backend: &mut dyn Context,
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
    /// Stop strings: a sample stops at the token whose text completes one.
    pub stop: Vec<String>,
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
            stop: Vec::new(),
        }
    }
}

/// Generates samples `first..first + n` of `prompt`. The prompt is evaluated once per wave and
/// its cache forked to every sequence of the wave; waves hold as many sequences as the
/// backend and its cache allow, so `n` may exceed the backend's sequence limit. Sample `i`
/// draws from `SampleKey { seed, problem, sample: i }`, so its tokens do not depend on `n`,
/// `first` or the wave it ran in.
pub fn generate(
    backend: &mut dyn Context,
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
    let (n_ctx, max_seq) = (backend.n_ctx(), backend.max_sequences());
    let plen = prompt.len() as u64;
    let per_sample = opts.max_tokens.max(1) as u64;
    if plen + per_sample > n_ctx as u64 {
        return Err(BackendError::PositionPastContext {
            row: 0,
            pos: (plen + per_sample - 1) as u32,
            n_ctx,
        });
    }
    // Cells: the shared prompt once, plus each sample's own tokens.
    let fit = (n_ctx as u64 - plen) / per_sample;
    let wave = fit.min(max_seq as u64).max(1);
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
    backend: &mut dyn Context,
    info: &ModelInfo,
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
    let stop: Vec<Vec<u8>> = opts.stop.iter().map(|s| s.as_bytes().to_vec()).collect();
    let rules = StopRules {
        max_tokens: opts.max_tokens,
        stop_at_eog: opts.stop_at_eog,
        stop: &stop,
        keep_text: false,
        stop_where: StopWhere::Anywhere,
        anywhere: &[],
    };
    let mut seqs: Vec<Sequence> = (0..w)
        .map(|i| {
            Sequence::new(SampleKey {
                seed: opts.seed,
                problem: opts.problem,
                sample: first + i,
            })
        })
        .collect();
    // Every sequence draws its first token from the prompt's last logits.
    let mut live: Vec<usize> = (0..w as usize).collect();
    let mut rows: Vec<usize> = vec![0; w as usize];
    let mut step = 0u64;
    loop {
        // Each live sequence's draw (in parallel: a draw depends only on its own key, logits
        // and tokens), then the draws applied in order.
        let draws: Vec<_> = live
            .par_iter()
            .map(|&s| {
                seqs[s].draw(
                    logits.row(rows[s]),
                    &opts.sampling,
                    prompt,
                    opts.top_logprobs,
                )
            })
            .collect::<Result<_, BackendError>>()?;
        let mut next_live = Vec::with_capacity(live.len());
        for (&s, d) in live.iter().zip(draws) {
            let stopped = seqs[s].accept(d, info, &rules, &mut |t| backend.token_piece(t))?;
            if stopped.is_none() {
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
                *seqs[s].tokens().last().expect("drawn"),
                pos,
                &[s as SeqId],
                true,
            );
            rows[s] = k;
        }
        backend.decode(&batch, &mut logits)?;
        step += 1;
    }
    out.extend(seqs.into_iter().map(Sequence::finish));
    Ok(())
}

/// The greedy continuation of `prompt` (sample 0 at temperature 0).
pub fn greedy(
    backend: &mut dyn Context,
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

/// The greedy continuations of several prompts. Where the context holds them all at once
/// (as many sequences as prompts, and cells for every prompt and its `max_tokens`), they run
/// side by side, sequence `i` holding prompt `i`, one batch per step: the weights are read
/// once per step for all of them. Otherwise one at a time, as [`greedy`]. On a batch-invariant
/// backend (the native engine) each continuation is what [`greedy`] gives alone. On one whose
/// rows round differently beside others (llama.cpp: its matrix kernels pick by batch size, and
/// a unified cache's attention also sums over the other sequences' masked cells), it is that
/// backend's batched argmax, which can part from its argmax alone at a near tie.
pub fn greedy_each(
    backend: &mut dyn Context,
    prompts: &[Vec<Token>],
    max_tokens: usize,
) -> Result<Vec<Sample>, BackendError> {
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(BackendError::InvalidBatch(format!("prompt {i} is empty")));
    }
    let cells = prompts.iter().fold(0u64, |sum, p| {
        sum.saturating_add((p.len() as u64).saturating_add(max_tokens.max(1) as u64))
    });
    let fits =
        prompts.len() as u64 <= backend.max_sequences() as u64 && cells <= backend.n_ctx() as u64;
    if !fits || prompts.len() < 2 {
        return prompts
            .iter()
            .map(|p| greedy(backend, p, max_tokens))
            .collect();
    }
    let info = backend.info().clone();
    let params = SamplingParams::greedy();
    let rules = StopRules {
        max_tokens,
        stop_at_eog: true,
        stop: &[],
        keep_text: false,
        stop_where: StopWhere::Anywhere,
        anywhere: &[],
    };
    backend.clear()?;
    let mut batch = Batch::new();
    let mut logits = Logits::new(info.n_vocab);
    for (s, p) in prompts.iter().enumerate() {
        batch.add_sequence(p, 0, s as SeqId, false);
    }
    backend.decode(&batch, &mut logits)?;
    let mut seqs: Vec<Sequence> = (0..prompts.len())
        .map(|_| {
            Sequence::new(SampleKey {
                seed: 0,
                problem: 0,
                sample: 0,
            })
        })
        .collect();
    // Row `k` of the logits belongs to `live[k]`.
    let mut live: Vec<usize> = (0..prompts.len()).collect();
    while !live.is_empty() {
        let mut next = Vec::with_capacity(live.len());
        for (row, &s) in live.iter().enumerate() {
            let d = seqs[s].draw(logits.row(row), &params, &prompts[s], 0)?;
            if seqs[s]
                .accept(d, &info, &rules, &mut |t| backend.token_piece(t))?
                .is_none()
            {
                next.push(s);
            }
        }
        live = next;
        batch.clear();
        for &s in &live {
            let pos = (prompts[s].len() + seqs[s].tokens().len() - 1) as Pos;
            batch.add(
                *seqs[s].tokens().last().expect("drawn"),
                pos,
                &[s as SeqId],
                true,
            );
        }
        if !live.is_empty() {
            backend.decode(&batch, &mut logits)?;
        }
    }
    Ok(seqs.into_iter().map(Sequence::finish).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_across_token_boundaries() {
        let stops = vec![b"\n\n".to_vec(), b"END".to_vec(), Vec::new()];
        assert_eq!(find_stop(b"abc\n", 3, 0, &stops), None);
        assert_eq!(find_stop(b"abc\n\n", 4, 0, &stops), Some((3, 0)));
        assert_eq!(find_stop(b"xEN", 1, 0, &stops), None);
        assert_eq!(find_stop(b"xEND and\n\n", 3, 0, &stops), Some((1, 1)));
        assert_eq!(find_stop(b"xEND and\n\n", 3, 2, &stops), Some((8, 0)));
        assert_eq!(find_stop(b"", 0, 0, &stops), None);
        assert_eq!(leading_stops(b"\n\nEND4\n\n", &stops), 5);
        assert_eq!(leading_stops(b"\n\n\nEND4", &stops), 2);
        assert_eq!(leading_stops(b"4\n\n", &stops), 0);
    }

    fn info() -> ModelInfo {
        ModelInfo {
            backend: "test",
            n_vocab: 4,
            n_ctx_train: 16,
            bos: None,
            eos: Some(3),
            eog: vec![3],
            add_bos: false,
            chat_template: None,
        }
    }

    /// Steps a sequence through tokens chosen by one-hot logits, with piece `t` = `"t"`.
    fn run(tokens: &[Token], rules: &StopRules<'_>) -> Sample {
        let mut seq = Sequence::new(SampleKey {
            seed: 0,
            problem: 0,
            sample: 7,
        });
        let info = info();
        for &t in tokens {
            let mut logits = vec![-1e9f32; 4];
            logits[t as usize] = 0.0;
            let d = seq
                .draw(&logits, &SamplingParams::greedy(), &[0], 0)
                .unwrap();
            let stopped = seq
                .accept(d, &info, rules, &mut |t| Ok(t.to_string().into_bytes()))
                .unwrap();
            if stopped.is_some() {
                break;
            }
        }
        seq.finish()
    }

    #[test]
    fn a_sequence_says_why_it_stopped() {
        let rules = |stop, max_tokens| StopRules {
            max_tokens,
            stop_at_eog: true,
            stop,
            keep_text: true,
            stop_where: StopWhere::Anywhere,
            anywhere: &[],
        };
        let s = run(&[1, 2, 3, 1], &rules(&[], 10));
        assert_eq!(
            (s.stop, s.tokens, s.text),
            (StopReason::Eog, vec![1, 2, 3], Some(b"12".to_vec()))
        );
        let s = run(&[1, 2, 1, 2], &rules(&[], 3));
        assert_eq!((s.stop, s.tokens.len()), (StopReason::MaxTokens, 3));
        // "21" completes at the third token; the text is cut before it.
        let stops = [b"21".to_vec()];
        let s = run(&[1, 2, 1, 2], &rules(&stops, 10));
        assert_eq!(s.stop, StopReason::Stop("21".into()));
        assert_eq!((s.tokens, s.text), (vec![1, 2, 1], Some(b"1".to_vec())));
        assert_eq!(s.index, 7);
        // BIG-bench's stop string: one at the very start turns stop strings off.
        let not_first = |stop, max_tokens| StopRules {
            stop_where: StopWhere::NotFirst,
            ..rules(stop, max_tokens)
        };
        let stops = [b"1".to_vec()];
        let s = run(&[1, 2, 1, 2], &not_first(&stops, 4));
        assert_eq!(
            (s.stop, s.text),
            (StopReason::MaxTokens, Some(b"1212".to_vec()))
        );
        let s = run(&[2, 1, 2], &not_first(&stops, 4));
        assert_eq!(
            (s.stop, s.text),
            (StopReason::Stop("1".into()), Some(b"2".to_vec()))
        );
        // BIG-bench's default regex: leading stop strings are passed over.
        let after_text = |stop, max_tokens| StopRules {
            stop_where: StopWhere::AfterText,
            ..rules(stop, max_tokens)
        };
        let s = run(&[1, 1, 2, 2, 1, 2], &after_text(&stops, 10));
        assert_eq!(s.stop, StopReason::Stop("1".into()));
        assert_eq!((s.tokens.len(), s.text), (5, Some(b"1122".to_vec())));
        // A run's own stop strings count anywhere, beside the task's.
        let run_stops = [b"2".to_vec()];
        let s = run(
            &[1, 2, 1],
            &StopRules {
                anywhere: &run_stops,
                ..not_first(&stops, 4)
            },
        );
        assert_eq!(
            (s.stop, s.text),
            (StopReason::Stop("2".into()), Some(b"1".to_vec()))
        );
    }
}
