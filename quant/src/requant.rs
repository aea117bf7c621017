//! Requantizing a GGUF model: every weight matrix dequantized to f32 and quantized again with
//! the reference quantizers, into one type or into one of llama.cpp's K-quant mixes.
//!
//! Which tensors are quantized follows llama.cpp's `llama-quant.cpp`: names ending in
//! `weight` with at least two dimensions, except norms, position and token-type embeddings.
//! The mixes (`Q4_K_M`, ...) pick types per tensor role and layer as llama.cpp does for
//! Llama-family models (output head Q6_K; `attn_v` and `ffn_down` one step up in the layers
//! `use_more_bits` names). A row length that a 256-block type cannot hold falls back as
//! llama.cpp's does: Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0. Metadata is
//! kept; `general.file_type` and `general.quantization_version` are set.

use std::path::Path;

use crate::gguf::{GgufError, GgufFile, GgufWriter, Value};
use crate::GgmlType;

/// llama.cpp's named mixes of K-quants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Q4_K, with the head Q6_K and attn_v in the first four layers Q5_K, ffn_down in the
    /// first eighth Q5_K.
    Q4KS,
    /// Q4_K, with the head, and attn_v / ffn_down in `use_more_bits` layers, Q6_K.
    Q4KM,
    /// Q5_K, with the head Q6_K.
    Q5KS,
    /// Q5_K, with the head, and attn_v / ffn_down in `use_more_bits` layers, Q6_K.
    Q5KM,
}

/// What to quantize to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every quantizable tensor to one type (before fallbacks).
    Type(GgmlType),
    /// A named mix.
    Mix(Mix),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mix = match s.to_ascii_uppercase().as_str() {
            "Q4_K_S" => Some(Mix::Q4KS),
            "Q4_K_M" => Some(Mix::Q4KM),
            "Q5_K_S" => Some(Mix::Q5KS),
            "Q5_K_M" => Some(Mix::Q5KM),
            _ => None,
        };
        if let Some(m) = mix {
            return Ok(Target::Mix(m));
        }
        match GgmlType::from_name(&s.to_ascii_lowercase().replace("_k", "_K")) {
            Some(t) if !matches!(t, GgmlType::Q8_1 | GgmlType::Q8K) => Ok(Target::Type(t)),
            _ => Err(format!(
                "unknown target '{s}': a type (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, \
                 q2_K, q3_K, q4_K, q5_K, q6_K) or a mix (Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M)"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Type(t) => f.write_str(t.name()),
            Target::Mix(Mix::Q4KS) => f.write_str("Q4_K_S"),
            Target::Mix(Mix::Q4KM) => f.write_str("Q4_K_M"),
            Target::Mix(Mix::Q5KS) => f.write_str("Q5_K_S"),
            Target::Mix(Mix::Q5KM) => f.write_str("Q5_K_M"),
        }
    }
}

impl Target {
    /// llama.cpp's `llama_ftype` number for `general.file_type`.
    pub fn file_type(self) -> u32 {
        use GgmlType::*;
        match self {
            Target::Type(F32) => 0,
            Target::Type(F16) => 1,
            Target::Type(Q4_0) => 2,
            Target::Type(Q4_1) => 3,
            Target::Type(Q8_0) => 7,
            Target::Type(Q5_0) => 8,
            Target::Type(Q5_1) => 9,
            Target::Type(Q2K) => 10,
            Target::Type(Q3K) => 11,
            Target::Type(Q4K) | Target::Mix(Mix::Q4KS) => 14,
            Target::Mix(Mix::Q4KM) => 15,
            Target::Type(Q5K) | Target::Mix(Mix::Q5KS) => 16,
            Target::Mix(Mix::Q5KM) => 17,
            Target::Type(Q6K) => 18,
            Target::Type(BF16) => 32,
            Target::Type(Q8_1 | Q8K) => 0,
        }
    }

    fn base(self) -> GgmlType {
        match self {
            Target::Type(t) => t,
            Target::Mix(Mix::Q4KS | Mix::Q4KM) => GgmlType::Q4K,
            Target::Mix(Mix::Q5KS | Mix::Q5KM) => GgmlType::Q5K,
        }
    }
}

/// An error while requantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequantError {
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

fn quantizable(name: &str, shape: &[u64]) -> bool {
    name.ends_with("weight")
        && shape.len() >= 2
        && !name.contains("_norm.weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !name.contains("ffn_gate_inp.weight")
}

fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn use_more_bits(i: u64, n: u64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
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

/// Decides each tensor's type.
pub fn plan(file: &GgufFile, target: Target) -> Plan {
    let infos = file.tensor_infos();
    let has_output = infos.iter().any(|t| t.name == "output.weight");
    let n_layers = file
        .metadata()
        .get("general.architecture")
        .and_then(|a| a.as_str())
        .and_then(|a| file.metadata().get(&format!("{a}.block_count")))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| {
            infos
                .iter()
                .filter_map(|t| layer_of(&t.name))
                .max()
                .map_or(0, |m| m + 1)
        });
    let (mut i_v, mut i_down) = (0u64, 0u64);
    let n_v = infos
        .iter()
        .filter(|t| t.name.contains("attn_v.weight"))
        .count() as u64;
    let tensors = infos
        .iter()
        .map(|t| {
            if !quantizable(&t.name, &t.shape) {
                return Planned {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    from: t.ty,
                    to: if t.ty.is_quantized() {
                        GgmlType::F32
                    } else {
                        t.ty
                    },
                    fallback: false,
                };
            }
            let base = target.base();
            let mut ty = base;
            let is_output =
                t.name == "output.weight" || (!has_output && t.name == "token_embd.weight");
            if let Target::Mix(mix) = target {
                if is_output {
                    ty = GgmlType::Q6K;
                } else if t.name.contains("attn_v.weight") {
                    // llama.cpp counts attn_v tensors in (layer, name) order: the layer.
                    let i = layer_of(&t.name).unwrap_or(i_v);
                    ty = match mix {
                        Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n_v) => GgmlType::Q6K,
                        Mix::Q4KS if i < 4 => GgmlType::Q5K,
                        _ => base,
                    };
                    i_v += 1;
                } else if t.name.contains("ffn_down") {
                    let i = layer_of(&t.name).unwrap_or(i_down);
                    ty = match mix {
                        Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n_layers) => GgmlType::Q6K,
                        Mix::Q4KS if i < n_layers / 8 => GgmlType::Q5K,
                        _ => base,
                    };
                    i_down += 1;
                }
            }
            let (to, fb) = fallback(ty, t.row_len());
            Planned {
                name: t.name.clone(),
                shape: t.shape.clone(),
                from: t.ty,
                to,
                fallback: fb,
            }
        })
        .collect();
    Plan { tensors }
}

/// Requantizes `input` into `output` following `plan`, on `threads` threads.
pub fn requantize(
    input: &Path,
    output: &Path,
    target: Target,
    threads: usize,
    progress: &mut dyn FnMut(&Planned),
) -> Result<Plan, RequantError> {
    let file = GgufFile::open(input)?;
    let plan = plan(&file, target);
    let mut w = GgufWriter::with_metadata(file.metadata().clone());
    w.set("general.file_type", Value::U32(target.file_type()));
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
    fn targets_parse() {
        assert_eq!("q4_0".parse::<Target>(), Ok(Target::Type(GgmlType::Q4_0)));
        assert_eq!("Q4_K".parse::<Target>(), Ok(Target::Type(GgmlType::Q4K)));
        assert_eq!("q4_k_m".parse::<Target>(), Ok(Target::Mix(Mix::Q4KM)));
        assert_eq!("F16".parse::<Target>(), Ok(Target::Type(GgmlType::F16)));
        assert!("q8_K".parse::<Target>().is_err());
        assert!("iq4_nl".parse::<Target>().is_err());
        assert_eq!(Target::Mix(Mix::Q4KM).to_string(), "Q4_K_M");
    }

    #[test]
    fn use_more_bits_matches_llama_cpp_for_30_layers() {
        // i < 3, i ≥ 26, or (i − 3) % 3 == 2.
        let more: Vec<u64> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(
            more,
            vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        );
    }

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
