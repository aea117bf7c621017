//! The llama.cpp backend, through the `llama-cpp-2` crate (feature `llama-cpp`; `cuda` and
//! `metal` pass through to llama.cpp).
//!
//! [`LlamaCppModel::load`] loads a GGUF; [`LlamaCppModel::backend`] creates a context with a
//! unified KV cache (so forking a prompt to many sequences shares its cells) and returns a
//! [`LlamaCppBackend`] implementing [`Backend`]. Batches are validated before anything reaches
//! llama.cpp: `LlamaBatch::add` writes sequence ids without bounds checks, so a row naming more
//! sequences than the batch was sized for would corrupt memory; here it is an error.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

use crate::backend::{
    Backend, BackendError, Batch, Logits, ModelInfo, Pos, SeqId, Token, TokenizeOptions,
};

/// llama.cpp's limit on sequences per context (`LLAMA_MAX_SEQ`).
pub const LLAMA_MAX_SEQ: u32 = 256;

/// llama.cpp's process-wide initialisation, done once. Its logging is silenced unless
/// `PASSUNTIL_LLAMA_LOG` is set.
fn llama() -> Result<&'static LlamaBackend, BackendError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            if std::env::var_os("PASSUNTIL_LLAMA_LOG").is_none() {
                b.void_logs();
            }
            Ok(b)
        })
        .as_ref()
        .map_err(|e| BackendError::Context(format!("llama.cpp initialisation failed: {e}")))
}

/// llama-cpp-2 notes that creating contexts from one model concurrently is unsound, so every
/// context creation in the process goes through this lock.
static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

/// A model loaded by llama.cpp.
pub struct LlamaCppModel {
    model: LlamaModel,
    path: String,
}

/// Settings for a llama.cpp context.
#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// KV cache cells, shared by all sequences.
    pub n_ctx: u32,
    /// Most sequences at once (≤ 256).
    pub n_seq_max: u32,
    /// Most rows per llama.cpp decode call; larger batches are split.
    pub n_batch: u32,
    /// Rows per physical micro-batch.
    pub n_ubatch: u32,
    /// Threads; `None` uses every available core.
    pub n_threads: Option<u32>,
    /// One KV cache for all sequences (forks share cells; attention runs over every used
    /// cell) or a stream of `n_ctx / n_seq_max` cells per sequence (forks copy the prompt's
    /// cells; a sequence's rows never depend on the others', so logits are batch-invariant).
    pub unified_kv: bool,
    /// Flash attention: `None` lets llama.cpp decide.
    pub flash_attention: Option<bool>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            n_ctx: 4096,
            n_seq_max: 64,
            n_batch: 2048,
            n_ubatch: 512,
            n_threads: None,
            unified_kv: true,
            flash_attention: None,
        }
    }
}

impl LlamaCppModel {
    /// Loads a GGUF file. `gpu_layers` layers are offloaded when llama.cpp was built with a
    /// GPU backend (features `cuda`, `metal`); 0 keeps everything on the CPU.
    pub fn load(path: &Path, gpu_layers: u32) -> Result<Self, BackendError> {
        let backend = llama()?;
        let load_err = |message: String| BackendError::Load {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        // llama.cpp aborts the process on some malformed files, so our reader validates the
        // container first. Tensor types passuntil does not implement (IQ quants, ...) are
        // llama.cpp's business, not an error here.
        match quant::gguf::GgufFile::open(path) {
            Ok(_) | Err(quant::gguf::GgufError::UnsupportedTensorType { .. }) => {}
            Err(e) => return Err(load_err(e.to_string())),
        }
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| load_err(e.to_string()))?;
        Ok(LlamaCppModel {
            model,
            path: path.display().to_string(),
        })
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.model.n_ctx_train()
    }

    /// The file this model came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Creates a context (KV cache and threads) on this model.
    pub fn backend(&self, opts: &ContextOptions) -> Result<LlamaCppBackend<'_>, BackendError> {
        if opts.n_seq_max == 0 || opts.n_seq_max > LLAMA_MAX_SEQ {
            return Err(BackendError::Context(format!(
                "n_seq_max {} must be in 1..={LLAMA_MAX_SEQ}",
                opts.n_seq_max
            )));
        }
        let n_ctx = NonZeroU32::new(opts.n_ctx)
            .ok_or_else(|| BackendError::Context("n_ctx must be positive".into()))?;
        let threads = opts
            .n_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
            as i32;
        let n_batch = opts.n_batch.max(1);
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(opts.n_ubatch.clamp(1, n_batch))
            .with_n_seq_max(opts.n_seq_max)
            .with_kv_unified(opts.unified_kv)
            .with_flash_attention_policy(match opts.flash_attention {
                None => -1,
                Some(false) => 0,
                Some(true) => 1,
            })
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = {
            let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
            self.model
                .new_context(llama()?, params)
                .map_err(|e| BackendError::Context(e.to_string()))?
        };
        let vocab = self.model.vocab();
        let n_vocab = usize::try_from(self.model.n_vocab()).unwrap_or(0);
        let token = |t: LlamaToken| u32::try_from(t.0).ok().filter(|&t| (t as usize) < n_vocab);
        let eog = (0..n_vocab as i32)
            .filter(|&t| vocab.is_eog(LlamaToken(t)))
            .map(|t| t as u32)
            .collect();
        let info = ModelInfo {
            backend: "llama.cpp",
            n_vocab,
            n_ctx: ctx.n_ctx(),
            n_ctx_train: self.model.n_ctx_train(),
            max_sequences: opts.n_seq_max,
            bos: token(vocab.bos()),
            eos: token(vocab.eos()),
            eog,
            add_bos: vocab.should_add_bos(),
            chat_template: self
                .model
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok()),
        };
        Ok(LlamaCppBackend {
            model: &self.model,
            batch: LlamaBatch::new(n_batch as usize, opts.n_seq_max as i32),
            n_batch: n_batch as usize,
            ctx,
            info,
        })
    }
}

/// A llama.cpp context on a [`LlamaCppModel`], implementing [`Backend`].
pub struct LlamaCppBackend<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    info: ModelInfo,
}

impl LlamaCppBackend<'_> {
    fn check_seq(&self, seq: SeqId) -> Result<i32, BackendError> {
        if seq >= self.info.max_sequences {
            return Err(BackendError::SequenceOutOfRange {
                seq,
                max: self.info.max_sequences,
            });
        }
        Ok(seq as i32)
    }

    fn check_tokens(&self, tokens: &[Token], what: &str) -> Result<(), BackendError> {
        match tokens.iter().find(|&&t| t as usize >= self.info.n_vocab) {
            Some(&token) => Err(BackendError::InvalidToken {
                token,
                what: what.to_owned(),
                n_vocab: self.info.n_vocab,
            }),
            None => Ok(()),
        }
    }
}

fn to_llama(tokens: &[Token]) -> Vec<LlamaToken> {
    tokens.iter().map(|&t| LlamaToken(t as i32)).collect()
}

impl Backend for LlamaCppBackend<'_> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenize(&self, text: &[u8], options: TokenizeOptions) -> Result<Vec<Token>, BackendError> {
        let toks = self
            .model
            .vocab()
            .tokenize(text, options.add_special, options.parse_special);
        Ok(toks.into_iter().map(|t| t.0 as Token).collect())
    }

    fn token_piece(&self, token: Token) -> Result<Vec<u8>, BackendError> {
        self.check_tokens(&[token], "token_piece")?;
        Ok(self
            .model
            .vocab()
            .token_to_piece(LlamaToken(token as i32), true, None))
    }

    fn detokenize(&self, tokens: &[Token]) -> Result<Vec<u8>, BackendError> {
        self.check_tokens(tokens, "detokenize")?;
        Ok(self
            .model
            .vocab()
            .detokenize(&to_llama(tokens), false, true))
    }

    fn decode(&mut self, batch: &Batch, out: &mut Logits) -> Result<(), BackendError> {
        batch.validate(&self.info)?;
        out.clear(self.info.n_vocab);
        if batch.is_empty() {
            return Err(BackendError::InvalidBatch("no rows".into()));
        }
        let mut seqs: Vec<i32> = Vec::with_capacity(self.info.max_sequences as usize);
        for start in (0..batch.len()).step_by(self.n_batch) {
            let end = (start + self.n_batch).min(batch.len());
            self.batch.clear();
            let mut wanted = Vec::new();
            for i in start..end {
                let row = batch.row(i);
                seqs.clear();
                seqs.extend(row.seqs.iter().map(|&s| s as i32));
                // validate() checked seqs.len() <= max_sequences, the n_seq_max the
                // LlamaBatch was allocated with.
                self.batch
                    .add(
                        LlamaToken(row.token as i32),
                        row.pos as i32,
                        &seqs,
                        row.logits,
                    )
                    .map_err(|e| BackendError::Decode(e.to_string()))?;
                if row.logits {
                    wanted.push((i - start) as i32);
                }
            }
            self.ctx.decode(&mut self.batch).map_err(|e| match e {
                DecodeError::NoKvCacheSlot => BackendError::CacheFull {
                    n_ctx: self.info.n_ctx,
                },
                other => BackendError::Decode(other.to_string()),
            })?;
            for i in wanted {
                out.push_row(self.ctx.get_logits_ith(i));
            }
        }
        Ok(())
    }

    fn copy_sequence(&mut self, src: SeqId, dst: SeqId) -> Result<(), BackendError> {
        let (s, d) = (self.check_seq(src)?, self.check_seq(dst)?);
        self.ctx
            .kv_cache_seq_cp(s, d, None, None)
            .map_err(|e| BackendError::Decode(e.to_string()))
    }

    fn remove_sequence(
        &mut self,
        seq: SeqId,
        from: Pos,
        to: Option<Pos>,
    ) -> Result<(), BackendError> {
        let s = self.check_seq(seq)?;
        self.ctx
            .kv_cache_seq_rm(s, Some(from), to)
            .map_err(|e| BackendError::Decode(e.to_string()))
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.ctx.clear_kv_cache();
        Ok(())
    }
}
