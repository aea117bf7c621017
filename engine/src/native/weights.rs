//! Where a model's weights are: each matrix's tensor, type and shape, per layer.

use quant::GgmlType;

/// A weight matrix: where it is in the file and its shape.
#[derive(Clone, Debug)]
pub(super) struct Weight {
    pub(super) name: String,
    pub(super) ty: GgmlType,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) wq: Weight,
    pub(super) wk: Weight,
    pub(super) wv: Weight,
    /// Query, key and value biases (qwen2; none for llama).
    pub(super) biases: Option<[Vec<f32>; 3]>,
    /// RMSNorm weights of each query head and each key head (Gemma 3), `head_dim` each.
    pub(super) qk_norm: Option<[Vec<f32>; 2]>,
    /// RMSNorm weights applied to the attention output and to the feed-forward output before
    /// each is added to the residual stream (Gemma 3's `post_attention_norm` and
    /// `post_ffw_norm`).
    pub(super) post_norms: Option<[Vec<f32>; 2]>,
    pub(super) wo: Weight,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) gate: Weight,
    pub(super) up: Weight,
    pub(super) down: Weight,
}
