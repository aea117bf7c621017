//! GGUF, the container llama.cpp and passuntil store models in.
//!
//! Layout (all little-endian): magic `GGUF`, version (2 or 3), tensor count (u64), metadata
//! count (u64); the metadata key/value pairs; one info record per tensor (name, dims, type,
//! offset relative to the data section); padding to `general.alignment` (default 32); then the
//! data section, each tensor at an aligned offset.
//!
//! [`Gguf::from_bytes`] / [`GgufFile::open`] validate all of it before handing anything out
//! (see [`reader`]); [`GgufWriter`] writes files that both passuntil and llama.cpp load.

mod error;
mod metadata;
pub mod reader;
#[cfg(target_os = "linux")]
mod sigbus;
mod writer;

pub use error::GgufError;
pub use metadata::{Metadata, MetadataError, Value, ValueType};
pub use reader::{Gguf, GgufFile, MappedFile, TensorInfo, TensorView};
pub use writer::GgufWriter;

/// `GGUF` as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest tensor name llama.cpp accepts, in bytes (`GGML_MAX_NAME - 1`).
pub const MAX_TENSOR_NAME: usize = 63;
/// Deepest nesting of arrays inside arrays the reader accepts.
pub const MAX_VALUE_DEPTH: usize = 8;
