//! The native engine: Llama-family models (`llama`, and `qwen2`: biases on the query, key and
//! value projections, NeoX RoPE ordering) run on passuntil's own kernels, as a [`Model`] and
//! its [`Context`]s.
//!
//! [`NativeModel::load`] maps a GGUF file, checks the architecture's metadata ([`Config`]) and
//! finds every weight. [`NativeModel::new_context`] creates a context holding an `Arc` of the
//! model: a KV cache of `n_ctx` cells
//! shared by up to `max_sequences` sequences, and scratch buffers that grow to the largest
//! batch seen and are then reused.
//!
//! One [`Context::decode`] call evaluates rows of many sequences at different positions:
//! RMSNorm, the Q/K/V projections through [`quant::gemm`] (weights read once for the whole
//! batch), RoPE (llama.cpp's "normal" pair order, which Llama GGUF files are converted for;
//! `rope.freq_base`, linear or YaRN scaling, `rope_freqs.weight` factors and the scaling's
//! attention factor),
//! grouped-query attention over each row's own sequence up to its position, the output
//! projection, and a SwiGLU feed-forward block; then the final norm and the output head (the
//! token embedding when the file has no `output.weight`) for the rows that ask for logits.
//!
//! Every step computes a row the same way whatever else is in the batch (the GEMM is
//! batch-invariant; norms, RoPE and attention are per row in a fixed order), so a sample's
//! logits do not depend on its batch. The KV cache ([`crate::kv`]) is a fixed set of cells
//! owned by sets of sequences: [`Context::copy_sequence`] shares a prompt's cells instead of
//! copying them, and removing a sequence frees the cells nobody else owns.

use std::path::Path;
use std::sync::Arc;

use quant::dot::{gathered_axpy, gathered_dots, Gather, KernelError};
use quant::gemm::{matmul, matmul_many, QMatrix, Scratch};
use quant::gguf::{GgufFile, Metadata};
use quant::GgmlType;
use rayon::prelude::*;

use crate::backend::{
    BackendError, Batch, Context, ContextOptions, Logits, Model, ModelInfo, Pos, SeqId, Token,
    TokenizeOptions,
};
use crate::hooks::{ForwardHook, HookData, HookPoint};
use crate::kv::KvCache;
use crate::numerics;
use crate::tokenizer::{TokenType, Tokenizer};

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
    fn rope_plan(&self, factors: Option<&[f32]>) -> RopePlan {
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

/// RoPE for the forward pass, in llama.cpp's float steps: the angle of pair `i` at position
/// `p` starts from `θ = p` multiplied by `base^(−2/n_rot)` once per pair (not `p · θ_i`, which
/// rounds differently), then is divided by the pair's factor, scaled, and mixed by YaRN.
#[derive(Clone, Debug)]
struct RopePlan {
    /// `base^(−2/n_rot)`.
    theta_scale: f32,
    /// Linear scaling (`1/factor`).
    freq_scale: f32,
    /// Whether YaRN's mix applies.
    yarn: bool,
    /// Per pair: the frequency divisor and YaRN's unscaled share.
    pairs: Vec<(f32, f32)>,
    /// The rotations' magnitude.
    magnitude: f32,
}

impl RopePlan {
    /// The angle for an unscaled angle `extrap` and YaRN's unscaled share `mix`.
    #[inline]
    fn angle(&self, extrap: f32, mix: f32) -> f32 {
        let interp = self.freq_scale * extrap;
        if self.yarn {
            extrap.mul_add(mix, interp * (1.0 - mix))
        } else {
            interp
        }
    }

    /// Appends each pair's `(sin, cos)` times the magnitude at position `pos`.
    fn rotations(&self, pos: u32, out: &mut Vec<(f32, f32)>) {
        let mut theta = pos as f32;
        for &(divisor, mix) in &self.pairs {
            let (s, c) = self.angle(theta / divisor, mix).sin_cos();
            out.push((s * self.magnitude, c * self.magnitude));
            theta *= self.theta_scale;
        }
    }
}

/// A weight matrix: where it is in the file and its shape.
#[derive(Clone, Debug)]
struct Weight {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    /// Query, key and value biases (qwen2; none for llama).
    biases: Option<[Vec<f32>; 3]>,
    wo: Weight,
    ffn_norm: Vec<f32>,
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// A Llama-family GGUF model loaded for the native engine (weights stay memory-mapped).
pub struct NativeModel {
    file: GgufFile,
    config: Config,
    tokenizer: Tokenizer,
    layers: Vec<Layer>,
    embd: Weight,
    output_norm: Vec<f32>,
    output: Weight,
    /// Per-pair RoPE frequency divisors (`rope_freqs.weight`, Llama 3.1's long-context
    /// factors), when the file has them.
    rope_factors: Option<Vec<f32>>,
    info: ModelInfo,
}

fn load_err(path: &Path, message: impl Into<String>) -> BackendError {
    BackendError::Load {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl NativeModel {
    /// [`NativeModel::load`], shared: what [`NativeModel::new_context`] takes.
    pub fn open(path: &Path) -> Result<Arc<NativeModel>, BackendError> {
        Ok(Arc::new(NativeModel::load(path)?))
    }

    /// Maps and checks a GGUF file.
    pub fn load(path: &Path) -> Result<NativeModel, BackendError> {
        let file = GgufFile::open(path).map_err(|e| load_err(path, e.to_string()))?;
        let md = file.metadata();
        let config = Config::from_metadata(md).map_err(|e| load_err(path, e))?;
        let tokenizer = Tokenizer::from_metadata(md).map_err(|e| load_err(path, e.to_string()))?;
        let weight = |name: &str, rows: usize, cols: usize| -> Result<Weight, BackendError> {
            let t = file
                .tensor(name)
                .map_err(|e| load_err(path, e.to_string()))?;
            let shape = (t.info.n_rows() as usize, t.info.row_len() as usize);
            if shape != (rows, cols) {
                return Err(load_err(
                    path,
                    format!("{name} is {shape:?}, expected ({rows}, {cols})"),
                ));
            }
            QMatrix::new(t.ty(), rows, cols, t.data)
                .map_err(|e| load_err(path, format!("{name}: {e}")))?;
            Ok(Weight {
                name: name.to_string(),
                ty: t.ty(),
                rows,
                cols,
            })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, BackendError> {
            let t = file
                .tensor(name)
                .map_err(|e| load_err(path, e.to_string()))?;
            let v = t
                .to_f32()
                .map_err(|e| load_err(path, format!("{name}: {e}")))?;
            if v.len() != n {
                return Err(load_err(
                    path,
                    format!("{name} has {} values, expected {n}", v.len()),
                ));
            }
            Ok(v)
        };
        let c = &config;
        let (d, kv) = (c.n_embd, c.kv_dim());
        let layers = (0..c.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: vector(&n("attn_norm"), d)?,
                    wq: weight(&n("attn_q"), d, d)?,
                    wk: weight(&n("attn_k"), kv, d)?,
                    wv: weight(&n("attn_v"), kv, d)?,
                    biases: match c.arch.as_str() {
                        "qwen2" => {
                            let b = |s: &str, len| vector(&format!("blk.{i}.{s}.bias"), len);
                            Some([b("attn_q", d)?, b("attn_k", kv)?, b("attn_v", kv)?])
                        }
                        _ => None,
                    },
                    wo: weight(&n("attn_output"), d, d)?,
                    ffn_norm: vector(&n("ffn_norm"), d)?,
                    gate: weight(&n("ffn_gate"), c.n_ff, d)?,
                    up: weight(&n("ffn_up"), c.n_ff, d)?,
                    down: weight(&n("ffn_down"), d, c.n_ff)?,
                })
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let embd = weight("token_embd.weight", c.n_vocab, d)?;
        let output = match file.tensor("output.weight") {
            Ok(_) => weight("output.weight", c.n_vocab, d)?,
            Err(_) => embd.clone(),
        };
        let output_norm = vector("output_norm.weight", d)?;
        let rope_factors = match file.tensor("rope_freqs.weight") {
            Ok(_) => Some(vector("rope_freqs.weight", c.n_rot / 2)?),
            Err(_) => None,
        };
        // End of generation: EOS, and control tokens llama.cpp counts as such by their text.
        let mut eog: Vec<Token> = tokenizer.eos().into_iter().collect();
        for t in 0..tokenizer.n_vocab() as Token {
            if tokenizer.token_type(t).ok() == Some(TokenType::Control) {
                let text = tokenizer.piece(t, true).unwrap_or_default();
                if matches!(
                    text,
                    b"<|im_end|>"
                        | b"<|eot_id|>"
                        | b"<|endoftext|>"
                        | b"<end_of_turn>"
                        | b"<|end|>"
                ) {
                    eog.push(t);
                }
            }
        }
        eog.sort_unstable();
        eog.dedup();
        let chat_template = md
            .get_str("tokenizer.chat_template")
            .ok()
            .map(str::to_owned);
        let info = ModelInfo {
            backend: "native",
            n_vocab: config.n_vocab,
            n_ctx_train: config.n_ctx_train as u32,
            bos: tokenizer.bos(),
            eos: tokenizer.eos(),
            eog,
            add_bos: tokenizer.add_bos(),
            chat_template,
        };
        Ok(NativeModel {
            file,
            config,
            tokenizer,
            layers,
            embd,
            output_norm,
            output,
            rope_factors,
            info,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn matrix(&self, w: &Weight) -> QMatrix<'_> {
        let t = self.file.tensor(&w.name).expect("checked at load");
        QMatrix::new(w.ty, w.rows, w.cols, t.data).expect("checked at load")
    }

    /// The logits the model's head gives for residual-stream states `hidden` (rows of
    /// `n_embd`): the final norm, then the output projection, on the calling thread pool.
    /// Applied to a block's output this is the logit lens.
    pub fn head_logits(&self, hidden: &[f32]) -> Result<Vec<f32>, BackendError> {
        let d = self.config.n_embd;
        if hidden.is_empty() || !hidden.len().is_multiple_of(d) {
            return Err(BackendError::InvalidBatch(format!(
                "{} values are not rows of {d}",
                hidden.len()
            )));
        }
        let mut normed = vec![0f32; hidden.len()];
        for (x, o) in hidden.chunks_exact(d).zip(normed.chunks_exact_mut(d)) {
            numerics::rms_norm(x, &self.output_norm, self.config.rms_eps, o);
        }
        let mut logits = vec![0f32; hidden.len() / d * self.config.n_vocab];
        matmul(
            &self.matrix(&self.output),
            &normed,
            &mut logits,
            &mut Scratch::default(),
        )
        .map_err(|e| BackendError::Decode(format!("{}: {e}", self.output.name)))?;
        Ok(logits)
    }

    /// A context holding this model, with a KV cache of `n_ctx` cells shared by up to
    /// `max_sequences` sequences (positions run up to `n_ctx` too), on rayon's global pool
    /// ([`NativeContext::with_threads`] gives it threads of its own).
    pub fn new_context(
        self: &Arc<Self>,
        n_ctx: u32,
        max_sequences: u32,
    ) -> Result<NativeContext<'static>, BackendError> {
        if n_ctx == 0 || max_sequences == 0 {
            return Err(BackendError::Context(
                "n_ctx and max_sequences must be positive".into(),
            ));
        }
        let rope = self.config.rope_plan(self.rope_factors.as_deref());
        Ok(NativeContext {
            model: Arc::clone(self),
            n_ctx,
            max_sequences,
            kv: KvCache::new(
                n_ctx as usize,
                max_sequences as usize,
                self.config.n_layer,
                self.config.kv_dim(),
            ),
            scratch: Scratch::default(),
            rope,
            pool: None,
            bufs: Buffers::default(),
            hook: None,
        })
    }

    fn check_tokens(&self, tokens: &[Token], what: &str) -> Result<(), BackendError> {
        match tokens.iter().find(|&&t| t as usize >= self.info.n_vocab) {
            Some(&token) => Err(BackendError::InvalidToken {
                token,
                what: what.into(),
                n_vocab: self.info.n_vocab,
            }),
            None => Ok(()),
        }
    }
}

impl Model for NativeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &[u8], options: TokenizeOptions) -> Result<Vec<Token>, BackendError> {
        Ok(self
            .tokenizer
            .encode(text, options.add_special, options.parse_special))
    }

    fn token_piece(&self, token: Token) -> Result<Vec<u8>, BackendError> {
        self.tokenizer
            .piece(token, true)
            .map(<[u8]>::to_vec)
            .map_err(|_| BackendError::InvalidToken {
                token,
                what: "token_piece".into(),
                n_vocab: self.info.n_vocab,
            })
    }

    fn detokenize(&self, tokens: &[Token]) -> Result<Vec<u8>, BackendError> {
        self.check_tokens(tokens, "detokenize")?;
        self.tokenizer
            .decode(tokens, true)
            .map_err(|e| BackendError::Decode(e.to_string()))
    }

    fn context(
        self: Arc<Self>,
        options: &ContextOptions,
    ) -> Result<Box<dyn Context>, BackendError> {
        let mut ctx = self.new_context(options.n_ctx, options.n_seq_max)?;
        if let Some(t) = options.threads {
            ctx = ctx.with_threads(t as usize)?;
        }
        Ok(Box::new(ctx))
    }
}

/// A native inference context: its model, the KV cache and reusable buffers. `'h` bounds
/// what an attached hook may borrow.
pub struct NativeContext<'h> {
    model: Arc<NativeModel>,
    n_ctx: u32,
    max_sequences: u32,
    kv: KvCache,
    scratch: Scratch,
    /// RoPE rotations for any position.
    rope: RopePlan,
    /// Threads of its own, or rayon's global pool.
    pool: Option<rayon::ThreadPool>,
    /// Activations and scratch, grown to the largest batch seen.
    bufs: Buffers,
    /// Called with each block's output and the final norm, if attached.
    hook: Option<Box<dyn ForwardHook + 'h>>,
}

/// One forward pass's working memory (`n` rows): hidden states `x` and normed `h` (n × d),
/// projections `q` (n × d), `k`/`v` (n × kv), attention output `att` and block output `o`
/// (n × d), FFN gate/up `g`/`u` (n × ff), one head's `scores` (positions), and for the rows
/// that want logits their final norm `hn` (× d) and `logits` (× vocab).
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    hn: Vec<f32>,
    /// Each row's RoPE `(sin, cos)` per frequency.
    rot: Vec<(f32, f32)>,
    all_rows: Vec<usize>,
    logits: Vec<f32>,
}

/// Rotates pair `i` of each head by the angle whose `(sin, cos)` is `rot[i]` (`pos · freq_i`,
/// the same in every layer, so computed once per row and pass): dimensions `(2i, 2i + 1)`, or
/// with `neox` dimensions `(i, i + head_dim/2)`.
fn rope(x: &mut [f32], head_dim: usize, rot: &[(f32, f32)], neox: bool) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(s, c)) in rot.iter().enumerate() {
            let (ia, ib) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (a, b) = (head[ia], head[ib]);
            // Fused as llama.cpp's build contracts `a·c − b·s` and `a·s + b·c`.
            head[ia] = a.mul_add(c, -(b * s));
            head[ib] = a.mul_add(s, b * c);
        }
    }
}

/// The row indices `0..n` (grown in `all` as needed).
fn bufs_rows(all: &mut Vec<usize>, n: usize) -> &[usize] {
    if all.len() < n {
        let from = all.len();
        all.extend(from..n);
    }
    &all[..n]
}

/// What [`attend`] needs to know about one layer's attention.
struct AttnShape {
    layer: usize,
    n_head: usize,
    /// Query heads per key/value head.
    group: usize,
    head_dim: usize,
    /// `1/√head_dim`.
    scale: f32,
}

thread_local! {
    /// Per-thread attention scores and cell lists, reused across rows and calls.
    static ATTN_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One row's attention over the cache cells `slots` (its positions in order): every query
/// head against its key/value head, softmax, and the probabilities (rounded to f16, as
/// llama.cpp's non-flash attention does) times the values into `out` (`n_head × head_dim`).
/// The query heads that share a key/value head go together, so that each cached row is read
/// once per group; each head's arithmetic is its own, in cell order, whatever the batch.
fn attend(
    cache: &KvCache,
    a: &AttnShape,
    q: &[f32],
    slots: &[u32],
    scores: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (hd, n, group) = (a.head_dim, slots.len(), a.group);
    let kv_dim = cache.kv_dim();
    scores.clear();
    scores.resize(group * n, 0.0);
    for hk in 0..a.n_head / group {
        let heads = hk * group..(hk + 1) * group;
        let keys = Gather::new(cache.keys(a.layer), kv_dim, hk * hd, hd, slots)?;
        gathered_dots(&q[heads.start * hd..heads.end * hd], &keys, scores)?;
        for s in scores.chunks_exact_mut(n.max(1)) {
            for x in s.iter_mut() {
                *x *= a.scale;
            }
            numerics::softmax(s);
            for x in s.iter_mut() {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
        let values = Gather::new(cache.values(a.layer), kv_dim, hk * hd, hd, slots)?;
        let og = &mut out[heads.start * hd..heads.end * hd];
        og.fill(0.0);
        gathered_axpy(scores, &values, og)?;
    }
    Ok(())
}

impl<'h> NativeContext<'h> {
    /// [`Context::decode`] with the buffers taken out of `self` (so that `self.mm` can run).
    fn forward(
        &mut self,
        batch: &Batch,
        out: &mut Logits,
        bufs: &mut Buffers,
    ) -> Result<(), BackendError> {
        batch.validate(&*self)?;
        let model = Arc::clone(&self.model);
        let model = &*model;
        out.clear(model.info.n_vocab);
        let c = &model.config;
        let (d, kv, hd) = (c.n_embd, c.kv_dim(), c.head_dim());
        let n = batch.len();
        // One cache cell per row, shared by the row's sequences (positions were checked
        // against the context by `validate`).
        let cells = self.kv.assign(batch)?;
        // Embeddings: one dequantized row per token.
        let Buffers {
            x,
            h,
            q,
            k,
            v,
            att,
            o,
            g,
            u,
            hn,
            rot,
            logits,
            all_rows,
        } = bufs;
        // Hooks see every row after each block: the indices 0..n.
        let rows = bufs_rows(all_rows, n);
        x.resize(n * d, 0.0);
        let embd = model.matrix(&model.embd);
        let row_bytes = embd.data().len() / embd.rows();
        for (row, xr) in batch.rows().zip(x.chunks_exact_mut(d)) {
            let t = row.token as usize;
            quant::formats::dequantize_bytes(
                embd.ty(),
                &embd.data()[t * row_bytes..(t + 1) * row_bytes],
                xr,
            )
            .map_err(|e| BackendError::Decode(e.to_string()))?;
        }
        h.resize(n * d, 0.0);
        q.resize(n * d, 0.0);
        k.resize(n * kv, 0.0);
        v.resize(n * kv, 0.0);
        att.resize(n * d, 0.0);
        o.resize(n * d, 0.0);
        g.resize(n * c.n_ff, 0.0);
        u.resize(n * c.n_ff, 0.0);
        let nf = self.rope.pairs.len();
        rot.clear();
        for row in batch.rows() {
            self.rope.rotations(row.pos, rot);
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let group = c.n_head / c.n_head_kv;
        for (l, layer) in model.layers.iter().enumerate() {
            for (xr, hr) in x.chunks_exact(d).zip(h.chunks_exact_mut(d)) {
                numerics::rms_norm(xr, &layer.attn_norm, c.rms_eps, hr);
            }
            self.call_hook(HookPoint::AttnInput(l), batch, rows, d, h);
            self.mm_many([&layer.wq, &layer.wk, &layer.wv], h, [q, k, v])?;
            if let Some([bq, bk, bv]) = &layer.biases {
                for (out, bias) in [(&mut *q, bq), (&mut *k, bk), (&mut *v, bv)] {
                    for row in out.chunks_exact_mut(bias.len()) {
                        for (x, b) in row.iter_mut().zip(bias) {
                            *x += b;
                        }
                    }
                }
            }
            // RoPE, then keys and values into the row's cell.
            for i in 0..n {
                let neox = c.rope_neox;
                let rot = &rot[i * nf..(i + 1) * nf];
                rope(&mut q[i * d..(i + 1) * d], hd, rot, neox);
                rope(&mut k[i * kv..(i + 1) * kv], hd, rot, neox);
                // The cache holds f16 values, as llama.cpp's does; queries meet it in f16.
                for x in q[i * d..(i + 1) * d]
                    .iter_mut()
                    .chain(&mut k[i * kv..(i + 1) * kv])
                    .chain(&mut v[i * kv..(i + 1) * kv])
                {
                    *x = half::f16::from_f32(*x).to_f32();
                }
                self.kv.write(
                    l,
                    cells[i],
                    &k[i * kv..(i + 1) * kv],
                    &v[i * kv..(i + 1) * kv],
                );
            }
            // Attention over the row's first sequence (its other sequences share the same
            // history), positions 0..=pos that hold entries, in position order; rows in
            // parallel, each computed the same way whatever the batch.
            let shape = AttnShape {
                layer: l,
                n_head: c.n_head,
                group,
                head_dim: hd,
                scale,
            };
            let cache = &self.kv;
            let q: &[f32] = q;
            let work = |(i, out): (usize, &mut [f32])| {
                let row = batch.row(i);
                ATTN_SCRATCH.with_borrow_mut(|(scores, slots)| {
                    slots.clear();
                    slots.extend(cache.cells_up_to(row.seqs[0], row.pos).flatten());
                    attend(cache, &shape, &q[i * d..(i + 1) * d], slots, scores, out)
                })
            };
            att.par_chunks_mut(d)
                .enumerate()
                .try_for_each(work)
                .map_err(|e| BackendError::Decode(format!("attention of layer {l}: {e}")))?;
            self.call_hook(HookPoint::AttnOutput(l), batch, rows, d, att);
            self.mm(&layer.wo, att, o)?;
            for (a, b) in x.iter_mut().zip(o.iter()) {
                *a += b;
            }
            // SwiGLU feed-forward.
            for (xr, hr) in x.chunks_exact(d).zip(h.chunks_exact_mut(d)) {
                numerics::rms_norm(xr, &layer.ffn_norm, c.rms_eps, hr);
            }
            self.call_hook(HookPoint::FfnInput(l), batch, rows, d, h);
            self.mm_many([&layer.gate, &layer.up], h, [g, u])?;
            for (gr, ur) in g.chunks_exact_mut(c.n_ff).zip(u.chunks_exact(c.n_ff)) {
                numerics::swiglu(gr, ur);
            }
            self.mm(&layer.down, g, o)?;
            for (a, b) in x.iter_mut().zip(o.iter()) {
                *a += b;
            }
            self.call_hook(HookPoint::Block(l), batch, rows, d, x);
        }
        // Final norm and the output head, for the rows that want logits.
        let wanted: Vec<usize> = batch
            .rows()
            .enumerate()
            .filter(|(_, r)| r.logits)
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        hn.resize(wanted.len() * d, 0.0);
        for (&i, hr) in wanted.iter().zip(hn.chunks_exact_mut(d)) {
            numerics::rms_norm(&x[i * d..(i + 1) * d], &model.output_norm, c.rms_eps, hr);
        }
        if let Some(hook) = self.hook.as_mut() {
            hook.on(&HookData {
                point: HookPoint::FinalNorm,
                batch,
                rows: &wanted,
                n_embd: d,
                hidden: hn,
            });
        }
        logits.resize(wanted.len() * c.n_vocab, 0.0);
        self.mm(&model.output, hn, logits)?;
        for r in logits.chunks_exact(c.n_vocab) {
            out.push_row(r);
        }
        Ok(())
    }

    /// Runs the matrix products on `threads` threads of this backend's own (rayon's global
    /// pool, one thread per core, otherwise).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, BackendError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| BackendError::Context(e.to_string()))?;
        self.pool = Some(pool);
        Ok(self)
    }

    /// Calls the hook, if any, with the states `hidden` of the rows `rows` at `point`.
    fn call_hook(
        &mut self,
        point: HookPoint,
        batch: &Batch,
        rows: &[usize],
        n_embd: usize,
        hidden: &[f32],
    ) {
        if let Some(hook) = self.hook.as_mut() {
            hook.on(&HookData {
                point,
                batch,
                rows,
                n_embd,
                hidden,
            });
        }
    }

    /// Attaches a hook called with every block's output and the final normed states (see
    /// [`crate::hooks`]), or detaches it with `None`; returns the previous one.
    pub fn set_hook(
        &mut self,
        hook: Option<Box<dyn ForwardHook + 'h>>,
    ) -> Option<Box<dyn ForwardHook + 'h>> {
        std::mem::replace(&mut self.hook, hook)
    }

    fn check_seq(&self, seq: SeqId) -> Result<(), BackendError> {
        if seq >= self.max_sequences {
            return Err(BackendError::SequenceOutOfRange {
                seq,
                max: self.max_sequences,
            });
        }
        Ok(())
    }

    fn mm(&mut self, w: &Weight, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
        let m = self.model.matrix(w);
        // `decode` runs the pass inside this backend's pool, if it has one.
        matmul(&m, x, out, &mut self.scratch)
            .map_err(|e| BackendError::Decode(format!("{}: {e}", w.name)))
    }

    /// `outs[i] = x · ws[i]ᵀ`: in one parallel step where the matrices share a type and width
    /// (as a block's projections of one input usually do), else one by one.
    fn mm_many<const N: usize>(
        &mut self,
        ws: [&Weight; N],
        x: &[f32],
        mut outs: [&mut [f32]; N],
    ) -> Result<(), BackendError> {
        let same = ws
            .windows(2)
            .all(|p| (p[0].ty, p[0].cols) == (p[1].ty, p[1].cols));
        if !same {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.mm(w, x, out)?;
            }
            return Ok(());
        }
        let ms = ws.map(|w| self.model.matrix(w));
        matmul_many(&ms, x, &mut outs, &mut self.scratch).map_err(|e| {
            let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
            BackendError::Decode(format!("{}: {e}", names.join(", ")))
        })
    }
}

impl Context for NativeContext<'_> {
    fn model(&self) -> &dyn Model {
        &*self.model
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    fn max_sequences(&self) -> u32 {
        self.max_sequences
    }

    fn decode(&mut self, batch: &Batch, out: &mut Logits) -> Result<(), BackendError> {
        let mut bufs = std::mem::take(&mut self.bufs);
        // The whole pass runs inside the pool, so that its parallel steps are joins among
        // running workers rather than one hand-off from outside the pool per step.
        let result = match self.pool.take() {
            Some(pool) => {
                let r = pool.install(|| self.forward(batch, out, &mut bufs));
                self.pool = Some(pool);
                r
            }
            None => self.forward(batch, out, &mut bufs),
        };
        self.bufs = bufs;
        result
    }

    fn copy_sequence(&mut self, src: SeqId, dst: SeqId) -> Result<(), BackendError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        self.kv.copy_sequence(src, dst);
        Ok(())
    }

    fn remove_sequence(
        &mut self,
        seq: SeqId,
        from: Pos,
        to: Option<Pos>,
    ) -> Result<(), BackendError> {
        self.check_seq(seq)?;
        self.kv.remove(seq, from, to);
        Ok(())
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.kv.clear();
        Ok(())
    }
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
