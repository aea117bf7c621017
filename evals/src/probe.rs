//! `pass-until probe`: what a model's hidden states look like, read through the native
//! engine's hooks ([`engine::hooks`]); run it on a base model and on its requantizations to
//! see what quantization changed inside.
//!
//! - **Matrix entropy** (EVALS-SPEC §5) of the final normed hidden states of every token of a
//!   text, evaluated in chunks of `ctx` tokens on an emptied cache.
//! - **Outlier features** (LLM.int8(); EVALS-SPEC §8) at the inputs of the projections, where
//!   the paper looks: the normed input of the query/key/value projections, the attention
//!   result entering the output projection, and the normed input of the feed-forward
//!   projections, each site on its own (their dimensions mean different things). All the
//!   text's tokens count as the positions of one sequence. Both readings of the 6% rule are
//!   reported (`dims`: union of positions over the layers; `dims_pooled`: pooled
//!   (layer, position) pairs), with per-layer counts of dimensions over the threshold.
//! - **Logit lens** for a prompt: each block's output at the prompt's last position put
//!   through the final norm and the output head, and the most likely tokens there.

use std::path::Path;
use std::sync::{Arc, Mutex};

use engine::backend::{BackendError, Batch, Context, Logits, TokenizeOptions};
use engine::hooks::{HookData, HookPoint};
use engine::native::NativeModel;
use serde::Serialize;

use crate::metrics::entropy::matrix_entropy;
use crate::metrics::outliers::outlier_features;

/// What to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Tokens per chunk of the text.
    pub ctx: usize,
    /// Most chunks of the text to use (`None`: all).
    pub chunks: Option<usize>,
    /// Outlier magnitude threshold (6 in LLM.int8()).
    pub threshold: f32,
    /// A prompt for the logit lens.
    pub lens_prompt: Option<String>,
    /// Tokens shown per layer by the logit lens.
    pub lens_top: usize,
    /// Threads (`None`: every core).
    pub threads: Option<usize>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ctx: 256,
            chunks: Some(2),
            threshold: 6.0,
            lens_prompt: None,
            lens_top: 5,
            threads: None,
        }
    }
}

/// Why probing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The model could not be run.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The options or the text do not allow a measurement.
    #[error("{0}")]
    Invalid(String),
    /// A metric could not be computed.
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
}

/// Matrix entropy of the final normed states.
#[derive(Debug, Serialize)]
pub struct EntropyReport {
    /// Rows (tokens).
    pub rows: usize,
    /// Width of a state.
    pub dim: usize,
    /// Entropy in nats.
    pub entropy: f64,
    /// Entropy / ln dim.
    pub normalized: f64,
    /// exp(entropy).
    pub effective_rank: f64,
}

/// One layer's count at one site.
#[derive(Debug, Serialize)]
pub struct LayerOutliers {
    /// The layer.
    pub layer: usize,
    /// Dimensions with any value at or over the threshold.
    pub dims_over_threshold: usize,
    /// Largest |value| at this site and layer.
    pub max_abs: f32,
}

/// Outlier features at one site.
#[derive(Debug, Serialize)]
pub struct SiteOutliers {
    /// `attn_input`, `attn_output` or `ffn_input`.
    pub site: &'static str,
    /// Outlier dimensions, union reading of the 6% rule.
    pub dims: Vec<usize>,
    /// Outlier dimensions, pooled reading.
    pub dims_pooled: Vec<usize>,
    /// Share of layers where an outlier dimension (union reading) reaches the threshold.
    pub layers_affected: f64,
    /// Share of positions where one does.
    pub positions_affected: f64,
    /// Largest magnitude among the outlier dimensions.
    pub max_magnitude: f64,
    /// Per layer.
    pub per_layer: Vec<LayerOutliers>,
}

/// The logit lens at one layer.
#[derive(Debug, Serialize)]
pub struct LensLayer {
    /// The block whose output was read.
    pub layer: usize,
    /// Most likely tokens: (id, text, probability).
    pub top: Vec<(u32, String, f64)>,
}

/// The logit lens for a prompt.
#[derive(Debug, Serialize)]
pub struct LensReport {
    /// The prompt.
    pub prompt: String,
    /// Its tokens.
    pub tokens: usize,
    /// Per layer, bottom to top.
    pub layers: Vec<LensLayer>,
}

/// Everything `probe` measured.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// Tokens of the text that were evaluated.
    pub tokens: usize,
    /// Chunks they were evaluated in.
    pub chunks: usize,
    /// The outlier threshold used.
    pub threshold: f32,
    /// Matrix entropy of the final normed states.
    pub matrix_entropy: EntropyReport,
    /// Outlier features per site.
    pub outliers: Vec<SiteOutliers>,
    /// The logit lens, when a prompt was given.
    pub logit_lens: Option<LensReport>,
}

impl ProbeReport {
    /// Text tables: matrix entropy, outlier features per site and layer, and the logit lens.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let e = &self.matrix_entropy;
        let _ = writeln!(
            out,
            "{} tokens in {} chunks; final normed states ({} × {}): matrix entropy {:.4} nats, normalized {:.4}, effective rank {:.1}",
            self.tokens, self.chunks, e.rows, e.dim, e.entropy, e.normalized, e.effective_rank
        );
        let _ = writeln!(out, "\noutlier features (|x| ≥ {}):", self.threshold);
        for s in &self.outliers {
            let _ = writeln!(
                out,
                "  {:<12} dims {:?} (pooled reading {:?}), layers {:.0}%, positions {:.0}%, max {:.1}",
                s.site,
                s.dims,
                s.dims_pooled,
                100.0 * s.layers_affected,
                100.0 * s.positions_affected,
                s.max_magnitude
            );
            let per: Vec<String> = s
                .per_layer
                .iter()
                .map(|l| format!("{}:{}/{:.0}", l.layer, l.dims_over_threshold, l.max_abs))
                .collect();
            let _ = writeln!(
                out,
                "    per layer (dims over threshold / max |x|): {}",
                per.join(" ")
            );
        }
        if let Some(lens) = &self.logit_lens {
            let _ = writeln!(
                out,
                "\nlogit lens at the last of {} tokens of {:?}:",
                lens.tokens, lens.prompt
            );
            for l in &lens.layers {
                let top: Vec<String> = l
                    .top
                    .iter()
                    .map(|(_, p, prob)| format!("{p:?} {prob:.3}"))
                    .collect();
                let _ = writeln!(out, "  {:>3}  {}", l.layer, top.join(", "));
            }
        }
        out
    }
}

const SITES: [&str; 3] = ["attn_input", "attn_output", "ffn_input"];

/// What the hook keeps: per site and layer the states of every token so far, and the final
/// normed states.
#[derive(Default)]
struct Captured {
    sites: Vec<Vec<Vec<f32>>>,
    final_norm: Vec<f32>,
}

/// Probes `model` (run on the native engine) on `text`.
pub fn probe(model: &Path, text: &[u8], opts: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    if opts.ctx < 2 {
        return Err(ProbeError::Invalid("--ctx must be at least 2".into()));
    }
    let m = engine::backend::open_native(model)?;
    let (n_layer, d) = (m.config().n_layer, m.config().n_embd);
    // The attention output is all query heads wide (wider than the embedding for Gemma 3).
    let widths = [d, m.config().q_dim(), d];
    let mut b = m.new_context(opts.ctx.max(64) as u32, 1)?;
    if let Some(t) = opts.threads {
        b = b.with_threads(t)?;
    }
    let tokens = b.tokenize(text, TokenizeOptions::default())?;
    let mut chunks: Vec<&[u32]> = tokens.chunks(opts.ctx).filter(|c| c.len() >= 2).collect();
    if let Some(n) = opts.chunks {
        chunks.truncate(n);
    }
    if chunks.is_empty() {
        return Err(ProbeError::Invalid(format!(
            "the text has {} tokens: too few to probe",
            tokens.len()
        )));
    }
    let captured = Arc::new(Mutex::new(Captured {
        sites: vec![vec![Vec::new(); n_layer]; SITES.len()],
        final_norm: Vec::new(),
    }));
    let sink = Arc::clone(&captured);
    b.set_hook(Some(Box::new(move |h: &HookData<'_>| {
        let mut c = sink.lock().expect("the probe's hook never panics");
        let (site, layer) = match h.point {
            HookPoint::AttnInput(l) => (0, l),
            HookPoint::AttnOutput(l) => (1, l),
            HookPoint::FfnInput(l) => (2, l),
            HookPoint::FinalNorm => {
                c.final_norm.extend_from_slice(h.hidden);
                return;
            }
            _ => return,
        };
        c.sites[site][layer].extend_from_slice(h.hidden);
    })));
    let mut logits = Logits::new(0);
    let mut batch = Batch::new();
    let mut n_tokens = 0;
    for chunk in &chunks {
        b.clear()?;
        batch.clear();
        // Logits for every row, so that the final norm is seen for every token.
        batch.add_sequence(chunk, 0, 0, true);
        b.decode(&batch, &mut logits)?;
        n_tokens += chunk.len();
    }
    b.set_hook(None);
    let captured = std::mem::take(&mut *captured.lock().expect("no panics while probing"));

    let rows: Vec<f64> = captured.final_norm.iter().map(|&v| v as f64).collect();
    let me = matrix_entropy(&rows, n_tokens, d)?;
    let outliers = SITES
        .iter()
        .zip(&captured.sites)
        .zip(widths)
        .map(|((&site, layers), d)| {
            let r = outlier_features(layers, n_tokens, d, opts.threshold);
            let per_layer = layers
                .iter()
                .enumerate()
                .map(|(layer, states)| {
                    let over = (0..d)
                        .filter(|&j| {
                            states
                                .chunks_exact(d)
                                .any(|row| row[j].abs() >= opts.threshold)
                        })
                        .count();
                    LayerOutliers {
                        layer,
                        dims_over_threshold: over,
                        max_abs: states.iter().fold(0f32, |a, &v| a.max(v.abs())),
                    }
                })
                .collect();
            SiteOutliers {
                site,
                dims: r.dims,
                dims_pooled: r.dims_pooled,
                layers_affected: r.layers_affected,
                positions_affected: r.positions_affected,
                max_magnitude: r.max_magnitude,
                per_layer,
            }
        })
        .collect();
    let logit_lens = match &opts.lens_prompt {
        None => None,
        Some(p) => Some(lens(&m, &mut b, p, opts.lens_top)?),
    };
    Ok(ProbeReport {
        tokens: n_tokens,
        chunks: chunks.len(),
        threshold: opts.threshold,
        matrix_entropy: EntropyReport {
            rows: n_tokens,
            dim: d,
            entropy: me.entropy,
            normalized: me.normalized,
            effective_rank: me.effective_rank,
        },
        outliers,
        logit_lens,
    })
}

/// The logit lens at the last position of `prompt`.
fn lens(
    m: &NativeModel,
    b: &mut engine::native::NativeContext<'_>,
    prompt: &str,
    top: usize,
) -> Result<LensReport, ProbeError> {
    let tokens = b.tokenize(prompt.as_bytes(), TokenizeOptions::default())?;
    if tokens.is_empty() || tokens.len() > b.n_ctx() as usize {
        return Err(ProbeError::Invalid(format!(
            "the lens prompt has {} tokens; it needs 1 to {}",
            tokens.len(),
            b.n_ctx()
        )));
    }
    let last: Arc<Mutex<Vec<Vec<f32>>>> = Arc::default();
    let sink = Arc::clone(&last);
    b.set_hook(Some(Box::new(move |h: &HookData<'_>| {
        if let HookPoint::Block(_) = h.point {
            let n = h.rows.len();
            sink.lock()
                .expect("the lens hook never panics")
                .push(h.row(n - 1).to_vec());
        }
    })));
    b.clear()?;
    let mut batch = Batch::new();
    batch.add_sequence(&tokens, 0, 0, false);
    let mut logits = Logits::new(0);
    let result = b.decode(&batch, &mut logits);
    b.set_hook(None);
    result?;
    let states = std::mem::take(&mut *last.lock().expect("no panics in the lens"));
    let flat: Vec<f32> = states.concat();
    let all = m.head_logits(&flat)?;
    let n_vocab = all.len() / states.len();
    let mut layers = Vec::with_capacity(states.len());
    for (layer, row) in all.chunks_exact(n_vocab).enumerate() {
        let best = engine::sampling::top_logprobs(row, top).map_err(BackendError::from)?;
        let top = best
            .into_iter()
            .map(|(t, lp)| {
                let piece = String::from_utf8_lossy(&b.token_piece(t)?).into_owned();
                Ok((t, piece, lp.exp()))
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        layers.push(LensLayer { layer, top });
    }
    Ok(LensReport {
        prompt: prompt.to_owned(),
        tokens: tokens.len(),
        layers,
    })
}
