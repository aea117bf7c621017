//! Quantized matrix products: a weight matrix (rows × cols of any supported type, as stored in
//! a GGUF file) times a batch of f32 activation rows, giving batch × rows f32 outputs.
//!
//! The activation rows are quantized once per call into the weights' partner format. Weight
//! rows are split into chunks of about 16 KiB, and rayon spreads the chunks over its threads.
//! Within a chunk, activation rows go four at a time, and each weight block is unpacked once
//! per four rows. On AVX-512 VNNI the 32-value block formats take the paired kernels instead
//! (`arch::x86_64::paired`): activations packed once per call in pairs, two dot products per
//! 512-bit register, eight activation rows per weight block, or two weight rows at a time for
//! a single activation row. [`matmul_many`] does several matrices of one type and width on one
//! input in one parallel step (one hand-off between threads instead of one per matrix).
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

use rayon::prelude::*;

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
    /// Results in rows × batch order, before the transpose (batch > 1 only).
    tmp: Vec<f32>,
    /// The activations packed for a faster kernel, where there is one.
    packed: Packed,
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
    let shape = |w: &QMatrix<'_>, detail: String| KernelError::Shape {
        ty: w.ty,
        rows: w.rows,
        cols: w.cols,
        detail,
    };
    if outs.len() != ws.len() {
        return Err(shape(
            first,
            format!("{} outputs for {} matrices", outs.len(), ws.len()),
        ));
    }
    if first.cols == 0 || !x.len().is_multiple_of(first.cols) {
        return Err(shape(
            first,
            format!("{} activations is not a whole number of rows", x.len()),
        ));
    }
    let batch = x.len() / first.cols;
    for (w, out) in ws.iter().zip(outs.iter()) {
        if (w.ty, w.cols) != (first.ty, first.cols) {
            return Err(shape(
                w,
                format!(
                    "one product takes matrices of one type and width, not beside {} × {}",
                    first.ty, first.cols
                ),
            ));
        }
        if out.len() != batch * w.rows {
            return Err(shape(
                w,
                format!(
                    "output holds {} values, {batch} rows need {}",
                    out.len(),
                    batch * w.rows
                ),
            ));
        }
    }
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
        ty => Err(shape(
            first,
            format!("{ty} is an activation format, not a weight format"),
        )),
    }
}

/// The blocks of `w` (copied out once if its bytes are misaligned, which mapped GGUF data
/// never is).
fn weight_blocks<'a, W: VecDot>(w: &QMatrix<'a>, owned: &'a mut Vec<W>) -> &'a [W] {
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
    let row_bytes = bpr * std::mem::size_of::<W>();

    let Scratch { acts, tmp, packed } = scratch;
    let acts = act_blocks::<W::Act>(acts, batch * apr);
    let quantized: Result<(), KernelError> = acts
        .par_chunks_mut(apr)
        .zip(x.par_chunks(cols))
        .try_for_each(|(a, x)| Ok(W::Act::quantize_with(isa, x, a)?));
    quantized?;

    let per_thread = total_rows.div_ceil(4 * rayon::current_num_threads());
    let mut chunk_rows = (CHUNK_BYTES / row_bytes.max(1)).clamp(1, per_thread.max(1));
    // Each matrix's results go straight to its output for one activation row, or to its part
    // of `tmp` (rows × batch) to be transposed after.
    let mut tasks: Vec<(&mut [f32], &[W])> = Vec::new();
    if batch == 1 {
        // The paired kernels take weight rows two at a time for one activation row.
        chunk_rows += chunk_rows % 2;
        for (out, b) in outs.iter_mut().zip(&blocks) {
            tasks.extend(out.chunks_mut(chunk_rows).zip(b.chunks(chunk_rows * bpr)));
        }
    } else {
        tmp.resize(total_rows * batch, 0.0);
        let mut rest = &mut tmp[..];
        for (w, b) in ws.iter().zip(&blocks) {
            let (mine, after) = std::mem::take(&mut rest).split_at_mut(w.rows * batch);
            rest = after;
            tasks.extend(
                mine.chunks_mut(chunk_rows * batch)
                    .zip(b.chunks(chunk_rows * bpr)),
            );
        }
    }
    if W::pack(isa, acts, batch, apr, packed) {
        let packed = &*packed;
        tasks
            .into_par_iter()
            .for_each(|(o, wc)| W::packed_chunk(wc, packed, o));
    } else {
        let rows: Vec<&[W::Act]> = acts.chunks_exact(apr).collect();
        tasks
            .into_par_iter()
            .for_each(|(o, wc)| W::chunk(isa, wc, bpr, &rows, o));
    }
    if batch > 1 {
        // Into batch × rows order, eight activation rows per task: each weight row's eight
        // results are read together and written to eight sequential streams.
        const GROUP: usize = 8;
        let mut from = 0;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (tmp, rows) = (&tmp[from..from + w.rows * batch], w.rows);
            from += w.rows * batch;
            if rows == 0 {
                continue;
            }
            out.par_chunks_mut(rows * GROUP)
                .enumerate()
                .for_each(|(t, o)| {
                    let nb = o.len() / rows;
                    for (r, src) in tmp.chunks_exact(batch).enumerate() {
                        for (j, &v) in src[t * GROUP..t * GROUP + nb].iter().enumerate() {
                            o[j * rows + r] = v;
                        }
                    }
                });
        }
    }
    Ok(())
}
