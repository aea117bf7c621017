//! `pass-until generate`: sample continuations of one prompt on a chosen backend.
//!
//! The prompt is computed once and forked to all `n` samples ([`engine::generate::generate`]);
//! sample `i` uses the key (seed, problem 0, i), so `-n 8 --seed 5` and `-n 16 --seed 5`
//! agree on their first eight samples up to the backend's batch invariance.

use std::path::Path;

use engine::backend::{BackendError, Context, Model, TokenizeOptions};
use engine::generate::{generate, GenerateOptions};
use serde::Serialize;

pub use engine::backend::BackendKind;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The prompt text.
    pub prompt: String,
    /// Number of samples.
    pub n: u64,
    /// Generation settings.
    pub options: GenerateOptions,
    /// Threads for the backend; `None` uses every core.
    pub threads: Option<u32>,
    /// The native engine's activation mode.
    pub activations: engine::Activations,
    /// Send the prompt as a user message through the model's chat template.
    pub chat: bool,
    /// Report each generated token's log-probabilities with this many alternatives.
    pub logprobs: Option<usize>,
    /// Generate past the context the model was trained on (refused otherwise).
    pub allow_long_context: bool,
}

/// An error rendering or tokenizing a chat prompt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatPromptError {
    /// The template failed.
    #[error(transparent)]
    Template(#[from] engine::chat::ChatError),
    /// Tokenizing failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Renders `messages` with the model's chat template (ready for the assistant's reply) and
/// tokenizes the result, special tokens included; BOS is added unless the template wrote it.
pub fn chat_tokens(
    backend: &dyn Model,
    messages: &[engine::chat::Message],
) -> Result<Vec<u32>, ChatPromptError> {
    chat_tokens_with(backend, messages, "")
}

/// [`chat_tokens`] with the assistant's reply opened with `prefill` (the model continues it).
pub fn chat_tokens_with(
    backend: &dyn Model,
    messages: &[engine::chat::Message],
    prefill: &str,
) -> Result<Vec<u32>, ChatPromptError> {
    let info = backend.info();
    let template = info
        .chat_template
        .as_deref()
        .ok_or(engine::chat::ChatError::NoTemplate)?;
    let piece = |t: Option<u32>| -> Result<String, BackendError> {
        Ok(match t {
            Some(t) => String::from_utf8_lossy(&backend.token_piece(t)?).into_owned(),
            None => String::new(),
        })
    };
    let bos = piece(info.bos)?;
    let eos = piece(info.eos)?;
    let mut text = engine::chat::render(template, messages, true, &bos, &eos)?;
    text.push_str(prefill);
    let add_bos = bos.is_empty() || !text.starts_with(&bos);
    Ok(backend.tokenize(
        text.as_bytes(),
        TokenizeOptions {
            add_special: add_bos,
            parse_special: true,
        },
    )?)
}

/// One generated sample.
#[derive(Debug, Serialize)]
pub struct SampleReport {
    /// Sample index.
    pub index: u64,
    /// Generated text (lossy UTF-8).
    pub text: String,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Sum of token log-probabilities under the model.
    pub logprob: f64,
    /// Sum of token log-probabilities under the sampling distribution.
    pub sampling_logprob: f64,
    /// `eog`, `max_tokens` or `stop_string`.
    pub stop: &'static str,
    /// Per token, when asked for (`--logprobs N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_logprobs: Option<Vec<TokenReport>>,
}

/// One token's log-probabilities, with its text.
#[derive(Debug, Serialize)]
pub struct TokenReport {
    /// The token id.
    pub token: u32,
    /// Its text (lossy UTF-8).
    pub piece: String,
    /// Log-probability under the model.
    pub logprob: f64,
    /// Log-probability under the sampling distribution (generation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_logprob: Option<f64>,
    /// Whether it is the model's most likely token at its step (scoring only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greedy: Option<bool>,
    /// The most likely tokens at this step.
    pub top: Vec<Alternative>,
}

/// A likely token at one step.
#[derive(Debug, Serialize)]
pub struct Alternative {
    /// The token id.
    pub token: u32,
    /// Its text (lossy UTF-8).
    pub piece: String,
    /// Its log-probability under the model.
    pub logprob: f64,
}

fn piece(backend: &dyn Context, t: u32) -> Result<String, BackendError> {
    Ok(String::from_utf8_lossy(&backend.token_piece(t)?).into_owned())
}

fn token_report(
    backend: &dyn Context,
    token: u32,
    lp: &engine::generate::TokenLogprobs,
) -> Result<TokenReport, BackendError> {
    Ok(TokenReport {
        token,
        piece: piece(backend, token)?,
        logprob: lp.logprob,
        sampling_logprob: None,
        greedy: None,
        top: lp
            .top
            .iter()
            .map(|&(t, l)| {
                Ok(Alternative {
                    token: t,
                    piece: piece(backend, t)?,
                    logprob: l,
                })
            })
            .collect::<Result<_, BackendError>>()?,
    })
}

/// The result of `generate`.
#[derive(Debug, Serialize)]
pub struct GenerateReport {
    /// The backend that ran.
    pub backend: &'static str,
    /// Prompt token ids.
    pub prompt_tokens: Vec<u32>,
    /// The samples.
    pub samples: Vec<SampleReport>,
    /// Seconds spent generating.
    pub seconds: f64,
    /// Generated tokens per second, all samples together.
    pub tokens_per_second: f64,
}

impl GenerateReport {
    /// The samples as text: each completion (headed by its index, length, log-probability and
    /// stop reason when there are several), and each token's log-probability with its
    /// alternatives when they were asked for.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        for s in &self.samples {
            if self.samples.len() > 1 {
                let _ = writeln!(
                    out,
                    "--- sample {} ({} tokens, logprob {:.2}, {})",
                    s.index,
                    s.tokens.len(),
                    s.logprob,
                    s.stop
                );
            }
            let _ = writeln!(out, "{}", s.text);
            for t in s.token_logprobs.iter().flatten() {
                let _ = writeln!(
                    out,
                    "  {:>7} {:<16} {:>9.4}  {}",
                    t.token,
                    format!("{:?}", t.piece),
                    t.logprob,
                    alternatives(&t.top)
                );
            }
        }
        out
    }

    /// One line: backend, samples and speed.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} samples, {:.1} generated tokens/s",
            self.backend,
            self.samples.len(),
            self.tokens_per_second
        )
    }
}

/// A sample's text as the model's detokenizer gives it, cut before the stop string that
/// ended it, if one did.
fn sample_text(
    backend: &dyn Context,
    s: &engine::generate::Sample,
) -> Result<Vec<u8>, BackendError> {
    let full = backend.detokenize(&s.tokens)?;
    let (engine::generate::StopReason::Stop(_), Some(cut)) = (&s.stop, &s.text) else {
        return Ok(full);
    };
    // The cut text is the tokens' pieces up to the stop string; the detokenizer may drop a
    // leading space the pieces have (SentencePiece's prefix), so drop it from the cut too.
    let mut pieces = Vec::new();
    for &t in &s.tokens {
        pieces.extend(backend.token_piece(t)?);
    }
    let dropped = if pieces.ends_with(&full) {
        pieces.len() - full.len()
    } else {
        0
    };
    Ok(cut[dropped.min(cut.len())..].to_vec())
}

/// `" Paris" -0.28, " the" -2.69`: a token's likely alternatives for the text tables.
fn alternatives(top: &[Alternative]) -> String {
    top.iter()
        .map(|a| format!("{:?} {:.2}", a.piece, a.logprob))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most bytes of text one token can stand for, generously (the longest pieces of common
/// vocabularies are runs of whitespace under 256 bytes).
const MAX_BYTES_PER_TOKEN: usize = 1024;

/// Refuses a prompt of `bytes` that cannot fit the trained context whatever it tokenizes to,
/// before tokenizing it (a 50 MB prompt would otherwise take gigabytes on the way to the same
/// error).
pub(crate) fn check_prompt_bytes(bytes: usize, n_ctx_train: u32) -> Result<(), String> {
    let most = (n_ctx_train as usize).saturating_mul(MAX_BYTES_PER_TOKEN);
    if n_ctx_train > 0 && bytes > most {
        return Err(format!(
            "the prompt is {bytes} bytes, more than the {n_ctx_train} tokens the model was \
             trained on could hold ({most} bytes at most)"
        ));
    }
    Ok(())
}

/// Generates on an open backend.
pub fn run_on(
    backend: &mut dyn Context,
    req: &GenerateRequest,
) -> Result<GenerateReport, BackendError> {
    if !req.allow_long_context {
        check_prompt_bytes(req.prompt.len(), backend.info().n_ctx_train)
            .map_err(BackendError::Context)?;
    }
    let prompt = if req.chat {
        chat_tokens(
            backend.model(),
            &[engine::chat::Message::new("user", &req.prompt)],
        )
        .map_err(|e| match e {
            ChatPromptError::Backend(b) => b,
            other => BackendError::InvalidBatch(other.to_string()),
        })?
    } else {
        backend.tokenize(req.prompt.as_bytes(), TokenizeOptions::default())?
    };
    // Past the trained context a model's output is noise: say so before generating any.
    let train = backend.info().n_ctx_train as usize;
    if !req.allow_long_context && train > 0 && prompt.len() + req.options.max_tokens > train {
        return Err(BackendError::Context(format!(
            "the prompt ({} tokens) plus --max-tokens {} is more than the {train} tokens the \
             model was trained on (--allow-long-context to go on anyway)",
            prompt.len(),
            req.options.max_tokens
        )));
    }
    let start = std::time::Instant::now();
    let mut options = req.options.clone();
    options.top_logprobs = req.logprobs.unwrap_or(0);
    let samples = generate(backend, &prompt, 0, req.n, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    let total: usize = samples.iter().map(|s| s.tokens.len()).sum();
    let samples = samples
        .into_iter()
        .map(|s| {
            let token_logprobs = match req.logprobs {
                None => None,
                Some(_) => Some(
                    s.tokens
                        .iter()
                        .zip(&s.per_token)
                        .map(|(&t, lp)| {
                            let mut r = token_report(backend, t, lp)?;
                            r.sampling_logprob = Some(lp.sampling_logprob);
                            Ok(r)
                        })
                        .collect::<Result<Vec<_>, BackendError>>()?,
                ),
            };
            Ok(SampleReport {
                token_logprobs,
                index: s.index,
                // Cut before the stop string when one ended it; the whole detokenized
                // continuation otherwise.
                text: String::from_utf8_lossy(&sample_text(backend, &s)?).into_owned(),
                logprob: s.logprob,
                sampling_logprob: s.sampling_logprob,
                stop: s.stop.name(),
                tokens: s.tokens,
            })
        })
        .collect::<Result<Vec<_>, BackendError>>()?;
    Ok(GenerateReport {
        backend: backend.info().backend,
        prompt_tokens: prompt,
        samples,
        seconds,
        tokens_per_second: total as f64 / seconds.max(1e-9),
    })
}

/// What to score: a continuation's teacher-forced log-probabilities after a prompt.
#[derive(Clone, Debug)]
pub struct ScoreRequest {
    /// The context text (BOS is added as the model's metadata asks).
    pub prompt: String,
    /// The continuation text.
    pub continuation: String,
    /// Alternatives to report per continuation token.
    pub top: usize,
    /// Threads for the backend; `None` uses every core.
    pub threads: Option<u32>,
    /// The native engine's activation mode.
    pub activations: engine::Activations,
}

/// The result of `score`.
#[derive(Debug, Serialize)]
pub struct ScoreReport {
    /// The backend that ran.
    pub backend: &'static str,
    /// Context token ids.
    pub context_tokens: Vec<u32>,
    /// The continuation's tokens with their log-probabilities.
    pub tokens: Vec<TokenReport>,
    /// Sum of the continuation's log-probabilities.
    pub logprob: f64,
    /// Whether greedy decoding would produce the continuation.
    pub is_greedy: bool,
    /// `exp(−logprob / tokens)`.
    pub perplexity: f64,
}

impl ScoreReport {
    /// A table of the continuation's tokens (log-probability, whether greedy, alternatives)
    /// and a closing line with the total.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{:>7}  {:<16} {:>9}  {:<6} top\n",
            "token", "piece", "logprob", "greedy"
        );
        for t in &self.tokens {
            let _ = writeln!(
                out,
                "{:>7}  {:<16} {:>9.4}  {:<6} {}",
                t.token,
                format!("{:?}", t.piece),
                t.logprob,
                if t.greedy == Some(true) { "yes" } else { "no" },
                alternatives(&t.top)
            );
        }
        let _ = writeln!(
            out,
            "total logprob {:.4} over {} tokens (perplexity {:.3}); greedy: {} [{} after {} context tokens]",
            self.logprob,
            self.tokens.len(),
            self.perplexity,
            if self.is_greedy { "yes" } else { "no" },
            self.backend,
            self.context_tokens.len()
        );
        out
    }
}

/// Splits `prompt + continuation` into context and continuation tokens the way lm-eval
/// does: the whole text is tokenized, and the continuation is what follows the context's own
/// tokenization (so a merge across the boundary goes to the continuation); if the context's
/// tokens are not a prefix of the whole's, the two are tokenized apart.
pub fn split_tokens(
    backend: &dyn Context,
    prompt: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>), BackendError> {
    let opts = TokenizeOptions::default();
    let whole = backend.tokenize(format!("{prompt}{continuation}").as_bytes(), opts)?;
    let context = backend.tokenize(prompt.as_bytes(), opts)?;
    if whole.len() > context.len() && whole.starts_with(&context) {
        let cont = whole[context.len()..].to_vec();
        return Ok((context, cont));
    }
    let cont = backend.tokenize(
        continuation.as_bytes(),
        TokenizeOptions {
            add_special: false,
            parse_special: true,
        },
    )?;
    Ok((context, cont))
}

/// Scores on an open backend.
pub fn score_on(
    backend: &mut dyn Context,
    req: &ScoreRequest,
) -> Result<ScoreReport, BackendError> {
    let (context, cont) = split_tokens(backend, &req.prompt, &req.continuation)?;
    let scored = engine::generate::score_continuation(backend, &context, &cont, req.top, 512)?;
    let tokens = cont
        .iter()
        .zip(&scored.per_token)
        .zip(&scored.greedy)
        .map(|((&t, lp), &g)| {
            let mut r = token_report(backend, t, lp)?;
            r.greedy = Some(g);
            Ok(r)
        })
        .collect::<Result<Vec<_>, BackendError>>()?;
    Ok(ScoreReport {
        backend: backend.info().backend,
        context_tokens: context,
        perplexity: (-scored.logprob / tokens.len() as f64).exp(),
        tokens,
        logprob: scored.logprob,
        is_greedy: scored.is_greedy,
    })
}

/// Loads `model` on `kind` and scores.
pub fn score(
    kind: BackendKind,
    model: &Path,
    req: &ScoreRequest,
) -> Result<ScoreReport, OpenError> {
    let n_ctx = (req.prompt.len() + req.continuation.len() + 16) as u32;
    let mut ctx = open_context(kind, model, req.threads, req.activations, n_ctx, 1)?;
    Ok(score_on(&mut *ctx, req)?)
}

/// One token of a tokenized text.
#[derive(Debug, Serialize)]
pub struct TokenPiece {
    /// The id.
    pub id: u32,
    /// Its bytes as text (lossy UTF-8).
    pub piece: String,
}

/// A tokenized text as a table: id and piece per line, then the count.
pub fn render_tokens(tokens: &[TokenPiece]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for t in tokens {
        let _ = writeln!(out, "{:>7}  {:?}", t.id, t.piece);
    }
    let _ = writeln!(out, "{} tokens", tokens.len());
    out
}

/// Tokenizes `text` with `model`'s tokenizer (the native one, which gives llama.cpp's ids;
/// only the file's metadata is read, so any architecture works).
pub fn tokenize(
    model: &Path,
    text: &[u8],
    options: TokenizeOptions,
) -> Result<Vec<TokenPiece>, OpenError> {
    let load = |m: String| BackendError::Load {
        path: model.display().to_string(),
        message: m,
    };
    let file = quant::gguf::GgufFile::open(model).map_err(|e| load(e.to_string()))?;
    let tok = engine::tokenizer::Tokenizer::from_metadata(file.metadata())
        .map_err(|e| load(e.to_string()))?;
    Ok(tok
        .encode(text, options.add_special, options.parse_special)
        .into_iter()
        .map(|id| TokenPiece {
            id,
            piece: String::from_utf8_lossy(tok.piece(id, true).unwrap_or_default()).into_owned(),
        })
        .collect())
}

/// Errors opening a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The backend failed, or was not built in ([`BackendError::NotBuilt`]).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Opens `model` on `kind` ([`engine::open`]) and creates a context with a cache of `n_ctx`
/// cells for up to `n_seq` sequences (capped at the engine's own limit) on `threads` threads.
pub fn open_context(
    kind: BackendKind,
    model: &Path,
    threads: Option<u32>,
    activations: engine::Activations,
    n_ctx: u32,
    n_seq: u32,
) -> Result<Box<dyn Context>, OpenError> {
    // Every layer on the GPU when llama.cpp was built with one (`cuda`, `metal`).
    let model = engine::open(
        kind,
        model,
        &engine::OpenOptions {
            gpu_layers: u32::MAX,
        },
    )?;
    let n_seq = n_seq.clamp(1, kind.max_sequences().unwrap_or(u32::MAX));
    Ok(model.context(&engine::ContextOptions {
        threads,
        activations,
        ..engine::ContextOptions::new(n_ctx, n_seq)
    })?)
}

/// Loads `model` on `kind` and generates.
pub fn run(
    kind: BackendKind,
    model: &Path,
    req: &GenerateRequest,
) -> Result<GenerateReport, OpenError> {
    // Cells: the prompt once (its cells are shared by every sample; its length in bytes
    // bounds its tokens), plus each sample's own tokens; past 2^16 cells the samples run in
    // waves.
    let n_seq = req.n.clamp(1, 1024) as u32;
    let prompt = req.prompt.len() as u64 + 16;
    let per = req.options.max_tokens as u64;
    let n_ctx = (prompt + n_seq as u64 * per).min(1 << 16).max(prompt + per) as u32;
    let mut ctx = open_context(kind, model, req.threads, req.activations, n_ctx, n_seq + 1)?;
    Ok(run_on(&mut *ctx, req)?)
}
