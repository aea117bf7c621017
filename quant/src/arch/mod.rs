//! The kernels, one module per instruction set, each shaped the same way.
//!
//! - [`scalar`]: the reference, written from the block formats' definitions element by element.
//! - [`generic`]: every quantized kernel written once over [`generic::Simd`], a small set of
//!   32-byte vector operations (load, unpack nibbles, shift, select bits, 8-bit dot products),
//!   and every float kernel over 16-lane float operations.
//! - `x86_64` ([`generic::Simd`] for AVX2 and AVX-512) and `aarch64` (NEON): the operations,
//!   each behind a capability token whose constructor checks the CPU; the `#[target_feature]`
//!   entry points instantiate the generic kernels inside them.
//!
//! Every path computes each block's integer sums exactly, in eight lanes of fixed grouping, and
//! then scales and accumulates them with the same float operations in the same order (see
//! [`generic`] and [`combine`]); float rows are reduced in 16 lanes with one fixed tree. So all
//! paths return bitwise
//! the same numbers, and one output never depends on what else is computed beside it.

/// The `#[target_feature]` entry points of one token: every generic kernel compiled with the
/// token's features.
macro_rules! entry_points {
    ($tok:ident, $features:literal) => {
        impl $tok {
            /// [`crate::arch::generic::qchunk`] compiled for this instruction set.
            pub(crate) fn qchunk<F: $crate::arch::generic::QFormat>(
                self,
                w: &[F],
                bpr: usize,
                acts: &[&[F::Act]],
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn run<F: $crate::arch::generic::QFormat>(
                    t: $tok,
                    w: &[F],
                    bpr: usize,
                    acts: &[&[F::Act]],
                    out: &mut [f32],
                ) {
                    $crate::arch::generic::qchunk(t, w, bpr, acts, out)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, w, bpr, acts, out) }
            }

            /// [`crate::arch::generic::qparts`] compiled for this instruction set.
            pub(crate) fn qparts<F: $crate::arch::generic::QFormat>(
                self,
                w: &[F],
                a: &[F::Act],
            ) -> Vec<([i32; 8], i32)> {
                #[target_feature(enable = $features)]
                fn run<F: $crate::arch::generic::QFormat>(
                    t: $tok,
                    w: &[F],
                    a: &[F::Act],
                ) -> Vec<([i32; 8], i32)> {
                    $crate::arch::generic::qparts(t, w, a)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, w, a) }
            }

            /// [`crate::arch::generic::gather_dots`] compiled for this instruction set.
            pub(crate) fn gather_dots<E: $crate::arch::generic::FFormat>(
                self,
                xs: &[f32],
                m: $crate::arch::generic::Gathered<'_, E>,
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn run<E: $crate::arch::generic::FFormat>(
                    t: $tok,
                    xs: &[f32],
                    m: $crate::arch::generic::Gathered<'_, E>,
                    out: &mut [f32],
                ) {
                    $crate::arch::generic::gather_dots(t, xs, m, out)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, xs, m, out) }
            }

            /// [`crate::arch::generic::gather_axpy`] compiled for this instruction set.
            pub(crate) fn gather_axpy<E: $crate::arch::generic::FFormat>(
                self,
                w: &[f32],
                m: $crate::arch::generic::Gathered<'_, E>,
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn run<E: $crate::arch::generic::FFormat>(
                    t: $tok,
                    w: &[f32],
                    m: $crate::arch::generic::Gathered<'_, E>,
                    out: &mut [f32],
                ) {
                    $crate::arch::generic::gather_axpy(t, w, m, out)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, w, m, out) }
            }

            /// [`crate::arch::generic::seq_axpy`] compiled for this instruction set.
            pub(crate) fn seq_axpy<E: $crate::arch::generic::FFormat>(
                self,
                w: &[f32],
                m: $crate::arch::generic::Gathered<'_, E>,
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn run<E: $crate::arch::generic::FFormat>(
                    t: $tok,
                    w: &[f32],
                    m: $crate::arch::generic::Gathered<'_, E>,
                    out: &mut [f32],
                ) {
                    $crate::arch::generic::seq_axpy(t, w, m, out)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, w, m, out) }
            }

            /// [`crate::arch::generic::fchunk`] compiled for this instruction set.
            pub(crate) fn fchunk<W: $crate::arch::generic::FFormat>(
                self,
                w: &[W],
                cols: usize,
                acts: &[&[f32]],
                out: &mut [f32],
            ) {
                #[target_feature(enable = $features)]
                fn run<W: $crate::arch::generic::FFormat>(
                    t: $tok,
                    w: &[W],
                    cols: usize,
                    acts: &[&[f32]],
                    out: &mut [f32],
                ) {
                    $crate::arch::generic::fchunk(t, w, cols, acts, out)
                }
                // SAFETY: the token proves the CPU has the features `run` is compiled for.
                unsafe { run(self, w, cols, acts, out) }
            }
        }
    };
}

pub(crate) use entry_points;

pub(crate) mod combine;
pub(crate) mod generic;
pub(crate) mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::paired::{Packed, PairWeight as PairFormat};

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use unpaired::{Packed, PairFormat};

/// Where the paired kernels do not exist: nothing is ever packed.
#[cfg(not(target_arch = "x86_64"))]
mod unpaired {
    use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

    /// The formats the x86-64 paired kernels take.
    pub(crate) trait PairFormat: super::QFormat {}
    impl PairFormat for BlockQ4_0 {}
    impl PairFormat for BlockQ4_1 {}
    impl PairFormat for BlockQ5_0 {}
    impl PairFormat for BlockQ5_1 {}
    impl PairFormat for BlockQ8_0 {}

    /// No packed activations.
    #[derive(Debug, Default)]
    pub(crate) struct Packed;
}

/// Packs `batch` activation rows of `blocks` blocks for the paired kernels of `isa`, if it has
/// them (AVX-512 VNNI); returns whether it did.
pub(crate) fn pair_pack<F: PairFormat>(
    isa: Isa,
    acts: &[F::Act],
    batch: usize,
    blocks: usize,
    p: &mut Packed,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        if let Some(t) = x86_64::Avx512::new() {
            t.pack::<F>(acts, batch, blocks, p);
            return true;
        }
    }
    let _ = (isa, acts, batch, blocks, p);
    false
}

/// A chunk of weight rows times the activations [`pair_pack`] packed (`out` rows × batch).
pub(crate) fn pair_chunk<F: PairFormat>(w: &[F], p: &Packed, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = p.token() {
        t.paired_chunk::<F>(w, p, out);
    }
    let _ = (w, p, out);
}

/// The most activation rows one weight block is multiplied with before the next is loaded.
pub(crate) const TILE: usize = 4;

/// Weight rows the kernels take together against a single activation row (decoding): the
/// generic kernels' eight independent chains, AVX-512's four pairs.
pub(crate) const ROW_GROUP: usize = 8;

/// Bytes past the weights being read that the single-activation-row kernels prefetch: far
/// enough that a line arrives from DRAM before the kernel gets there (decoding streams every
/// weight once per token, and the hardware prefetchers alone leave the loads waiting).
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// A hint to fetch the cache line at `p` into the caches: any address (a hint never faults
/// and reads nothing the program sees); nothing on targets without a hint this crate uses.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is present on every x86-64 CPU; a prefetch never faults or reads.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `prfm` is a hint: it never faults, reads nothing the program sees and writes
    // nothing; it touches no register but its address operand.
    unsafe {
        std::arch::asm!(
            "prfm pldl1keep, [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        )
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// Hints the first `bytes` of `data` (at most [`START_HINT_MAX`]) into the caches at once: a
/// single-row product's work item about to stream them. The x86 and NEON kernels prefetch
/// [`PREFETCH_AHEAD`] bytes past what they read, so an item's own first bytes would
/// otherwise each wait on memory in turn (measured: the output head's decoding step, 1,536
/// items of 32 rows, about a tenth faster); elsewhere the hint only starts the stream early.
pub(crate) fn prefetch_start<T>(data: &[T], bytes: usize) {
    let p = data.as_ptr().cast::<u8>();
    let end = bytes.min(std::mem::size_of_val(data)).min(START_HINT_MAX);
    for off in (0..end).step_by(64) {
        prefetch_line(p.wrapping_add(off));
    }
}

/// The most bytes [`prefetch_start`] hints at once: half of a 32 KiB L1 data cache, so that
/// a burst for very wide rows does not evict what it fetched before the kernel gets there.
const START_HINT_MAX: usize = 16 << 10;

use crate::dispatch::Isa;
use generic::{FFormat, QFormat};

/// Returns `$call` run with the token of `$isa` bound to `$t`, if this CPU has it (NEON
/// prefers its dotprod token); falls through otherwise.
macro_rules! on_token {
    ($isa:expr, $t:ident => $call:expr) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                if let Some($t) = x86_64::Avx512::new() {
                    return $call;
                }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                if let Some($t) = x86_64::Avx2::new() {
                    return $call;
                }
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                if let Some($t) = aarch64::NeonDot::new() {
                    return $call;
                }
                if let Some($t) = aarch64::Neon::new() {
                    return $call;
                }
            }
            _ => {}
        }
    };
}

/// A chunk of quantized weight rows times activation rows on `isa` (the reference path if this
/// CPU lacks it: every path gives the same bits). Callers check the shapes: `w.len()` is a
/// multiple of `bpr`, each activation row has `bpr` blocks, `out` is rows × `acts.len()`.
pub(crate) fn qchunk<F: QFormat>(
    isa: Isa,
    w: &[F],
    bpr: usize,
    acts: &[&[F::Act]],
    out: &mut [f32],
) {
    on_token!(isa, t => t.qchunk(w, bpr, acts, out));
    scalar::qchunk(w, bpr, acts, out)
}

/// [`qchunk`] for float weights with `cols` values per row.
pub(crate) fn fchunk<W: FFormat>(isa: Isa, w: &[W], cols: usize, acts: &[&[f32]], out: &mut [f32]) {
    on_token!(isa, t => t.fchunk(w, cols, acts, out));
    scalar::fchunk(w, cols, acts, out)
}

/// Lanes of attention's gathered products: the f16 width of llama.cpp's tinyBLAS in a build
/// for this target, which multiplies queries with keys and probabilities with values in its
/// prompt batches (8 on x86 without AVX-512, 16 with it and elsewhere). With 16, the generic
/// vector paths run; with 8, AVX2's eight-lane kernels ([`x86_64::gather::gather_dots8`]) or
/// the reference's lane loop (the same bits either way).
pub(crate) const GATHER_LANES: usize = if cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx",
    not(target_feature = "avx512f")
)) {
    8
} else {
    16
};

/// [`generic::gather_dots`] on `isa` (the reference path if this CPU lacks it).
pub(crate) fn gather_dots<E: FFormat>(
    isa: Isa,
    xs: &[f32],
    m: generic::Gathered<'_, E>,
    out: &mut [f32],
) {
    if GATHER_LANES != 16 {
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            if let Some(t) = x86_64::Avx2::new() {
                return x86_64::gather::gather_dots8(t, xs, m, out);
            }
        }
        return scalar::gather_dots(xs, m, out);
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && m.len.is_multiple_of(16) {
        if let Some(t) = x86_64::Avx512::new() {
            return x86_64::gather::gather_dots(t, xs, m, out);
        }
    }
    on_token!(isa, t => t.gather_dots(xs, m, out));
    scalar::gather_dots(xs, m, out)
}

/// [`generic::gather_axpy`] on `isa` (the reference path if this CPU lacks it).
pub(crate) fn gather_axpy<E: FFormat>(
    isa: Isa,
    w: &[f32],
    m: generic::Gathered<'_, E>,
    out: &mut [f32],
) {
    if GATHER_LANES != 16 {
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            if let Some(t) = x86_64::Avx2::new() {
                return x86_64::gather::gather_axpy8(t, w, m, out);
            }
        }
        return scalar::gather_axpy(w, m, out);
    }
    on_token!(isa, t => t.gather_axpy(w, m, out));
    scalar::gather_axpy(w, m, out)
}

/// [`generic::seq_axpy`] on `isa` (the reference path if this CPU lacks it).
pub(crate) fn seq_axpy<E: FFormat>(
    isa: Isa,
    w: &[f32],
    m: generic::Gathered<'_, E>,
    out: &mut [f32],
) {
    on_token!(isa, t => t.seq_axpy(w, m, out));
    scalar::seq_axpy(w, m, out)
}

/// Each block's integer sums on `isa` (the reference path if this CPU lacks it).
pub(crate) fn qparts<F: QFormat>(isa: Isa, w: &[F], a: &[F::Act]) -> Vec<([i32; 8], i32)> {
    on_token!(isa, t => t.qparts(w, a));
    scalar::qparts(w, a)
}

/// An activation format with quantizers on the vector paths.
pub(crate) trait Q8Act: ScalarAct {
    /// The AVX2 quantizer of one row (`out` holds exactly `x.len() / SIZE` blocks).
    #[cfg(target_arch = "x86_64")]
    fn quantize_avx2(t: x86_64::Avx2, x: &[f32], out: &mut [Self]);
    /// The NEON quantizer of one row.
    #[cfg(target_arch = "aarch64")]
    fn quantize_neon(t: aarch64::Neon, x: &[f32], out: &mut [Self]);
}

/// Quantizes activations on `isa` (the scalar path if this CPU or build lacks it), after the
/// lengths are checked.
pub(crate) fn quantize_activations<A: Q8Act>(
    isa: Isa,
    x: &[f32],
    out: &mut [A],
) -> Result<(), crate::formats::LengthError> {
    // The reference checks lengths; the other paths only run on checked shapes.
    if x.len() != out.len() * A::SIZE {
        return crate::formats::quantize_row(x, out);
    }
    if isa == Isa::Scalar {
        return A::quantize_scalar(x, out);
    }
    match isa {
        // The AVX2 quantizers round as llama.cpp's AVX build does (Q8_K: as the reference).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if ACT_X86 || A::TYPE == crate::types::GgmlType::Q8K => {
            if let Some(t) = x86_64::Avx2::new() {
                A::quantize_avx2(t, x, out);
                return Ok(());
            }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => {
            if let Some(t) = aarch64::Neon::new() {
                A::quantize_neon(t, x, out);
                return Ok(());
            }
        }
        _ => {}
    }
    A::quantize_scalar(x, out)
}

/// How llama.cpp's CPU backend rounds activations to Q8_0/Q8_1 in a build for this target
/// (its `from_float`, which is not the reference quantizer that makes Q8_0 weight files): the
/// scale `d = amax/127`, and the multiplier and rounding of each value. In x86-64 builds with
/// AVX the multiplier is `127/amax` and halves round to even; on AArch64 it is `1/d`, halves
/// to even; elsewhere the reference's `1/d`, halves away from zero. Every instruction set of
/// one build quantizes this way, so a row's bytes depend on the build, not on the CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActQ8;

/// Whether this build's multiplier is `127/amax` (llama.cpp's AVX quantizer).
const ACT_X86: bool = cfg!(all(target_arch = "x86_64", target_feature = "avx"));
/// Whether this build rounds halves to even.
const ACT_EVEN: bool = ACT_X86 || cfg!(target_arch = "aarch64");

impl ActQ8 {
    /// `(d, multiplier)` for a block whose largest magnitude is `amax`.
    #[inline(always)]
    pub(crate) fn scale(amax: f32) -> (f32, f32) {
        let d = amax / 127.0;
        if ACT_X86 {
            (d, if amax != 0.0 { 127.0 / amax } else { 0.0 })
        } else {
            (d, if d != 0.0 { 1.0 / d } else { 0.0 })
        }
    }

    /// One scaled value to its quant (saturating, NaN to 0).
    #[inline(always)]
    pub(crate) fn round(v: f32) -> i8 {
        if ACT_EVEN {
            v.round_ties_even() as i8
        } else {
            v.round() as i8
        }
    }

    /// One block of 32: `(d, quants, Σ quants)`.
    pub(crate) fn block(x: &[f32; 32]) -> (f32, [i8; 32], i32) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = Self::scale(amax);
        let qs: [i8; 32] = std::array::from_fn(|j| Self::round(x[j] * id));
        (d, qs, qs.iter().map(|&q| q as i32).sum())
    }
}

/// The element-by-element activation quantizers (lengths checked by the caller).
pub(crate) trait ScalarAct: crate::formats::Block {
    /// Quantizes `x` (exactly `out.len()` blocks) as every path of this target does.
    fn quantize_scalar(x: &[f32], out: &mut [Self]) -> Result<(), crate::formats::LengthError>;
}

impl ScalarAct for crate::formats::BlockQ8_0 {
    fn quantize_scalar(x: &[f32], out: &mut [Self]) -> Result<(), crate::formats::LengthError> {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            let (d, qs, _) = ActQ8::block(x);
            o.d = half::f16::from_f32(d);
            o.qs = qs;
        }
        Ok(())
    }
}

impl ScalarAct for crate::formats::BlockQ8_1 {
    fn quantize_scalar(x: &[f32], out: &mut [Self]) -> Result<(), crate::formats::LengthError> {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            let (d, qs, sum) = ActQ8::block(x);
            o.d = half::f16::from_f32(d);
            o.s = half::f16::from_f32(d * sum as f32);
            o.qs = qs;
        }
        Ok(())
    }
}

impl ScalarAct for crate::formats::BlockQ8K {
    /// Q8_K activations are the reference's on every target, as in llama.cpp.
    fn quantize_scalar(x: &[f32], out: &mut [Self]) -> Result<(), crate::formats::LengthError> {
        crate::formats::quantize_row(x, out)
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod portable {
    use crate::formats::{BlockQ8K, BlockQ8_0, BlockQ8_1};
    impl super::Q8Act for BlockQ8_0 {}
    impl super::Q8Act for BlockQ8_1 {}
    impl super::Q8Act for BlockQ8K {}
}
