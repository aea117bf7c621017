//! `pass-until generate`: sample continuations of one prompt on a chosen backend.
//!
//! The prompt is computed once and forked to all `n` samples ([`engine::generate::generate`]);
//! sample `i` uses the key (seed, problem 0, i), so `-n 8 --seed 5` and `-n 16 --seed 5`
//! agree on their first eight samples up to the backend's batch invariance.

use std::path::Path;

use engine::backend::{Backend, BackendError, TokenizeOptions};
use engine::generate::{generate, GenerateOptions, StopReason};
use serde::Serialize;

/// Which inference engine runs a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// passuntil's own engine.
    Native,
    /// llama.cpp (build with the `llama-cpp` feature).
    LlamaCpp,
}

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
    /// Send the prompt as a user message through the model's chat template.
    pub chat: bool,
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
    backend: &dyn Backend,
    messages: &[engine::chat::Message],
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
    let text = engine::chat::render(template, messages, true, &bos, &eos)?;
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
    /// `eog` or `max_tokens`.
    pub stop: &'static str,
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

/// Generates on an open backend.
pub fn run_on(
    backend: &mut dyn Backend,
    req: &GenerateRequest,
) -> Result<GenerateReport, BackendError> {
    let prompt = if req.chat {
        chat_tokens(backend, &[engine::chat::Message::new("user", &req.prompt)]).map_err(|e| {
            match e {
                ChatPromptError::Backend(b) => b,
                other => BackendError::InvalidBatch(other.to_string()),
            }
        })?
    } else {
        backend.tokenize(req.prompt.as_bytes(), TokenizeOptions::default())?
    };
    let start = std::time::Instant::now();
    let samples = generate(backend, &prompt, 0, req.n, &req.options)?;
    let seconds = start.elapsed().as_secs_f64();
    let total: usize = samples.iter().map(|s| s.tokens.len()).sum();
    let samples = samples
        .into_iter()
        .map(|s| {
            Ok(SampleReport {
                index: s.index,
                text: String::from_utf8_lossy(&backend.detokenize(&s.tokens)?).into_owned(),
                logprob: s.logprob,
                sampling_logprob: s.sampling_logprob,
                stop: match s.stop {
                    StopReason::Eog => "eog",
                    StopReason::MaxTokens => "max_tokens",
                },
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

/// Errors opening a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The backend was not compiled in or does not exist yet.
    #[error("{0}")]
    Unavailable(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Loads `model` on `kind` and generates.
pub fn run(
    kind: BackendKind,
    model: &Path,
    req: &GenerateRequest,
) -> Result<GenerateReport, OpenError> {
    match kind {
        BackendKind::Native => run_native(model, req),
        BackendKind::LlamaCpp => run_llama_cpp(model, req),
    }
}

fn run_native(model: &Path, req: &GenerateRequest) -> Result<GenerateReport, OpenError> {
    let m = engine::native::NativeModel::load(model)?;
    let n_seq = req.n.clamp(1, 1024) as u32;
    // Cells: the prompt once (its cells are shared by every sample), plus each sample's own
    // tokens; past 2^16 cells the samples run in waves.
    let n_ctx = (req.prompt.len() as u64 + 16 + n_seq as u64 * req.options.max_tokens as u64)
        .min(1 << 16)
        .max(req.prompt.len() as u64 + req.options.max_tokens as u64 + 16) as u32;
    let mut b = m.backend(n_ctx, n_seq + 1)?;
    if let Some(t) = req.threads {
        b = b.with_threads(t as usize)?;
    }
    Ok(run_on(&mut b, req)?)
}

#[cfg(feature = "llama-cpp")]
fn run_llama_cpp(model: &Path, req: &GenerateRequest) -> Result<GenerateReport, OpenError> {
    use engine::llama_cpp::{ContextOptions, LlamaCppModel};
    let m = LlamaCppModel::load(model, u32::MAX)?;
    let per = req.options.max_tokens as u64;
    let n_seq_max = req.n.clamp(1, engine::llama_cpp::LLAMA_MAX_SEQ as u64) as u32;
    // Room for the prompt (generously estimated) plus every parallel sample's tokens.
    let n_ctx = (2 * req.prompt.len() as u64 + 16 + per * n_seq_max as u64).min(1 << 17) as u32;
    let mut b = m.backend(&ContextOptions {
        n_ctx,
        n_seq_max,
        n_threads: req.threads,
        ..ContextOptions::default()
    })?;
    Ok(run_on(&mut b, req)?)
}

#[cfg(not(feature = "llama-cpp"))]
fn run_llama_cpp(_: &Path, _: &GenerateRequest) -> Result<GenerateReport, OpenError> {
    Err(OpenError::Unavailable(
        "this pass-until was built without llama.cpp; rebuild with `--features llama-cpp` (needs cmake, clang and libclang-dev)".into(),
    ))
}
