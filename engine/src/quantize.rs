//! Which tensor of a Llama-family model gets which type when it is requantized: one type for
//! every weight matrix, or one of llama.cpp's K-quant mixes. The policy lives here, with the
//! models; [`quant::requant`] applies it ([`Target`] is its [`Chooser`]).
//!
//! Which tensors are quantized follows llama.cpp's `llama-quant.cpp`: names ending in
//! `weight` with at least two dimensions, except norms, position and token-type embeddings.
//! The mixes (`Q4_K_M`, ...) pick types per tensor role and layer as llama.cpp does (output
//! head Q6_K; `attn_v` and `ffn_down` one step up in the layers `use_more_bits` names).

use quant::gguf::{GgufFile, Value};
use quant::requant::Chooser;
use quant::GgmlType;

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
            // Q8_1, Q8_K and types added later have no llama_ftype of their own.
            Target::Type(_) => 0,
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

impl Chooser for Target {
    fn file_type(&self) -> u32 {
        Target::file_type(*self)
    }

    fn types(&self, file: &GgufFile) -> Vec<GgmlType> {
        let target = *self;
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
        infos
            .iter()
            .map(|t| {
                if !quantizable(&t.name, &t.shape) {
                    // Kept, or dequantized when it is quantized.
                    return if t.ty.is_quantized() {
                        GgmlType::F32
                    } else {
                        t.ty
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
                ty
            })
            .collect()
    }
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
}
