//! Hooks into the native forward pass: a [`ForwardHook`] attached with
//! [`crate::native::NativeContext::set_hook`] is called, for the rows being evaluated, with
//! every transformer block's output hidden states, with the inputs of its projections (where
//! LLM.int8()'s outlier features are looked for), and with the final normed states. Probes,
//! activation statistics and quantization studies read the model's inside through it.
//!
//! Without a hook the forward pass only tests an `Option` per block. A hook sees the states
//! before the next block reads them and cannot change them.
//!
//! ```
//! use engine::hooks::{HookData, HookPoint};
//!
//! // Any `FnMut(&HookData)` is a hook: here, the mean square of each block's output.
//! let mut energy: Vec<(usize, f64)> = Vec::new();
//! let mut hook = |d: &HookData<'_>| {
//!     if let HookPoint::Block(layer) = d.point {
//!         let ms = d.hidden.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d.hidden.len() as f64;
//!         energy.push((layer, ms));
//!     }
//! };
//! # use engine::hooks::ForwardHook;
//! # let batch = engine::backend::Batch::new();
//! # hook.on(&HookData { point: HookPoint::Block(0), batch: &batch, rows: &[], n_embd: 1, hidden: &[2.0] });
//! # drop(hook);
//! # assert_eq!(energy, vec![(0, 4.0)]);
//! ```

use crate::backend::Batch;

/// Where in the forward pass a hook is called, in the order the points come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    /// Block `n`'s normed input to the query, key and value projections.
    AttnInput(usize),
    /// Block `n`'s attention result, the input to the output projection (`n_head × head_dim`
    /// values per row, head by head).
    AttnOutput(usize),
    /// Block `n`'s normed input to the feed-forward gate and up projections.
    FfnInput(usize),
    /// After transformer block `n` (0-based): the residual stream it outputs.
    Block(usize),
    /// After the final norm, just before the output head.
    FinalNorm,
}

/// What a hook sees at one point of one forward pass.
#[derive(Clone, Copy, Debug)]
pub struct HookData<'a> {
    /// Where.
    pub point: HookPoint,
    /// The batch being evaluated.
    pub batch: &'a Batch,
    /// The batch rows the states belong to, in order: every row after a block, the rows that
    /// asked for logits after the final norm.
    pub rows: &'a [usize],
    /// Width of one state.
    pub n_embd: usize,
    /// `rows.len() × n_embd` values, row-major.
    pub hidden: &'a [f32],
}

impl HookData<'_> {
    /// The state of the `i`-th row in [`HookData::rows`].
    pub fn row(&self, i: usize) -> &[f32] {
        &self.hidden[i * self.n_embd..(i + 1) * self.n_embd]
    }
}

/// Called by the native forward pass at each [`HookPoint`].
pub trait ForwardHook: Send {
    /// Receives the states at one point.
    fn on(&mut self, data: &HookData<'_>);
}

impl<F: FnMut(&HookData<'_>) + Send> ForwardHook for F {
    fn on(&mut self, data: &HookData<'_>) {
        self(data)
    }
}
