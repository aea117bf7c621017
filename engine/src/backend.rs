//! What passuntil needs from an inference engine, shaped for massive sampling: a [`Model`]
//! and its [`Context`]s.
//!
//! A model ([`open`]: the one place a model is opened, by [`BackendKind`]) is the loaded
//! weights with what belongs to them: [`ModelInfo`], the tokenizer, the chat template. It is
//! shared (`Arc`) and immutable. A context owns an `Arc` of its model and one KV cache shared
//! by many sequences: callers evaluate [`Batch`]es of rows (token, position, sequence ids,
//! whether logits are wanted), fork a sequence's cache to others so a prompt is computed once,
//! and remove sequences or position ranges as samples finish. The native engine and llama.cpp
//! (feature `llama-cpp`) implement both.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// A token id.
pub type Token = u32;
/// A sequence id: rows with the same id share a causal history in the cache.
pub type SeqId = u32;
/// A position within a sequence.
pub type Pos = u32;

/// Which inference engine runs a model. Written `native` and `llama.cpp` (run records, JSON);
/// `llama-cpp` is read too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BackendKind {
    /// passuntil's own engine.
    #[serde(rename = "native")]
    Native,
    /// llama.cpp (build with the `llama-cpp` feature).
    #[serde(rename = "llama.cpp", alias = "llama-cpp")]
    LlamaCpp,
}

/// llama.cpp's limit on sequences per context (`LLAMA_MAX_SEQ`).
pub const LLAMA_MAX_SEQ: u32 = 256;

impl BackendKind {
    /// The most sequences one context can hold, where the engine has a limit.
    pub fn max_sequences(self) -> Option<u32> {
        match self {
            BackendKind::Native => None,
            BackendKind::LlamaCpp => Some(LLAMA_MAX_SEQ),
        }
    }

    /// Every kind, in the order help texts list them.
    pub const ALL: [BackendKind; 2] = [BackendKind::Native, BackendKind::LlamaCpp];

    /// The name records use: `native` or `llama.cpp`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Native => "native",
            BackendKind::LlamaCpp => "llama.cpp",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(BackendKind::Native),
            "llama.cpp" | "llama-cpp" => Ok(BackendKind::LlamaCpp),
            other => Err(format!("unknown backend '{other}' (native, llama-cpp)")),
        }
    }
}

/// How the native engine multiplies activations with weights. Written `q8`, `q8-fast` and
/// `exact`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Activations {
    /// As llama.cpp's CPU backend: activations rounded to 8 bits (ggml's `vec_dot_type` of
    /// each weight format) before every quantized product, bit for bit with ggml where its
    /// kernels allow. The default.
    #[default]
    Q8,
    /// Activations kept in f32 and multiplied with each weight block dequantized (one block
    /// at a time, never the whole matrix): the weights are the only quantized thing, so a
    /// study can tell weight quantization from activation rounding. Native engine only.
    Exact,
    /// Activations rounded to 8 bits as in `Q8`, but Q4_0, Q4_1 and Q8_0 weights repacked at
    /// load into panels of 16 rows ([`quant::panels`]) whose kernels sum each block's products
    /// in integers and scale the sum once, instead of ggml's eight partial sums scaled one by
    /// one. Faster, and a row's logits are still bitwise the same alone or in any batch, on
    /// any thread count and instruction set, but they are not llama.cpp's bits: each product
    /// differs from ggml's only in how its sums round (by under 1e-5 of the largest output in
    /// the kernel tests), yet the next 8-bit rounding turns that into a different
    /// draw of the activations' rounding noise, so the two modes drift apart by about as much
    /// as 8-bit activations differ from exact ones (and are as close to exact ones: mean KL
    /// 3.5e-3 against q8's 3.1e-3 on the default model). Other weight types run as in `Q8`.
    /// Native engine only; the panels take the place of those weights in memory (the mapped
    /// file's pages of them are released once repacked).
    #[serde(rename = "q8-fast")]
    Q8Fast,
}

impl Activations {
    /// Every mode, in the order help texts list them.
    pub const ALL: [Activations; 3] = [Activations::Q8, Activations::Q8Fast, Activations::Exact];

    /// The name records and options use.
    pub fn name(self) -> &'static str {
        match self {
            Activations::Q8 => "q8",
            Activations::Q8Fast => "q8-fast",
            Activations::Exact => "exact",
        }
    }

    /// Whether this is the default mode (records leave it out then).
    pub fn is_default(&self) -> bool {
        *self == Activations::Q8
    }
}

impl std::fmt::Display for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Activations {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "q8" => Ok(Activations::Q8),
            "q8-fast" => Ok(Activations::Q8Fast),
            "exact" => Ok(Activations::Exact),
            other => Err(format!(
                "unknown activation mode '{other}' (q8, q8-fast, exact)"
            )),
        }
    }
}

/// An error from a backend. Each variant says what and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The model file could not be loaded.
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The backend was not compiled into this build.
    #[error("this passuntil was built without {0}; rebuild with `--features llama-cpp` (needs cmake, clang and libclang-dev)")]
    NotBuilt(BackendKind),
    /// The inference context (cache, threads) could not be created.
    #[error("cannot create an inference context: {0}")]
    Context(String),
    /// A token id outside the vocabulary.
    #[error("token {token} in {what} is outside the vocabulary of {n_vocab}")]
    InvalidToken {
        /// The token.
        token: Token,
        /// Where it was found.
        what: String,
        /// Vocabulary size.
        n_vocab: usize,
    },
    /// A batch row names more sequences than the backend holds, or a sequence id beyond them.
    #[error(
        "batch row {row}: sequence ids {seqs:?} exceed the {max} sequences this context holds"
    )]
    TooManySequences {
        /// The row.
        row: usize,
        /// Its sequence ids.
        seqs: Vec<SeqId>,
        /// The context's limit.
        max: u32,
    },
    /// A sequence id beyond what the context holds.
    #[error("sequence {seq} is beyond the {max} sequences this context holds")]
    SequenceOutOfRange {
        /// The id.
        seq: SeqId,
        /// The context's limit.
        max: u32,
    },
    /// A position at or past the context length.
    #[error("batch row {row}: position {pos} is past the context of {n_ctx} tokens")]
    PositionPastContext {
        /// The row.
        row: usize,
        /// The position.
        pos: Pos,
        /// The context length.
        n_ctx: u32,
    },
    /// The KV cache has no room for the batch.
    #[error("the KV cache is full ({n_ctx} cells): free sequences or use a larger context")]
    CacheFull {
        /// Cache size in cells.
        n_ctx: u32,
    },
    /// The forward pass failed.
    #[error("decode failed: {0}")]
    Decode(String),
    /// A batch has no rows, or asks for no logits where some are needed.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Sampling failed (NaN logits, impossible parameters).
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
}

/// What a caller needs to know about a loaded model (its contexts add their cache size and
/// sequence count: [`Context::n_ctx`], [`Context::max_sequences`]).
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Which backend (`native`, `llama.cpp`).
    pub backend: &'static str,
    /// Vocabulary size (logit row length).
    pub n_vocab: usize,
    /// The model's training context length.
    pub n_ctx_train: u32,
    /// Beginning-of-sequence token.
    pub bos: Option<Token>,
    /// End-of-sequence token.
    pub eos: Option<Token>,
    /// Every end-of-generation token (EOS, EOT, `<|im_end|>`, ...), sorted.
    pub eog: Vec<Token>,
    /// Whether tokenizing with special tokens adds BOS.
    pub add_bos: bool,
    /// The model's chat template, if it has one.
    pub chat_template: Option<String>,
}

impl ModelInfo {
    /// Whether `token` ends generation.
    pub fn is_eog(&self, token: Token) -> bool {
        self.eog.binary_search(&token).is_ok()
    }
}

/// Rows to evaluate in one forward pass.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    tokens: Vec<Token>,
    pos: Vec<Pos>,
    seq_ranges: Vec<Range<usize>>,
    seqs: Vec<SeqId>,
    logits: Vec<bool>,
}

/// One row of a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    /// The token.
    pub token: Token,
    /// Its position.
    pub pos: Pos,
    /// The sequences it belongs to.
    pub seqs: &'a [SeqId],
    /// Whether logits are wanted for it.
    pub logits: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn add(&mut self, token: Token, pos: Pos, seqs: &[SeqId], logits: bool) -> &mut Self {
        let start = self.seqs.len();
        self.seqs.extend_from_slice(seqs);
        self.seq_ranges.push(start..self.seqs.len());
        self.tokens.push(token);
        self.pos.push(pos);
        self.logits.push(logits);
        self
    }

    /// Adds `tokens` at consecutive positions from `start` to one sequence; logits for the last
    /// row only, or for all rows with `all_logits`.
    pub fn add_sequence(
        &mut self,
        tokens: &[Token],
        start: Pos,
        seq: SeqId,
        all_logits: bool,
    ) -> &mut Self {
        for (i, &t) in tokens.iter().enumerate() {
            self.add(
                t,
                start + i as Pos,
                &[seq],
                all_logits || i + 1 == tokens.len(),
            );
        }
        self
    }

    /// Removes all rows.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.pos.clear();
        self.seq_ranges.clear();
        self.seqs.clear();
        self.logits.clear();
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> Row<'_> {
        Row {
            token: self.tokens[i],
            pos: self.pos[i],
            seqs: &self.seqs[self.seq_ranges[i].clone()],
            logits: self.logits[i],
        }
    }

    /// All rows in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Number of rows that want logits.
    pub fn n_logits(&self) -> usize {
        self.logits.iter().filter(|&&l| l).count()
    }

    /// Checks ids, positions and sequence counts against a context, before any backend call.
    pub fn validate(&self, ctx: &dyn Context) -> Result<(), BackendError> {
        let (n_vocab, n_ctx, max) = (ctx.info().n_vocab, ctx.n_ctx(), ctx.max_sequences());
        for (i, r) in self.rows().enumerate() {
            if r.token as usize >= n_vocab {
                return Err(BackendError::InvalidToken {
                    token: r.token,
                    what: format!("batch row {i}"),
                    n_vocab,
                });
            }
            if r.pos >= n_ctx {
                return Err(BackendError::PositionPastContext {
                    row: i,
                    pos: r.pos,
                    n_ctx,
                });
            }
            if r.seqs.is_empty() || r.seqs.len() > max as usize || r.seqs.iter().any(|&s| s >= max)
            {
                return Err(BackendError::TooManySequences {
                    row: i,
                    seqs: r.seqs.to_vec(),
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Logit rows for the batch rows that asked for them, in batch order.
#[derive(Clone, Debug, Default)]
pub struct Logits {
    n_vocab: usize,
    /// Values in use: the first `len` of `data` (which only grows, so that a steady stream
    /// of same-sized batches neither allocates nor clears).
    len: usize,
    data: Vec<f32>,
}

impl Logits {
    /// Empty logits for a vocabulary of `n_vocab`.
    pub fn new(n_vocab: usize) -> Self {
        Logits {
            n_vocab,
            len: 0,
            data: Vec::new(),
        }
    }

    /// Drops all rows, keeping the allocation.
    pub fn clear(&mut self, n_vocab: usize) {
        self.n_vocab = n_vocab;
        self.len = 0;
    }

    /// Appends a row (used by backends).
    pub fn push_row(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.n_vocab);
        self.data.truncate(self.len);
        self.data.extend_from_slice(row);
        self.len = self.data.len();
    }

    /// Appends `n` rows for a backend to write in place (their values are unspecified until
    /// it does): `n × n_vocab` values.
    pub fn rows_mut(&mut self, n: usize) -> &mut [f32] {
        let end = self.len + n * self.n_vocab;
        if self.data.len() < end {
            self.data.resize(end, 0.0);
        }
        let from = std::mem::replace(&mut self.len, end);
        &mut self.data[from..end]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len.checked_div(self.n_vocab).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `i` (the i-th batch row that asked for logits).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[..self.len][i * self.n_vocab..(i + 1) * self.n_vocab]
    }
}

/// How to tokenize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenizeOptions {
    /// Add BOS/EOS as the model's metadata asks.
    pub add_special: bool,
    /// Recognise special-token text (`<|im_start|>`) as those tokens.
    pub parse_special: bool,
}

impl Default for TokenizeOptions {
    fn default() -> Self {
        TokenizeOptions {
            add_special: true,
            parse_special: true,
        }
    }
}

/// Settings for a context. The native engine uses the cache size, sequences and threads; the
/// rest are llama.cpp's.
#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// KV cache cells, shared by all sequences.
    pub n_ctx: u32,
    /// Most sequences at once (llama.cpp: at most 256).
    pub n_seq_max: u32,
    /// Threads; `None` uses every available core.
    pub threads: Option<u32>,
    /// llama.cpp: most rows per decode call; larger batches are split.
    pub n_batch: u32,
    /// llama.cpp: rows per physical micro-batch.
    pub n_ubatch: u32,
    /// llama.cpp: one KV cache for all sequences (forks share cells; attention runs over
    /// every used cell) or a stream of `n_ctx / n_seq_max` cells per sequence (forks copy the
    /// prompt's cells; a sequence's rows never depend on the others', so logits are
    /// batch-invariant). The native cache always shares a prompt's cells and is always
    /// batch-invariant.
    pub unified_kv: bool,
    /// llama.cpp: flash attention; `None` lets llama.cpp decide.
    pub flash_attention: Option<bool>,
    /// Native engine: 8-bit activations as llama.cpp (the default) or exact ones
    /// ([`Activations`]); llama.cpp refuses `Exact`.
    pub activations: Activations,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            n_ctx: 4096,
            n_seq_max: 64,
            threads: None,
            n_batch: 2048,
            n_ubatch: 512,
            unified_kv: true,
            flash_attention: None,
            activations: Activations::Q8,
        }
    }
}

impl ContextOptions {
    /// A cache of `n_ctx` cells for up to `n_seq_max` sequences, other settings default.
    pub fn new(n_ctx: u32, n_seq_max: u32) -> Self {
        ContextOptions {
            n_ctx,
            n_seq_max,
            ..ContextOptions::default()
        }
    }
}

/// How [`open`] loads a model.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Layers offloaded to a GPU (llama.cpp built with `cuda` or `metal`; 0 keeps everything
    /// on the CPU; the native engine runs on the CPU).
    pub gpu_layers: u32,
}

/// Opens the GGUF file at `path` on `kind`: the one place a model is opened.
pub fn open(
    kind: BackendKind,
    path: &Path,
    options: &OpenOptions,
) -> Result<Arc<dyn Model>, BackendError> {
    match kind {
        BackendKind::Native => Ok(open_native(path)?),
        BackendKind::LlamaCpp => open_llama_cpp(path, options),
    }
}

/// The native model itself, for what only the native engine offers (forward hooks, the logit
/// lens); [`open`] gives the same model behind [`Model`].
pub fn open_native(path: &Path) -> Result<Arc<crate::native::NativeModel>, BackendError> {
    Ok(Arc::new(crate::native::NativeModel::load(path)?))
}

#[cfg(feature = "llama-cpp")]
fn open_llama_cpp(path: &Path, options: &OpenOptions) -> Result<Arc<dyn Model>, BackendError> {
    Ok(Arc::new(crate::llama_cpp::LlamaCppModel::load(
        path,
        options.gpu_layers,
    )?))
}

#[cfg(not(feature = "llama-cpp"))]
fn open_llama_cpp(_: &Path, _: &OpenOptions) -> Result<Arc<dyn Model>, BackendError> {
    Err(BackendError::NotBuilt(BackendKind::LlamaCpp))
}

/// A loaded model: its facts, tokenizer and chat template, shared by its contexts.
pub trait Model: Send + Sync {
    /// What the model is.
    fn info(&self) -> &ModelInfo;

    /// Text (bytes, not necessarily UTF-8) to tokens.
    fn tokenize(&self, text: &[u8], options: TokenizeOptions) -> Result<Vec<Token>, BackendError>;

    /// The bytes of one token (special tokens rendered as their text). Concatenating pieces
    /// and buffering incomplete UTF-8 gives streaming output; see [`crate::detok`].
    fn token_piece(&self, token: Token) -> Result<Vec<u8>, BackendError>;

    /// Tokens back to bytes, rendering special tokens.
    fn detokenize(&self, tokens: &[Token]) -> Result<Vec<u8>, BackendError>;

    /// A new context (KV cache, threads) holding this model.
    fn context(self: Arc<Self>, options: &ContextOptions)
        -> Result<Box<dyn Context>, BackendError>;
}

/// A model with a KV cache shared by many sequences: what evaluates batches. The model's
/// operations are reachable through it ([`Context::model`], and [`Context::info`],
/// [`Context::tokenize`], ... as shorthands).
pub trait Context {
    /// The model this context holds.
    fn model(&self) -> &dyn Model;

    /// KV cache size in cells (all sequences together).
    fn n_ctx(&self) -> u32;

    /// Most sequences the cache holds at once (ids `0..max_sequences`).
    fn max_sequences(&self) -> u32;

    /// Evaluates `batch`, writing one logit row per row that asked for logits into `out`.
    fn decode(&mut self, batch: &Batch, out: &mut Logits) -> Result<(), BackendError>;

    /// Makes `dst` share everything `src` has in the cache (a prompt computed once, forked).
    fn copy_sequence(&mut self, src: SeqId, dst: SeqId) -> Result<(), BackendError>;

    /// Removes positions `from..to` (`to = None`: to the end) of `seq` from the cache.
    fn remove_sequence(
        &mut self,
        seq: SeqId,
        from: Pos,
        to: Option<Pos>,
    ) -> Result<(), BackendError>;

    /// Empties the cache.
    fn clear(&mut self) -> Result<(), BackendError>;

    /// The model's facts ([`Model::info`]).
    fn info(&self) -> &ModelInfo {
        self.model().info()
    }

    /// [`Model::tokenize`].
    fn tokenize(&self, text: &[u8], options: TokenizeOptions) -> Result<Vec<Token>, BackendError> {
        self.model().tokenize(text, options)
    }

    /// [`Model::token_piece`].
    fn token_piece(&self, token: Token) -> Result<Vec<u8>, BackendError> {
        self.model().token_piece(token)
    }

    /// [`Model::detokenize`].
    fn detokenize(&self, tokens: &[Token]) -> Result<Vec<u8>, BackendError> {
        self.model().detokenize(tokens)
    }
}
