//! What can be wrong with a GGUF file, and where.

use std::path::PathBuf;

use crate::types::{GgmlType, UnsupportedType};

/// An error reading or writing a GGUF file. Every variant says what is wrong and where: a byte
/// offset, a metadata key or a tensor name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened, mapped, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file ends before something that must be there.
    #[error(
        "file is truncated: {what} at offset {offset} needs {needed} bytes, but the file has {len}"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// The file's length.
        len: u64,
    },
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with \"{}\", expected \"GGUF\"", found.escape_ascii())]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The version is not 2 or 3.
    #[error("GGUF version {version} is not supported (only 2 and 3){hint}")]
    UnsupportedVersion {
        /// The version read.
        version: u32,
        /// A hint for versions that look byte-swapped or obsolete.
        hint: &'static str,
    },
    /// A count cannot possibly fit in the rest of the file.
    #[error("{what} count {count} at offset {offset} cannot fit in the {remaining} bytes left")]
    CountTooLarge {
        /// What is counted.
        what: String,
        /// The count read.
        count: u64,
        /// Where it was read.
        offset: u64,
        /// Bytes left after it.
        remaining: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// What the string is.
        what: String,
        /// Where it starts.
        offset: u64,
    },
    /// A metadata value has a type id outside the GGUF spec.
    #[error("metadata key '{key}': invalid value type {id} at offset {offset}")]
    InvalidValueType {
        /// The key.
        key: String,
        /// The type id read.
        id: u32,
        /// Where it was read.
        offset: u64,
    },
    /// Arrays nest deeper than [`super::MAX_VALUE_DEPTH`].
    #[error("metadata key '{key}': arrays nested more than {max} deep at offset {offset}")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
        /// Where the too-deep array starts.
        offset: u64,
    },
    /// A metadata key is empty.
    #[error("metadata pair {index} at offset {offset} has an empty key")]
    EmptyKey {
        /// Index of the pair.
        index: u64,
        /// Where its key starts.
        offset: u64,
    },
    /// A metadata key appears twice.
    #[error("metadata key '{key}' appears twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a nonzero power of two stored as u32.
    #[error("general.alignment must be a u32 power of two, found {found}")]
    BadAlignment {
        /// What was found.
        found: String,
    },
    /// Two tensors share a name.
    #[error("tensor '{name}' appears twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A tensor name is longer than llama.cpp accepts.
    #[error("tensor name '{name}' is {len} bytes; at most {max} are allowed")]
    TensorNameTooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tensor has more than [`super::MAX_DIMS`] dimensions.
    #[error("tensor '{tensor}' has {n_dims} dimensions; at most {max} are allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// Its dimension count.
        n_dims: u32,
        /// The limit.
        max: usize,
    },
    /// A tensor's element count or byte size overflows.
    #[error("tensor '{tensor}' has shape {shape:?}, whose size overflows")]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// Its dimensions.
        shape: Vec<u64>,
    },
    /// A tensor's type is unknown or unsupported.
    #[error("tensor '{tensor}': {source}")]
    UnsupportedTensorType {
        /// The tensor.
        tensor: String,
        /// The type id.
        source: UnsupportedType,
    },
    /// A tensor's rows are not a whole number of blocks.
    #[error("tensor '{tensor}' of type {ty} has rows of {ne0} elements, not a multiple of the block size {block_size}")]
    RowNotWholeBlocks {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its row length.
        ne0: u64,
        /// The type's block size.
        block_size: usize,
    },
    /// A tensor's offset is not a multiple of the alignment.
    #[error("tensor '{tensor}' has offset {offset}, not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset within the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's bytes lie (partly) outside the file.
    #[error("tensor '{tensor}' spans bytes {start}..{end} of the file, which has {len}")]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start.
        start: u64,
        /// Absolute end.
        end: u64,
        /// File length.
        len: u64,
    },
    /// Two tensors' bytes overlap.
    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    TensorsOverlap {
        /// The one that starts first.
        first: String,
        /// The one that starts inside it.
        second: String,
    },
    /// No tensor has this name.
    #[error("no tensor named '{name}'")]
    TensorNotFound {
        /// The name asked for.
        name: String,
    },
    /// A typed view was asked for with the wrong block type.
    #[error("tensor '{tensor}' has type {actual}, not {requested}")]
    WrongTensorType {
        /// The tensor.
        tensor: String,
        /// Its type.
        actual: GgmlType,
        /// The type asked for.
        requested: GgmlType,
    },
    /// A tensor's bytes are not aligned for a typed view of its blocks.
    #[error("tensor '{tensor}' data is not aligned for {ty} blocks")]
    UnalignedView {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A tensor given to the writer has the wrong number of bytes for its type and shape.
    #[error(
        "tensor '{tensor}': {len} bytes given, but type {ty} with shape {shape:?} takes {expected}"
    )]
    TensorSizeMismatch {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes given.
        len: usize,
        /// Bytes expected.
        expected: u64,
    },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}
