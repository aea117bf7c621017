//! The validating GGUF reader.
//!
//! [`Gguf::from_bytes`] parses a whole file held in any byte container (a memory map for
//! [`GgufFile::open`], a `Vec<u8>` in tests and fuzzing) and checks, before anything is
//! handed out: the magic and version; that every count can fit in the bytes that remain
//! (so a count never drives an allocation larger than the file); string lengths and UTF-8;
//! value types and nesting depth; duplicate keys and tensor names; `general.alignment`;
//! tensor dimensions, types and sizes (rows a whole number of blocks, no overflow); and that
//! every tensor lies aligned, inside the file, without overlapping another. After that,
//! [`TensorView`]s are plain slices of the file.

use std::collections::HashMap;
use std::path::Path;

use memmap2::Mmap;

use super::metadata::{Metadata, Value, ValueType};
use super::{GgufError, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, MAX_VALUE_DEPTH};
use crate::formats::{self, Block, LengthError};
use crate::types::GgmlType;

/// Bytes a tensor info record takes at least: name length, n_dims, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;
/// Bytes a metadata pair takes at least: key length, value type, one byte of value.
const MIN_KV: u64 = 8 + 4 + 1;

/// Where one tensor is and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Its dimensions, innermost (row length, ggml's `ne[0]`) first.
    pub shape: Vec<u64>,
    /// Its element type.
    pub ty: GgmlType,
    /// Its byte offset within the data section.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Row length (`ne[0]`), or 1 for a scalar.
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }
}

/// A parsed, validated GGUF file over some bytes.
#[derive(Debug)]
pub struct Gguf<B> {
    data: B,
    layout: Layout,
}

/// A GGUF file on disk, memory-mapped.
pub type GgufFile = Gguf<MappedFile>;

/// A read-only mapping of a file, watched for the file shrinking under it (see
/// [`super::sigbus`]).
#[derive(Debug)]
pub struct MappedFile {
    #[cfg(target_os = "linux")]
    _watch: super::sigbus::Watch,
    map: Mmap,
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file. Tensor data stays on disk until touched.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| GgufError::io(path, e))?;
        // SAFETY: the map is read-only and all our reads stay within the length validated at
        // open. Another process truncating the file while it is mapped makes later reads
        // fault (SIGBUS); on Linux the watch turns that into an error message naming the file
        // and an exit, instead of a silent crash.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        Gguf::from_bytes(MappedFile {
            #[cfg(target_os = "linux")]
            _watch: super::sigbus::watch(&map, path),
            map,
        })
    }

    /// Lets the system drop the pages under `bytes` (part of this file's mapping, such as a
    /// tensor's data that has been copied elsewhere) from memory: they are read from the file
    /// again if touched. Advisory: nothing happens where the system declines, or for a slice
    /// that is not within the mapping.
    pub fn release(&self, bytes: &[u8]) {
        let map = &self.data.map;
        let base = map.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        let Some(offset) = start.checked_sub(base) else {
            return;
        };
        if offset.saturating_add(bytes.len()) > map.len() || bytes.is_empty() {
            return;
        }
        #[cfg(unix)]
        {
            // SAFETY: the mapping is a read-only shared map of a file: dropping its pages
            // changes no byte anyone reads (a later read faults them in from the file again),
            // and the range is within the mapping (checked above; memmap2 widens it to whole
            // pages, whose bytes are the file's too).
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
            };
        }
    }
}

impl<B: AsRef<[u8]>> Gguf<B> {
    /// Parses and validates a whole GGUF file held in `data`.
    pub fn from_bytes(data: B) -> Result<Self, GgufError> {
        let layout = parse(data.as_ref())?;
        Ok(Gguf { data, layout })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.layout.version
    }

    /// The data section's alignment.
    pub fn alignment(&self) -> u64 {
        self.layout.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.layout.data_offset
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.data.as_ref().len() as u64
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.layout.metadata
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.layout.tensors
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.layout.tensors.iter().map(|info| self.view(info))
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        self.layout
            .by_name
            .get(name)
            .map(|&i| self.view(&self.layout.tensors[i]))
            .ok_or_else(|| GgufError::TensorNotFound {
                name: name.to_owned(),
            })
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // Validated at parse time: data_offset + offset + size <= file length.
        let start = (self.layout.data_offset + info.offset) as usize;
        TensorView {
            info,
            data: &self.data.as_ref()[start..start + info.size as usize],
        }
    }
}

/// One tensor's info and bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Name, shape, type, offset, size.
    pub info: &'a TensorInfo,
    /// Its bytes, exactly `info.size` of them.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor's name.
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    /// The tensor's type.
    pub fn ty(&self) -> GgmlType {
        self.info.ty
    }

    /// Its blocks, zero-copy. Fails if `B` is not the tensor's type or the bytes are not
    /// aligned for `B` (GGUF's alignment makes them so in any well-formed file).
    pub fn blocks<T: Block>(&self) -> Result<&'a [T], GgufError> {
        if T::TYPE != self.info.ty {
            return Err(GgufError::WrongTensorType {
                tensor: self.info.name.clone(),
                actual: self.info.ty,
                requested: T::TYPE,
            });
        }
        bytemuck::try_cast_slice(self.data).map_err(|_| GgufError::UnalignedView {
            tensor: self.info.name.clone(),
            ty: self.info.ty,
        })
    }

    /// Dequantizes the whole tensor to f32.
    pub fn to_f32(&self) -> Result<Vec<f32>, LengthError> {
        formats::dequantize_to_vec(self.info.ty, self.data)
    }
}

/// Everything the header says, validated.
#[derive(Debug)]
struct Layout {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a count and checks that `count` items of at least `min_size` bytes can fit.
    fn count(&mut self, min_size: u64, what: impl Fn() -> String) -> Result<u64, GgufError> {
        let offset = self.offset();
        let count = self.u64(|| format!("{} count", what()))?;
        if count.saturating_mul(min_size) > self.remaining() {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                offset,
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let offset = self.offset();
        let len = self.u64(|| format!("length of {}", what()))?;
        let bytes = self.take(len, &what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("value of metadata key '{key}'");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::Bool => Value::Bool(self.array::<1>(what)?[0] != 0),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                let offset = self.offset();
                if depth >= MAX_VALUE_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        key: key.to_owned(),
                        max: MAX_VALUE_DEPTH,
                        offset,
                    });
                }
                let elem = self.value_type(key)?;
                let n = self.count(elem.min_size(), || {
                    format!("array element of metadata key '{key}'")
                })?;
                // `count` checked that n elements can fit in the rest of the file, so this
                // allocation is bounded by the file's size.
                let mut values = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    values.push(self.value(elem, key, depth + 1)?);
                }
                Value::Array(elem, values)
            }
        })
    }

    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let id = self.u32(|| format!("value type of metadata key '{key}'"))?;
        ValueType::from_id(id).ok_or_else(|| GgufError::InvalidValueType {
            key: key.to_owned(),
            id,
            offset,
        })
    }
}

fn parse(buf: &[u8]) -> Result<Layout, GgufError> {
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.array(|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(|| "version".into())?;
    if version != 2 && version != 3 {
        let hint = match version {
            1 => " (GGUF v1 is obsolete; convert the model again)",
            v if v & 0xffff == 0 => " (it looks byte-swapped: a big-endian file?)",
            _ => "",
        };
        return Err(GgufError::UnsupportedVersion { version, hint });
    }
    let n_tensors_offset = c.offset();
    let n_tensors = c.u64(|| "tensor count".into())?;
    let n_kv = c.count(MIN_KV, || "metadata pair".into())?;
    let mut metadata = Metadata::new();
    for index in 0..n_kv {
        let key_offset = c.offset();
        let key = c.string(|| format!("key of metadata pair {index}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                index,
                offset: key_offset,
            });
        }
        let ty = c.value_type(&key)?;
        let value = c.value(ty, &key, 0)?;
        if metadata.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.insert(key, value);
    }
    let alignment = alignment_of(&metadata)?;
    if n_tensors.saturating_mul(MIN_TENSOR_INFO) > c.remaining() {
        return Err(GgufError::CountTooLarge {
            what: "tensor".into(),
            count: n_tensors,
            offset: n_tensors_offset,
            remaining: c.remaining(),
        });
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut by_name = HashMap::with_capacity(n_tensors as usize);
    for index in 0..n_tensors {
        let info = tensor_info(&mut c, index)?;
        if by_name.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensors.push(info);
    }
    let data_offset = c.offset().next_multiple_of(alignment);
    check_placement(&tensors, data_offset, alignment, buf.len() as u64)?;
    Ok(Layout {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        by_name,
    })
}

fn tensor_info(c: &mut Cursor<'_>, index: u64) -> Result<TensorInfo, GgufError> {
    let name = c.string(|| format!("name of tensor {index}"))?;
    let n_dims = c.u32(|| format!("dimension count of tensor '{name}'"))?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
            max: MAX_DIMS,
        });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        shape.push(c.u64(|| format!("dimension {d} of tensor '{name}'"))?);
    }
    let type_id = c.u32(|| format!("type of tensor '{name}'"))?;
    let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;
    let ty = GgmlType::from_id(type_id).map_err(|source| GgufError::UnsupportedTensorType {
        tensor: name.clone(),
        source,
    })?;
    let size = tensor_size(&name, &shape, ty)?;
    Ok(TensorInfo {
        name,
        shape,
        ty,
        offset,
        size,
    })
}

fn check_placement(
    tensors: &[TensorInfo],
    data_offset: u64,
    alignment: u64,
    len: u64,
) -> Result<(), GgufError> {
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len,
                })
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].size > pair[1].offset {
            return Err(GgufError::TensorsOverlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

/// The data alignment `metadata` asks for: `general.alignment` (a u32 power of two) or 32.
pub(crate) fn alignment_of(metadata: &Metadata) -> Result<u64, GgufError> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(other) => Err(GgufError::BadAlignment {
            found: format!("{other:?}"),
        }),
    }
}

/// Bytes a tensor of `ty` and `shape` takes, after checking that its rows are whole blocks and
/// that neither its element count nor its size overflows.
pub(crate) fn tensor_size(name: &str, shape: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let overflow = || GgufError::ShapeOverflow {
        tensor: name.to_owned(),
        shape: shape.to_vec(),
    };
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let ne0 = shape.first().copied().unwrap_or(1);
    if ne0 % ty.block_size() as u64 != 0 {
        return Err(GgufError::RowNotWholeBlocks {
            tensor: name.to_owned(),
            ty,
            ne0,
            block_size: ty.block_size(),
        });
    }
    ty.row_bytes(n_elements).ok_or_else(overflow)
}
