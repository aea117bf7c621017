//! A Llama-family model's shape from GGUF metadata ([`Config`]), checked at load, and the
//! RoPE plan it implies.

use quant::gguf::Metadata;

use super::rope::RopePlan;

/// A Llama-family model's shape, read and checked from GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Training context length.
    pub n_ctx_train: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Dimensions of each head that RoPE rotates (`rope.dimension_count`; for Llama the whole
    /// head).
    pub n_rot: usize,
    /// Linear RoPE scaling: positions are multiplied by this (1 / `rope.scaling.factor`).
    pub rope_freq_scale: f32,
    /// RoPE pairs dimension `i` with `i + n_rot/2` (NeoX ordering) instead of `2i` with
    /// `2i + 1`.
    pub rope_neox: bool,
    /// YaRN scaling (`rope.scaling.type = yarn`), when the file asks for it.
    pub rope_yarn: Option<Yarn>,
    /// Magnitude of the RoPE rotations (`rope.scaling.attn_factor`, 1 when absent; YaRN
    /// multiplies it by `1 + 0.1·ln(factor)`): queries and keys both scale by it.
    pub rope_attn_factor: f32,
    /// The architecture (`general.architecture`).
    pub arch: String,
}

impl Config {
    /// Reads `ARCH.*` metadata for a supported architecture (`llama`; `qwen2`, which adds
    /// query/key/value biases and rotates with NeoX ordering); any other architecture, or a
    /// missing or inconsistent key, is an error naming it.
    pub fn from_metadata(md: &Metadata) -> Result<Config, String> {
        let arch = md.architecture().map_err(|e| e.to_string())?;
        if !matches!(arch, "llama" | "qwen2") {
            return Err(format!(
                "architecture {arch:?} is not supported (llama and qwen2 are)"
            ));
        }
        let u = |k: &str| -> Result<usize, String> {
            md.get_u64(&format!("{arch}.{k}"))
                .map(|v| v as usize)
                .map_err(|e| e.to_string())
        };
        let f =
            |k: &str, default: f64| md.get_f64(&format!("{arch}.{k}")).unwrap_or(default) as f32;
        let n_head = u("attention.head_count")?;
        let c = Config {
            n_layer: u("block_count")?,
            n_embd: u("embedding_length")?,
            n_head,
            n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
            n_ff: u("feed_forward_length")?,
            n_vocab: md
                .get_array("tokenizer.ggml.tokens")
                .map(|(_, v)| v.len())
                .map_err(|e| e.to_string())?,
            n_ctx_train: u("context_length")?,
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: f("rope.freq_base", 10_000.0),
            n_rot: 0,
            rope_freq_scale: 1.0,
            rope_neox: arch == "qwen2",
            rope_yarn: None,
            rope_attn_factor: f("rope.scaling.attn_factor", 1.0),
            arch: arch.to_owned(),
        };
        if c.n_head == 0 || c.n_head_kv == 0 || !c.n_head.is_multiple_of(c.n_head_kv) {
            return Err(format!(
                "{} heads cannot share {} key/value heads",
                c.n_head, c.n_head_kv
            ));
        }
        if !c.n_embd.is_multiple_of(c.n_head) || !(c.n_embd / c.n_head).is_multiple_of(2) {
            return Err(format!(
                "embedding {} does not split into {} even heads",
                c.n_embd, c.n_head
            ));
        }
        let mut c = c;
        // Whole heads rotate (llama.cpp refuses anything else for llama).
        c.n_rot = u("rope.dimension_count").unwrap_or(c.head_dim());
        if c.n_rot != c.head_dim() {
            return Err(format!(
                "rope.dimension_count {} must equal the head width {}",
                c.n_rot,
                c.head_dim()
            ));
        }
        let scaling = md
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.as_str());
        match scaling {
            None | Some("none") | Some("linear") => {}
            Some("yarn") => {
                // llama.cpp's defaults for these architectures (their files carry no betas).
                let n_ctx_orig = u("rope.scaling.original_context_length").unwrap_or(c.n_ctx_train);
                c.rope_yarn = Some(Yarn {
                    n_ctx_orig,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                });
            }
            Some(other) => {
                return Err(format!(
                    "RoPE scaling {other:?} is not supported (linear and yarn are)"
                ))
            }
        }
        if !(c.rope_attn_factor.is_finite() && c.rope_attn_factor > 0.0) {
            return Err(format!(
                "RoPE attention factor {} must be positive",
                c.rope_attn_factor
            ));
        }
        // llama.cpp reads the factor from either key; 0 means none.
        let factor = md
            .get_f64(&format!("{arch}.rope.scaling.factor"))
            .or_else(|_| md.get_f64(&format!("{arch}.rope.scale_linear")))
            .unwrap_or(0.0);
        if !(factor >= 0.0 && factor.is_finite()) {
            return Err(format!("RoPE scaling factor {factor} must be positive"));
        }
        c.rope_freq_scale = if factor == 0.0 || scaling == Some("none") {
            1.0
        } else {
            (1.0 / factor) as f32
        };
        Ok(c)
    }

    /// Each RoPE pair's angle per position (`θ_i` in `angle = pos · θ_i`), and the rotations'
    /// magnitude, as llama.cpp's `rope_ext` computes them from this configuration and the
    /// per-pair divisors `factors` (`rope_freqs.weight`).
    ///
    /// Without YaRN, `θ_i = scale · base^(−2i/n_rot) / factor_i`. With YaRN, pairs below the
    /// correction range keep the unscaled (extrapolated) frequency, pairs above it take the
    /// scaled (interpolated) one, a linear ramp mixes the two in between, and the magnitude
    /// grows by `1 + 0.1·ln(1/scale)`.
    pub fn rope_frequencies(&self, factors: Option<&[f32]>) -> (Vec<f32>, f32) {
        let plan = self.rope_plan(factors);
        let (n, base) = (self.n_rot, self.rope_base);
        let freqs = plan
            .pairs
            .iter()
            .enumerate()
            .map(|(i, &(divisor, mix))| {
                plan.angle(base.powf(-2.0 * i as f32 / n as f32) / divisor, mix)
            })
            .collect();
        (freqs, plan.magnitude)
    }

    /// What the forward pass needs to rotate a row at any position ([`RopePlan`]).
    pub(super) fn rope_plan(&self, factors: Option<&[f32]>) -> RopePlan {
        let (n, base, fs) = (self.n_rot, self.rope_base, self.rope_freq_scale);
        // YaRN's correction range: the pairs whose wavelength fits `n_ctx_orig` between
        // `beta_fast` and `beta_slow` times, over which the ramp falls from extrapolation to
        // interpolation.
        let range = self.rope_yarn.map(|y| {
            let corr = |beta: f32| {
                n as f32 * (y.n_ctx_orig as f32 / (beta * 2.0 * std::f32::consts::PI)).ln()
                    / (2.0 * base.ln())
            };
            let low = corr(y.beta_fast).floor().max(0.0);
            (low, corr(y.beta_slow).ceil().min(n as f32 - 1.0))
        });
        let pairs = (0..n / 2)
            .map(|i| {
                // The share kept unscaled: 0 without YaRN.
                let mix = range.map_or(0.0, |(low, high)| {
                    1.0 - ((i as f32 - low) / (high - low).max(0.001)).clamp(0.0, 1.0)
                });
                (factors.map_or(1.0, |f| f[i]), mix)
            })
            .collect();
        // llama.cpp divides YaRN's magnitude out of the attention factor and the rotation
        // multiplies it back, so the net is `1 + 0.1·ln s` (for s > 1) times the file's factor.
        let s = 1.0 / fs;
        let grow = if range.is_some() && s > 1.0 {
            1.0 + 0.1 * s.ln()
        } else {
            1.0
        };
        RopePlan {
            theta_scale: base.powf(-2.0 / n as f32),
            freq_scale: fs,
            yarn: range.is_some(),
            pairs,
            magnitude: grow * self.rope_attn_factor,
        }
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_head_kv
    }
}

/// YaRN RoPE scaling parameters (llama.cpp's defaults for Llama and Qwen2 files).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// The context the model was trained on before scaling
    /// (`rope.scaling.original_context_length`, else `context_length`).
    pub n_ctx_orig: usize,
    /// Pairs turning at least this many times over `n_ctx_orig` keep their frequency.
    pub beta_fast: f32,
    /// Pairs turning fewer than this many times over `n_ctx_orig` are fully interpolated.
    pub beta_slow: f32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use quant::gguf::{Value, ValueType};

    /// A small Llama configuration (64-wide heads, base 10 000, 4096 training positions) with
    /// the extra `ARCH.*` keys `extra`.
    fn config(extra: &[(&str, Value)]) -> Result<Config, String> {
        let mut md = Metadata::new();
        md.insert("general.architecture", Value::String("llama".into()));
        for (k, v) in [
            ("block_count", 2),
            ("embedding_length", 256),
            ("attention.head_count", 4),
            ("feed_forward_length", 512),
            ("context_length", 4096),
        ] {
            md.insert(format!("llama.{k}"), Value::U32(v));
        }
        let tokens = vec![Value::String("a".into()); 8];
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens),
        );
        for (k, v) in extra {
            md.insert(format!("llama.{k}"), v.clone());
        }
        Config::from_metadata(&md)
    }

    #[test]
    fn plain_and_linear_rope_frequencies() {
        let (f, m) = config(&[]).unwrap().rope_frequencies(None);
        assert_eq!(f.len(), 32);
        assert_eq!((f[0], m), (1.0, 1.0));
        assert!((f[16] / 0.01 - 1.0).abs() < 1e-6, "{}", f[16]);
        let c = config(&[
            ("rope.scaling.type", Value::String("linear".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.scaling.attn_factor", Value::F32(0.5)),
        ])
        .unwrap();
        assert!(c.rope_yarn.is_none());
        let factors = vec![2.0; 32];
        let (g, m) = c.rope_frequencies(Some(&factors));
        assert_eq!(m, 0.5);
        for (f, g) in f.iter().zip(&g) {
            assert!((g / (f / 8.0) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn yarn_keeps_fast_pairs_and_interpolates_slow_ones() {
        let c = config(&[
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", Value::F32(8.0)),
            ("rope.scaling.original_context_length", Value::U32(1024)),
        ])
        .unwrap();
        let y = c.rope_yarn.unwrap();
        assert_eq!((y.n_ctx_orig, y.beta_fast, y.beta_slow), (1024, 32.0, 1.0));
        let (plain, _) = config(&[]).unwrap().rope_frequencies(None);
        let (f, m) = c.rope_frequencies(None);
        // 64·ln(1024 / 2π·β) / 2·ln(10⁴): pairs up to 5 keep their frequency (β = 32), pairs
        // from 18 on (β = 1) are divided by the factor, and those between mix the two.
        for i in 0..32 {
            let r = f[i] / plain[i];
            match i {
                0..=5 => assert!((r - 1.0).abs() < 1e-6, "pair {i}: {r}"),
                18.. => assert!((r - 0.125).abs() < 1e-6, "pair {i}: {r}"),
                _ => assert!(r < 1.0 && r > 0.125, "pair {i}: {r}"),
            }
        }
        assert!(f[6] / plain[6] > f[17] / plain[17]);
        assert!((m - (1.0 + 0.1 * 8f32.ln())).abs() < 1e-6, "{m}");
        // Without the key, the training context is the original one.
        let c = config(&[("rope.scaling.type", Value::String("yarn".into()))]).unwrap();
        assert_eq!(c.rope_yarn.unwrap().n_ctx_orig, 4096);
        let (f, m) = c.rope_frequencies(None);
        assert_eq!(m, 1.0);
        assert!(f
            .iter()
            .zip(&plain)
            .all(|(a, b)| (a / b - 1.0).abs() < 1e-6));
    }

    #[test]
    fn unsupported_or_invalid_rope_settings_are_errors() {
        let e = config(&[("rope.scaling.type", Value::String("longrope".into()))]).unwrap_err();
        assert!(e.contains("longrope"), "{e}");
        let e = config(&[("rope.scaling.attn_factor", Value::F32(0.0))]).unwrap_err();
        assert!(e.contains("attention factor"), "{e}");
        let e = config(&[("rope.scaling.factor", Value::F32(-2.0))]).unwrap_err();
        assert!(e.contains("-2"), "{e}");
    }
}
