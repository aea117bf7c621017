//! Requantizing a GGUF model: every weight matrix dequantized to f32 and quantized again with
//! the reference quantizers.
//!
//! This crate knows formats, not models: which tensor gets which type is a [`Chooser`]'s
//! decision (the engine's `engine::quantize::Target` makes llama.cpp's choices for
//! Llama-family models). Here the chosen types are applied: a row length that a block type
//! cannot hold falls back as llama.cpp's does (Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1,
//! Q6_K → Q8_0, else F16), rows are quantized on several threads, metadata is kept, and
//! `general.file_type` and `general.quantization_version` are set.

use std::path::Path;

use crate::gguf::{GgufError, GgufFile, GgufWriter, Value};
use crate::GgmlType;

/// A requantization's policy: the type each tensor of a file is to have.
pub trait Chooser {
    /// Per tensor of `file`, in file order, the type wanted (before the row-length
    /// fallback; a tensor's own type keeps it as it is).
    fn types(&self, file: &GgufFile) -> Vec<GgmlType>;

    /// llama.cpp's `llama_ftype` number to record as `general.file_type`.
    fn file_type(&self) -> u32;
}

/// An error while requantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequantError {
    /// The chooser did not give one type per tensor.
    #[error("the chooser gave {got} types for {tensors} tensors")]
    Chooser {
        /// Tensors in the file.
        tensors: usize,
        /// Types given.
        got: usize,
    },
    /// Reading or writing a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tensor's data could not be converted.
    #[error("tensor {tensor}: {message}")]
    Tensor {
        /// The tensor.
        tensor: String,
        /// What went wrong.
        message: String,
    },
}

/// One tensor's fate.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Type in the input.
    pub from: GgmlType,
    /// Type in the output.
    pub to: GgmlType,
    /// Whether a fallback replaced the type the target asked for.
    pub fallback: bool,
}

/// What a requantized file holds.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every tensor, in file order.
    pub tensors: Vec<Planned>,
}

impl Plan {
    /// Tensors and weights per output type, one line each (`    q4_K:   84 tensors, ...`).
    pub fn render_by_type(&self) -> String {
        let mut by_type = std::collections::BTreeMap::<&str, (usize, u64)>::new();
        for t in &self.tensors {
            let e = by_type.entry(t.to.name()).or_default();
            e.0 += 1;
            e.1 += t.shape.iter().product::<u64>();
        }
        by_type
            .into_iter()
            .map(|(ty, (n, e))| format!("  {ty:>6}: {n:>4} tensors, {e:>11} weights\n"))
            .collect()
    }

    /// Bits per weight over all tensors.
    pub fn bits_per_weight(&self) -> f64 {
        let (mut bits, mut n) = (0.0, 0u64);
        for t in &self.tensors {
            let e: u64 = t.shape.iter().product();
            bits += e as f64 * t.to.bits_per_weight();
            n += e;
        }
        bits / n.max(1) as f64
    }
}

fn fallback(ty: GgmlType, row: u64) -> (GgmlType, bool) {
    if row.is_multiple_of(ty.block_size() as u64) {
        return (ty, false);
    }
    let f = match ty {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if row.is_multiple_of(f.block_size() as u64) {
        (f, true)
    } else {
        (GgmlType::F16, true)
    }
}

/// Each tensor's type: the chooser's, after the row-length fallback.
pub fn plan(file: &GgufFile, chooser: &dyn Chooser) -> Result<Plan, RequantError> {
    let types = chooser.types(file);
    let infos = file.tensor_infos();
    if types.len() != infos.len() {
        return Err(RequantError::Chooser {
            tensors: infos.len(),
            got: types.len(),
        });
    }
    let tensors = infos
        .iter()
        .zip(types)
        .map(|(t, ty)| {
            let (to, fb) = if ty == t.ty {
                (ty, false)
            } else {
                fallback(ty, t.row_len())
            };
            Planned {
                name: t.name.clone(),
                shape: t.shape.clone(),
                from: t.ty,
                to,
                fallback: fb,
            }
        })
        .collect();
    Ok(Plan { tensors })
}

/// Requantizes `input` into `output` with the types `chooser` picks, on `threads` threads.
pub fn requantize(
    input: &Path,
    output: &Path,
    chooser: &dyn Chooser,
    threads: usize,
    progress: &mut dyn FnMut(&Planned),
) -> Result<Plan, RequantError> {
    let file = GgufFile::open(input)?;
    let plan = plan(&file, chooser)?;
    let mut w = GgufWriter::with_metadata(file.metadata().clone());
    w.set("general.file_type", Value::U32(chooser.file_type()));
    w.set("general.quantization_version", Value::U32(2));
    let threads = threads.max(1);
    for (view, p) in file.tensors().zip(&plan.tensors) {
        let data: std::borrow::Cow<'_, [u8]> = if p.from == p.to {
            std::borrow::Cow::Borrowed(view.data)
        } else {
            let err = |m: String| RequantError::Tensor {
                tensor: p.name.clone(),
                message: m,
            };
            let x = view.to_f32().map_err(|e| err(e.to_string()))?;
            let row = p.shape.first().copied().unwrap_or(1) as usize;
            let row_bytes =
                p.to.row_bytes(row as u64)
                    .ok_or_else(|| err("row too long".into()))? as usize;
            let n_rows = x.len() / row.max(1);
            let mut out = vec![0u8; n_rows * row_bytes];
            let per = n_rows.div_ceil(threads).max(1);
            std::thread::scope(|s| {
                let handles: Vec<_> = out
                    .chunks_mut(per * row_bytes)
                    .zip(x.chunks(per * row))
                    .map(|(o, xs)| {
                        s.spawn(move || {
                            for (orow, xrow) in o.chunks_mut(row_bytes).zip(xs.chunks(row)) {
                                crate::formats::quantize_bytes(p.to, xrow, orow)?;
                            }
                            Ok::<(), crate::formats::LengthError>(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("quantizer threads do not panic"))
            })
            .map_err(|e| err(e.to_string()))?;
            std::borrow::Cow::Owned(out)
        };
        w.add_tensor(p.name.clone(), &p.shape, p.to, data)?;
        progress(p);
    }
    w.write_to_path(output)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(GgmlType::Q4K, 576), (GgmlType::Q5_0, true));
        assert_eq!(fallback(GgmlType::Q6K, 576), (GgmlType::Q8_0, true));
        assert_eq!(fallback(GgmlType::Q2K, 576), (GgmlType::Q4_0, true));
        assert_eq!(fallback(GgmlType::Q5K, 576), (GgmlType::Q5_1, true));
        assert_eq!(fallback(GgmlType::Q4K, 1536), (GgmlType::Q4K, false));
        assert_eq!(fallback(GgmlType::Q4_0, 100), (GgmlType::F16, true));
    }
}
