//! A model's shape from GGUF metadata ([`Config`]), checked at load, and the RoPE plans it
//! implies: Llama-family files (`llama`, `qwen2`) and Gemma 3 (`gemma3`: sliding-window
//! layers with their own RoPE base, query/key norms, pre- and post-norms, GeGLU).

use quant::gguf::Metadata;

use super::rope::RopePlan;

/// A model's shape, read and checked from GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Which graph the architecture runs.
    pub family: Family,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Width of one query, key or value head (`attention.key_length`; `n_embd / n_head` when
    /// the file does not say).
    pub head_dim: usize,
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
    /// Queries are multiplied by this before they meet the keys (`1/√head_dim` for Llama;
    /// Gemma 3 scales its queries by `query_pre_attn_scalar^(−1/2)` before the f16 key
    /// product, which rounds differently from scaling the scores afterwards).
    pub attn_scale: f32,
    /// Token embeddings are multiplied by this (`√n_embd` for Gemma, 1 otherwise).
    pub embd_scale: f32,
    /// Local attention layers, for architectures that have them (Gemma 3).
    pub sliding_window: Option<SlidingWindow>,
    /// `final_logit_softcapping`: logits become `c · tanh(logit / c)` (none when absent or 0).
    pub final_softcap: Option<f32>,
}

/// The graph an architecture runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `llama`: RMSNorm, SwiGLU, RoPE in Llama's pair order.
    Llama,
    /// `qwen2`: Llama with query/key/value biases and NeoX RoPE ordering.
    Qwen2,
    /// `gemma3`: embeddings scaled by `√n_embd`; RMSNorm of each query and key head; norms
    /// before and after attention and the feed-forward block; GeGLU (tanh GELU); NeoX RoPE;
    /// sliding-window layers with their own RoPE base between global ones.
    Gemma3,
}

impl Family {
    /// Whether the architecture norms each query and key head and norms block outputs
    /// before the residual add.
    pub fn gemma(self) -> bool {
        self == Family::Gemma3
    }
}

/// Sliding-window (local) attention: on the layers it marks, a row attends to the `size`
/// positions ending at its own, and rotates with its own RoPE base, unscaled.
#[derive(Clone, Debug, PartialEq)]
pub struct SlidingWindow {
    /// Positions a local layer sees (`attention.sliding_window`), its own included.
    pub size: usize,
    /// Per layer: whether it is local (`attention.sliding_window_pattern`: 5 local then 1
    /// global for Gemma 3).
    pub local: Vec<bool>,
    /// RoPE base of the local layers (`rope.freq_base_swa`, 10 000 when absent).
    pub rope_base: f32,
}

impl Config {
    /// Reads `ARCH.*` metadata for a supported architecture (`llama`; `qwen2`, which adds
    /// query/key/value biases and rotates with NeoX ordering; `gemma3`); any other
    /// architecture, or a missing, mistyped or inconsistent key, is an error naming it.
    pub fn from_metadata(md: &Metadata) -> Result<Config, String> {
        let arch = md.architecture().map_err(|e| e.to_string())?;
        let family = match arch {
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "gemma3" => Family::Gemma3,
            _ => {
                return Err(format!(
                    "architecture {arch:?} is not supported (llama, qwen2 and gemma3 are)"
                ))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| -> Result<usize, String> {
            md.get_u64(&key(k))
                .map(|v| v as usize)
                .map_err(|e| e.to_string())
        };
        // An optional key: absent gives `None`, present with the wrong type is an error.
        let opt_u = |k: &str| -> Result<Option<usize>, String> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(_) => u(k).map(Some),
            }
        };
        let opt_f = |k: &str| -> Result<Option<f32>, String> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(_) => md
                    .get_f64(&key(k))
                    .map(|v| Some(v as f32))
                    .map_err(|e| e.to_string()),
            }
        };
        let f = |k: &str, default: f32| opt_f(k).map(|v| v.unwrap_or(default));
        let n_head = u("attention.head_count")?;
        let n_embd = u("embedding_length")?;
        let n_layer = u("block_count")?;
        let gemma = family.gemma();
        let c = Config {
            family,
            n_layer,
            n_embd,
            n_head,
            head_dim: 0,
            n_head_kv: opt_u("attention.head_count_kv")?.unwrap_or(n_head),
            n_ff: u("feed_forward_length")?,
            n_vocab: md
                .get_array("tokenizer.ggml.tokens")
                .map(|(_, v)| v.len())
                .map_err(|e| e.to_string())?,
            n_ctx_train: u("context_length")?,
            // Gemma's files carry their epsilon; llama.cpp requires it there.
            rms_eps: if gemma {
                md.get_f64(&key("attention.layer_norm_rms_epsilon"))
                    .map_err(|e| e.to_string())? as f32
            } else {
                f("attention.layer_norm_rms_epsilon", 1e-5)?
            },
            rope_base: f("rope.freq_base", 10_000.0)?,
            n_rot: 0,
            rope_freq_scale: 1.0,
            rope_neox: matches!(family, Family::Qwen2 | Family::Gemma3),
            rope_yarn: None,
            rope_attn_factor: f("rope.scaling.attn_factor", 1.0)?,
            arch: arch.to_owned(),
            attn_scale: 0.0,
            embd_scale: 1.0,
            sliding_window: None,
            final_softcap: None,
        };
        if !(c.rms_eps.is_finite() && c.rms_eps >= 0.0) {
            return Err(format!(
                "{} must be a non-negative number (it is {})",
                key("attention.layer_norm_rms_epsilon"),
                c.rms_eps
            ));
        }
        if c.n_head == 0 || c.n_head_kv == 0 || !c.n_head.is_multiple_of(c.n_head_kv) {
            return Err(format!(
                "{} heads cannot share {} key/value heads",
                c.n_head, c.n_head_kv
            ));
        }
        let mut c = c;
        let key_length = opt_u("attention.key_length")?;
        c.head_dim = match key_length {
            Some(k) => k,
            None if c.n_embd.is_multiple_of(c.n_head) => c.n_embd / c.n_head,
            None => {
                return Err(format!(
                    "embedding {} does not split into {} heads (and {} is absent)",
                    c.n_embd,
                    c.n_head,
                    key("attention.key_length")
                ))
            }
        };
        if c.head_dim == 0 || !c.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head width {} must be even and positive",
                c.head_dim
            ));
        }
        if c.head_dim.checked_mul(c.n_head).is_none_or(|q| q > 1 << 24) {
            return Err(format!(
                "{} heads of {} ({}) are too wide",
                c.n_head,
                c.head_dim,
                key("attention.key_length")
            ));
        }
        if let Some(v) = opt_u("attention.value_length")? {
            if v != c.head_dim {
                return Err(format!(
                    "{} {v} differs from the key width {} (not supported)",
                    key("attention.value_length"),
                    c.head_dim
                ));
            }
        }
        if !gemma && c.head_dim * c.n_head != c.n_embd {
            return Err(format!(
                "{} heads of {} do not make the embedding {}",
                c.n_head, c.head_dim, c.n_embd
            ));
        }
        // Whole heads rotate (llama.cpp refuses anything else for these architectures).
        c.n_rot = opt_u("rope.dimension_count")?.unwrap_or(c.head_dim);
        if c.n_rot != c.head_dim {
            return Err(format!(
                "rope.dimension_count {} must equal the head width {}",
                c.n_rot, c.head_dim
            ));
        }
        c.attn_scale = 1.0 / (c.head_dim as f32).sqrt();
        if gemma {
            c.gemma3_settings(md)?;
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

    /// Width of all query heads together (the attention's output width).
    pub fn q_dim(&self) -> usize {
        self.head_dim * self.n_head
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.head_dim * self.n_head_kv
    }

    /// Gemma 3's settings beyond Llama's, as llama.cpp reads them: the embedding scale, the
    /// query scale (`1/√head_dim`, or `1/√(n_embd/n_head)` for the 62-layer 27B model, as
    /// Gemma's reference configuration has it), the sliding window and its layer pattern
    /// (every 6th layer global unless the file says otherwise) with the local RoPE base, and
    /// optional final-logit soft-capping.
    fn gemma3_settings(&mut self, md: &Metadata) -> Result<(), String> {
        let key = |k: &str| format!("{}.{k}", self.arch);
        self.embd_scale = (self.n_embd as f32).sqrt();
        if self.n_layer == 62 {
            self.attn_scale = 1.0 / ((self.n_embd / self.n_head) as f32).sqrt();
        }
        let number = |k: &str| -> Result<Option<f64>, String> {
            match md.get(&key(k)) {
                None => Ok(None),
                Some(_) => md.get_f64(&key(k)).map(Some).map_err(|e| e.to_string()),
            }
        };
        let window = match md.get(&key("attention.sliding_window")) {
            None => 0,
            Some(_) => md
                .get_u64(&key("attention.sliding_window"))
                .map_err(|e| e.to_string())? as usize,
        };
        if window > 0 {
            let pattern_key = key("attention.sliding_window_pattern");
            let local: Vec<bool> = match md.get(&pattern_key) {
                Some(quant::gguf::Value::Array(_, values)) => {
                    let flags: Option<Vec<bool>> = values.iter().map(|v| v.as_bool()).collect();
                    match flags {
                        Some(f) if f.len() == self.n_layer => f,
                        _ => {
                            return Err(format!(
                                "{pattern_key} must hold {} bools, one per layer",
                                self.n_layer
                            ))
                        }
                    }
                }
                other => {
                    let n = match other {
                        None => 6,
                        Some(v) => v.as_u64().ok_or_else(|| {
                            format!("{pattern_key} must be a layer period or an array of bools")
                        })? as usize,
                    };
                    (0..self.n_layer).map(|l| n == 0 || l % n < n - 1).collect()
                }
            };
            let rope_base = number("rope.freq_base_swa")?.unwrap_or(10_000.0) as f32;
            if !(rope_base.is_finite() && rope_base > 0.0) {
                return Err(format!("{} must be positive", key("rope.freq_base_swa")));
            }
            self.sliding_window = Some(SlidingWindow {
                size: window,
                local,
                rope_base,
            });
        }
        match number("final_logit_softcapping")? {
            None => {}
            Some(0.0) => {}
            Some(c) if c.is_finite() && c > 0.0 => self.final_softcap = Some(c as f32),
            Some(c) => {
                return Err(format!(
                    "{} {c} must be positive",
                    key("final_logit_softcapping")
                ))
            }
        }
        Ok(())
    }

    /// Whether layer `l` attends through a sliding window.
    pub fn is_local(&self, l: usize) -> bool {
        self.sliding_window.as_ref().is_some_and(|w| w.local[l])
    }

    /// The RoPE plan of the local layers: their own base, no linear scaling (llama.cpp's
    /// `rope_freq_scale_train_swa`), the rest as the global layers'.
    pub(super) fn local_rope_plan(&self) -> Option<RopePlan> {
        let w = self.sliding_window.as_ref()?;
        let local = Config {
            rope_base: w.rope_base,
            rope_freq_scale: 1.0,
            ..self.clone()
        };
        Some(local.rope_plan(None))
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

    /// A small Gemma 3 configuration (4 heads of 64 over a 128-wide embedding) with the
    /// `gemma3.*` keys `extra` added or replaced.
    fn gemma(extra: &[(&str, Value)]) -> Result<Config, String> {
        let mut md = Metadata::new();
        md.insert("general.architecture", Value::String("gemma3".into()));
        for (k, v) in [
            ("block_count", 12),
            ("embedding_length", 128),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 1),
            ("attention.key_length", 64),
            ("attention.value_length", 64),
            ("feed_forward_length", 512),
            ("context_length", 4096),
            ("attention.sliding_window", 32),
        ] {
            md.insert(format!("gemma3.{k}"), Value::U32(v));
        }
        md.insert("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6));
        let tokens = vec![Value::String("a".into()); 8];
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens),
        );
        for (k, v) in extra {
            md.insert(format!("gemma3.{k}"), v.clone());
        }
        Config::from_metadata(&md)
    }

    #[test]
    fn gemma3_settings_come_from_the_metadata() {
        let c = gemma(&[]).unwrap();
        assert_eq!(c.family, Family::Gemma3);
        assert_eq!((c.head_dim, c.q_dim(), c.kv_dim()), (64, 256, 64));
        assert!(c.rope_neox);
        assert_eq!(c.embd_scale, 128f32.sqrt());
        assert_eq!(c.attn_scale, 0.125);
        let w = c.sliding_window.as_ref().unwrap();
        assert_eq!((w.size, w.rope_base), (32, 10_000.0));
        let global: Vec<usize> = (0..12).filter(|&l| !c.is_local(l)).collect();
        assert_eq!(global, [5, 11]);
        assert_eq!(c.final_softcap, None);
        // The local layers rotate with their own base, unscaled.
        let local = c.local_rope_plan().unwrap();
        assert_eq!(local.theta_scale, 10_000f32.powf(-2.0 / 64.0));
        // A pattern given as a period or per layer, the local base and soft-capping.
        let c = gemma(&[
            ("attention.sliding_window_pattern", Value::U32(3)),
            ("rope.freq_base_swa", Value::F32(500.0)),
            ("final_logit_softcapping", Value::F32(30.0)),
        ])
        .unwrap();
        let global: Vec<usize> = (0..12).filter(|&l| !c.is_local(l)).collect();
        assert_eq!(global, [2, 5, 8, 11]);
        assert_eq!(c.sliding_window.as_ref().unwrap().rope_base, 500.0);
        assert_eq!(c.final_softcap, Some(30.0));
        let flags: Vec<Value> = (0..12).map(|l| Value::Bool(l == 0)).collect();
        let c = gemma(&[(
            "attention.sliding_window_pattern",
            Value::Array(ValueType::Bool, flags),
        )])
        .unwrap();
        assert!(c.is_local(0) && !c.is_local(1));
        // No window: every layer is global.
        let c = gemma(&[("attention.sliding_window", Value::U32(0))]).unwrap();
        assert!(c.sliding_window.is_none() && !c.is_local(0));
    }

    #[test]
    fn bad_gemma3_metadata_names_the_key() {
        let e = gemma(&[("attention.value_length", Value::U32(32))]).unwrap_err();
        assert!(e.contains("gemma3.attention.value_length"), "{e}");
        let e = gemma(&[("attention.sliding_window", Value::String("x".into()))]).unwrap_err();
        assert!(e.contains("gemma3.attention.sliding_window"), "{e}");
        let short = vec![Value::Bool(true); 3];
        let e = gemma(&[(
            "attention.sliding_window_pattern",
            Value::Array(ValueType::Bool, short),
        )])
        .unwrap_err();
        assert!(
            e.contains("sliding_window_pattern") && e.contains("12"),
            "{e}"
        );
        let e = gemma(&[("final_logit_softcapping", Value::F32(-1.0))]).unwrap_err();
        assert!(e.contains("final_logit_softcapping"), "{e}");
        let e = gemma(&[("attention.key_length", Value::U32(63))]).unwrap_err();
        assert!(e.contains("63"), "{e}");
        let e = gemma(&[("attention.key_length", Value::U64(1 << 62))]).unwrap_err();
        assert!(e.contains("too wide"), "{e}");
        let mut md = Metadata::new();
        md.insert("general.architecture", Value::String("gemma3".into()));
        for (k, v) in [
            ("block_count", 2),
            ("embedding_length", 128),
            ("attention.head_count", 4),
            ("feed_forward_length", 512),
            ("context_length", 4096),
        ] {
            md.insert(format!("gemma3.{k}"), Value::U32(v));
        }
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, vec![Value::String("a".into()); 8]),
        );
        let e = Config::from_metadata(&md).unwrap_err();
        assert!(e.contains("gemma3.attention.layer_norm_rms_epsilon"), "{e}");
    }
}
