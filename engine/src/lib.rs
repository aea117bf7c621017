//! # passuntil-engine: models
//!
//! The model layer of passuntil, standing on [`quant`].
//!
//! - [`models`]: the registry of known models and their fetching.
//! - [`backend`]: the [`Backend`] trait every inference engine implements: batches of
//!   (token, position, sequences, logits?) rows, a KV cache shared by many sequences,
//!   tokenization and special tokens.
//! - [`chat`]: chat templates from `tokenizer.chat_template`, rendered with minijinja.
//! - [`sampling`]: sampling whose randomness depends only on (seed, problem, sample, step).
//! - [`generate`]: greedy continuations, teacher-forced scoring, and many samples of one prompt
//!   computed once and forked, in waves past a backend's sequence limit.
//! - [`parity`]: how far two backends are apart (logits, KL divergence, greedy agreement).
//! - [`detok`]: UTF-8-safe streaming detokenization.
//! - [`tokenizer`]: byte-level BPE from GGUF metadata, with llama.cpp's token ids.
//! - [`native`]: Llama-family models on passuntil's own kernels, as a backend.
//! - `llama_cpp` (feature `llama-cpp`): llama.cpp as a backend.
//!
//! ```no_run
//! # #[cfg(feature = "llama-cpp")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use engine::backend::{Backend, TokenizeOptions};
//! use engine::llama_cpp::{ContextOptions, LlamaCppModel};
//!
//! let path = engine::models::resolve("smollm2-135m", &mut |msg| eprintln!("{msg}"))?;
//! let model = LlamaCppModel::load(&path, 0)?;
//! let mut backend = model.backend(&ContextOptions::default())?;
//! let prompt = backend.tokenize(b"The capital of France is", TokenizeOptions::default())?;
//! let sample = engine::generate::greedy(&mut backend, &prompt, 16)?;
//! println!("{}", String::from_utf8_lossy(&backend.detokenize(&sample.tokens)?));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "llama-cpp"))]
//! # fn main() {}
//! ```
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
pub mod parity;
pub mod sampling;
pub mod tokenizer;

pub use backend::{Backend, BackendError, Batch, Logits, ModelInfo, Pos, SeqId, Token};
