//! Dot products of a weight row with activation rows, and the activation quantizers: the safe
//! entry points to the kernels of every instruction set.
//!
//! Each weight format has one activation partner ([`VecDot::Act`], ggml's `vec_dot_type`):
//! Q4_0, Q5_0 and Q8_0 pair with Q8_0; Q4_1 and Q5_1 with Q8_1; the K-quants with Q8_K; F32,
//! F16 and BF16 with plain f32. Activations are quantized once with [`quantize_activations`]
//! and then meet many weight rows.
//!
//! **Every instruction set returns the same bits.** Each block's integer sum is exact, and the
//! float arithmetic that turns block sums into the result (and the 16-lane reduction of float
//! rows) is one fixed sequence shared by all paths. [`block_sums_with`] exposes the integer
//! sums so that tests can compare them directly.
//!
//! ```
//! use quant::dot::{quantize_activations, vec_dot};
//! use bytemuck::Zeroable;
//! use quant::formats::{quantize_row, BlockQ4K, BlockQ8K};
//!
//! let w: Vec<f32> = (0..512).map(|i| (i as f32 * 0.1).sin()).collect();
//! let x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.3).cos()).collect();
//! let mut wq = vec![BlockQ4K::zeroed(); 2];
//! quantize_row(&w, &mut wq)?;
//! let mut xq = vec![BlockQ8K::zeroed(); 2];
//! quantize_activations(&x, &mut xq)?;
//! let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
//! assert!((vec_dot(&wq, &xq)? - exact).abs() < 0.05 * 512f32.sqrt());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use half::{bf16, f16};

use crate::arch;
use crate::dispatch::{Isa, IsaError};
use crate::formats::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, LengthError,
};
use crate::types::GgmlType;

/// Shapes that do not fit, or an instruction set this CPU lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A row length that is not a whole number of blocks, or input and output that disagree.
    #[error(transparent)]
    Length(#[from] LengthError),
    /// Weights and activations of different lengths.
    #[error("{ty} weights hold {weights} values but the activations hold {activations}")]
    Mismatch {
        /// The weight format.
        ty: GgmlType,
        /// Values in the weight row.
        weights: usize,
        /// Values in the activation row.
        activations: usize,
    },
    /// A matrix whose data does not match its shape.
    #[error("{ty} matrix of {rows} × {cols}: {detail}")]
    Shape {
        /// The weight format.
        ty: GgmlType,
        /// Rows.
        rows: usize,
        /// Values per row.
        cols: usize,
        /// What is wrong.
        detail: String,
    },
    /// The instruction set asked for cannot run here.
    #[error(transparent)]
    Isa(#[from] IsaError),
}

mod sealed {
    pub trait Sealed {}
}

/// An activation format: what weight rows are multiplied with.
pub trait Activation: Block + sealed::Sealed {
    #[doc(hidden)]
    fn quantize_with(isa: Isa, x: &[f32], out: &mut [Self]) -> Result<(), LengthError>;
}

/// A weight format with a dot-product kernel against its activation format.
pub trait VecDot: Block + sealed::Sealed {
    /// The activation format it is multiplied with.
    type Act: Activation;
    #[doc(hidden)]
    fn chunk(isa: Isa, w: &[Self], per_row: usize, acts: &[&[Self::Act]], out: &mut [f32]);
    #[doc(hidden)]
    fn parts(isa: Isa, w: &[Self], a: &[Self::Act]) -> Option<Vec<([i32; 8], i32)>>;
    /// Packs `batch` activation rows of `blocks` blocks for a faster kernel of `isa`, if this
    /// format has one there; returns whether it did.
    #[doc(hidden)]
    fn pack(
        _isa: Isa,
        _acts: &[Self::Act],
        _batch: usize,
        _blocks: usize,
        _p: &mut crate::gemm::Packed,
    ) -> bool {
        false
    }
    /// A chunk of weight rows times the rows [`VecDot::pack`] packed.
    #[doc(hidden)]
    fn packed_chunk(_w: &[Self], _p: &crate::gemm::Packed, _out: &mut [f32]) {}
}

macro_rules! quantized {
    ($($w:ident => $a:ty),* $(,)?) => {$(
        impl sealed::Sealed for $w {}
        impl VecDot for $w {
            type Act = $a;
            fn chunk(isa: Isa, w: &[Self], per_row: usize, acts: &[&[$a]], out: &mut [f32]) {
                arch::qchunk(isa, w, per_row, acts, out)
            }
            fn parts(isa: Isa, w: &[Self], a: &[$a]) -> Option<Vec<([i32; 8], i32)>> {
                Some(arch::qparts(isa, w, a))
            }
            quantized!(@paired $w);
        }
    )*};
    (@paired BlockQ4_0) => { quantized!(@pair_fns); };
    (@paired BlockQ4_1) => { quantized!(@pair_fns); };
    (@paired BlockQ5_0) => { quantized!(@pair_fns); };
    (@paired BlockQ5_1) => { quantized!(@pair_fns); };
    (@paired BlockQ8_0) => { quantized!(@pair_fns); };
    (@paired $w:ident) => {};
    (@pair_fns) => {
        fn pack(
            isa: Isa,
            acts: &[Self::Act],
            batch: usize,
            blocks: usize,
            p: &mut crate::gemm::Packed,
        ) -> bool {
            arch::pair_pack::<Self>(isa, acts, batch, blocks, &mut p.0)
        }
        fn packed_chunk(w: &[Self], p: &crate::gemm::Packed, out: &mut [f32]) {
            arch::pair_chunk::<Self>(w, &p.0, out)
        }
    };
}

quantized! {
    BlockQ4_0 => BlockQ8_0, BlockQ4_1 => BlockQ8_1, BlockQ5_0 => BlockQ8_0,
    BlockQ5_1 => BlockQ8_1, BlockQ8_0 => BlockQ8_0, BlockQ2K => BlockQ8K, BlockQ3K => BlockQ8K,
    BlockQ4K => BlockQ8K, BlockQ5K => BlockQ8K, BlockQ6K => BlockQ8K,
}

macro_rules! float {
    ($($w:ty),*) => {$(
        impl VecDot for $w {
            type Act = f32;
            fn chunk(isa: Isa, w: &[Self], per_row: usize, acts: &[&[f32]], out: &mut [f32]) {
                arch::fchunk(isa, w, per_row, acts, out)
            }
            fn parts(_: Isa, _: &[Self], _: &[f32]) -> Option<Vec<([i32; 8], i32)>> {
                None
            }
        }
    )*};
}

impl sealed::Sealed for f32 {}
impl sealed::Sealed for f16 {}
impl sealed::Sealed for bf16 {}
impl sealed::Sealed for BlockQ8_1 {}
impl sealed::Sealed for BlockQ8K {}
float!(f32, f16, bf16);

impl Activation for f32 {
    fn quantize_with(_: Isa, x: &[f32], out: &mut [f32]) -> Result<(), LengthError> {
        if x.len() != out.len() {
            return Err(LengthError::Mismatch {
                ty: GgmlType::F32,
                input: x.len(),
                output: out.len(),
            });
        }
        out.copy_from_slice(x);
        Ok(())
    }
}

macro_rules! q8_activation {
    ($($a:ty),*) => {$(
        impl Activation for $a {
            fn quantize_with(isa: Isa, x: &[f32], out: &mut [Self]) -> Result<(), LengthError> {
                arch::quantize_activations(isa, x, out)
            }
        }
    )*};
}
q8_activation!(BlockQ8_0, BlockQ8_1, BlockQ8K);

fn check<W: VecDot>(w: &[W], a: &[W::Act]) -> Result<(), KernelError> {
    let (wn, an) = (w.len() * W::SIZE, a.len() * W::Act::SIZE);
    if wn != an {
        return Err(KernelError::Mismatch {
            ty: W::TYPE,
            weights: wn,
            activations: an,
        });
    }
    Ok(())
}

/// `Σ w·a` of one weight row and one activation row, on [`Isa::current`].
pub fn vec_dot<W: VecDot>(w: &[W], a: &[W::Act]) -> Result<f32, KernelError> {
    vec_dot_with(Isa::current(), w, a)
}

/// [`vec_dot`] on a chosen instruction set.
pub fn vec_dot_with<W: VecDot>(isa: Isa, w: &[W], a: &[W::Act]) -> Result<f32, KernelError> {
    isa.ensure_available()?;
    check(w, a)?;
    if w.is_empty() {
        return Ok(0.0);
    }
    let mut out = [0f32];
    W::chunk(isa, w, w.len(), &[a], &mut out);
    Ok(out[0])
}

/// One weight row times several activation rows: `out[i] = Σ w·acts[i]`, each value
/// bitwise what [`vec_dot_with`] gives for that row alone.
pub fn vec_dot_many_with<W: VecDot>(
    isa: Isa,
    w: &[W],
    acts: &[&[W::Act]],
    out: &mut [f32],
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    for a in acts {
        check(w, a)?;
    }
    if out.len() != acts.len() {
        return Err(LengthError::Mismatch {
            ty: W::TYPE,
            input: acts.len(),
            output: out.len(),
        }
        .into());
    }
    if w.is_empty() {
        out.fill(0.0);
        return Ok(());
    }
    W::chunk(isa, w, w.len(), acts, out);
    Ok(())
}

/// One block's exact integer sums; see [`block_sums_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSums {
    /// Lane `l`: the scale-weighted products of elements `e` with `(e mod 32) / 4 == l`.
    pub lanes: [i32; 8],
    /// The minimums' or the offset's sum (0 where the format has neither).
    pub scalar: i32,
}

/// Each block's exact integer sums on `isa`: eight lane sums of `sc·q·q_a` (lane `l` over the
/// elements `e` with `(e mod 32) / 4 == l`) and one scalar sum (the minimums' `Σ m·Σq_a`, or a
/// signed format's offset `o·Σ sc·Σq_a`; 0 where the format has neither). `None` for float
/// formats, which have no integer stage.
pub fn block_sums_with<W: VecDot>(
    isa: Isa,
    w: &[W],
    a: &[W::Act],
) -> Result<Option<Vec<BlockSums>>, KernelError> {
    isa.ensure_available()?;
    check(w, a)?;
    Ok(W::parts(isa, w, a).map(|v| {
        v.into_iter()
            .map(|(lanes, scalar)| BlockSums { lanes, scalar })
            .collect()
    }))
}

/// Quantizes f32 activations into their format (a copy for f32), on [`Isa::current`].
pub fn quantize_activations<A: Activation>(x: &[f32], out: &mut [A]) -> Result<(), KernelError> {
    quantize_activations_with(Isa::current(), x, out)
}

/// [`quantize_activations`] on a chosen instruction set; the same bits on every one.
pub fn quantize_activations_with<A: Activation>(
    isa: Isa,
    x: &[f32],
    out: &mut [A],
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    Ok(A::quantize_with(isa, x, out)?)
}

/// Rows of a row-major matrix of f32 or f16 values picked by index, as attention reads a
/// key/value cache: row `i` is `data[rows[i]·stride + offset..][..len]`. Checked once, at
/// construction. f16 values are widened exactly, so a matrix of f16 values gives the same bits
/// as the same values stored as f32.
#[derive(Clone, Copy, Debug)]
pub struct Gather<'a>(Picked<'a>);

/// The picked rows in their stored type.
#[derive(Clone, Copy, Debug)]
enum Picked<'a> {
    F32(arch::generic::Gathered<'a, f32>),
    F16(arch::generic::Gathered<'a, f16>),
}

/// Checks the shape of a gather over `data.len()` values.
fn gathered<'a, E>(
    ty: GgmlType,
    data: &'a [E],
    stride: usize,
    offset: usize,
    len: usize,
    rows: &'a [u32],
) -> Result<arch::generic::Gathered<'a, E>, KernelError> {
    let shape = |detail: String| KernelError::Shape {
        ty,
        rows: rows.len(),
        cols: len,
        detail,
    };
    if len == 0 || offset + len > stride {
        return Err(shape(format!(
            "{len} values from {offset} do not fit rows of {stride}"
        )));
    }
    if let Some(&max) = rows.iter().max() {
        let end = (max as usize)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(offset + len));
        if end.is_none_or(|e| e > data.len()) {
            return Err(shape(format!(
                "row {max} lies outside the {} values of the matrix",
                data.len()
            )));
        }
    }
    Ok(arch::generic::Gathered {
        data,
        stride,
        offset,
        len,
        rows,
    })
}

impl<'a> Gather<'a> {
    /// The rows `rows` of `data` (rows of `stride` values), each the `len` values from
    /// `offset`. Fails unless every picked row lies inside `data`.
    pub fn new(
        data: &'a [f32],
        stride: usize,
        offset: usize,
        len: usize,
        rows: &'a [u32],
    ) -> Result<Self, KernelError> {
        gathered(GgmlType::F32, data, stride, offset, len, rows).map(|g| Gather(Picked::F32(g)))
    }

    /// [`Gather::new`] over f16 values (llama.cpp's key/value cache type).
    pub fn new_f16(
        data: &'a [f16],
        stride: usize,
        offset: usize,
        len: usize,
        rows: &'a [u32],
    ) -> Result<Self, KernelError> {
        gathered(GgmlType::F16, data, stride, offset, len, rows).map(|g| Gather(Picked::F16(g)))
    }

    /// The picked rows.
    fn rows(&self) -> &[u32] {
        match &self.0 {
            Picked::F32(g) => g.rows,
            Picked::F16(g) => g.rows,
        }
    }

    /// The stored type.
    fn ty(&self) -> GgmlType {
        match &self.0 {
            Picked::F32(_) => GgmlType::F32,
            Picked::F16(_) => GgmlType::F16,
        }
    }

    /// Values per picked row.
    pub fn len(&self) -> usize {
        match &self.0 {
            Picked::F32(g) => g.len,
            Picked::F16(g) => g.len,
        }
    }

    /// Whether no row is picked.
    pub fn is_empty(&self) -> bool {
        self.rows().is_empty()
    }
}

/// Checks that `vecs` values are whole vectors of `vec_len` (none when `vec_len` is 0) and
/// that `out` holds `per` values for each.
fn check_gathered(
    m: &Gather<'_>,
    (vecs, vec_len): (usize, usize),
    what: &str,
    (out, per): (usize, usize),
) -> Result<(), KernelError> {
    let shape = |detail: String| KernelError::Shape {
        ty: m.ty(),
        rows: m.rows().len(),
        cols: m.len(),
        detail,
    };
    let count = match vecs.checked_div(vec_len) {
        Some(c) if c * vec_len == vecs => c,
        None if vecs == 0 => out / per.max(1),
        _ => {
            return Err(shape(format!(
                "{vecs} {what} are not whole vectors of {vec_len}"
            )))
        }
    };
    if out != count * per {
        return Err(shape(format!(
            "output holds {out} values, {count} vectors need {}",
            count * per
        )));
    }
    Ok(())
}

/// `out[g·n + i] = xs_g · row_i` for each vector `xs_g` of `m.len()` values and each of the
/// `n` picked rows (attention's query·key products), on [`Isa::current`]. Each product is
/// computed as [`vec_dot`] computes f32 rows: the same bits on every instruction set, whatever
/// else is in the call.
pub fn gathered_dots(xs: &[f32], m: &Gather<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    gathered_dots_with(Isa::current(), xs, m, out)
}

/// [`gathered_dots`] on a chosen instruction set.
pub fn gathered_dots_with(
    isa: Isa,
    xs: &[f32],
    m: &Gather<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    check_gathered(
        m,
        (xs.len(), m.len()),
        "values",
        (out.len(), m.rows().len()),
    )?;
    match m.0 {
        Picked::F32(g) => arch::gather_dots(isa, xs, g, out),
        Picked::F16(g) => arch::gather_dots(isa, xs, g, out),
    }
    Ok(())
}

/// `out_g += Σ_i w[g·n + i] · row_i` for each output vector `out_g` of `m.len()` values
/// (attention's probabilities times values), on [`Isa::current`]: each element's products in
/// 16 lanes by row (row `i` to lane `i mod 16`), fused multiply-adds in row order, zero
/// weights skipped, then the fixed 16-lane tree (llama.cpp's order for prompt batches); the
/// same bits on every instruction set.
pub fn gathered_axpy(w: &[f32], m: &Gather<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    gathered_axpy_with(Isa::current(), w, m, out)
}

/// [`gathered_axpy`] on a chosen instruction set.
pub fn gathered_axpy_with(
    isa: Isa,
    w: &[f32],
    m: &Gather<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    let n = m.rows().len();
    check_gathered(m, (w.len(), n), "weights", (out.len(), m.len()))?;
    match m.0 {
        Picked::F32(g) => arch::gather_axpy(isa, w, g, out),
        Picked::F16(g) => arch::gather_axpy(isa, w, g, out),
    }
    Ok(())
}

/// `out_g += Σ_i w[g·n + i] · row_i` for each output vector `out_g` of `m.len()` values, on
/// [`Isa::current`], with each element one chain of fused multiply-adds in row order that
/// starts from its value in `out` (`out[e] ← w_i·row_i[e] + out[e]`, i = 0, 1, ...; zero
/// weights are not skipped): no lanes and no tree, so the vectors run along the elements.
/// Not llama.cpp's order ([`gathered_axpy`] is); the same bits on every instruction set and
/// for every output vector whatever the others.
pub fn sequential_axpy(w: &[f32], m: &Gather<'_>, out: &mut [f32]) -> Result<(), KernelError> {
    sequential_axpy_with(Isa::current(), w, m, out)
}

/// [`sequential_axpy`] on a chosen instruction set.
pub fn sequential_axpy_with(
    isa: Isa,
    w: &[f32],
    m: &Gather<'_>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    isa.ensure_available()?;
    let n = m.rows().len();
    check_gathered(m, (w.len(), n), "weights", (out.len(), m.len()))?;
    match m.0 {
        Picked::F32(g) => arch::seq_axpy(isa, w, g, out),
        Picked::F16(g) => arch::seq_axpy(isa, w, g, out),
    }
    Ok(())
}
