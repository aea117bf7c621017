//! The GGUF writer.
//!
//! Writes version 3 files laid out the way llama.cpp's own writer does: metadata in insertion
//! order, tensor infos in insertion order with consecutive offsets, each tensor padded to the
//! alignment, so that both passuntil and llama.cpp load the result.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::metadata::{Metadata, Value};
use super::{GgufError, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS, MAX_TENSOR_NAME};
use crate::types::GgmlType;

struct PendingTensor<'a> {
    name: String,
    shape: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Builds a GGUF file: add metadata and tensors, then [`GgufWriter::write_to_path`].
///
/// ```
/// use quant::gguf::{Gguf, GgufWriter, Value};
/// use quant::GgmlType;
///
/// let mut w = GgufWriter::new();
/// w.set("general.architecture", Value::String("llama".into()));
/// let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
/// w.add_tensor("w", &[2, 2], GgmlType::F32, weights)?;
/// let mut bytes = Vec::new();
/// w.write(&mut bytes)?;
/// let file = Gguf::from_bytes(bytes)?;
/// assert_eq!(file.tensor("w")?.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), quant::gguf::GgufError>(())
/// ```
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Metadata,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from existing metadata (e.g. when requantizing a model).
    pub fn with_metadata(metadata: Metadata) -> Self {
        GgufWriter {
            metadata,
            tensors: Vec::new(),
        }
    }

    /// Sets a metadata value, replacing any earlier one for `key`.
    pub fn set(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.insert(key, value);
        self
    }

    /// The metadata so far.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a tensor. `shape` is innermost first; `data` must be exactly the tensor's size.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufError> {
        let name = name.into();
        let data = data.into();
        if name.len() > MAX_TENSOR_NAME {
            return Err(GgufError::TensorNameTooLong {
                len: name.len(),
                name,
                max: MAX_TENSOR_NAME,
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        if shape.len() > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims: shape.len() as u32,
                max: MAX_DIMS,
            });
        }
        let expected = super::reader::tensor_size(&name, shape, ty)?;
        if data.len() as u64 != expected {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name,
                ty,
                shape: shape.to_vec(),
                len: data.len(),
                expected,
            });
        }
        self.tensors.push(PendingTensor {
            name,
            shape: shape.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// Writes the file to `out`.
    pub fn write(&self, out: &mut impl Write) -> Result<(), GgufError> {
        let alignment = super::reader::alignment_of(&self.metadata)?;
        let mut w = Counting { inner: out, n: 0 };
        let io = |e| GgufError::io("<output>", e);
        w.put(&GGUF_MAGIC).map_err(io)?;
        w.put(&GGUF_VERSION.to_le_bytes()).map_err(io)?;
        w.put(&(self.tensors.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.put(&(self.metadata.len() as u64).to_le_bytes())
            .map_err(io)?;
        for (key, value) in self.metadata.iter() {
            write_str(&mut w, key).map_err(io)?;
            w.put(&(value.value_type() as u32).to_le_bytes())
                .map_err(io)?;
            write_value(&mut w, value).map_err(io)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut w, &t.name).map_err(io)?;
            w.put(&(t.shape.len() as u32).to_le_bytes()).map_err(io)?;
            for d in &t.shape {
                w.put(&d.to_le_bytes()).map_err(io)?;
            }
            w.put(&t.ty.id().to_le_bytes()).map_err(io)?;
            w.put(&offset.to_le_bytes()).map_err(io)?;
            offset += (t.data.len() as u64).next_multiple_of(alignment);
        }
        if !self.tensors.is_empty() {
            w.pad(alignment).map_err(io)?;
        }
        for t in &self.tensors {
            w.put(&t.data).map_err(io)?;
            w.pad(alignment).map_err(io)?;
        }
        w.inner.flush().map_err(io)
    }

    /// Writes the file to `path` through a temporary file in the same folder, renamed into
    /// place once complete, so a crash never leaves a half-written model under that name.
    pub fn write_to_path(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let tmp = path.with_extension("gguf.partial");
        let file = std::fs::File::create(&tmp).map_err(|e| GgufError::io(&tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        self.write(&mut out).map_err(|e| match e {
            GgufError::Io { source, .. } => GgufError::io(&tmp, source),
            other => other,
        })?;
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| GgufError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| GgufError::io(path, e))
    }
}

struct Counting<'w, W: Write> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(b)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, alignment: u64) -> std::io::Result<()> {
        let pad = self.n.next_multiple_of(alignment) - self.n;
        self.put(&vec![0u8; pad as usize])
    }
}

fn write_str<W: Write>(w: &mut Counting<'_, W>, s: &str) -> std::io::Result<()> {
    w.put(&(s.len() as u64).to_le_bytes())?;
    w.put(s.as_bytes())
}

fn write_value<W: Write>(w: &mut Counting<'_, W>, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.put(&[*x]),
        Value::I8(x) => w.put(&x.to_le_bytes()),
        Value::Bool(x) => w.put(&[u8::from(*x)]),
        Value::U16(x) => w.put(&x.to_le_bytes()),
        Value::I16(x) => w.put(&x.to_le_bytes()),
        Value::U32(x) => w.put(&x.to_le_bytes()),
        Value::I32(x) => w.put(&x.to_le_bytes()),
        Value::F32(x) => w.put(&x.to_le_bytes()),
        Value::U64(x) => w.put(&x.to_le_bytes()),
        Value::I64(x) => w.put(&x.to_le_bytes()),
        Value::F64(x) => w.put(&x.to_le_bytes()),
        Value::String(s) => write_str(w, s),
        Value::Array(elem, items) => {
            w.put(&(*elem as u32).to_le_bytes())?;
            w.put(&(items.len() as u64).to_le_bytes())?;
            for item in items {
                // An element of another type than the array's would make the file unreadable.
                if item.value_type() != *elem {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("array of {elem} holds a {}", item.value_type()),
                    ));
                }
                write_value(w, item)?;
            }
            Ok(())
        }
    }
}
