//! The llama.cpp backend, through the `llama-cpp-2` crate (feature `llama-cpp`; `cuda` and
//! `metal` pass through to llama.cpp).
//!
//! [`LlamaCppModel::load`] loads a GGUF (a [`Model`]); [`LlamaCppModel::new_context`] creates
//! a [`LlamaCppContext`] holding an `Arc` of it, with a unified KV cache (forking a prompt to
//! many sequences shares its cells) or a stream of cells per sequence. Batches are validated
//! before anything reaches llama.cpp: `LlamaBatch::add` writes sequence ids without bounds
//! checks, so a row naming more sequences than the batch was sized for would corrupt memory;
//! here it is an error.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;

pub use crate::backend::ContextOptions;
use crate::backend::{
    Activations, BackendError, Batch, Context, Logits, Model, ModelInfo, Pos, SeqId, Token,
    TokenizeOptions,
};

pub use crate::backend::LLAMA_MAX_SEQ;

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
    info: ModelInfo,
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
        let vocab = model.vocab();
        let n_vocab = usize::try_from(model.n_vocab()).unwrap_or(0);
        let token = |t: LlamaToken| u32::try_from(t.0).ok().filter(|&t| (t as usize) < n_vocab);
        let eog = (0..n_vocab as i32)
            .filter(|&t| vocab.is_eog(LlamaToken(t)))
            .map(|t| t as u32)
            .collect();
        let info = ModelInfo {
            backend: "llama.cpp",
            n_vocab,
            n_ctx_train: model.n_ctx_train(),
            bos: token(vocab.bos()),
            eos: token(vocab.eos()),
            eog,
            add_bos: vocab.should_add_bos(),
            chat_template: model
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok()),
        };
        Ok(LlamaCppModel {
            model,
            path: path.display().to_string(),
            info,
        })
    }

    /// [`LlamaCppModel::load`], shared: what [`LlamaCppModel::new_context`] takes.
    pub fn open(path: &Path, gpu_layers: u32) -> Result<Arc<Self>, BackendError> {
        Ok(Arc::new(LlamaCppModel::load(path, gpu_layers)?))
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.model.n_ctx_train()
    }

    /// The file this model came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Creates a context (KV cache and threads) holding this model.
    pub fn new_context(
        self: &Arc<Self>,
        opts: &ContextOptions,
    ) -> Result<LlamaCppContext, BackendError> {
        if opts.n_seq_max == 0 || opts.n_seq_max > LLAMA_MAX_SEQ {
            return Err(BackendError::Context(format!(
                "n_seq_max {} must be in 1..={LLAMA_MAX_SEQ}",
                opts.n_seq_max
            )));
        }
        let n_ctx = NonZeroU32::new(opts.n_ctx)
            .ok_or_else(|| BackendError::Context("n_ctx must be positive".into()))?;
        let threads = opts
            .threads
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
        let cell = ModelAndContext::try_new(Arc::clone(self), |model| {
            let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
            model
                .model
                .new_context(llama()?, params)
                .map_err(|e| BackendError::Context(e.to_string()))
        })?;
        let n_ctx = cell.borrow_dependent().n_ctx();
        Ok(LlamaCppContext {
            cell,
            batch: LlamaBatch::new(n_batch as usize, opts.n_seq_max as i32),
            n_batch: n_batch as usize,
            n_ctx,
            max_sequences: opts.n_seq_max,
        })
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

impl Model for LlamaCppModel {
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

    fn context(
        self: Arc<Self>,
        options: &ContextOptions,
    ) -> Result<Box<dyn Context>, BackendError> {
        match options.activations {
            Activations::Q8 => {}
            Activations::Exact => {
                return Err(BackendError::Context(
                    "llama.cpp rounds activations to 8 bits; exact activations need the native \
                     backend"
                        .into(),
                ))
            }
            Activations::Q8Fast => {
                return Err(BackendError::Context(
                    "q8-fast is the native engine's repacked kernels; llama.cpp runs its own \
                     (use q8)"
                        .into(),
                ))
            }
        }
        Ok(Box::new(self.new_context(options)?))
    }
}

type BorrowedContext<'a> = LlamaContext<'a>;

self_cell::self_cell!(
    /// A llama.cpp context beside the model it borrows.
    struct ModelAndContext {
        owner: Arc<LlamaCppModel>,
        #[covariant]
        dependent: BorrowedContext,
    }
);

/// A llama.cpp context holding its [`LlamaCppModel`].
pub struct LlamaCppContext {
    cell: ModelAndContext,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: u32,
    max_sequences: u32,
}

impl LlamaCppContext {
    fn check_seq(&self, seq: SeqId) -> Result<i32, BackendError> {
        if seq >= self.max_sequences {
            return Err(BackendError::SequenceOutOfRange {
                seq,
                max: self.max_sequences,
            });
        }
        Ok(seq as i32)
    }
}

fn to_llama(tokens: &[Token]) -> Vec<LlamaToken> {
    tokens.iter().map(|&t| LlamaToken(t as i32)).collect()
}

impl Context for LlamaCppContext {
    fn model(&self) -> &dyn Model {
        &**self.cell.borrow_owner()
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    fn max_sequences(&self) -> u32 {
        self.max_sequences
    }

    fn decode(&mut self, batch: &Batch, out: &mut Logits) -> Result<(), BackendError> {
        batch.validate(&*self)?;
        out.clear(self.info().n_vocab);
        if batch.is_empty() {
            return Err(BackendError::InvalidBatch("no rows".into()));
        }
        let n_ctx = self.n_ctx;
        let mut seqs: Vec<i32> = Vec::with_capacity(self.max_sequences as usize);
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
            let llama_batch = &mut self.batch;
            self.cell.with_dependent_mut(|_, ctx| {
                ctx.decode(llama_batch).map_err(|e| match e {
                    DecodeError::NoKvCacheSlot => BackendError::CacheFull { n_ctx },
                    other => BackendError::Decode(other.to_string()),
                })?;
                for i in wanted {
                    out.push_row(ctx.get_logits_ith(i));
                }
                Ok::<(), BackendError>(())
            })?;
        }
        Ok(())
    }

    fn copy_sequence(&mut self, src: SeqId, dst: SeqId) -> Result<(), BackendError> {
        let (s, d) = (self.check_seq(src)?, self.check_seq(dst)?);
        self.cell.with_dependent_mut(|_, ctx| {
            ctx.kv_cache_seq_cp(s, d, None, None)
                .map_err(|e| BackendError::Decode(e.to_string()))
        })
    }

    fn remove_sequence(
        &mut self,
        seq: SeqId,
        from: Pos,
        to: Option<Pos>,
    ) -> Result<(), BackendError> {
        let s = self.check_seq(seq)?;
        self.cell.with_dependent_mut(|_, ctx| {
            ctx.kv_cache_seq_rm(s, Some(from), to)
                .map_err(|e| BackendError::Decode(e.to_string()))
        })
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.cell.with_dependent_mut(|_, ctx| ctx.clear_kv_cache());
        Ok(())
    }
}
