//! The native engine: Llama-family models (`llama`, and `qwen2`: biases on the query, key and
//! value projections, NeoX RoPE ordering) and Gemma 3 (`gemma3`: scaled embeddings, query and
//! key norms, post-norms, GeGLU, sliding-window layers; see [`Family`]) run on passuntil's
//! own kernels, as a [`Model`] and its [`Context`]s.
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

mod attention;
mod config;
mod forward;
mod rope;
mod weights;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use quant::gemm::{matmul, QMatrix, Scratch};
use quant::gguf::GgufFile;
use quant::panels::{PanelMatrix, PANEL_TYPES};

use crate::backend::{
    Activations, BackendError, Context, ContextOptions, Model, ModelInfo, Token, TokenizeOptions,
};
use crate::kv::KvCache;
use crate::numerics;
use crate::tokenizer::{TokenType, Tokenizer};

pub use config::{Config, Family, SlidingWindow, Yarn};
use forward::Buffers;
pub use forward::NativeContext;
use weights::{Layer, Weight};

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
    /// The weights with panel kernels, repacked for `q8-fast` when a context first asks.
    panels: OnceLock<HashMap<String, PanelMatrix>>,
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
        let (d, kv, qd) = (c.n_embd, c.kv_dim(), c.q_dim());
        let gemma = c.family.gemma();
        let layers = (0..c.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(Layer {
                    attn_norm: vector(&n("attn_norm"), d)?,
                    wq: weight(&n("attn_q"), qd, d)?,
                    wk: weight(&n("attn_k"), kv, d)?,
                    wv: weight(&n("attn_v"), kv, d)?,
                    biases: match c.family {
                        Family::Qwen2 => {
                            let b = |s: &str, len| vector(&format!("blk.{i}.{s}.bias"), len);
                            Some([b("attn_q", qd)?, b("attn_k", kv)?, b("attn_v", kv)?])
                        }
                        _ => None,
                    },
                    qk_norm: match gemma {
                        true => Some([
                            vector(&n("attn_q_norm"), c.head_dim)?,
                            vector(&n("attn_k_norm"), c.head_dim)?,
                        ]),
                        false => None,
                    },
                    post_norms: match gemma {
                        true => Some([
                            vector(&n("post_attention_norm"), d)?,
                            vector(&n("post_ffw_norm"), d)?,
                        ]),
                        false => None,
                    },
                    wo: weight(&n("attn_output"), d, qd)?,
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
            panels: OnceLock::new(),
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

    /// Every matrix product's weights of a type with panel kernels ([`PANEL_TYPES`]), repacked
    /// once (on the calling thread pool) the first time a `q8-fast` context asks.
    fn panels(&self) -> &HashMap<String, PanelMatrix> {
        self.panels.get_or_init(|| {
            let mut weights: Vec<&Weight> = self
                .layers
                .iter()
                .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
                .collect();
            weights.push(&self.output);
            weights
                .into_iter()
                .filter(|w| PANEL_TYPES.contains(&w.ty))
                .filter_map(|w| {
                    // A panel type's matrix, checked at load, always repacks.
                    let m = self.matrix(w);
                    let p = PanelMatrix::new(&m).ok()?;
                    // The file's copy is not read again (but for the embedding rows of a tied
                    // head): its pages need not stay resident beside the panels.
                    self.file.release(m.data());
                    Some((w.name.clone(), p))
                })
                .collect()
        })
    }

    /// The panels of `w`, if it has them.
    fn panel(&self, w: &Weight) -> Option<&PanelMatrix> {
        self.panels().get(&w.name)
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
        if let Some(cap) = self.config.final_softcap {
            numerics::softcap(&mut logits, cap);
        }
        Ok(logits)
    }

    /// A context holding this model, with a KV cache of `n_ctx` cells shared by up to
    /// `max_sequences` sequences (positions run up to `n_ctx` too), on as many threads as
    /// rayon's global pool has ([`NativeContext::with_threads`] sets another number). Its
    /// forward passes run their parallel steps on a [`quant::par::Team`] of its own, whose
    /// threads spin briefly between steps; `PASSUNTIL_TEAM=0` in the environment runs them on
    /// rayon's pool instead.
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
        let rope_local = self.config.local_rope_plan();
        Ok(NativeContext {
            model: Arc::clone(self),
            n_ctx,
            max_sequences,
            kv: KvCache::new(
                n_ctx as usize,
                max_sequences as usize,
                self.config.n_layer,
                self.config.n_head_kv,
                self.config.head_dim,
            ),
            scratch: Scratch::default(),
            rope,
            rope_local,
            activations: Activations::Q8,
            pool: None,
            team: None,
            use_team: std::env::var("PASSUNTIL_TEAM").as_deref() != Ok("0"),
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
        Ok(Box::new(ctx.with_activations(options.activations)))
    }
}

/// A team of `threads` threads for a context's forward passes.
fn team(threads: usize) -> Result<quant::par::Team, BackendError> {
    quant::par::Team::new(threads)
        .map_err(|e| BackendError::Context(format!("cannot start {threads} threads: {e}")))
}
