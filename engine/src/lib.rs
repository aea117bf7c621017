//! # passuntil-engine: models
//!
//! The model layer of passuntil, standing on [`quant`]. So far it holds the registry of known
//! models and their fetching ([`models`]); the tokenizer, forward pass, KV cache, sampling and
//! backends build on it.
//!
//! ```no_run
//! // Resolve a model argument: a path is used as is, a known name is fetched on first use.
//! let path = engine::models::resolve("smollm2-135m", &mut |msg| eprintln!("{msg}"))?;
//! let file = quant::gguf::GgufFile::open(&path).expect("valid GGUF");
//! println!("{} tensors", file.tensor_infos().len());
//! # Ok::<(), engine::models::FetchError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod models;
