//! Every kernel written once, over the vector operations of [`Simd`].
//!
//! Quantized formats implement [`QFormat`]: `unpack` turns one weight block into 32-byte
//! vectors of small integers (once per block, however many activation rows it meets), and
//! `parts` computes the block's exact integer sums against one activation block, in eight
//! lanes (lane `l` sums the elements `e` with `(e mod 32) / 4 == l`: four consecutive bytes of
//! each 32-byte vector, the grouping of `vpmaddwd`, `vpdpbusd` and `sdot`) plus one scalar
//! integer (the minimum's or offset's sum). `combine`, shared with the scalar reference, gives
//! the lanes' scale and the two factors of the scalar's f32 term. Each row accumulates, block
//! after block, as the format's [`Accum`] says: for the 32-value formats and Q5_K, lanes with
//! a fused multiply-add into one running vector and terms into one running float, the result
//! the fixed 8-lane tree of the vector plus the float (llama.cpp's `acc`, `summs` and
//! `hsum_float_8`); for Q2_K, Q3_K, Q4_K and Q6_K the per-lane minimums or offsets or the four
//! running minimum sums of their own x86 kernels. Given the same activation bytes every format
//! agrees with ggml's x86 `vec_dot` bit for bit.
//!
//! Several activation rows meet each unpacked weight block ([`qtile`]); a single activation
//! row (decoding one sequence) meets eight weight rows at a time instead, each with its own
//! running sums ([`qchunk`]), so that eight independent chains of fused multiply-adds
//! overlap, and prefetches the weights 2 KiB ahead as it streams them. Either way a row's
//! sums are the same sequence of operations, so the bits do not depend on the batch.
//!
//! Float formats implement [`FFormat`]: rows are reduced in 16 lanes with a fused
//! multiply-add, then summed by one fixed tree, then the tail is added element by element.
//!
//! The preconditions on operand ranges (`dot_u`: weights in 0..=127, ...) are what keeps
//! x86's saturating `vpmaddubsw` exact; each format states why its values fit.

use bytemuck::cast_ref;
use half::{bf16, f16};

use super::combine;
use super::{PREFETCH_AHEAD, ROW_GROUP, TILE};
use crate::formats::kquant::{get_scale_min_k4, q3k_scale};
use crate::formats::{
    Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1,
    BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};

/// The vector operations the kernels are written in. Implementors are capability tokens:
/// holding one proves the CPU has the instructions, so the operations are safe to call.
pub(crate) trait Simd: Copy {
    /// 32 bytes.
    type V: Copy;
    /// Eight i32 lanes: lane `l` holds bytes `4l..4l + 4` of the 32-byte vectors.
    type Acc: Copy;
    /// Eight f32 lanes.
    type F8: Copy;
    /// 16 f32 lanes.
    type F: Copy;
    /// How many [`Self::F`] the vector registers hold: how wide a tile of accumulators can
    /// stay in registers.
    const F_REGS: usize;

    /// Loads 32 bytes.
    fn load(self, b: &[u8; 32]) -> Self::V;
    /// The 32 nibbles of 16 bytes: low nibbles first, then high nibbles.
    fn nibbles(self, b: &[u8; 16]) -> Self::V;
    /// `(v >> shift) & mask` in each byte (`shift < 8`).
    fn shr_and(self, v: Self::V, shift: u32, mask: u8) -> Self::V;
    /// `v << 4` in each byte; every byte of `v` is below 16.
    fn shl4(self, v: Self::V) -> Self::V;
    /// Bytewise or.
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    /// Bytewise wrapping subtraction.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// Every byte `x`.
    fn splat(self, x: u8) -> Self::V;
    /// `value` in each byte where `v & bit != 0`, else 0.
    fn bit_set(self, v: Self::V, bit: u8, value: u8) -> Self::V;
    /// `value` in byte `i` where bit `i` of `word` is set, else 0.
    fn bits32(self, word: u32, value: u8) -> Self::V;
    /// Zero partial sums.
    fn zero(self) -> Self::Acc;
    /// Adds `w·a` into the lanes (`w` unsigned in 0..=127, `a` any signed byte).
    fn dot_u(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc;
    /// Adds `w·a` (`w` signed in -127..=127, `a` any signed byte).
    fn dot_s(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc;
    /// Adds `w·a` (`w` any signed byte, `a` in -127..=127, as activation quantizers make it).
    fn dot_w8(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc;
    /// Adds `w·a` scaled by `s0` in bytes 0..16 (lanes 0..4) and by `s1` in bytes 16..32
    /// (`w` unsigned in 0..=127).
    fn dot_u2(self, acc: Self::Acc, w: Self::V, a: Self::V, s0: i16, s1: i16) -> Self::Acc;
    /// The lanes as an array.
    fn lanes(self, acc: Self::Acc) -> [i32; 8];
    /// Lanes from an array.
    fn acc_from(self, lanes: [i32; 8]) -> Self::Acc;
    /// Zero f32 lanes.
    fn f8zero(self) -> Self::F8;
    /// `acc + f32(x)·scale` in each lane, fused.
    fn f8fma(self, acc: Self::F8, x: Self::Acc, scale: f32) -> Self::F8;
    /// Lane `l` plus lane `l + 4`, then `+ 2`, then `+ 1`.
    fn f8reduce(self, acc: Self::F8) -> f32;
    /// Two f16 as f32 (exact).
    fn f16x2(self, h: [f16; 2]) -> [f32; 2];

    /// Zero float lanes.
    fn fzero(self) -> Self::F;
    /// 16 f32.
    fn fload(self, x: &[f32; 16]) -> Self::F;
    /// 16 f16 widened to f32.
    fn fload_f16(self, x: &[f16; 16]) -> Self::F;
    /// 16 bf16 widened to f32.
    fn fload_bf16(self, x: &[bf16; 16]) -> Self::F;
    /// Every lane `x`.
    fn fsplat(self, x: f32) -> Self::F;
    /// Stores 16 lanes.
    fn fstore(self, v: Self::F, out: &mut [f32; 16]);
    /// `acc + a·b` in each lane, fused.
    fn fma(self, acc: Self::F, a: Self::F, b: Self::F) -> Self::F;
    /// Lane-wise sum.
    fn fadd(self, a: Self::F, b: Self::F) -> Self::F;
    /// Lane `l` plus lane `l + 8`, then `+ 4`, `+ 2`, `+ 1`: the sum of the 16 lanes in that
    /// fixed order.
    fn freduce(self, acc: Self::F) -> f32;
    /// A hint to fetch the cache line at `p` (any address: a hint never faults and reads
    /// nothing); nothing where the instruction set has no hint this crate uses.
    #[inline(always)]
    fn prefetch(self, p: *const u8) {
        let _ = p;
    }
}

/// A quantized weight format with a kernel against its 8-bit activation partner.
pub(crate) trait QFormat: Block {
    /// The activation format (ggml's `vec_dot_type`).
    type Act: Block;
    /// One weight block unpacked into vectors.
    type U<S: Simd>: Copy;
    /// Unpacks one weight block.
    fn unpack<S: Simd>(s: S, w: &Self) -> Self::U<S>;
    /// The block's exact integer sums against one activation block: eight lanes and one
    /// scalar (what [`Self::combine`] takes).
    fn parts<S: Simd>(s: S, u: &Self::U<S>, w: &Self, a: &Self::Act) -> (S::Acc, i32);
    /// The same sums computed element by element from the format's definition.
    fn ref_parts(w: &Self, a: &Self::Act) -> ([i32; 8], i32);
    /// The weight block's scales as f32 (`h` widens two f16), once per block.
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2];
    /// The lanes' scale and the two factors of the scalar's f32 term, from the weight's
    /// scales and the activation block (`h` widens two f16).
    fn combine(
        ws: [f32; 2],
        a: &Self::Act,
        scalar: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]);
    /// How llama.cpp's x86 `vec_dot` for this format accumulates ([`Accum`]).
    const ACCUM: Accum = Accum::Term;
    /// The integers [`Accum`] takes per lane besides the lane sums (none for
    /// [`Accum::Term`]).
    #[inline(always)]
    fn extra<S: Simd>(_: S, _: &Self::U<S>, _: &Self, _: &Self::Act) -> [i32; 8] {
        [0; 8]
    }
    /// The same integers element by element, for the reference.
    fn ref_extra(_: &Self, _: &Self::Act) -> [i32; 8] {
        [0; 8]
    }
}

/// How a format's running f32 sums take each block, as llama.cpp's x86 `vec_dot` for it does
/// (`scale` and `f0, f1` from [`QFormat::combine`], `extra` from [`QFormat::extra`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accum {
    /// `acc = fma(lanes, scale, acc)` and `term = fma(f0, f1, term)`; the row's result is the
    /// 8-lane tree of `acc` plus `term` (the 32-value formats; Q5_K).
    Term,
    /// As [`Accum::Term`], with four running terms `term_k = fma(f0, extra_k, term_k)` added
    /// as `(term_0 + term_2) + (term_1 + term_3)` (Q4_K: its minimums per pair of
    /// sub-blocks).
    Quad,
    /// `acc = fma(extra, f0, acc)` (the minimums, per lane) and then `acc = fma(lanes, scale,
    /// acc)`; the result is the tree of `acc` (Q2_K).
    LaneMin,
    /// `acc = fma(lanes − extra, scale, acc)` (the offset subtracted per lane in integers);
    /// the result is the tree of `acc` (Q3_K, Q6_K).
    LaneOffset,
}

/// One row's running sums ([`Accum`]).
#[derive(Clone, Copy)]
pub(crate) struct Running<F8> {
    pub(crate) acc: F8,
    pub(crate) terms: [f32; 4],
}

impl Accum {
    /// The row's result from its running sums (`tree` reduces the lanes).
    #[inline(always)]
    pub(crate) fn finish<F8: Copy>(self, r: &Running<F8>, tree: impl Fn(F8) -> f32) -> f32 {
        let t = &r.terms;
        match self {
            Accum::Term => tree(r.acc) + t[0],
            Accum::Quad => tree(r.acc) + ((t[0] + t[2]) + (t[1] + t[3])),
            Accum::LaneMin | Accum::LaneOffset => tree(r.acc),
        }
    }
}

/// A float weight format, multiplied with f32 activations.
pub(crate) trait FFormat: Block + Copy {
    /// Loads 16 values as f32 lanes.
    fn load16<S: Simd>(s: S, x: &[Self; 16]) -> S::F;
    /// One value as f32 (exact).
    fn widen(self) -> f32;
}

impl FFormat for f32 {
    #[inline(always)]
    fn load16<S: Simd>(s: S, x: &[f32; 16]) -> S::F {
        s.fload(x)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl FFormat for f16 {
    #[inline(always)]
    fn load16<S: Simd>(s: S, x: &[f16; 16]) -> S::F {
        s.fload_f16(x)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl FFormat for bf16 {
    #[inline(always)]
    fn load16<S: Simd>(s: S, x: &[bf16; 16]) -> S::F {
        s.fload_bf16(x)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// Dot products of one weight row with up to [`TILE`] activation rows, each weight block
/// unpacked once. The caller checks `acts.len() <= TILE`, `out.len() == acts.len()` and that
/// every activation row has as many blocks as `w`.
#[inline(always)]
pub(crate) fn qtile<S: Simd, F: QFormat>(s: S, w: &[F], acts: &[&[F::Act]], out: &mut [f32]) {
    match (acts, out) {
        ([a], [o]) => qtile_n::<S, F, 1>(s, w, [a], [o]),
        ([a, b], [o, p]) => qtile_n::<S, F, 2>(s, w, [a, b], [o, p]),
        ([a, b, c], [o, p, q]) => qtile_n::<S, F, 3>(s, w, [a, b, c], [o, p, q]),
        ([a, b, c, d], [o, p, q, r]) => qtile_n::<S, F, 4>(s, w, [a, b, c, d], [o, p, q, r]),
        _ => {}
    }
}

/// [`qtile`] for exactly `T` activation rows, so that every running sum stays in a register.
#[inline(always)]
fn qtile_n<S: Simd, F: QFormat, const T: usize>(
    s: S,
    w: &[F],
    acts: [&&[F::Act]; T],
    out: [&mut f32; T],
) {
    let mut run = [Running {
        acc: s.f8zero(),
        terms: [0f32; 4],
    }; T];
    for (b, wb) in w.iter().enumerate() {
        let u = F::unpack(s, wb);
        let ws = F::wscales(wb, |h| s.f16x2(h));
        for (r, a) in run.iter_mut().zip(acts) {
            qstep(s, r, &u, ws, wb, &a[b]);
        }
    }
    for (r, o) in run.iter().zip(out) {
        *o = F::ACCUM.finish(r, |a| s.f8reduce(a));
    }
}

/// `R` weight rows times one activation row (decoding one sequence), block by block: each
/// row's chain of dependent fused multiply-adds is the one [`qtile_n`] runs, and the `R`
/// independent chains overlap where one alone would wait on its own latency. `next` is where
/// the memory after the rows starts; the bytes from [`PREFETCH_AHEAD`] past it are
/// prefetched as the rows are consumed, `R` blocks' worth per block.
#[inline(always)]
fn qrows_n<S: Simd, F: QFormat, const R: usize>(
    s: S,
    w: [&[F]; R],
    a: &[F::Act],
    out: [&mut f32; R],
    next: *const u8,
) {
    let mut run = [Running {
        acc: s.f8zero(),
        terms: [0f32; 4],
    }; R];
    let step = R * std::mem::size_of::<F>();
    let ahead = next.wrapping_add(PREFETCH_AHEAD);
    for (b, ab) in a.iter().enumerate() {
        for l in (0..step).step_by(64) {
            s.prefetch(ahead.wrapping_add(b * step + l));
        }
        for (r, w) in run.iter_mut().zip(w) {
            let wb = &w[b];
            let u = F::unpack(s, wb);
            let ws = F::wscales(wb, |h| s.f16x2(h));
            qstep(s, r, &u, ws, wb, ab);
        }
    }
    for (r, o) in run.iter().zip(out) {
        *o = F::ACCUM.finish(r, |a| s.f8reduce(a));
    }
}

/// One block of one (weight row, activation row) product into its running sums, in the
/// sequence of llama.cpp's x86 kernel for the format ([`Accum`]).
#[inline(always)]
fn qstep<S: Simd, F: QFormat>(
    s: S,
    r: &mut Running<S::F8>,
    u: &F::U<S>,
    ws: [f32; 2],
    wb: &F,
    ab: &F::Act,
) {
    let (x, scalar) = F::parts(s, u, wb, ab);
    let (scale, [f0, f1]) = F::combine(ws, ab, scalar, |h| s.f16x2(h));
    match F::ACCUM {
        Accum::Term => {
            r.acc = s.f8fma(r.acc, x, scale);
            r.terms[0] = f0.mul_add(f1, r.terms[0]);
        }
        Accum::Quad => {
            r.acc = s.f8fma(r.acc, x, scale);
            let e = F::extra(s, u, wb, ab);
            for (t, e) in r.terms.iter_mut().zip(e) {
                *t = f0.mul_add(e as f32, *t);
            }
        }
        Accum::LaneMin => {
            let e = F::extra(s, u, wb, ab);
            r.acc = s.f8fma(r.acc, s.acc_from(e), f0);
            r.acc = s.f8fma(r.acc, x, scale);
        }
        Accum::LaneOffset => {
            let e = F::extra(s, u, wb, ab);
            let mut l = s.lanes(x);
            for (l, e) in l.iter_mut().zip(e) {
                *l -= e;
            }
            r.acc = s.f8fma(r.acc, s.acc_from(l), scale);
        }
    }
}

/// A chunk of weight rows (`bpr` blocks each) times every activation row: `out` is
/// rows × `acts.len()`, row-major. Activation rows go [`TILE`] at a time, and each tile meets
/// every weight row of the chunk while the chunk is hot in cache; a single activation row
/// meets eight weight rows at a time ([`qrows_n`]), then the rest one by one.
#[inline(always)]
pub(crate) fn qchunk<S: Simd, F: QFormat>(
    s: S,
    w: &[F],
    bpr: usize,
    acts: &[&[F::Act]],
    out: &mut [f32],
) {
    if let [a] = acts {
        // One activation row: eight weight rows at a time, then one by one.
        const R: usize = ROW_GROUP;
        let mut rows = w.chunks_exact(R * bpr);
        let mut outs = out.chunks_exact_mut(R);
        for (wr, or) in (&mut rows).zip(&mut outs) {
            let ws: [&[F]; R] = std::array::from_fn(|i| &wr[i * bpr..(i + 1) * bpr]);
            let Ok(or) = <&mut [f32; R]>::try_from(or) else {
                unreachable!("chunks of R")
            };
            let next = wr.as_ptr_range().end.cast::<u8>();
            qrows_n::<S, F, R>(s, ws, a, or.each_mut(), next);
        }
        for (wrow, o) in rows
            .remainder()
            .chunks_exact(bpr)
            .zip(outs.into_remainder())
        {
            let next = wrow.as_ptr_range().end.cast::<u8>();
            qrows_n::<S, F, 1>(s, [wrow], a, [o], next);
        }
        return;
    }
    let batch = acts.len();
    for (t, tile) in acts.chunks(TILE).enumerate() {
        for (wrow, orow) in w.chunks_exact(bpr).zip(out.chunks_exact_mut(batch)) {
            qtile(s, wrow, tile, &mut orow[t * TILE..t * TILE + tile.len()]);
        }
    }
}

/// [`qchunk`] for float weights (`cols` values per row). Each dot product is one chain of
/// fused multiply-adds ([`fdots`]), so the results do not depend on the tiling; the
/// tiles only run several chains side by side (a full activation tile against one weight row,
/// or against four, then two, where the registers have room for sixteen accumulators and
/// their operands), which the multiply-add's latency would otherwise leave waiting.
#[inline(always)]
pub(crate) fn fchunk<S: Simd, W: FFormat>(
    s: S,
    w: &[W],
    cols: usize,
    acts: &[&[f32]],
    out: &mut [f32],
) {
    let batch = acts.len();
    for (t, tile) in acts.chunks(TILE).enumerate() {
        let col = t * TILE;
        if let Ok(&full) = <&[&[f32]; TILE]>::try_from(tile) {
            let mut r = 0;
            if S::F_REGS >= 24 {
                r = frows::<S, W, 4, TILE>(s, w, cols, full, out, batch, (r, col));
                r = frows::<S, W, 2, TILE>(s, w, cols, full, out, batch, (r, col));
            }
            frows::<S, W, 1, TILE>(s, w, cols, full, out, batch, (r, col));
        } else {
            // A short tile (a single row when decoding): four weight rows side by side.
            for (j, &a) in tile.iter().enumerate() {
                let r = frows::<S, W, 4, 1>(s, w, cols, [a], out, batch, (0, col + j));
                frows::<S, W, 1, 1>(s, w, cols, [a], out, batch, (r, col + j));
            }
        }
    }
}

/// From weight row `at.0` on, `R` rows at a time while `R` remain, the [`fdots`] of the rows
/// (`cols` values each) with the activation rows `a`, written to `out` (rows × `batch`) at
/// columns `at.1..at.1 + A`. Returns the first row left.
#[inline(always)]
fn frows<S: Simd, W: FFormat, const R: usize, const A: usize>(
    s: S,
    w: &[W],
    cols: usize,
    a: [&[f32]; A],
    out: &mut [f32],
    batch: usize,
    at: (usize, usize),
) -> usize {
    let (mut r, col) = at;
    let n_rows = w.len() / cols;
    while r + R <= n_rows {
        let rows: [&[W]; R] = std::array::from_fn(|i| &w[(r + i) * cols..][..cols]);
        let sums = fdots(s, rows, a);
        for (i, row) in sums.iter().enumerate() {
            out[(r + i) * batch + col..][..A].copy_from_slice(row);
        }
        r += R;
    }
    r
}

/// Each block's integer sums (for tests that compare them with [`QFormat::ref_parts`]).
#[inline(always)]
pub(crate) fn qparts<S: Simd, F: QFormat>(s: S, w: &[F], a: &[F::Act]) -> Vec<([i32; 8], i32)> {
    w.iter()
        .zip(a)
        .map(|(wb, ab)| {
            let (x, scalar) = F::parts(s, &F::unpack(s, wb), wb, ab);
            (s.lanes(x), scalar)
        })
        .collect()
}

/// The dot products of `R` weight rows with `A` activation rows, each computed as
/// one 16-lane chain of fused multiply-adds per pair, the fixed 16-lane tree, then the
/// tail element by element. The chains run side by side, each weight and activation chunk
/// loaded once for all the pairs it enters. Every row holds the same number of values.
#[inline(always)]
fn fdots<S: Simd, W: FFormat, const R: usize, const A: usize>(
    s: S,
    w: [&[W]; R],
    a: [&[f32]; A],
) -> [[f32; A]; R] {
    let n = w[0].len();
    assert!(w.iter().all(|x| x.len() == n) && a.iter().all(|x| x.len() == n));
    let wc = w.map(|x| x.as_chunks::<16>().0);
    let ac = a.map(|x| x.as_chunks::<16>().0);
    let chunks = n / 16;
    // Plain loops only: a closure is compiled without the caller's instruction set, so vectors
    // passed through one would go through memory.
    let mut acc = [[s.fzero(); A]; R];
    let mut av = [s.fzero(); A];
    for k in 0..chunks {
        for j in 0..A {
            av[j] = s.fload(&ac[j][k]);
        }
        for r in 0..R {
            let wv = W::load16(s, &wc[r][k]);
            for j in 0..A {
                acc[r][j] = s.fma(acc[r][j], wv, av[j]);
            }
        }
    }
    let mut out = [[0.0; A]; R];
    for r in 0..R {
        for j in 0..A {
            let mut sum = s.freduce(acc[r][j]);
            for (x, y) in w[r][chunks * 16..].iter().zip(&a[j][chunks * 16..]) {
                sum = x.widen().mul_add(*y, sum);
            }
            out[r][j] = sum;
        }
    }
    out
}

/// Rows of a row-major matrix of f32 or f16 values picked by index: row `i` is
/// `data[rows[i]·stride + offset..][..len]`. The caller checks that every picked row lies
/// inside `data`.
#[derive(Debug)]
pub(crate) struct Gathered<'a, E = f32> {
    pub(crate) data: &'a [E],
    pub(crate) stride: usize,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) rows: &'a [u32],
}

impl<E> Clone for Gathered<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Gathered<'_, E> {}

impl<E> Gathered<'_, E> {
    #[inline(always)]
    pub(crate) fn row(&self, r: u32) -> &[E] {
        &self.data[r as usize * self.stride + self.offset..][..self.len]
    }
}

/// `out[g·n + i] = xs_g · row_i` for each vector `xs_g` (`len` values) and each picked row
/// (`n` of them), as [`fdots`] computes a dot product (f16 rows widened exactly).
#[inline(always)]
pub(crate) fn gather_dots<S: Simd, E: FFormat>(
    s: S,
    xs: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
) {
    let n = m.rows.len();
    for (i, &r) in m.rows.iter().enumerate() {
        let row = m.row(r);
        for (g, x) in xs.chunks_exact(m.len).enumerate() {
            // `row · x` and `x · row` take the same fused steps: each product is exact.
            let [[d]] = fdots(s, [row], [x]);
            out[g * n + i] = d;
        }
    }
}

/// `out_g += Σ_i w[g·n + i] · row_i` for each output vector `out_g` (`len` values). Each
/// element's products go to 16 lanes by row (row `i` to lane `i mod 16`), each lane a chain of
/// fused multiply-adds in row order (zero weights add nothing), and the lanes are summed by the
/// fixed 16-lane tree: the order in which llama.cpp's prompt batches (tinyBLAS, 16 cells at a
/// time) multiply attention's probabilities with the values.
///
/// The work goes lane by lane: lane `l`'s rows (`l`, `l + 16`, ...) are each read once for
/// [`AXPY_CHUNKS`] 16-value chunks of up to three output vectors at a time (one where the
/// registers hold fewer), and the 16 lanes' sums wait in a small buffer for the tree. Each
/// picked row is thus loaded once per tile instead of once per output vector and chunk.
#[inline(always)]
pub(crate) fn gather_axpy<S: Simd, E: FFormat>(
    s: S,
    w: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
) {
    if m.len == 0 {
        return;
    }
    let groups = out.len() / m.len;
    let mut g = 0;
    while g < groups {
        if S::F_REGS >= 24 && groups - g >= 3 {
            axpy_groups::<S, E, 3>(s, w, m, out, g);
            g += 3;
        } else {
            axpy_groups::<S, E, 1>(s, w, m, out, g);
            g += 1;
        }
    }
}

/// `out_g += Σ_i w[g·n + i] · row_i` for each output vector `out_g` (`len` values), each
/// element one chain of fused multiply-adds in row order that starts from its value in `out`
/// (`out[e] ← w_i·row_i[e] + out[e]` for i = 0, 1, ...): no lanes and no tree, so the vectors
/// run along the elements, every path and tile shape gives the same bits, and a picked row is
/// read once per tile of up to three output vectors.
#[inline(always)]
pub(crate) fn seq_axpy<S: Simd, E: FFormat>(s: S, w: &[f32], m: Gathered<'_, E>, out: &mut [f32]) {
    if m.len == 0 {
        return;
    }
    let groups = out.len() / m.len;
    let mut g = 0;
    while g < groups {
        match groups - g {
            1 => seq_axpy_groups::<S, E, 1>(s, w, m, out, g),
            2 => seq_axpy_groups::<S, E, 2>(s, w, m, out, g),
            _ => seq_axpy_groups::<S, E, 3>(s, w, m, out, g),
        }
        g += 3.min(groups - g);
    }
}

/// Output vectors `g0..g0 + GB` of [`seq_axpy`], in tiles of 16-value chunks sized so that
/// the `GB × CB` accumulators stay in registers.
#[inline(always)]
fn seq_axpy_groups<S: Simd, E: FFormat, const GB: usize>(
    s: S,
    w: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
    g0: usize,
) {
    let (n, len) = (m.rows.len(), m.len);
    let ws: [&[f32]; GB] = std::array::from_fn(|j| &w[(g0 + j) * n..(g0 + j + 1) * n]);
    let chunks = len / 16;
    // Accumulators beside one loaded chunk and the GB broadcast weights.
    let room = S::F_REGS.saturating_sub(1 + GB);
    let mut c = 0;
    while c < chunks {
        let left = chunks - c;
        if left >= 4 && GB * 4 <= room {
            seq_axpy_tile::<S, E, GB, 4>(s, &ws, m, out, g0, c);
            c += 4;
        } else if left >= 2 && GB * 2 <= room {
            seq_axpy_tile::<S, E, GB, 2>(s, &ws, m, out, g0, c);
            c += 2;
        } else {
            seq_axpy_tile::<S, E, GB, 1>(s, &ws, m, out, g0, c);
            c += 1;
        }
    }
    // Values past the last whole chunk, one at a time, in the same order.
    for (j, wg) in ws.iter().enumerate() {
        for e in 16 * chunks..len {
            let o = &mut out[(g0 + j) * len + e];
            for (&wi, &r) in wg.iter().zip(m.rows) {
                *o = wi.mul_add(m.row(r)[e].widen(), *o);
            }
        }
    }
}

/// Chunks `c0..c0 + CB` of output vectors `g0..g0 + GB` of [`seq_axpy`]: each picked row's
/// `CB` chunks loaded (and widened) once for the `GB` vectors.
#[inline(always)]
fn seq_axpy_tile<S: Simd, E: FFormat, const GB: usize, const CB: usize>(
    s: S,
    ws: &[&[f32]; GB],
    m: Gathered<'_, E>,
    out: &mut [f32],
    g0: usize,
    c0: usize,
) {
    let len = m.len;
    let at = |j: usize, c: usize| (g0 + j) * len + 16 * (c0 + c);
    let mut acc: [[S::F; CB]; GB] = std::array::from_fn(|j| {
        std::array::from_fn(|c| match out[at(j, c)..].first_chunk::<16>() {
            Some(o) => s.fload(o),
            None => unreachable!("chunk {} of a {len}-value vector", c0 + c),
        })
    });
    for (i, &r) in m.rows.iter().enumerate() {
        let row = m.row(r).as_chunks::<16>().0;
        let wv: [S::F; GB] = std::array::from_fn(|j| s.fsplat(ws[j][i]));
        for c in 0..CB {
            let x = E::load16(s, &row[c0 + c]);
            for (a, &wv) in acc.iter_mut().zip(&wv) {
                a[c] = s.fma(a[c], wv, x);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        for (c, &v) in acc.iter().enumerate() {
            if let Some(o) = out[at(j, c)..].first_chunk_mut::<16>() {
                s.fstore(v, o);
            }
        }
    }
}

/// Chunks of 16 values per tile of [`gather_axpy`].
const AXPY_CHUNKS: usize = 4;

/// Output vectors `g0..g0 + GB` of [`gather_axpy`].
#[inline(always)]
fn axpy_groups<S: Simd, E: FFormat, const GB: usize>(
    s: S,
    w: &[f32],
    m: Gathered<'_, E>,
    out: &mut [f32],
    g0: usize,
) {
    let (n, len) = (m.rows.len(), m.len);
    let ws: [&[f32]; GB] = std::array::from_fn(|j| &w[(g0 + j) * n..(g0 + j + 1) * n]);
    let chunks = len / 16;
    let mut c = 0;
    while c < chunks {
        if chunks - c >= AXPY_CHUNKS {
            axpy_tile::<S, E, GB, AXPY_CHUNKS>(s, &ws, m, out, g0, c);
            c += AXPY_CHUNKS;
        } else {
            axpy_tile::<S, E, GB, 1>(s, &ws, m, out, g0, c);
            c += 1;
        }
    }
    // Values past the last whole chunk, one at a time in the same lanes.
    let done = 16 * chunks;
    for (j, wg) in ws.iter().enumerate() {
        for e in done..len {
            let mut lanes = [0f32; 16];
            for (i, (&wi, &r)) in wg.iter().zip(m.rows).enumerate() {
                if wi != 0.0 {
                    lanes[i % 16] = wi.mul_add(m.row(r)[e].widen(), lanes[i % 16]);
                }
            }
            out[(g0 + j) * len + e] += super::scalar::reduce16(lanes);
        }
    }
}

/// Chunks `c0..c0 + CB` of output vectors `g0..g0 + GB` of [`gather_axpy`]: `GB × CB`
/// accumulators per lane, each picked row's `CB` chunks loaded once for all of them.
#[inline(always)]
fn axpy_tile<S: Simd, E: FFormat, const GB: usize, const CB: usize>(
    s: S,
    ws: &[&[f32]; GB],
    m: Gathered<'_, E>,
    out: &mut [f32],
    g0: usize,
    c0: usize,
) {
    let n = m.rows.len();
    // Lanes past the last row keep zero sums, as the lanes of a short row list do.
    let mut lanes = [[[s.fzero(); CB]; GB]; 16];
    for (l, lane) in lanes.iter_mut().enumerate().take(n) {
        let mut acc = [[s.fzero(); CB]; GB];
        let mut i = l;
        while i < n {
            let row = m.row(m.rows[i]).as_chunks::<16>().0;
            let x: [S::F; CB] = std::array::from_fn(|c| E::load16(s, &row[c0 + c]));
            for (acc, wg) in acc.iter_mut().zip(ws) {
                // A zero weight adds `0·x = ±0` to a lane that is never −0: nothing, as
                // skipping it.
                let wv = s.fsplat(wg[i]);
                for (a, &xv) in acc.iter_mut().zip(&x) {
                    *a = s.fma(*a, wv, xv);
                }
            }
            i += 16;
        }
        *lane = acc;
    }
    for (j, c) in (0..GB).flat_map(|j| (0..CB).map(move |c| (j, c))) {
        let mut v: [S::F; 16] = std::array::from_fn(|l| lanes[l][j][c]);
        for step in [8, 4, 2, 1] {
            for l in 0..step {
                v[l] = s.fadd(v[l], v[l + step]);
            }
        }
        let at = (g0 + j) * m.len + 16 * (c0 + c);
        if let Some(o) = out[at..].first_chunk_mut::<16>() {
            s.fstore(s.fadd(s.fload(o), v[0]), o);
        }
    }
}

#[inline(always)]
fn bytes32(x: &[i8; 32]) -> &[u8; 32] {
    cast_ref(x)
}

/// The `j`-th 32 activations of a Q8_K block.
#[inline(always)]
fn q8k_chunk(a: &BlockQ8K, j: usize) -> &[u8; 32] {
    bytes32(&a.qs.as_chunks::<32>().0[j])
}

/// `Σ_j c_j · bsums_j` over the 16 group sums of a Q8_K block.
#[inline(always)]
fn bsum_dot16(c: &[i32; 16], a: &BlockQ8K) -> i32 {
    c.iter().zip(&a.bsums).map(|(&c, &b)| c * b as i32).sum()
}

/// Lane sums of the reference: element `e`'s product goes to lane `(e mod 32) / 4`.
fn ref_lanes(n: usize, product: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for e in 0..n {
        lanes[(e % 32) / 4] += product(e);
    }
    lanes
}

// Legacy formats: blocks of 32. Their quants are at most 5 bits (|q| ≤ 16 once offset), so
// `dot_s`/`dot_u` apply; Q8_0 weights may be any byte and use `dot_w8`.

impl QFormat for BlockQ4_0 {
    type Act = BlockQ8_0;
    type U<S: Simd> = S::V;
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> S::V {
        s.sub(s.nibbles(&w.qs), s.splat(8))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &S::V, _: &Self, a: &BlockQ8_0) -> (S::Acc, i32) {
        (s.dot_s(s.zero(), *u, s.load(bytes32(&a.qs))), 0)
    }
    fn ref_parts(w: &Self, a: &BlockQ8_0) -> ([i32; 8], i32) {
        let q = |j: usize| if j < 16 { w.qs[j] & 0xf } else { w.qs[j - 16] >> 4 } as i32 - 8;
        (ref_lanes(32, |j| q(j) * a.qs[j] as i32), 0)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.d])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8_0,
        _: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::scaled([ws[0], h([a.d, a.d])[0]])
    }
}

impl QFormat for BlockQ4_1 {
    type Act = BlockQ8_1;
    type U<S: Simd> = S::V;
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> S::V {
        s.nibbles(&w.qs)
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &S::V, _: &Self, a: &BlockQ8_1) -> (S::Acc, i32) {
        (s.dot_u(s.zero(), *u, s.load(bytes32(&a.qs))), 0)
    }
    fn ref_parts(w: &Self, a: &BlockQ8_1) -> ([i32; 8], i32) {
        let q = |j: usize| if j < 16 { w.qs[j] & 0xf } else { w.qs[j - 16] >> 4 } as i32;
        (ref_lanes(32, |j| q(j) * a.qs[j] as i32), 0)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.m])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8_1,
        _: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::scaled_min(ws, h([a.d, a.s]))
    }
}

/// Element `j`'s five-bit quant of a Q5_0/Q5_1 block.
fn q5(qs: &[u8; 16], qh: [u8; 4], j: usize) -> i32 {
    let qh = u32::from_le_bytes(qh);
    let low = if j < 16 { qs[j] & 0xf } else { qs[j - 16] >> 4 };
    (low as i32) | ((((qh >> j) & 1) as i32) << 4)
}

impl QFormat for BlockQ5_0 {
    type Act = BlockQ8_0;
    type U<S: Simd> = S::V;
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> S::V {
        let q = s.or(s.nibbles(&w.qs), s.bits32(u32::from_le_bytes(w.qh), 0x10));
        s.sub(q, s.splat(16))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &S::V, _: &Self, a: &BlockQ8_0) -> (S::Acc, i32) {
        (s.dot_s(s.zero(), *u, s.load(bytes32(&a.qs))), 0)
    }
    fn ref_parts(w: &Self, a: &BlockQ8_0) -> ([i32; 8], i32) {
        (
            ref_lanes(32, |j| (q5(&w.qs, w.qh, j) - 16) * a.qs[j] as i32),
            0,
        )
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.d])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8_0,
        _: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::scaled([ws[0], h([a.d, a.d])[0]])
    }
}

impl QFormat for BlockQ5_1 {
    type Act = BlockQ8_1;
    type U<S: Simd> = S::V;
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> S::V {
        s.or(s.nibbles(&w.qs), s.bits32(u32::from_le_bytes(w.qh), 0x10))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &S::V, _: &Self, a: &BlockQ8_1) -> (S::Acc, i32) {
        (s.dot_u(s.zero(), *u, s.load(bytes32(&a.qs))), 0)
    }
    fn ref_parts(w: &Self, a: &BlockQ8_1) -> ([i32; 8], i32) {
        (ref_lanes(32, |j| q5(&w.qs, w.qh, j) * a.qs[j] as i32), 0)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.m])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8_1,
        _: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::scaled_min(ws, h([a.d, a.s]))
    }
}

impl QFormat for BlockQ8_0 {
    type Act = BlockQ8_0;
    type U<S: Simd> = S::V;
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> S::V {
        s.load(bytes32(&w.qs))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &S::V, _: &Self, a: &BlockQ8_0) -> (S::Acc, i32) {
        (s.dot_w8(s.zero(), *u, s.load(bytes32(&a.qs))), 0)
    }
    fn ref_parts(w: &Self, a: &BlockQ8_0) -> ([i32; 8], i32) {
        (ref_lanes(32, |j| w.qs[j] as i32 * a.qs[j] as i32), 0)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.d])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8_0,
        _: i32,
        h: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::scaled([ws[0], h([a.d, a.d])[0]])
    }
}

// K-quants: super-blocks of 256 against Q8_K. Quants are unpacked unsigned (at most 6 bits,
// so `dot_u2` applies) and weighted by their sub-block's scale in the lanes; a signed format's
// offset comes back through the activation's group sums as the scalar part:
// `Σ sc·(u − o)·a = Σ sc·u·a − o·Σ sc·bsum`.

/// Element `e`'s two-bit quant in Q2_K/Q3_K's layout.
fn get2(qs: &[u8; 64], e: usize) -> i32 {
    ((qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32
}

/// The two-bit quants of elements `128n + 32p ..`, as 32 bytes.
#[inline(always)]
fn two_bit<S: Simd>(s: S, qs: &[u8; 64], n: usize, p: usize) -> S::V {
    s.shr_and(s.load(&qs.as_chunks::<32>().0[n]), 2 * p as u32, 3)
}

/// The activation's group sums of 16 (from its quants, for the reference).
fn ref_group_sums(a: &BlockQ8K) -> [i32; 16] {
    std::array::from_fn(|j| a.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum())
}

/// Eight 32-byte vectors against the block's activations, each half scaled by its own scale.
#[inline(always)]
fn scaled16<S: Simd>(s: S, v: &[S::V; 8], sc: impl Fn(usize) -> i16, a: &BlockQ8K) -> S::Acc {
    let mut acc = s.zero();
    for (i, &v) in v.iter().enumerate() {
        acc = s.dot_u2(acc, v, s.load(q8k_chunk(a, i)), sc(2 * i), sc(2 * i + 1));
    }
    acc
}

impl QFormat for BlockQ2K {
    type Act = BlockQ8K;
    type U<S: Simd> = [S::V; 8];
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> [S::V; 8] {
        std::array::from_fn(|i| two_bit(s, &w.qs, i / 4, i % 4))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &[S::V; 8], w: &Self, a: &BlockQ8K) -> (S::Acc, i32) {
        let acc = scaled16(s, u, |j| (w.scales[j] & 0xf) as i16, a);
        let mins = std::array::from_fn(|j| (w.scales[j] >> 4) as i32);
        (acc, bsum_dot16(&mins, a))
    }
    const ACCUM: Accum = Accum::LaneMin;
    #[inline(always)]
    fn extra<S: Simd>(_: S, _: &[S::V; 8], w: &Self, a: &BlockQ8K) -> [i32; 8] {
        let b = |j: usize| a.bsums[j] as i32;
        let m = |j: usize| (w.scales[j] >> 4) as i32;
        std::array::from_fn(|u| m(2 * u) * b(2 * u) + m(2 * u + 1) * b(2 * u + 1))
    }
    fn ref_extra(w: &Self, a: &BlockQ8K) -> [i32; 8] {
        let g = ref_group_sums(a);
        let m = |j: usize| (w.scales[j] >> 4) as i32;
        std::array::from_fn(|u| m(2 * u) * g[2 * u] + m(2 * u + 1) * g[2 * u + 1])
    }
    fn ref_parts(w: &Self, a: &BlockQ8K) -> ([i32; 8], i32) {
        let lanes = ref_lanes(256, |e| {
            (w.scales[e / 16] & 0xf) as i32 * get2(&w.qs, e) * a.qs[e] as i32
        });
        let g = ref_group_sums(a);
        let msum = (0..16).map(|j| (w.scales[j] >> 4) as i32 * g[j]).sum();
        (lanes, msum)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.dmin])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8K,
        msum: i32,
        _: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::k_min(ws, a.d, msum)
    }
}

impl QFormat for BlockQ3K {
    type Act = BlockQ8K;
    type U<S: Simd> = ([S::V; 8], [i8; 16]);
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> ([S::V; 8], [i8; 16]) {
        let hm = s.load(&w.hmask);
        let v = std::array::from_fn(|i| {
            // Element 128n + 32p + l has its high bit in bit 4n + p of hmask[l]; a set bit
            // means no offset, so the unsigned quant is low + 4·bit and q = u − 4.
            s.or(two_bit(s, &w.qs, i / 4, i % 4), s.bit_set(hm, 1 << i, 4))
        });
        (v, std::array::from_fn(|j| q3k_scale(j, &w.scales)))
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &([S::V; 8], [i8; 16]), _: &Self, a: &BlockQ8K) -> (S::Acc, i32) {
        let (v, sc) = u;
        let acc = scaled16(s, v, |j| sc[j] as i16, a);
        let offset = std::array::from_fn(|j| 4 * sc[j] as i32);
        (acc, bsum_dot16(&offset, a))
    }
    const ACCUM: Accum = Accum::LaneOffset;
    /// The offset of 4 per element, summed per lane over the lane's own elements (llama.cpp
    /// subtracts it inside its integer sums).
    #[inline(always)]
    fn extra<S: Simd>(s: S, u: &([S::V; 8], [i8; 16]), _: &Self, a: &BlockQ8K) -> [i32; 8] {
        let fours = [s.splat(4); 8];
        s.lanes(scaled16(s, &fours, |j| u.1[j] as i16, a))
    }
    fn ref_extra(w: &Self, a: &BlockQ8K) -> [i32; 8] {
        ref_lanes(256, |e| {
            4 * q3k_scale(e / 16, &w.scales) as i32 * a.qs[e] as i32
        })
    }
    fn ref_parts(w: &Self, a: &BlockQ8K) -> ([i32; 8], i32) {
        let sc = |j: usize| q3k_scale(j, &w.scales) as i32;
        let lanes = ref_lanes(256, |e| {
            let high = ((w.hmask[e % 32] >> (e / 32)) & 1) as i32;
            sc(e / 16) * (get2(&w.qs, e) + 4 * high) * a.qs[e] as i32
        });
        let g = ref_group_sums(a);
        (lanes, (0..16).map(|j| 4 * sc(j) * g[j]).sum())
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.d])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8K,
        offset: i32,
        _: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::k_offset(ws[0], a.d, offset)
    }
}

/// Q4_K/Q5_K's eight 6-bit scales, and their mins per group of 16.
#[inline(always)]
fn k4_scales(scales: &[u8; 12]) -> ([i16; 8], [i32; 16]) {
    let mut sc = [0i16; 8];
    let mut m16 = [0i32; 16];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[j] = s as i16;
        m16[2 * j] = m as i32;
        m16[2 * j + 1] = m as i32;
    }
    (sc, m16)
}

#[inline(always)]
fn k4_parts<S: Simd>(s: S, u: &([S::V; 8], [i16; 8], [i32; 16]), a: &BlockQ8K) -> (S::Acc, i32) {
    let (v, sc, m) = u;
    (scaled16(s, v, |j| sc[j / 2], a), bsum_dot16(m, a))
}

/// The reference's parts of Q4_K/Q5_K given each element's quant.
fn k4_ref_parts(scales: &[u8; 12], q: impl Fn(usize) -> i32, a: &BlockQ8K) -> ([i32; 8], i32) {
    let lanes = ref_lanes(256, |e| {
        get_scale_min_k4(e / 32, scales).0 as i32 * q(e) * a.qs[e] as i32
    });
    let g = ref_group_sums(a);
    let msum = (0..16)
        .map(|j| get_scale_min_k4(j / 2, scales).1 as i32 * g[j])
        .sum();
    (lanes, msum)
}

impl QFormat for BlockQ4K {
    type Act = BlockQ8K;
    type U<S: Simd> = ([S::V; 8], [i16; 8], [i32; 16]);
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> Self::U<S> {
        let q = w.qs.as_chunks::<32>().0;
        // Sub-block 2c is the low nibbles of bytes 32c.., sub-block 2c + 1 the high ones.
        let v = std::array::from_fn(|j| s.shr_and(s.load(&q[j / 2]), 4 * (j % 2) as u32, 0xf));
        let (sc, m) = k4_scales(&w.scales);
        (v, sc, m)
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &Self::U<S>, _: &Self, a: &BlockQ8K) -> (S::Acc, i32) {
        k4_parts(s, u, a)
    }
    fn ref_parts(w: &Self, a: &BlockQ8K) -> ([i32; 8], i32) {
        let q = |e: usize| {
            let b = w.qs[32 * (e / 64) + e % 32];
            (if (e / 32).is_multiple_of(2) {
                b & 0xf
            } else {
                b >> 4
            }) as i32
        };
        k4_ref_parts(&w.scales, q, a)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.dmin])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8K,
        msum: i32,
        _: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::k_min(ws, a.d, msum)
    }
    const ACCUM: Accum = Accum::Quad;
    /// The minimums' sums per pair of 32-value sub-blocks.
    #[inline(always)]
    fn extra<S: Simd>(_: S, u: &Self::U<S>, _: &Self, a: &BlockQ8K) -> [i32; 8] {
        let m = &u.2;
        let mut e = [0i32; 8];
        for (k, e) in e.iter_mut().take(4).enumerate() {
            *e = (4 * k..4 * k + 4).map(|i| m[i] * a.bsums[i] as i32).sum();
        }
        e
    }
    fn ref_extra(w: &Self, a: &BlockQ8K) -> [i32; 8] {
        let g = ref_group_sums(a);
        let mut e = [0i32; 8];
        for (k, e) in e.iter_mut().take(4).enumerate() {
            *e = (4 * k..4 * k + 4)
                .map(|i| get_scale_min_k4(i / 2, &w.scales).1 as i32 * g[i])
                .sum();
        }
        e
    }
}

impl QFormat for BlockQ5K {
    type Act = BlockQ8K;
    type U<S: Simd> = ([S::V; 8], [i16; 8], [i32; 16]);
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> Self::U<S> {
        let q = w.qs.as_chunks::<32>().0;
        let qh = s.load(&w.qh);
        let v = std::array::from_fn(|j| {
            let low = s.shr_and(s.load(&q[j / 2]), 4 * (j % 2) as u32, 0xf);
            s.or(low, s.bit_set(qh, 1 << j, 16))
        });
        let (sc, m) = k4_scales(&w.scales);
        (v, sc, m)
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &Self::U<S>, _: &Self, a: &BlockQ8K) -> (S::Acc, i32) {
        k4_parts(s, u, a)
    }
    fn ref_parts(w: &Self, a: &BlockQ8K) -> ([i32; 8], i32) {
        let q = |e: usize| {
            let j = e / 32;
            let b = w.qs[32 * (e / 64) + e % 32];
            let low = if j.is_multiple_of(2) { b & 0xf } else { b >> 4 };
            low as i32 + 16 * ((w.qh[e % 32] >> j) & 1) as i32
        };
        k4_ref_parts(&w.scales, q, a)
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.dmin])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8K,
        msum: i32,
        _: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::k_min(ws, a.d, msum)
    }
}

impl QFormat for BlockQ6K {
    type Act = BlockQ8K;
    type U<S: Simd> = [S::V; 8];
    #[inline(always)]
    fn unpack<S: Simd>(s: S, w: &Self) -> [S::V; 8] {
        let ql = w.ql.as_chunks::<32>().0;
        let qh = w.qh.as_chunks::<32>().0;
        // Elements 128n + 32p + l: low four bits in ql[64n + 32(p & 1) + l] >> 4(p >> 1),
        // high two bits in qh[32n + l] >> 2p.
        std::array::from_fn(|i| {
            let (n, p) = (i / 4, i % 4);
            let low = s.shr_and(s.load(&ql[2 * n + (p & 1)]), 4 * (p >> 1) as u32, 0xf);
            let high = s.shr_and(s.load(&qh[n]), 2 * p as u32, 3);
            s.or(low, s.shl4(high))
        })
    }
    #[inline(always)]
    fn parts<S: Simd>(s: S, u: &[S::V; 8], w: &Self, a: &BlockQ8K) -> (S::Acc, i32) {
        let acc = scaled16(s, u, |j| w.scales[j] as i16, a);
        let offset = std::array::from_fn(|j| 32 * w.scales[j] as i32);
        (acc, bsum_dot16(&offset, a))
    }
    const ACCUM: Accum = Accum::LaneOffset;
    /// The offset of 32 per element as llama.cpp's kernel subtracts it: lane `u` takes the
    /// scaled sums of activation groups `2u` and `2u + 1` (not its own elements; the total is
    /// the same).
    #[inline(always)]
    fn extra<S: Simd>(_: S, _: &[S::V; 8], w: &Self, a: &BlockQ8K) -> [i32; 8] {
        let t = |j: usize| w.scales[j] as i32 * a.bsums[j] as i32;
        std::array::from_fn(|u| 32 * (t(2 * u) + t(2 * u + 1)))
    }
    fn ref_extra(w: &Self, a: &BlockQ8K) -> [i32; 8] {
        let g = ref_group_sums(a);
        let t = |j: usize| w.scales[j] as i32 * g[j];
        std::array::from_fn(|u| 32 * (t(2 * u) + t(2 * u + 1)))
    }
    fn ref_parts(w: &Self, a: &BlockQ8K) -> ([i32; 8], i32) {
        let lanes = ref_lanes(256, |e| {
            let (n, r) = (e / 128, e % 128);
            let (l, p) = (r % 32, r / 32);
            let low = (w.ql[64 * n + l + 32 * (p & 1)] >> (4 * (p >> 1))) & 0xf;
            let high = (w.qh[32 * n + l] >> (2 * p)) & 3;
            w.scales[e / 16] as i32 * (low | (high << 4)) as i32 * a.qs[e] as i32
        });
        let g = ref_group_sums(a);
        (lanes, (0..16).map(|j| 32 * w.scales[j] as i32 * g[j]).sum())
    }
    #[inline(always)]
    fn wscales(w: &Self, h: impl Fn([f16; 2]) -> [f32; 2]) -> [f32; 2] {
        h([w.d, w.d])
    }
    #[inline(always)]
    fn combine(
        ws: [f32; 2],
        a: &BlockQ8K,
        offset: i32,
        _: impl Fn([f16; 2]) -> [f32; 2],
    ) -> (f32, [f32; 2]) {
        combine::k_offset(ws[0], a.d, offset)
    }
}
