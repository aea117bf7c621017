//! Quantized matrix products: a weight matrix (rows × cols of any supported type, as stored in
//! a GGUF file) times a batch of f32 activation rows, giving batch × rows f32 outputs.
//!
//! The activation rows are quantized once per call into the weights' partner format. Weight
//! rows are split into chunks of about 16 KiB, and rayon spreads the chunks over its threads.
//! Within a chunk, activation rows go four at a time, and each weight block is unpacked once
//! per four rows; a single activation row (decoding) meets eight weight rows at a time, each
//! with its own running sums. On AVX-512 VNNI the 32-value block formats take the paired
//! kernels instead (`arch::x86_64::paired`): activations packed once per call in pairs, two
//! dot products per 512-bit register, eight activation rows per weight block, or four pairs
//! of weight rows at a time for a single activation row. [`matmul_many`] does several
//! matrices of one type and width on one input in one parallel step (one hand-off between
//! threads instead of one per matrix).
//!
//! **Batch invariance.** Output `(b, r)` is computed by the same block-by-block sequence
//! whatever the batch size, the tiling and the number of threads: no reduction runs across
//! blocks of different rows or across threads. So a row's result is bitwise the same alone or
//! in a batch of 512, on 1 thread or 64, and (see [`crate::dot`]) on every instruction set.
//!
//! ```
//! use quant::gemm::{matmul, QMatrix, Scratch};
//! use quant::formats::quantize_to_vec;
//! use quant::GgmlType;
//!
//! let (rows, cols) = (8, 64);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
//! let bytes = quantize_to_vec(GgmlType::Q8_0, &w)?;
//! let m = QMatrix::new(GgmlType::Q8_0, rows, cols, &bytes)?;
//! let x = vec![0.5f32; 2 * cols]; // two activation rows
//! let mut y = vec![0.0; 2 * rows];
//! matmul(&m, &x, &mut y, &mut Scratch::default())?;
//! assert_eq!(y[..rows], y[rows..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::dispatch::Isa;
use crate::dot::{Activation, KernelError, VecDot};
use crate::formats::{
    bf16, f16, values_in_bytes, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1,
    BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use crate::types::GgmlType;

/// The weight types [`matmul`] takes (every supported type but the activation formats Q8_1
/// and Q8_K).
pub const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Bytes of weights per work item.
const CHUNK_BYTES: usize = 16 << 10;

/// A row-major weight matrix over raw bytes (a GGUF tensor's data, for one).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// A `rows × cols` matrix of type `ty`; `data` must hold exactly that many values.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let shape = |detail: String| KernelError::Shape {
            ty,
            rows,
            cols,
            detail,
        };
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(shape(format!(
                "rows are not whole blocks of {}",
                ty.block_size()
            )));
        }
        let values = values_in_bytes(ty, data.len())?;
        if Some(values) != rows.checked_mul(cols) {
            return Err(shape(format!("data holds {values} values")));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs per activation row).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (the activation length).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Buffers reused across calls, so that a steady stream of same-sized products allocates
/// nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Quantized activations (u32 storage: every activation block's alignment divides 4).
    acts: Vec<u32>,
    /// The activations packed for a faster kernel, where there is one.
    packed: Packed,
    /// The activations as the panel kernels read them ([`crate::panels`]).
    pub(crate) panel_acts: Vec<crate::panels::PanelAct>,
}

/// Activations packed for the kernels that pair dot products in wide registers (internal to
/// [`matmul`]; see `VecDot::pack`).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Packed(pub(crate) crate::arch::Packed);

/// `n` activation blocks in `acts` (u32 storage: every activation block's alignment divides 4).
fn act_blocks<A: Block>(acts: &mut Vec<u32>, n: usize) -> &mut [A] {
    let bytes = n * std::mem::size_of::<A>();
    acts.resize(bytes.div_ceil(4), 0);
    let raw: &mut [u8] = bytemuck::cast_slice_mut(acts);
    bytemuck::cast_slice_mut(&mut raw[..bytes])
}

/// `out = x · wᵀ` on [`Isa::current`]: `x` is batch × cols, `out` batch × rows.
pub fn matmul(
    w: &QMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_with(Isa::current(), w, x, out, scratch)
}

/// [`matmul`] on a chosen instruction set (bitwise the same result on each).
pub fn matmul_with(
    isa: Isa,
    w: &QMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_many_with(isa, std::slice::from_ref(w), x, &mut [out], scratch)
}

/// `outs[i] = x · ws[i]ᵀ` for several matrices of one type and width that take the same
/// input (a block's query, key and value projections; a feed-forward block's gate and up):
/// the activations are quantized once, and the rows of all the matrices are spread over the
/// threads in one parallel step. Each output is bitwise what [`matmul`] gives it alone.
pub fn matmul_many(
    ws: &[QMatrix<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_many_with(Isa::current(), ws, x, outs, scratch)
}

/// [`matmul_many`] on a chosen instruction set (bitwise the same result on each).
pub fn matmul_many_with(
    isa: Isa,
    ws: &[QMatrix<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    let Some(first) = ws.first() else {
        return Ok(());
    };
    check_shapes(ws, x, outs)?;
    match first.ty {
        GgmlType::F32 => run::<f32>(isa, ws, x, outs, scratch),
        GgmlType::F16 => run::<f16>(isa, ws, x, outs, scratch),
        GgmlType::BF16 => run::<bf16>(isa, ws, x, outs, scratch),
        GgmlType::Q4_0 => run::<BlockQ4_0>(isa, ws, x, outs, scratch),
        GgmlType::Q4_1 => run::<BlockQ4_1>(isa, ws, x, outs, scratch),
        GgmlType::Q5_0 => run::<BlockQ5_0>(isa, ws, x, outs, scratch),
        GgmlType::Q5_1 => run::<BlockQ5_1>(isa, ws, x, outs, scratch),
        GgmlType::Q8_0 => run::<BlockQ8_0>(isa, ws, x, outs, scratch),
        GgmlType::Q2K => run::<BlockQ2K>(isa, ws, x, outs, scratch),
        GgmlType::Q3K => run::<BlockQ3K>(isa, ws, x, outs, scratch),
        GgmlType::Q4K => run::<BlockQ4K>(isa, ws, x, outs, scratch),
        GgmlType::Q5K => run::<BlockQ5K>(isa, ws, x, outs, scratch),
        GgmlType::Q6K => run::<BlockQ6K>(isa, ws, x, outs, scratch),
        _ => Ok(()), // refused by `check_shapes`
    }
}

/// Checks that `ws` share a type and width, that `x` is whole rows of it and that each output
/// fits its matrix; returns the number of activation rows.
fn check_shapes(ws: &[QMatrix<'_>], x: &[f32], outs: &[&mut [f32]]) -> Result<usize, KernelError> {
    let shapes: Vec<_> = ws.iter().map(|w| (w.ty, w.rows, w.cols)).collect();
    let batch = check_product(&shapes, x, outs)?;
    if let Some(&(ty, rows, cols)) = shapes.first() {
        if !WEIGHT_TYPES.contains(&ty) {
            return Err(KernelError::Shape {
                ty,
                rows,
                cols,
                detail: format!("{ty} is an activation format, not a weight format"),
            });
        }
    }
    Ok(batch)
}

/// What every product checks of matrices given as `(type, rows, cols)`: that they share a
/// type and width, that `x` is whole rows of it and that each output fits its matrix;
/// returns the number of activation rows.
pub(crate) fn check_product(
    shapes: &[(GgmlType, usize, usize)],
    x: &[f32],
    outs: &[&mut [f32]],
) -> Result<usize, KernelError> {
    let Some(&first) = shapes.first() else {
        return Ok(0);
    };
    let shape = |(ty, rows, cols): (GgmlType, usize, usize), detail: String| KernelError::Shape {
        ty,
        rows,
        cols,
        detail,
    };
    if outs.len() != shapes.len() {
        return Err(shape(
            first,
            format!("{} outputs for {} matrices", outs.len(), shapes.len()),
        ));
    }
    let cols = first.2;
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(shape(
            first,
            format!("{} activations is not a whole number of rows", x.len()),
        ));
    }
    let batch = x.len() / cols;
    for (&w, out) in shapes.iter().zip(outs) {
        if (w.0, w.2) != (first.0, cols) {
            return Err(shape(
                w,
                format!(
                    "one product takes matrices of one type and width, not beside {} × {cols}",
                    first.0
                ),
            ));
        }
        if out.len() != batch * w.1 {
            return Err(shape(
                w,
                format!(
                    "output holds {} values, {batch} rows need {}",
                    out.len(),
                    batch * w.1
                ),
            ));
        }
    }
    Ok(batch)
}

/// One matrix's output (batch × rows) as the parallel tasks fill it: each task owns a range of
/// the matrix's rows, and writes those columns of every activation row.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    ptr: *mut f32,
    rows: usize,
    batch: usize,
}

// SAFETY: an `OutPtr` is only written through by tasks whose row ranges are disjoint (see
// `OutPtr::fill`), while the output it points to is borrowed mutably by the call that made it.
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared references only ever write disjoint elements.
unsafe impl Sync for OutPtr {}

thread_local! {
    /// A task's results in rows × batch order, before they are moved into the output.
    static TASK_OUT: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl OutPtr {
    pub(crate) fn new(out: &mut [f32], rows: usize, batch: usize) -> Self {
        // What every write through the pointer relies on (`check_shapes` made sure of it).
        assert_eq!(out.len(), rows * batch, "output of {rows} rows × {batch}");
        OutPtr {
            ptr: out.as_mut_ptr(),
            rows,
            batch,
        }
    }

    /// Runs `f` on a task's results, rows `first..first + n` of the matrix, weight row by
    /// weight row (`batch` values each), and moves them into the output: straight into it for
    /// one activation row, else through a small per-thread buffer, so that no matrix-sized
    /// transposition follows.
    ///
    /// # Safety
    ///
    /// The output this was made from is still borrowed by the caller (so it is alive and
    /// nothing else reads or writes it), and no other task of this parallel step fills any of
    /// rows `first..first + n` (which this checks are within the matrix).
    unsafe fn fill(&self, first: usize, n: usize, f: impl FnOnce(&mut [f32])) {
        assert!(
            first + n <= self.rows,
            "rows {first}..{} of {}",
            first + n,
            self.rows
        );
        if self.batch == 1 {
            // SAFETY: the range is in bounds (checked above) and this task's alone (the
            // caller guarantees it); the output lives, borrowed mutably by the caller of the
            // step, until the step ends.
            f(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(first), n) });
            return;
        }
        TASK_OUT.with_borrow_mut(|tmp| {
            tmp.resize(n * self.batch, 0.0);
            f(tmp);
            for b in 0..self.batch {
                // SAFETY: as above: row `b`'s columns `first..first + n` are in bounds
                // (`b < batch`, `first + n <= rows`) and only this task writes them.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(self.ptr.add(b * self.rows + first), n)
                };
                for (d, src) in dst.iter_mut().zip(tmp.chunks_exact(self.batch)) {
                    *d = src[b];
                }
            }
        });
    }
}

impl OutPtr {
    /// Activation row `b`'s outputs for rows `first..first + n` of the matrix, to be written
    /// by the task that owns those rows.
    ///
    /// # Safety
    ///
    /// As [`OutPtr::fill`]: the output is still borrowed by the caller, no other task of this
    /// parallel step writes any of rows `first..first + n`, and the slice is dropped before the
    /// step ends.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row_part(&self, b: usize, first: usize, n: usize) -> &mut [f32] {
        assert!(
            b < self.batch && first + n <= self.rows,
            "row {b} of {}, outputs {first}..{} of {}",
            self.batch,
            first + n,
            self.rows
        );
        // SAFETY: in bounds (checked above: `b < batch`, `first + n <= rows`); only this task
        // writes these elements (the caller guarantees it), and the output lives, borrowed
        // mutably by the caller of the step, until the step ends.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(b * self.rows + first), n) }
    }
}

/// A work item: rows `first..first + w.len() / bpr` of matrix `m`.
struct Task<'t, W> {
    m: usize,
    first: usize,
    w: &'t [W],
}

/// The blocks of `w` (copied out once if its bytes are misaligned, which mapped GGUF data
/// never is).
fn weight_blocks<'a, W: bytemuck::Pod>(w: &QMatrix<'a>, owned: &'a mut Vec<W>) -> &'a [W] {
    match bytemuck::try_cast_slice(w.data) {
        Ok(b) => b,
        Err(_) => {
            *owned = w
                .data
                .chunks_exact(std::mem::size_of::<W>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            owned
        }
    }
}

fn run<W: VecDot>(
    isa: Isa,
    ws: &[QMatrix<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    let cols = ws[0].cols;
    let total_rows: usize = ws.iter().map(|w| w.rows).sum();
    let batch = x.len() / cols;
    if total_rows == 0 || batch == 0 {
        return Ok(());
    }
    let mut owned: Vec<Vec<W>> = ws.iter().map(|_| Vec::new()).collect();
    let blocks: Vec<&[W]> = ws
        .iter()
        .zip(owned.iter_mut())
        .map(|(w, o)| weight_blocks(w, o))
        .collect();
    let bpr = cols / W::SIZE;
    let apr = cols / W::Act::SIZE;

    let Scratch { acts, packed, .. } = scratch;
    let acts = act_blocks::<W::Act>(acts, batch * apr);
    let quantized: Result<(), KernelError> = crate::par::try_for_each_chunk(acts, apr, |i, a| {
        Ok(W::Act::quantize_with(isa, &x[i * cols..(i + 1) * cols], a)?)
    });
    quantized?;

    // One activation row: the kernels take eight weight rows at a time (AVX-512's four pairs,
    // the generic kernels' eight chains), so work items are whole groups of eight.
    let tasks = split_tasks(ws, &blocks, batch, bpr, crate::arch::ROW_GROUP);
    if W::pack(isa, acts, batch, apr, packed) {
        let packed = &*packed;
        run_tasks(ws, tasks, outs, batch, bpr, |wc, o| {
            W::packed_chunk(wc, packed, o)
        });
    } else {
        let rows: Vec<&[W::Act]> = acts.chunks_exact(apr).collect();
        run_tasks(ws, tasks, outs, batch, bpr, |wc, o| {
            W::chunk(isa, wc, bpr, &rows, o)
        });
    }
    Ok(())
}

/// Splits the rows of all matrices into work items of about [`CHUNK_BYTES`] of weights (at
/// least four per thread, and a multiple of `group` rows for one activation row).
fn split_tasks<'t, W>(
    ws: &[QMatrix<'_>],
    blocks: &[&'t [W]],
    batch: usize,
    bpr: usize,
    group: usize,
) -> Vec<Task<'t, W>> {
    let total_rows: usize = ws.iter().map(|w| w.rows).sum();
    let row_bytes = bpr * std::mem::size_of::<W>();
    let per_thread = total_rows.div_ceil(4 * crate::par::current_threads());
    let mut chunk_rows = (CHUNK_BYTES / row_bytes.max(1)).clamp(1, per_thread.max(1));
    if batch == 1 {
        chunk_rows = chunk_rows.next_multiple_of(group);
    }
    let mut tasks = Vec::new();
    for (m, b) in blocks.iter().enumerate() {
        for (i, w) in b.chunks(chunk_rows * bpr).enumerate() {
            tasks.push(Task {
                m,
                first: i * chunk_rows,
                w,
            });
        }
    }
    tasks
}

/// Runs every task, `kernel(weights, results)` filling a task's results weight row by weight
/// row, into the outputs (batch × rows each).
fn run_tasks<W: Sync>(
    ws: &[QMatrix<'_>],
    tasks: Vec<Task<'_, W>>,
    outs: &mut [&mut [f32]],
    batch: usize,
    bpr: usize,
    kernel: impl Fn(&[W], &mut [f32]) + Sync,
) {
    let ptrs: Vec<OutPtr> = ws
        .iter()
        .zip(outs.iter_mut())
        .map(|(w, o)| OutPtr::new(o, w.rows, batch))
        .collect();
    crate::par::for_each(tasks.len(), |t| {
        let t = &tasks[t];
        if batch == 1 {
            // The task's first row group and the distance the 8-bit kernels prefetch ahead
            // of it (the exact path's kernels do not prefetch; the hint starts its stream).
            let group = crate::arch::ROW_GROUP * bpr * std::mem::size_of::<W>();
            crate::arch::prefetch_start(t.w, group + crate::arch::PREFETCH_AHEAD);
        }
        // SAFETY: `split_tasks` gave each task its own rows of its matrix (the chunks of that
        // matrix's blocks, `rows × bpr` of them as `QMatrix::new` checked), and `ptrs` point
        // to `outs`, of `batch × rows` values each (`OutPtr::new` checked), borrowed mutably
        // here until every task has ended.
        unsafe { ptrs[t.m].fill(t.first, t.w.len() / bpr, |o| kernel(t.w, o)) }
    });
}

/// `out = x · wᵀ` with the activations kept in f32 ([`matmul_many_exact`]).
pub fn matmul_exact(
    w: &QMatrix<'_>,
    x: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    matmul_many_exact(std::slice::from_ref(w), x, &mut [out], scratch)
}

/// `outs[i] = x · ws[i]ᵀ` without rounding the activations: each weight block is dequantized
/// (to the values ggml's `dequantize_row` gives, in a small buffer: never the whole matrix)
/// and multiplied with the f32 activations. The weights are then the only quantized thing in
/// the product, which separates what weight quantization does from what 8-bit activations
/// do.
///
/// Output `(b, r)` is one fixed sequence whatever the batch, tiling and threads: value `i` of
/// the row is fused-multiply-added into lane `i mod 16` of the output's own accumulator, in
/// order, and the 16 lanes are summed pairwise (`l + 8`, then `l + 4`, ...) at the end. Every
/// target with a fused multiply-add gives the same bits.
pub fn matmul_many_exact(
    ws: &[QMatrix<'_>],
    x: &[f32],
    outs: &mut [&mut [f32]],
    scratch: &mut Scratch,
) -> Result<(), KernelError> {
    let Some(first) = ws.first() else {
        return Ok(());
    };
    let batch = check_shapes(ws, x, outs)?;
    // Exact products need no scratch of the caller's.
    let _ = scratch;
    struct Exact<'a, 'b, 'c> {
        ws: &'a [QMatrix<'b>],
        x: &'a [f32],
        outs: &'a mut [&'c mut [f32]],
        batch: usize,
    }
    impl crate::formats::BlockFn for Exact<'_, '_, '_> {
        type Output = ();
        fn call<B: Block>(self) {
            exact::<B>(self.ws, self.x, self.outs, self.batch)
        }
    }
    crate::formats::with_block(first.ty, Exact { ws, x, outs, batch });
    Ok(())
}

/// Lanes of an exact product's accumulator.
const LANES: usize = 16;
/// Weight rows whose blocks meet each activation chunk together.
const TILE: usize = 4;
/// Values dequantized per weight row at a time (at least one block).
const GROUP: usize = 256;

/// One activation row's accumulators for a tile of weight rows.
type TileAcc = [[f32; LANES]; TILE];

thread_local! {
    /// Per-thread accumulators (a tile per activation row) and dequantized weights.
    static EXACT_SCRATCH: std::cell::RefCell<(Vec<TileAcc>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

fn exact<B: Block>(ws: &[QMatrix<'_>], x: &[f32], outs: &mut [&mut [f32]], batch: usize) {
    let cols = ws[0].cols;
    if batch == 0 || ws.iter().all(|w| w.rows == 0) {
        return;
    }
    let mut owned: Vec<Vec<B>> = ws.iter().map(|_| Vec::new()).collect();
    let blocks: Vec<&[B]> = ws
        .iter()
        .zip(owned.iter_mut())
        .map(|(w, o)| weight_blocks(w, o))
        .collect();
    let bpr = cols / B::SIZE;
    let tasks = split_tasks(ws, &blocks, batch, bpr, TILE);
    run_tasks(ws, tasks, outs, batch, bpr, |wc, o| {
        exact_chunk(wc, bpr, cols, x, batch, o)
    });
}

/// The exact products of the weight rows `wc` (`bpr` blocks each) with every activation row
/// of `x`, into `o` (weight row by weight row, `batch` values each).
fn exact_chunk<B: Block>(
    wc: &[B],
    bpr: usize,
    cols: usize,
    x: &[f32],
    batch: usize,
    o: &mut [f32],
) {
    let rows = wc.len() / bpr;
    let per_group = (GROUP / B::SIZE).max(1);
    let stride = per_group * B::SIZE;
    EXACT_SCRATCH.with_borrow_mut(|(accs, wbuf)| {
        wbuf.resize(TILE * stride, 0.0);
        for r0 in (0..rows).step_by(TILE) {
            let nr = TILE.min(rows - r0);
            accs.clear();
            accs.resize(batch, [[0.0; LANES]; TILE]);
            for g0 in (0..bpr).step_by(per_group) {
                let nb = per_group.min(bpr - g0);
                let (n, c0) = (nb * B::SIZE, g0 * B::SIZE);
                for j in 0..nr {
                    let row = &wc[(r0 + j) * bpr + g0..][..nb];
                    let dst = &mut wbuf[j * stride..][..n];
                    for (blk, out) in row.iter().zip(dst.chunks_exact_mut(B::SIZE)) {
                        blk.dequantize(out);
                    }
                }
                for (b, acc) in accs.iter_mut().enumerate() {
                    let xs = &x[b * cols + c0..][..n];
                    for (j, a) in acc.iter_mut().enumerate().take(nr) {
                        fma_lanes(a, &wbuf[j * stride..][..n], xs);
                    }
                }
            }
            for (b, acc) in accs.iter().enumerate() {
                for (j, a) in acc.iter().enumerate().take(nr) {
                    o[(r0 + j) * batch + b] = sum_lanes(a);
                }
            }
        }
    });
}

/// `acc[i mod 16] += w[i]·x[i]` for `i` in order, fused (chunks start at multiples of 16).
#[inline(always)]
fn fma_lanes(acc: &mut [f32; LANES], w: &[f32], x: &[f32]) {
    let full = w.len() / LANES * LANES;
    for (wc, xc) in w[..full]
        .chunks_exact(LANES)
        .zip(x[..full].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] = wc[l].mul_add(xc[l], acc[l]);
        }
    }
    for (l, (&a, &b)) in w[full..].iter().zip(&x[full..]).enumerate() {
        acc[l] = a.mul_add(b, acc[l]);
    }
}

/// The 16 lanes summed pairwise: lane `l` plus lane `l + 8`, then `l + 4`, `l + 2`, `l + 1`.
#[inline(always)]
fn sum_lanes(acc: &[f32; LANES]) -> f32 {
    crate::arch::scalar::reduce16(*acc)
}
