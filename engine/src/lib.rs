//! # passuntil-engine: inference
//!
//! The inference layer of passuntil, standing on [`quant`].
//!
//! - [`models`]: the registry of known models and their fetching.
//! - [`backend`]: [`open`] a [`Model`] (facts, tokenizer, chat template; shared) on a
//!   [`BackendKind`], and create its [`Context`]s: batches of (token, position, sequences,
//!   logits?) rows over a KV cache shared by many sequences.
//! - [`chat`]: chat templates from `tokenizer.chat_template`, rendered with minijinja.
//! - [`sampling`]: sampling whose randomness depends only on (seed, problem, sample, step).
//! - [`weights`]: the f64 `exp`, maximum and sums of a vocabulary row behind log-probabilities
//!   and draws, vectorized in one fixed order.
//! - [`generate`]: greedy continuations, teacher-forced scoring of continuations
//!   (loglikelihood), and many samples of one prompt computed once and forked, in waves past a
//!   backend's sequence limit, with per-token log-probabilities and top alternatives.
//! - [`quantize`]: which tensor gets which type when a model is requantized (one type, or
//!   llama.cpp's K-quant mixes), for [`quant::requant`].
//! - [`parity`]: how far two backends are apart (logits, KL divergence, greedy agreement).
//! - [`detok`]: UTF-8-safe streaming detokenization.
//! - [`tokenizer`]: byte-level BPE from GGUF metadata, with llama.cpp's token ids.
//! - [`native`]: Llama-family models on passuntil's own kernels, as a backend.
//! - [`kv`]: the native engine's KV cache of cells owned by sets of sequences.
//! - [`hooks`]: see each block's hidden states during the native forward pass.
//! - `llama_cpp` (feature `llama-cpp`): llama.cpp as a backend.
//!
//! Greedy continuation and teacher-forced scoring on the native engine (the default model is
//! fetched into the cache on first use):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use engine::backend::{ContextOptions, OpenOptions, TokenizeOptions};
//! use engine::BackendKind;
//!
//! let path = engine::models::resolve("smollm2-135m", &mut |msg| eprintln!("{msg}"))?;
//! let model = engine::open(BackendKind::Native, &path, &OpenOptions::default())?;
//! let prompt = model.tokenize(b"The capital of France is", TokenizeOptions::default())?;
//! // A KV cache of 256 cells for one sequence.
//! let mut ctx = model.clone().context(&ContextOptions::new(256, 1))?;
//! let sample = engine::generate::greedy(&mut *ctx, &prompt, 4)?;
//! let text = String::from_utf8_lossy(&model.detokenize(&sample.tokens)?).into_owned();
//! assert!(text.starts_with(" Paris"), "{text}");
//!
//! // How likely is " Paris" after the prompt, token by token?
//! let scored = engine::generate::score_continuation(&mut *ctx, &prompt, &sample.tokens[..1], 3, 64)?;
//! assert!(scored.is_greedy && scored.logprob < 0.0);
//! assert_eq!(scored.per_token[0].top[0].0, sample.tokens[0]);
//! # Ok(())
//! # }
//! ```
//!
//! The same code runs on llama.cpp with `BackendKind::LlamaCpp` (feature `llama-cpp`);
//! `examples/generate.rs` and `examples/score.rs` go further.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod chat;
pub mod detok;
pub mod generate;
pub mod hooks;
pub mod kv;
#[cfg(feature = "llama-cpp")]
pub mod llama_cpp;
pub mod models;
pub mod native;
pub mod numerics;
pub mod parity;
pub mod quantize;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use backend::{
    open, Activations, BackendError, BackendKind, Batch, Context, ContextOptions, Logits, Model,
    ModelInfo, OpenOptions, Pos, SeqId, Token,
};
