//! `pass-until compare`: perplexity and KL divergence of models against a reference on a text,
//! as llama.cpp's `llama-perplexity --kl-divergence` computes them.
//!
//! The text is tokenized once (with BOS when the model adds one) and cut into chunks of
//! `ctx` tokens; each chunk is evaluated from an empty cache with its first token replaced by
//! BOS, and the second half is scored (logits at `j ∈ [ctx/2, ctx−2]` predict token `j+1`).
//! The reference's log-probabilities go through llama.cpp's uint16 encoding before the
//! comparison, as in its tool. Every model is loaded at once and each chunk is compared as
//! soon as it is evaluated, so nothing is written to disk and memory holds one chunk.

use std::path::{Path, PathBuf};

use engine::backend::{BackendError, Batch, Context, Logits, TokenizeOptions};
use serde::Serialize;

use crate::generate::BackendKind;
use crate::metrics::perplexity::{
    compare_token, scored_positions, summarize, EncodedRow, KlSummary, TokenComparison,
};

/// An error comparing models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// A backend failed or is not built in.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Settings or inputs that cannot work.
    #[error("{0}")]
    Settings(String),
    /// A model file could not be read.
    #[error(transparent)]
    Gguf(#[from] quant::gguf::GgufError),
}

/// Settings of a comparison.
#[derive(Clone, Copy, Debug)]
pub struct CompareOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Most chunks to evaluate (`None`: all the text holds).
    pub chunks: Option<usize>,
    /// Threads per model.
    pub threads: Option<u32>,
    /// The engine that runs every model.
    pub backend: BackendKind,
    /// The models' activation mode (native engine).
    pub activations: engine::Activations,
    /// The reference's activation mode (native engine): `exact` against `q8` on one file
    /// measures what 8-bit activations alone do.
    pub reference_activations: engine::Activations,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            ctx: 512,
            chunks: None,
            threads: None,
            backend: BackendKind::Native,
            activations: engine::Activations::Q8,
            reference_activations: engine::Activations::Q8,
        }
    }
}

/// Size facts about a model file.
#[derive(Clone, Debug, Serialize)]
pub struct FileFacts {
    /// The path.
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// Bits per weight over all tensors.
    pub bits_per_weight: f64,
}

impl FileFacts {
    /// Reads them from a GGUF file.
    pub fn of(path: &Path) -> Result<Self, CompareError> {
        let f = quant::gguf::GgufFile::open(path)?;
        let (bits, n) = f.tensor_infos().iter().fold((0u64, 0u64), |(b, n), t| {
            (b + 8 * t.size, n + t.n_elements())
        });
        Ok(FileFacts {
            path: path.display().to_string(),
            bytes: f.file_len(),
            bits_per_weight: bits as f64 / n.max(1) as f64,
        })
    }
}

/// One model against the reference.
#[derive(Clone, Debug, Serialize)]
pub struct ModelComparison {
    /// The model.
    pub model: FileFacts,
    /// The activation mode it ran with.
    pub activations: engine::Activations,
    /// llama.cpp's statistics block.
    pub summary: KlSummary,
    /// KL divergence from the reference at each scored position, in order (for paired
    /// differences between models).
    #[serde(skip)]
    pub kld_per_token: Vec<f64>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// The reference.
    pub reference: FileFacts,
    /// The reference's activation mode.
    pub reference_activations: engine::Activations,
    /// Tokens per chunk.
    pub ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored per model.
    pub scored: usize,
    /// Each model.
    pub models: Vec<ModelComparison>,
}

/// Evaluates chunk `chunk` of `tokens` from an empty cache; `out` gets the scored rows' logits.
fn chunk_logits(
    backend: &mut dyn Context,
    tokens: &[u32],
    ctx: usize,
    chunk: usize,
    out: &mut Logits,
) -> Result<(), BackendError> {
    let info = backend.info().clone();
    let scored = scored_positions(ctx);
    let start = chunk * ctx;
    let mut batch = Batch::new();
    for (j, &t) in tokens[start..start + ctx].iter().enumerate() {
        let t = match (j, info.add_bos, info.bos) {
            (0, true, Some(bos)) => bos,
            _ => t,
        };
        batch.add(t, j as u32, &[0], scored.contains(&j));
    }
    backend.clear()?;
    backend.decode(&batch, out)
}

/// Compares `models` with `reference` on `backends`: index 0 is the reference. `modes` says
/// each backend's activation mode (for the report), in the same order.
pub fn compare_on(
    backends: &mut [&mut dyn Context],
    facts: Vec<FileFacts>,
    modes: &[engine::Activations],
    text: &[u8],
    opts: &CompareOptions,
) -> Result<CompareReport, CompareError> {
    if modes.len() != backends.len() || facts.len() != backends.len() {
        return Err(CompareError::Settings(format!(
            "{} contexts, {} file facts and {} activation modes",
            backends.len(),
            facts.len(),
            modes.len()
        )));
    }
    if backends.len() < 2 {
        return Err(CompareError::Settings(
            "compare needs a reference and at least one model".into(),
        ));
    }
    if opts.ctx < 4 {
        return Err(CompareError::Settings("--ctx must be at least 4".into()));
    }
    let n_vocab = backends[0].info().n_vocab;
    if let Some(i) = (1..backends.len()).find(|&i| backends[i].info().n_vocab != n_vocab) {
        return Err(CompareError::Settings(format!(
            "{} has a vocabulary of {} tokens, the reference {n_vocab}: they cannot be compared",
            facts[i].path,
            backends[i].info().n_vocab
        )));
    }
    let tokens = backends[0].tokenize(
        text,
        TokenizeOptions {
            add_special: true,
            parse_special: false,
        },
    )?;
    let available = tokens.len() / opts.ctx;
    let chunks = opts.chunks.map_or(available, |c| c.min(available));
    if chunks == 0 {
        return Err(CompareError::Settings(format!(
            "the text has {} tokens, fewer than one chunk of {}",
            tokens.len(),
            opts.ctx
        )));
    }
    let scored = scored_positions(opts.ctx);
    let mut per_model: Vec<Vec<TokenComparison>> = vec![Vec::new(); backends.len() - 1];
    let mut base = Logits::new(n_vocab);
    let mut q = Logits::new(n_vocab);
    for c in 0..chunks {
        chunk_logits(backends[0], &tokens, opts.ctx, c, &mut base)?;
        let base_rows: Vec<Vec<f64>> = (0..base.len())
            .map(|r| EncodedRow::encode(base.row(r)).decode())
            .collect();
        for (m, backend) in backends[1..].iter_mut().enumerate() {
            chunk_logits(*backend, &tokens, opts.ctx, c, &mut q)?;
            for (r, j) in scored.clone().enumerate() {
                let tok = tokens[c * opts.ctx + j + 1] as usize;
                per_model[m].push(
                    compare_token(&base_rows[r], q.row(r), tok)
                        .map_err(|e| CompareError::Settings(e.to_string()))?,
                );
            }
        }
    }
    let mut facts = facts.into_iter();
    let reference = facts.next().expect("checked");
    let models = facts
        .zip(per_model)
        .zip(&modes[1..])
        .map(|((model, toks), &activations)| {
            Ok(ModelComparison {
                model,
                activations,
                summary: summarize(&toks).map_err(|e| CompareError::Settings(e.to_string()))?,
                kld_per_token: toks.iter().map(|t| t.kld).collect(),
            })
        })
        .collect::<Result<Vec<_>, CompareError>>()?;
    Ok(CompareReport {
        reference,
        reference_activations: modes[0],
        ctx: opts.ctx,
        chunks,
        scored: chunks * scored.len(),
        models,
    })
}

/// Loads every model on `opts.backend` and compares them (the reference with
/// `opts.reference_activations`, the models with `opts.activations`).
pub fn compare(
    reference: &Path,
    models: &[PathBuf],
    text: &[u8],
    opts: &CompareOptions,
) -> Result<CompareReport, CompareError> {
    let models: Vec<(PathBuf, engine::Activations)> = models
        .iter()
        .map(|m| (m.clone(), opts.activations))
        .collect();
    compare_modes((reference, opts.reference_activations), &models, text, opts)
}

/// [`compare`] with each model's own activation mode (the same file may come twice).
pub fn compare_modes(
    (reference, reference_activations): (&Path, engine::Activations),
    models: &[(PathBuf, engine::Activations)],
    text: &[u8],
    opts: &CompareOptions,
) -> Result<CompareReport, CompareError> {
    let paths: Vec<&Path> = std::iter::once(reference)
        .chain(models.iter().map(|(p, _)| p.as_path()))
        .collect();
    let modes: Vec<engine::Activations> = std::iter::once(reference_activations)
        .chain(models.iter().map(|&(_, a)| a))
        .collect();
    let facts = paths
        .iter()
        .map(|p| FileFacts::of(p))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx_opts = engine::ContextOptions {
        threads: opts.threads,
        n_batch: opts.ctx as u32,
        n_ubatch: (opts.ctx as u32).min(512),
        ..engine::ContextOptions::new(opts.ctx as u32, 1)
    };
    let mut contexts = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let activations = modes[i];
            engine::open(opts.backend, p, &engine::OpenOptions::default())?.context(
                &engine::ContextOptions {
                    activations,
                    ..ctx_opts.clone()
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut dyns: Vec<&mut dyn Context> = contexts
        .iter_mut()
        .map(|c| c.as_mut() as &mut dyn Context)
        .collect();
    compare_on(&mut dyns, facts, &modes, text, opts)
}

fn est(e: (f64, f64), digits: usize) -> String {
    format!("{:.*} ± {:.*}", digits, e.0, digits, e.1)
}

impl CompareReport {
    /// llama.cpp-style text, one block per model.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let mode = |a: engine::Activations| match a {
            engine::Activations::Q8 => "",
            engine::Activations::Q8Fast => ", q8-fast kernels",
            engine::Activations::Exact => ", exact activations",
        };
        let _ = writeln!(
            s,
            "reference {} ({:.2} bpw, {:.1} MB{}); {} chunks of {} tokens, {} scored per model",
            self.reference.path,
            self.reference.bits_per_weight,
            self.reference.bytes as f64 / 1e6,
            mode(self.reference_activations),
            self.chunks,
            self.ctx,
            self.scored
        );
        for m in &self.models {
            let k = &m.summary;
            let _ = writeln!(
                s,
                "\n{} ({:.2} bpw, {:.1} MB{})",
                m.model.path,
                m.model.bits_per_weight,
                m.model.bytes as f64 / 1e6,
                mode(m.activations)
            );
            let _ = writeln!(s, "  Mean PPL(Q)                   : {}", est(k.ppl_q, 6));
            let _ = writeln!(
                s,
                "  Mean PPL(base)                : {}",
                est(k.ppl_base, 6)
            );
            let _ = writeln!(s, "  Cor(ln(PPL(Q)), ln(PPL(base))): {:.2}%", 100.0 * k.cor);
            let _ = writeln!(
                s,
                "  Mean ln(PPL(Q)/PPL(base))     : {}",
                est(k.ln_ppl_ratio, 6)
            );
            let _ = writeln!(
                s,
                "  Mean PPL(Q)/PPL(base)         : {}",
                est(k.ppl_ratio, 6)
            );
            let _ = writeln!(
                s,
                "  Mean PPL(Q)-PPL(base)         : {}",
                est(k.ppl_diff, 6)
            );
            let _ = writeln!(s, "  Mean    KLD: {}", est(k.kld, 6));
            for (name, v) in &k.kld_percentiles {
                let _ = writeln!(s, "  {name:>7} KLD: {v:10.6}");
            }
            let _ = writeln!(
                s,
                "  Mean    Δp: {:.3} ± {:.3} %",
                100.0 * k.delta_p.0,
                100.0 * k.delta_p.1
            );
            for (name, v) in &k.delta_p_percentiles {
                let _ = writeln!(s, "  {name:>7} Δp: {:7.3}%", 100.0 * v);
            }
            let _ = writeln!(
                s,
                "  RMS Δp    : {:.3} ± {:.3} %",
                100.0 * k.rms_delta_p.0,
                100.0 * k.rms_delta_p.1
            );
            let _ = writeln!(
                s,
                "  Same top p: {:.3} ± {:.3} %",
                100.0 * k.same_top.0,
                100.0 * k.same_top.1
            );
        }
        s
    }
}
