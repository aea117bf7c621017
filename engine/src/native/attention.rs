//! Attention for one row over its sequence's cache cells, with llama.cpp's rounding.

use quant::dot::{gathered_axpy, gathered_dots, Gather, KernelError};

use crate::kv::KvCache;
use crate::numerics;

/// What [`attend`] needs to know about one layer's attention.
pub(super) struct AttnShape {
    pub(super) layer: usize,
    pub(super) n_head: usize,
    /// Query heads per key/value head.
    pub(super) group: usize,
    pub(super) head_dim: usize,
    /// What the scores are multiplied by: `1/√head_dim` (Llama), or 1 where the queries were
    /// scaled before (Gemma).
    pub(super) scale: f32,
}

thread_local! {
    /// Per-thread attention scores and cell lists, reused across rows and calls.
    pub(super) static ATTN_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One row's attention over the cache cells `slots` (its positions in order): every query
/// head against its key/value head, softmax, and the probabilities (rounded to f16, as
/// llama.cpp's non-flash attention does) times the values into `out` (`n_head × head_dim`).
/// The query heads that share a key/value head go together, so that each cached row is read
/// once per group; each head's arithmetic is its own, in cell order, whatever the batch.
pub(super) fn attend(
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
