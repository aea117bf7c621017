//! # passuntil-evals: experiments
//!
//! The measuring half of passuntil and the library behind the `pass-until` command. The
//! binary only parses arguments and calls functions here.
//!
//! - [`inspect`]: what a GGUF file holds: metadata (long arrays summarised), the tensor table
//!   and totals by type, as text or JSON.
//! - [`generate`]: samples of one prompt on a chosen backend.
//! - [`run`]: `pass-until run`, `resume`, `merge` and `report`: massive sampling.
//! - [`compare`]: perplexity and KL divergence against a reference, as llama.cpp's tool.
//! - [`scale`]: PassUntil across model sizes: the scaling-law fit, a held-out prediction,
//!   the emergence test and pass@k against compute.
//! - [`metrics`]: pass@k and PassUntil as pure functions, checked against EVALS-SPEC.md.
//! - [`probe`]: matrix entropy, outlier features and the logit lens through the native
//!   engine's hooks.
//! - [`judges`]: text, multiple-choice and sandboxed program judges, and a verdict cache.
//! - [`sandbox`]: the program judge's namespaces, limits and proof that the tests ran.
//! - [`tasks`]: problems from native JSONL, BIG-bench `task.json` and HumanEval files.
//!
//! ```no_run
//! let path = engine::models::resolve("smollm2-135m", &mut |m| eprintln!("{m}"))?;
//! let report = evals::inspect::inspect(&path)?;
//! println!("{}", report.summary.architecture);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compare;
pub mod generate;
pub mod inspect;
pub mod judges;
pub mod metrics;
pub mod probe;
pub mod run;
pub mod sandbox;
pub mod scale;
pub mod study;
pub mod tasks;
