//! The native context ([`NativeContext`]): its KV cache and buffers, and the forward pass
//! over a batch of rows of many sequences.

use std::sync::Arc;

use quant::gemm::{matmul, matmul_exact, matmul_many, matmul_many_exact, Scratch};
use quant::panels::{matmul_panel, matmul_panels, PanelMatrix};

use super::attention::{attend, AttnShape, ATTN_SCRATCH};
use super::rope::{rope, RopePlan};
use super::weights::Weight;
use super::NativeModel;
use crate::backend::{Activations, BackendError, Batch, Context, Logits, Model, Pos, SeqId};
use crate::hooks::{ForwardHook, HookData, HookPoint};
use crate::kv::KvCache;
use crate::numerics;

/// A native inference context: its model, the KV cache and reusable buffers. `'h` bounds
/// what an attached hook may borrow.
pub struct NativeContext<'h> {
    pub(super) model: Arc<NativeModel>,
    pub(super) n_ctx: u32,
    pub(super) max_sequences: u32,
    pub(super) kv: KvCache,
    pub(super) scratch: Scratch,
    /// RoPE rotations for any position.
    pub(super) rope: RopePlan,
    /// The sliding-window layers' own rotations, for models that have such layers.
    pub(super) rope_local: Option<RopePlan>,
    /// 8-bit activations as llama.cpp, or exact ones.
    pub(super) activations: Activations,
    /// Threads of its own, or rayon's global pool.
    pub(super) pool: Option<rayon::ThreadPool>,
    /// The threads that run the forward pass's parallel steps (see [`quant::par`]), as many
    /// as the pool's, started at the first pass.
    pub(super) team: Option<quant::par::Team>,
    /// Whether passes run their steps on `team` (else on the pool).
    pub(super) use_team: bool,
    /// Activations and scratch, grown to the largest batch seen.
    pub(super) bufs: Buffers,
    /// Called with each block's output and the final norm, if attached.
    pub(super) hook: Option<Box<dyn ForwardHook + 'h>>,
}

/// One forward pass's working memory (`n` rows): hidden states `x` and normed `h` (n × d),
/// projections `q` (n × q_dim), `k`/`v` (n × kv), attention output `att` (n × q_dim) and
/// block output `o` (n × d), FFN gate/up `g`/`u` (n × ff), and for the rows that want logits
/// their final norm `hn` (× d); their logits are written straight into the caller's
/// [`Logits`].
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) x: Vec<f32>,
    pub(super) h: Vec<f32>,
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) att: Vec<f32>,
    pub(super) o: Vec<f32>,
    pub(super) g: Vec<f32>,
    pub(super) u: Vec<f32>,
    pub(super) hn: Vec<f32>,
    /// Each row's RoPE `(sin, cos)` per frequency.
    pub(super) rot: Vec<(f32, f32)>,
    /// The same for the sliding-window layers' RoPE, when they have their own.
    pub(super) rot_local: Vec<(f32, f32)>,
    pub(super) all_rows: Vec<usize>,
    /// Each row's cells for positions `0..=pos` of its first sequence, one list after another
    /// (row `i`'s ends at `slot_ends[i]`); empty when the pass lists them per task instead
    /// (see [`SHARED_SLOTS_MAX`]).
    pub(super) slots: Vec<u32>,
    pub(super) slot_ends: Vec<usize>,
}

/// The row indices `0..n` (grown in `all` as needed).
fn bufs_rows(all: &mut Vec<usize>, n: usize) -> &[usize] {
    if all.len() < n {
        let from = all.len();
        all.extend(from..n);
    }
    &all[..n]
}

/// `x += o` row by row, with `o` first normed by `norm` where the block norms its outputs
/// (Gemma's post-norms; `o` is overwritten then).
fn add_residual(x: &mut [f32], o: &mut [f32], norm: Option<&Vec<f32>>, eps: f32, d: usize) {
    if let Some(w) = norm {
        each_row(o, d, |_, row| numerics::rms_norm_in_place(row, w, eps));
    }
    let o: &[f32] = o;
    each_row(x, d, |i, row| {
        for (a, b) in row.iter_mut().zip(&o[i * d..(i + 1) * d]) {
            *a += b;
        }
    });
}

/// The most cells listed once per pass for attention (4 MiB of cell indices: the rows of a
/// prompt of about 1,400 tokens); beyond, each task lists its own.
const SHARED_SLOTS_MAX: usize = 1 << 20;

/// Rows from which a step's work row by row (norms, RoPE, SwiGLU, residuals) is shared among
/// the threads: a prompt's or a batch of sequences' rows, not a single sequence's step (where
/// handing the work out would cost more than it).
const PAR_ROWS: usize = 8;

/// `f(i, row)` for each `width`-value row `i` of `data`, in parallel from [`PAR_ROWS`] rows on.
/// Each row's arithmetic is its own, so the split changes no bit.
fn each_row(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if width == 0 {
        return;
    }
    match data.len() / width >= PAR_ROWS {
        true => quant::par::for_each_chunk(data, width, f),
        false => data
            .chunks_exact_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row)),
    }
}

impl<'h> NativeContext<'h> {
    /// [`Context::decode`] with the buffers taken out of `self` (so that `self.mm` can run).
    fn forward(
        &mut self,
        batch: &Batch,
        out: &mut Logits,
        bufs: &mut Buffers,
    ) -> Result<(), BackendError> {
        batch.validate(&*self)?;
        let model = Arc::clone(&self.model);
        let model = &*model;
        out.clear(model.info.n_vocab);
        let c = &model.config;
        let (d, kv, hd, qd) = (c.n_embd, c.kv_dim(), c.head_dim, c.q_dim());
        let n = batch.len();
        // One cache cell per row, shared by the row's sequences (positions were checked
        // against the context by `validate`).
        let cells = self.kv.assign(batch)?;
        // Embeddings: one dequantized row per token.
        let Buffers {
            x,
            h,
            q,
            k,
            v,
            att,
            o,
            g,
            u,
            hn,
            rot,
            rot_local,
            all_rows,
            slots,
            slot_ends,
        } = bufs;
        // Hooks see every row after each block: the indices 0..n.
        let rows = bufs_rows(all_rows, n);
        x.resize(n * d, 0.0);
        let embd = model.matrix(&model.embd);
        let row_bytes = embd.data().len() / embd.rows();
        for (row, xr) in batch.rows().zip(x.chunks_exact_mut(d)) {
            let t = row.token as usize;
            quant::formats::dequantize_bytes(
                embd.ty(),
                &embd.data()[t * row_bytes..(t + 1) * row_bytes],
                xr,
            )
            .map_err(|e| BackendError::Decode(e.to_string()))?;
            if c.embd_scale != 1.0 {
                for v in xr.iter_mut() {
                    *v *= c.embd_scale;
                }
            }
        }
        h.resize(n * d, 0.0);
        q.resize(n * qd, 0.0);
        k.resize(n * kv, 0.0);
        v.resize(n * kv, 0.0);
        att.resize(n * qd, 0.0);
        o.resize(n * d, 0.0);
        g.resize(n * c.n_ff, 0.0);
        u.resize(n * c.n_ff, 0.0);
        let nf = self.rope.pairs.len();
        rot.clear();
        rot_local.clear();
        for row in batch.rows() {
            self.rope.rotations(row.pos, rot);
            if let Some(local) = &self.rope_local {
                local.rotations(row.pos, rot_local);
            }
        }
        // Llama scales the scores; Gemma its queries, before they are rounded to meet the
        // f16 keys.
        let (q_scale, score_scale) = match c.family.gemma() {
            true => (Some(c.attn_scale), 1.0),
            false => (None, c.attn_scale),
        };
        let group = c.n_head / c.n_head_kv;
        // The cells each row attends to in the layers that see the whole history: the same
        // in every layer of the pass (the cells were assigned above), so listed once, unless
        // the lists would be long (they hold Σ (pos + 1) cells over the rows, which grows with
        // the square of a prompt's length) or no layer reads them; then each task lists its
        // own, as the sliding-window layers do.
        let total: usize = batch.rows().map(|r| r.pos as usize + 1).sum();
        let shared = total <= SHARED_SLOTS_MAX && (0..model.layers.len()).any(|l| !c.is_local(l));
        slots.clear();
        slot_ends.clear();
        if shared {
            for row in batch.rows() {
                slots.extend(self.kv.cells_up_to(row.seqs[0], row.pos).flatten());
                slot_ends.push(slots.len());
            }
        }
        let (slots, slot_ends): (&[u32], &[usize]) = (slots, slot_ends);
        for (l, layer) in model.layers.iter().enumerate() {
            let local = c.is_local(l);
            let window = c.sliding_window.as_ref().map_or(0, |w| w.size);
            let rot_l: &[(f32, f32)] = match local {
                true if self.rope_local.is_some() => rot_local,
                _ => rot,
            };
            each_row(h, d, |i, hr| {
                numerics::rms_norm(&x[i * d..(i + 1) * d], &layer.attn_norm, c.rms_eps, hr)
            });
            self.call_hook(HookPoint::AttnInput(l), batch, rows, d, h);
            self.mm_many([&layer.wq, &layer.wk, &layer.wv], h, [q, k, v])?;
            if let Some([bq, bk, bv]) = &layer.biases {
                for (out, bias) in [(&mut *q, bq), (&mut *k, bk), (&mut *v, bv)] {
                    for row in out.chunks_exact_mut(bias.len()) {
                        for (x, b) in row.iter_mut().zip(bias) {
                            *x += b;
                        }
                    }
                }
            }
            // Per-head query and key norms (Gemma), RoPE, the queries' scale (Gemma) and the
            // rounding to f16 (the cache holds f16 values, as llama.cpp's does; queries meet
            // it in f16), row by row in each buffer; then keys and values into the row's cell.
            let neox = c.rope_neox;
            let qk_norm = layer.qk_norm.as_ref();
            let prepare = |i: usize, x: &mut [f32], norm: Option<&Vec<f32>>, scale: Option<f32>| {
                if let Some(w) = norm {
                    for head in x.chunks_exact_mut(hd) {
                        numerics::rms_norm_in_place(head, w, c.rms_eps);
                    }
                }
                rope(x, hd, &rot_l[i * nf..(i + 1) * nf], neox);
                if let Some(s) = scale {
                    for x in x.iter_mut() {
                        *x *= s;
                    }
                }
                numerics::round_to_f16(x);
            };
            each_row(q, qd, |i, qi| {
                prepare(i, qi, qk_norm.map(|[w, _]| w), q_scale)
            });
            each_row(k, kv, |i, ki| prepare(i, ki, qk_norm.map(|[_, w]| w), None));
            each_row(v, kv, |_, vi| numerics::round_to_f16(vi));
            for (i, &cell) in cells.iter().enumerate() {
                self.kv
                    .write(l, cell, &k[i * kv..(i + 1) * kv], &v[i * kv..(i + 1) * kv]);
            }
            // Attention over the row's first sequence (its other sequences share the same
            // history), positions 0..=pos that hold entries, in position order; rows and
            // key/value heads in parallel, each computed the same way whatever the batch.
            // One task per row and key/value head (its group of query heads, so that each
            // cached row is read once per group), or per row and query head where that would
            // leave threads idle (a single row's decoding step): each head's arithmetic is
            // its own either way, so the split changes no bit.
            let n_kv = c.n_head / group;
            let split = n * n_kv < 2 * quant::par::current_threads();
            let (heads, tasks_per_row) = match split {
                true => (1, c.n_head),
                false => (group, n_kv),
            };
            let shape = AttnShape {
                layer: l,
                group: heads,
                head_dim: hd,
                scale: score_scale,
                sequential: self.activations == Activations::Q8Fast,
            };
            let cache = &self.kv;
            let q: &[f32] = q;
            let gd = heads * hd;
            let work = |(t, out): (usize, &mut [f32])| {
                let (i, j) = (t / tasks_per_row, t % tasks_per_row);
                // The key/value head this task's query heads read.
                let hk = j * heads / group;
                let row = batch.row(i);
                ATTN_SCRATCH.with_borrow_mut(|(scores, own)| {
                    let slots = match (local, shared) {
                        (false, true) => {
                            &slots[i.checked_sub(1).map_or(0, |p| slot_ends[p])..slot_ends[i]]
                        }
                        _ => {
                            // A local layer sees the `window` positions ending at the row's
                            // own (a window wider than any position sees everything).
                            let from = match local {
                                true => (row.pos + 1)
                                    .saturating_sub(window.try_into().unwrap_or(u32::MAX)),
                                false => 0,
                            };
                            own.clear();
                            own.extend(cache.cells_between(row.seqs[0], from, row.pos).flatten());
                            &own[..]
                        }
                    };
                    let q = &q[i * qd + j * gd..i * qd + (j + 1) * gd];
                    attend(cache, &shape, hk, q, slots, scores, out)
                })
            };
            quant::par::try_for_each_chunk(att, gd, |t, out| work((t, out)))
                .map_err(|e| BackendError::Decode(format!("attention of layer {l}: {e}")))?;
            self.call_hook(HookPoint::AttnOutput(l), batch, rows, qd, att);
            self.mm(&layer.wo, att, o)?;
            let post = layer.post_norms.as_ref();
            add_residual(x, o, post.map(|[a, _]| a), c.rms_eps, d);
            // The feed-forward block: SwiGLU, or GeGLU for Gemma.
            each_row(h, d, |i, hr| {
                numerics::rms_norm(&x[i * d..(i + 1) * d], &layer.ffn_norm, c.rms_eps, hr)
            });
            self.call_hook(HookPoint::FfnInput(l), batch, rows, d, h);
            self.mm_many([&layer.gate, &layer.up], h, [g, u])?;
            let ff = c.n_ff;
            each_row(g, ff, |i, gr| match c.family.gemma() {
                true => numerics::geglu(gr, &u[i * ff..(i + 1) * ff]),
                false => numerics::swiglu(gr, &u[i * ff..(i + 1) * ff]),
            });
            self.mm(&layer.down, g, o)?;
            add_residual(x, o, post.map(|[_, f]| f), c.rms_eps, d);
            self.call_hook(HookPoint::Block(l), batch, rows, d, x);
        }
        // Final norm and the output head, for the rows that want logits.
        let wanted: Vec<usize> = batch
            .rows()
            .enumerate()
            .filter(|(_, r)| r.logits)
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        hn.resize(wanted.len() * d, 0.0);
        for (&i, hr) in wanted.iter().zip(hn.chunks_exact_mut(d)) {
            numerics::rms_norm(&x[i * d..(i + 1) * d], &model.output_norm, c.rms_eps, hr);
        }
        if let Some(hook) = self.hook.as_mut() {
            hook.on(&HookData {
                point: HookPoint::FinalNorm,
                batch,
                rows: &wanted,
                n_embd: d,
                hidden: hn,
            });
        }
        let logits = out.rows_mut(wanted.len());
        if let Err(e) = self.mm(&model.output, hn, logits) {
            out.clear(c.n_vocab);
            return Err(e);
        }
        if let Some(cap) = c.final_softcap {
            numerics::softcap(logits, cap);
        }
        Ok(())
    }

    /// Runs the matrix products on `threads` threads of this backend's own (rayon's global
    /// pool, one thread per core, otherwise).
    pub fn with_threads(mut self, threads: usize) -> Result<Self, BackendError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| BackendError::Context(e.to_string()))?;
        self.pool = Some(pool);
        // Started again, with the pool's number of threads, at the next pass.
        self.team = None;
        Ok(self)
    }

    /// Multiplies with 8-bit activations as llama.cpp (the default), with 8-bit activations
    /// on repacked weights (`Q8Fast`: the model's panels are built now if they are not yet),
    /// or with exact activations.
    pub fn with_activations(mut self, activations: Activations) -> Self {
        self.activations = activations;
        if activations == Activations::Q8Fast {
            match &self.pool {
                Some(pool) => pool.install(|| self.model.panels()),
                None => self.model.panels(),
            };
        }
        self
    }

    /// The activation mode.
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// Calls the hook, if any, with the states `hidden` of the rows `rows` at `point`.
    fn call_hook(
        &mut self,
        point: HookPoint,
        batch: &Batch,
        rows: &[usize],
        n_embd: usize,
        hidden: &[f32],
    ) {
        if let Some(hook) = self.hook.as_mut() {
            hook.on(&HookData {
                point,
                batch,
                rows,
                n_embd,
                hidden,
            });
        }
    }

    /// Attaches a hook called with every block's output and the final normed states (see
    /// [`crate::hooks`]), or detaches it with `None`; returns the previous one.
    pub fn set_hook(
        &mut self,
        hook: Option<Box<dyn ForwardHook + 'h>>,
    ) -> Option<Box<dyn ForwardHook + 'h>> {
        std::mem::replace(&mut self.hook, hook)
    }

    fn check_seq(&self, seq: SeqId) -> Result<(), BackendError> {
        if seq >= self.max_sequences {
            return Err(BackendError::SequenceOutOfRange {
                seq,
                max: self.max_sequences,
            });
        }
        Ok(())
    }

    fn mm(&mut self, w: &Weight, x: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
        let m = self.model.matrix(w);
        // `decode` runs the pass inside this backend's pool, if it has one.
        match self.activations {
            Activations::Q8Fast => match self.model.panel(w) {
                Some(p) => matmul_panel(p, x, out, &mut self.scratch),
                None => matmul(&m, x, out, &mut self.scratch),
            },
            Activations::Q8 => matmul(&m, x, out, &mut self.scratch),
            Activations::Exact => matmul_exact(&m, x, out, &mut self.scratch),
        }
        .map_err(|e| BackendError::Decode(format!("{}: {e}", w.name)))
    }

    /// `outs[i] = x · ws[i]ᵀ`: in one parallel step where the matrices share a type and width
    /// (as a block's projections of one input usually do), else one by one.
    fn mm_many<const N: usize>(
        &mut self,
        ws: [&Weight; N],
        x: &[f32],
        mut outs: [&mut [f32]; N],
    ) -> Result<(), BackendError> {
        let same = ws
            .windows(2)
            .all(|p| (p[0].ty, p[0].cols) == (p[1].ty, p[1].cols));
        if !same {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.mm(w, x, out)?;
            }
            return Ok(());
        }
        let ms = ws.map(|w| self.model.matrix(w));
        // All the matrices' panels, or none.
        let panels: Option<Vec<&PanelMatrix>> = match self.activations {
            Activations::Q8Fast => ws.iter().map(|w| self.model.panel(w)).collect(),
            _ => None,
        };
        match (self.activations, panels) {
            (Activations::Q8Fast, Some(ps)) => matmul_panels(&ps, x, &mut outs, &mut self.scratch),
            (Activations::Q8 | Activations::Q8Fast, _) => {
                matmul_many(&ms, x, &mut outs, &mut self.scratch)
            }
            (Activations::Exact, _) => matmul_many_exact(&ms, x, &mut outs, &mut self.scratch),
        }
        .map_err(|e| {
            let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
            BackendError::Decode(format!("{}: {e}", names.join(", ")))
        })
    }
}

impl Context for NativeContext<'_> {
    fn model(&self) -> &dyn Model {
        &*self.model
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    fn max_sequences(&self) -> u32 {
        self.max_sequences
    }

    fn decode(&mut self, batch: &Batch, out: &mut Logits) -> Result<(), BackendError> {
        if self.use_team && self.team.is_none() {
            let threads = self
                .pool
                .as_ref()
                .map_or_else(rayon::current_num_threads, |p| p.current_num_threads());
            self.team = Some(super::team(threads)?);
        }
        let mut bufs = std::mem::take(&mut self.bufs);
        // The whole pass runs with the team installed, or inside the pool, so that its
        // parallel steps are joins among running workers rather than one hand-off from outside
        // the pool per step.
        let result = match (self.team.take(), self.pool.take()) {
            (Some(team), pool) => {
                self.pool = pool;
                let r = team.install(|| self.forward(batch, out, &mut bufs));
                self.team = Some(team);
                r
            }
            (None, Some(pool)) => {
                let r = pool.install(|| self.forward(batch, out, &mut bufs));
                self.pool = Some(pool);
                r
            }
            (None, None) => self.forward(batch, out, &mut bufs),
        };
        self.bufs = bufs;
        result
    }

    fn copy_sequence(&mut self, src: SeqId, dst: SeqId) -> Result<(), BackendError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        self.kv.copy_sequence(src, dst);
        Ok(())
    }

    fn remove_sequence(
        &mut self,
        seq: SeqId,
        from: Pos,
        to: Option<Pos>,
    ) -> Result<(), BackendError> {
        self.check_seq(seq)?;
        self.kv.remove(seq, from, to);
        Ok(())
    }

    fn clear(&mut self) -> Result<(), BackendError> {
        self.kv.clear();
        Ok(())
    }
}
