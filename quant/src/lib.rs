//! # passuntil-quant: bytes and math
//!
//! The storage layer of passuntil. It knows nothing of models; it reads and writes GGUF
//! containers and converts between f32 and ggml's block formats, bit for bit.
//!
//! - [`gguf`]: a validating GGUF v2/v3 reader over a memory map (typed, zero-copy tensor views;
//!   a hostile file gives an error, never a panic) and a writer for the same format.
//! - [`formats`]: ggml's block formats (`BlockQ4_0`, `BlockQ4K`, ...), each with the reference
//!   quantizer model files are made with and its dequantizer.
//! - [`dot`]: dot products of each weight format with its 8-bit activation partner, and the
//!   activation quantizers, on every instruction set ([`dispatch`] picks one at run time); all
//!   paths give bitwise the same results.
//! - [`gemm`]: a weight matrix times a batch of activation rows, threaded with rayon and
//!   batch-invariant (a row's outputs do not depend on the batch or the thread count).
//! - [`panels`]: Q4_0, Q4_1 and Q8_0 matrices repacked in panels of 16 rows, for products that
//!   sum each block in integers (`q8-fast`: faster, batch-invariant, not llama.cpp's bits).
//! - [`types`]: the one table describing every supported type.
//! - [`requant`]: a model requantized into one type or one of llama.cpp's K-quant mixes.
//!
//! ```
//! use quant::formats::{dequantize_to_vec, quantize_to_vec};
//! use quant::GgmlType;
//!
//! let x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let bytes = quantize_to_vec(GgmlType::Q4K, &x)?;
//! assert_eq!(bytes.len(), 144);
//! let y = dequantize_to_vec(GgmlType::Q4K, &bytes)?;
//! let max_err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
//! assert!(max_err < 0.1);
//! # Ok::<(), quant::formats::LengthError>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub(crate) mod arch;
pub mod dispatch;
pub mod dot;
pub mod formats;
pub mod gemm;
pub mod gguf;
pub mod panels;
pub mod par;
pub mod requant;
pub mod types;

pub use types::{GgmlType, TypeInfo, UnsupportedType, QK_K};
