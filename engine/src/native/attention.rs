//! Attention for one row over its sequence's cache cells, with llama.cpp's rounding (or, for
//! `q8-fast`, the values summed in sequence order).

use quant::dot::{gathered_axpy, gathered_dots, sequential_axpy, Gather, KernelError};

use crate::kv::KvCache;
use crate::numerics;

/// What [`attend`] needs to know about one layer's attention.
pub(super) struct AttnShape {
    pub(super) layer: usize,
    /// Query heads per call: all those that share a key/value head, or fewer.
    pub(super) group: usize,
    pub(super) head_dim: usize,
    /// What the scores are multiplied by: `1/√head_dim` (Llama), or 1 where the queries were
    /// scaled before (Gemma).
    pub(super) scale: f32,
    /// Sum the weighted values of each output element in one chain in cell order
    /// ([`sequential_axpy`], `q8-fast`) rather than in llama.cpp's lanes and tree
    /// ([`gathered_axpy`]).
    pub(super) sequential: bool,
}

thread_local! {
    /// Per-thread attention scores and cell lists, reused across rows and calls.
    pub(super) static ATTN_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One row's attention over the cache cells `slots` (its positions in order) for the query
/// heads of key/value head `hk`: each of them against the key/value head, softmax, and the
/// probabilities (rounded to f16, as llama.cpp's non-flash attention does) times the values
/// into `out` (`group × head_dim`, from `q`'s `group × head_dim` queries). The query heads
/// that share a key/value head go together, so that each cached row is read once per group;
/// each head's arithmetic is its own, in cell order, whatever the batch and however the heads
/// are spread over threads.
pub(super) fn attend(
    cache: &KvCache,
    a: &AttnShape,
    hk: usize,
    q: &[f32],
    slots: &[u32],
    scores: &mut Vec<f32>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let (hd, n, group) = (a.head_dim, slots.len(), a.group);
    scores.clear();
    scores.resize(group * n, 0.0);
    let keys = Gather::new_f16(cache.keys(a.layer, hk), hd, 0, hd, slots)?;
    gathered_dots(q, &keys, scores)?;
    for s in scores.chunks_exact_mut(n.max(1)) {
        for x in s.iter_mut() {
            *x *= a.scale;
        }
        numerics::softmax(s);
        numerics::round_to_f16(s);
    }
    let values = Gather::new_f16(cache.values(a.layer, hk), hd, 0, hd, slots)?;
    out.fill(0.0);
    match a.sequential {
        true => sequential_axpy(scores, &values, out)?,
        false => gathered_axpy(scores, &values, out)?,
    }
    Ok(())
}
