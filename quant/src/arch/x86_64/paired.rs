//! AVX-512 VNNI matrix products for the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
//! with two dot products in each 512-bit register.
//!
//! The generic kernels ([`crate::arch::generic`]) compute one (weight row, activation row,
//! block) triple's eight lane sums in a 256-bit register and scale them with a broadcast. Here
//! lane `2l + j` of a 512-bit register holds lane `l` of dot product `j`, so one `vpdpbusd`,
//! one conversion and one fused multiply-add serve two products:
//!
//! - **Several activation rows** (prefill, batched decoding): the rows are packed once per call
//!   into tiles of up to [`TILE_ROWS`], paired; each pair's block becomes one 64-byte line
//!   (four bytes of row `2p`, four of row `2p + 1`, ...) beside its rows' scales as f32. A
//!   weight block is unpacked once, its dwords duplicated, and meets every pair of the tile;
//!   two weight rows go together, so each activation line is loaded once for both and the
//!   eight accumulators' chains overlap.
//! - **One activation row** (decoding one sequence): two weight rows share the register
//!   instead, in the order their nibbles unpack (elements 0..16 of each row, then 16..32 of
//!   each), and the row's block is packed once in the matching order (each half twice). Four
//!   such pairs go through the blocks together, each with its own accumulators, so that their
//!   chains of dependent fused multiply-adds overlap, and the rows after them (from 2 KiB
//!   past their end) are prefetched as they go: a token's decoding streams every weight from
//!   memory once.
//!
//! Signed formats are made unsigned by an offset (`q + o`, `o` = 8, 16 or 128); each lane's
//! excess `o·Σa` is removed by starting its accumulation at `−o·Σa`, packed with the
//! activations. `vpdpbusd` does not saturate, so every lane sum is the exact integer the other
//! paths compute, and the float steps after it are theirs, in their order (the lanes' scale
//! `d_w·d_a`, a fused multiply-add into one running sum per product, the minimum's terms fused
//! into another, the fixed 8-lane tree plus the terms): bitwise the same results as
//! [`crate::arch::generic::qtile`].

use std::arch::x86_64::*;

use half::f16;

use super::Avx512;
use crate::arch::generic::{QFormat, Simd};
use crate::arch::PREFETCH_AHEAD;
use crate::formats::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// Activation rows per tile: four pairs, each weight block unpacked once for all of them.
pub(crate) const TILE_ROWS: usize = 8;

/// 64 bytes on a cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line([u8; 64]);

/// An activation format as the paired kernels read it.
pub(crate) trait PairAct: Copy {
    /// The 32 quants.
    fn qs(&self) -> &[i8; 32];
    /// The scale `d` and the sum `s = d·Σq` (zero for formats without one), as raw f16.
    fn ds(&self) -> [f16; 2];
}

impl PairAct for BlockQ8_0 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    #[inline(always)]
    fn ds(&self) -> [f16; 2] {
        [self.d, f16::ZERO]
    }
}

impl PairAct for BlockQ8_1 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    #[inline(always)]
    fn ds(&self) -> [f16; 2] {
        [self.d, self.s]
    }
}

/// A weight format of the paired kernels.
pub(crate) trait PairWeight: QFormat<Act: PairAct> {
    /// What is added to each quant to make it unsigned.
    const OFFSET: u8;
    /// Whether blocks have a minimum (`x = d·q + m`), met by the activations' sums.
    const MIN: bool;
    /// The 32 quants plus [`Self::OFFSET`], in element order.
    fn unsigned(t: Avx512, w: &Self) -> __m256i;
    /// `d` in the low half and the minimum (or zero) in the high half, as raw f16 bits.
    fn dm(w: &Self) -> u32;
    /// [`Self::unsigned`] with every dword twice (`q0, q0, q1, q1, ...`), as the tiled kernel
    /// meets a pair of activation rows with it.
    #[inline(always)]
    fn unsigned_dup(t: Avx512, w: &Self) -> __m512i {
        // SAFETY: AVX-512 F is present (token).
        unsafe {
            let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            _mm512_permutexvar_epi32(dup, _mm512_castsi256_si512(Self::unsigned(t, w)))
        }
    }
    /// Two blocks' [`Self::unsigned`] quants in the order the single-row kernel reads them:
    /// elements 0..16 of `a`, of `b`, then elements 16..32 of `a`, of `b`.
    #[inline(always)]
    fn unsigned2(t: Avx512, a: &Self, b: &Self) -> __m512i {
        // SAFETY: AVX-512 F is present (token).
        unsafe {
            let v = _mm512_inserti64x4(
                _mm512_castsi256_si512(Self::unsigned(t, a)),
                Self::unsigned(t, b),
                1,
            );
            _mm512_shuffle_i64x2(v, v, 0b11_01_10_00)
        }
    }
}

/// Two nibble blocks' quants in [`PairWeight::unsigned2`]'s order: the low nibbles of `a`'s
/// 16 bytes (elements 0..16), of `b`'s, then their high nibbles (elements 16..32).
#[inline(always)]
fn nibbles2(qa: &[u8; 16], qb: &[u8; 16]) -> __m512i {
    // SAFETY: AVX-512 F/BW are present (callers run under the token); each load reads 16
    // bytes.
    unsafe {
        let v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128(qa.as_ptr().cast())),
            _mm_loadu_si128(qb.as_ptr().cast()),
            1,
        );
        let both = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
        _mm512_and_si512(both, _mm512_set1_epi8(0xf))
    }
}

/// A nibble block's quants with every dword twice: the 16 bytes' dwords duplicated into both
/// halves of the register, the upper half shifted down to its high nibbles.
///
/// The obvious form (unpack both nibble halves into 256 bits, then permute the dwords, which
/// [`PairWeight::unsigned_dup`] does for the other formats) is one chain of shuffles that
/// LLVM's combiner never finishes with when the target has AVX-512 VBMI (`target-cpu=native`
/// on Zen 4/5 or Ice Lake compiled for over 40 minutes); a variable shift between the two
/// shuffles keeps it apart.
#[inline(always)]
fn nibbles_dup(q: &[u8; 16]) -> __m512i {
    // SAFETY: AVX-512 F/BW are present (callers run under the token); the load reads 16 bytes.
    unsafe {
        let v = _mm512_castsi128_si512(_mm_loadu_si128(q.as_ptr().cast()));
        let dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2, 3, 3);
        let both = _mm512_permutexvar_epi32(dup, v);
        // 16-bit lanes 0..16 (the low 256 bits) shifted by 0, lanes 16..32 by 4.
        let shifts = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
        _mm512_and_si512(_mm512_srlv_epi16(both, shifts), _mm512_set1_epi8(0xf))
    }
}

#[inline(always)]
fn dm_bits(d: f16, m: f16) -> u32 {
    d.to_bits() as u32 | (m.to_bits() as u32) << 16
}

impl PairWeight for BlockQ4_0 {
    const OFFSET: u8 = 8;
    const MIN: bool = false;
    #[inline(always)]
    fn unsigned(t: Avx512, w: &Self) -> __m256i {
        t.nibbles(&w.qs)
    }
    #[inline(always)]
    fn dm(w: &Self) -> u32 {
        dm_bits(w.d, f16::ZERO)
    }
    #[inline(always)]
    fn unsigned_dup(_: Avx512, w: &Self) -> __m512i {
        nibbles_dup(&w.qs)
    }
    #[inline(always)]
    fn unsigned2(_: Avx512, a: &Self, b: &Self) -> __m512i {
        nibbles2(&a.qs, &b.qs)
    }
}

impl PairWeight for BlockQ4_1 {
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline(always)]
    fn unsigned(t: Avx512, w: &Self) -> __m256i {
        t.nibbles(&w.qs)
    }
    #[inline(always)]
    fn dm(w: &Self) -> u32 {
        dm_bits(w.d, w.m)
    }
    #[inline(always)]
    fn unsigned_dup(_: Avx512, w: &Self) -> __m512i {
        nibbles_dup(&w.qs)
    }
    #[inline(always)]
    fn unsigned2(_: Avx512, a: &Self, b: &Self) -> __m512i {
        nibbles2(&a.qs, &b.qs)
    }
}

impl PairWeight for BlockQ5_0 {
    const OFFSET: u8 = 16;
    const MIN: bool = false;
    #[inline(always)]
    fn unsigned(t: Avx512, w: &Self) -> __m256i {
        t.or(t.nibbles(&w.qs), t.bits32(u32::from_le_bytes(w.qh), 0x10))
    }
    #[inline(always)]
    fn dm(w: &Self) -> u32 {
        dm_bits(w.d, f16::ZERO)
    }
}

impl PairWeight for BlockQ5_1 {
    const OFFSET: u8 = 0;
    const MIN: bool = true;
    #[inline(always)]
    fn unsigned(t: Avx512, w: &Self) -> __m256i {
        t.or(t.nibbles(&w.qs), t.bits32(u32::from_le_bytes(w.qh), 0x10))
    }
    #[inline(always)]
    fn dm(w: &Self) -> u32 {
        dm_bits(w.d, w.m)
    }
}

impl PairWeight for BlockQ8_0 {
    const OFFSET: u8 = 128;
    const MIN: bool = false;
    #[inline(always)]
    fn unsigned(t: Avx512, w: &Self) -> __m256i {
        let q = t.load(bytemuck::cast_ref(&w.qs));
        // SAFETY: AVX2 is present (token). Flipping the top bit adds 128 to a signed byte
        // read as unsigned.
        unsafe { _mm256_xor_si256(q, _mm256_set1_epi8(i8::MIN)) }
    }
    #[inline(always)]
    fn dm(w: &Self) -> u32 {
        dm_bits(w.d, f16::ZERO)
    }
}

/// One tile of packed activation rows.
#[derive(Clone, Copy, Debug)]
struct Tile {
    /// Its first activation row.
    first: usize,
    /// Activation rows in it (1..=[`TILE_ROWS`]).
    rows: usize,
    /// Where its lines start in [`Packed::qs`] (and [`Packed::init`]): blocks × pairs.
    lines: usize,
    /// Where its scales start in [`Packed::scales`]: one per block.
    scales: usize,
}

/// Activation rows packed for the paired kernels.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    /// The token that packed them (the kernels need the same features).
    token: Option<Avx512>,
    /// The weight format's offset the lines were packed for.
    offset: u8,
    /// Activation rows.
    batch: usize,
    /// Blocks per row.
    blocks: usize,
    tiles: Vec<Tile>,
    /// Each pair's block: dwords of its two rows interleaved.
    qs: Vec<Line>,
    /// Each pair's starting lane sums `−o·Σa` (empty when the offset is zero).
    init: Vec<Line>,
    /// Per tile and block: the rows' `d` as f32 in slots 0..8 and their sums `s` in 8..16.
    scales: Vec<[f32; 16]>,
}

impl Packed {
    /// The token that packed the rows, if any were packed.
    pub(crate) fn token(&self) -> Option<Avx512> {
        self.token
    }
}

impl Avx512 {
    /// Packs `batch` activation rows of `blocks` blocks each (`acts` row-major) for weights of
    /// type `F`. One row is paired with itself; more go in tiles of [`TILE_ROWS`].
    pub(crate) fn pack<F: PairWeight>(
        self,
        acts: &[F::Act],
        batch: usize,
        blocks: usize,
        p: &mut Packed,
    ) {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn run<F: PairWeight>(
            t: Avx512,
            acts: &[F::Act],
            batch: usize,
            blocks: usize,
            p: &mut Packed,
        ) {
            pack_impl::<F>(t, acts, batch, blocks, p)
        }
        // SAFETY: the token proves the CPU has the features `run` is compiled for.
        unsafe { run::<F>(self, acts, batch, blocks, p) }
    }

    /// A chunk of weight rows (`blocks` each, the packed rows' count) times the packed
    /// activations: `out` is rows × batch, row-major.
    pub(crate) fn paired_chunk<F: PairWeight>(self, w: &[F], p: &Packed, out: &mut [f32]) {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn run<F: PairWeight>(t: Avx512, w: &[F], p: &Packed, out: &mut [f32]) {
            chunk_impl::<F>(t, w, p, out)
        }
        // SAFETY: the token proves the CPU has the features `run` is compiled for.
        unsafe { run::<F>(self, w, p, out) }
    }
}

/// A line interleaving the dwords of two blocks' quants (or, for `None`, one block's halves
/// each twice: elements 0..16, 0..16, 16..32, 16..32), and its starting lane sums for
/// `offset`.
#[inline(always)]
fn pair_line(a: &[i8; 32], b: Option<&[i8; 32]>, offset: u8) -> (Line, Line) {
    // SAFETY: AVX-512 F/BW/VNNI are present (the caller is compiled with them and runs only
    // under the token); loads read the 32-byte arrays, stores write two 64-byte lines.
    unsafe {
        let va = _mm512_castsi256_si512(_mm256_loadu_si256(a.as_ptr().cast()));
        let v = match b {
            Some(b) => {
                let vb = _mm512_castsi256_si512(_mm256_loadu_si256(b.as_ptr().cast()));
                let idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
                _mm512_permutex2var_epi32(va, idx, vb)
            }
            None => _mm512_shuffle_i64x2(va, va, 0b01_01_00_00),
        };
        let mut q = Line([0; 64]);
        _mm512_store_si512(q.0.as_mut_ptr().cast(), v);
        let mut init = Line([0; 64]);
        if offset != 0 {
            // o·Σa over each lane's four bytes, exact; negated.
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(offset as i8), v);
            let neg = _mm512_sub_epi32(_mm512_setzero_si512(), s);
            _mm512_store_si512(init.0.as_mut_ptr().cast(), neg);
        }
        (q, init)
    }
}

#[inline(always)]
fn pack_impl<F: PairWeight>(
    t: Avx512,
    acts: &[F::Act],
    batch: usize,
    blocks: usize,
    p: &mut Packed,
) {
    p.token = Some(t);
    p.offset = F::OFFSET;
    p.batch = batch;
    p.blocks = blocks;
    p.tiles.clear();
    p.qs.clear();
    p.init.clear();
    p.scales.clear();
    let widen = |h: [f16; 2]| t.f16x2(h);
    let mut first = 0;
    while first < batch {
        let rows = (batch - first).min(TILE_ROWS);
        let pairs = rows.div_ceil(2);
        p.tiles.push(Tile {
            first,
            rows,
            lines: p.qs.len(),
            scales: p.scales.len(),
        });
        for k in 0..blocks {
            let mut sc = [0f32; 16];
            for j in 0..pairs {
                let r0 = first + 2 * j;
                // A lone last row is paired with itself.
                let r1 = (r0 + 1).min(first + rows - 1);
                let (a, b) = (&acts[r0 * blocks + k], &acts[r1 * blocks + k]);
                // A single row is laid out for the two-weight-row kernel.
                let partner = (batch > 1).then_some(b.qs());
                let (q, init) = pair_line(a.qs(), partner, F::OFFSET);
                p.qs.push(q);
                if F::OFFSET != 0 {
                    p.init.push(init);
                }
                for (slot, r) in [(2 * j, a), (2 * j + 1, b)] {
                    let [d, s] = widen(r.ds());
                    sc[slot] = d;
                    sc[8 + slot] = s;
                }
            }
            p.scales.push(sc);
        }
        first += rows;
    }
}

/// The eight-lane tree of both dot products held in `v` (lane `2l + j` = product `j`'s lane
/// `l`): lane `l` plus lane `l + 4`, then `+ 2`, then `+ 1`, as [`Simd::f8reduce`] sums them.
#[inline(always)]
fn reduce_pair(v: __m512) -> [f32; 2] {
    // SAFETY: AVX-512 F is present (callers run under the token).
    unsafe {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        let t = _mm256_add_ps(lo, hi);
        let u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
        let w = _mm_add_ps(u, _mm_movehl_ps(u, u));
        let mut out = [0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), w);
        [out[0], out[1]]
    }
}

/// The lines and scales of one tile: lines `blocks × P`, scales one per block.
struct TileData<'a> {
    qs: &'a [Line],
    init: &'a [Line],
    scales: &'a [[f32; 16]],
}

/// `R` weight rows times one tile of `P` pairs: `out[r]` receives the tile's rows (at most
/// 2P) for weight row `r`. Each activation line and scale is loaded once for all `R` rows, and
/// the `R·P` accumulators are independent chains; each (weight row, pair) still sums its
/// blocks in order, as alone.
#[inline(always)]
// `j` picks a line, a scale slot and an accumulator of each row together.
#[allow(clippy::needless_range_loop)]
fn tile_rows<F: PairWeight, const P: usize, const R: usize>(
    t: Avx512,
    w: [&[F]; R],
    d: &TileData<'_>,
    out: [&mut [f32]; R],
) {
    // SAFETY: AVX-512 F/BW/VNNI are present (callers run under the token). Every load reads a
    // line or scale slot of the tile: `d.scales.len()` blocks (each row of `w` holds that
    // many), `P` lines and one scale row each, which `chunk_impl` checked the packed data
    // holds.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let mut terms = [_mm256_setzero_ps(); R];
        for k in 0..d.scales.len() {
            let sc = d.scales.get_unchecked(k);
            let mut wz = [_mm512_setzero_si512(); R];
            let mut dw = [_mm512_setzero_ps(); R];
            let mut f = [_mm_setzero_ps(); R];
            for r in 0..R {
                let wb = w[r].get_unchecked(k);
                wz[r] = F::unsigned_dup(t, wb);
                f[r] = _mm_cvtph_ps(_mm_cvtsi32_si128(F::dm(wb) as i32));
                dw[r] = _mm512_broadcastss_ps(f[r]);
            }
            for j in 0..P {
                let line = d.qs.get_unchecked(k * P + j);
                let a = _mm512_load_si512(line.0.as_ptr().cast());
                let init = if F::OFFSET != 0 {
                    _mm512_load_si512(d.init.get_unchecked(k * P + j).0.as_ptr().cast())
                } else {
                    _mm512_setzero_si512()
                };
                // [d_a of row 2j, d_a of row 2j + 1] in every lane pair.
                let da = _mm512_castpd_ps(_mm512_set1_pd(
                    sc.as_ptr().add(2 * j).cast::<f64>().read_unaligned(),
                ));
                for r in 0..R {
                    let x = _mm512_dpbusd_epi32(init, wz[r], a);
                    let s = _mm512_mul_ps(dw[r], da);
                    acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), s, acc[r][j]);
                }
            }
            if F::MIN {
                let sa = _mm256_loadu_ps(sc.as_ptr().add(8));
                for r in 0..R {
                    let mw = _mm256_set1_ps(_mm_cvtss_f32(_mm_movehdup_ps(f[r])));
                    terms[r] = _mm256_fmadd_ps(mw, sa, terms[r]);
                }
            }
        }
        for (r, out) in out.into_iter().enumerate() {
            let mut tsum = [0f32; 8];
            _mm256_storeu_ps(tsum.as_mut_ptr(), terms[r]);
            for (j, &acc) in acc[r].iter().enumerate() {
                let v = reduce_pair(acc);
                for (h, v) in v.into_iter().enumerate() {
                    if let Some(o) = out.get_mut(2 * j + h) {
                        *o = v + tsum[2 * j + h];
                    }
                }
            }
        }
    }
}

/// The eight-lane trees of two dot products held in `v` in [`PairWeight::unsigned2`]'s order
/// (128-bit lanes: product 0's lanes 0..4, product 1's lanes 0..4, product 0's lanes 4..8,
/// product 1's lanes 4..8), summed as [`Simd::f8reduce`] sums one.
#[inline(always)]
fn reduce_halves(v: __m512) -> [f32; 2] {
    // SAFETY: AVX-512 F is present (callers run under the token).
    unsafe {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        // Lane l + lane l + 4, then + 2, then + 1, in each 128-bit half.
        let t = _mm256_add_ps(lo, hi);
        let u = _mm256_add_ps(t, _mm256_permute_ps(t, 0b01_00_11_10));
        let w = _mm256_add_ps(u, _mm256_movehdup_ps(u));
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), w);
        [out[0], out[4]]
    }
}

/// `N` pairs of weight rows times the single packed activation row: `[row 2j, row 2j + 1]`
/// for pair `j`. Each pair has its own accumulators, so the `N` chains of fused
/// multiply-adds overlap instead of waiting on one another, and every activation line is
/// loaded once for all of them; each row's sums are the same sequence as alone. `next` is
/// where the memory after these rows starts (the next rows of the chunk), prefetched
/// [`PREFETCH_AHEAD`] bytes on.
#[inline(always)]
fn row_pairs<F: PairWeight, const N: usize>(
    t: Avx512,
    w: [(&[F], &[F]); N],
    next: *const u8,
    d: &TileData<'_>,
) -> [[f32; 2]; N] {
    // SAFETY: AVX-512 F/BW/VNNI are present (callers run under the token). Every load reads a
    // line or scale slot of the single-row tile (one line and one scale row per block), which
    // `chunk_impl` checked, or a weight block of `w`, whose rows hold `d.scales.len()` blocks
    // each (checked there too). Prefetches never fault, whatever the address.
    unsafe {
        let dws = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
        let mut acc = [_mm512_setzero_ps(); N];
        let mut terms = [_mm_setzero_ps(); N];
        // Cache lines of weights the rows consume per block, prefetched per block.
        let lines = (2 * N * std::mem::size_of::<F>()).div_ceil(64);
        let ahead = next.wrapping_add(PREFETCH_AHEAD);
        let blocks = d.scales.len();
        for k in 0..blocks {
            for i in 0..lines {
                _mm_prefetch(ahead.wrapping_add((k * lines + i) * 64).cast(), _MM_HINT_T0);
            }
            let sc = d.scales.get_unchecked(k);
            let line = d.qs.get_unchecked(k);
            let a = _mm512_load_si512(line.0.as_ptr().cast());
            let init = if F::OFFSET != 0 {
                _mm512_load_si512(d.init.get_unchecked(k).0.as_ptr().cast())
            } else {
                _mm512_setzero_si512()
            };
            let da = _mm512_set1_ps(sc[0]);
            let sa = _mm_set1_ps(sc[8]);
            for j in 0..N {
                let (b0, b1) = (w[j].0.get_unchecked(k), w[j].1.get_unchecked(k));
                let wz = F::unsigned2(t, b0, b1);
                let bits = F::dm(b0) as u64 | (F::dm(b1) as u64) << 32;
                // [d_0, m_0, d_1, m_1].
                let f = _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64));
                let s = _mm512_mul_ps(_mm512_permutexvar_ps(dws, _mm512_castps128_ps512(f)), da);
                let x = _mm512_dpbusd_epi32(init, wz, a);
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), s, acc[j]);
                if F::MIN {
                    // Lanes 1 and 3: m_0·s_a and m_1·s_a.
                    terms[j] = _mm_fmadd_ps(f, sa, terms[j]);
                }
            }
        }
        let mut out = [[0f32; 2]; N];
        for j in 0..N {
            let r = reduce_halves(acc[j]);
            let mut ts = [0f32; 4];
            _mm_storeu_ps(ts.as_mut_ptr(), terms[j]);
            out[j] = if F::MIN {
                [r[0] + ts[1], r[1] + ts[3]]
            } else {
                // The generic kernels add their (zero) terms too: +0.0 turns −0.0 into +0.0.
                [r[0] + 0.0, r[1] + 0.0]
            };
        }
        out
    }
}

#[inline(always)]
fn chunk_impl<F: PairWeight>(t: Avx512, w: &[F], p: &Packed, out: &mut [f32]) {
    let (bpr, batch) = (p.blocks, p.batch);
    // The caller packed these rows for `F` (see `gemm`); anything else computes nothing.
    debug_assert_eq!(p.offset, F::OFFSET);
    if bpr == 0 || batch == 0 || p.offset != F::OFFSET || !w.len().is_multiple_of(bpr) {
        return;
    }
    let n_rows = w.len() / bpr;
    if out.len() != n_rows * batch {
        return;
    }
    for tile in &p.tiles {
        let pairs = tile.rows.div_ceil(2);
        let lines = bpr * pairs;
        let data = TileData {
            qs: &p.qs[tile.lines..tile.lines + lines],
            init: if F::OFFSET != 0 {
                &p.init[tile.lines..tile.lines + lines]
            } else {
                &[]
            },
            scales: &p.scales[tile.scales..tile.scales + bpr],
        };
        if batch == 1 {
            // One activation row: weight rows eight at a time, then two at a time (a lone
            // last row with itself).
            let row = |r: usize| &w[r * bpr..(r + 1) * bpr];
            let end = |r: usize| w.as_ptr_range().start.wrapping_add(r * bpr).cast::<u8>();
            let mut r = 0;
            while r + 8 <= n_rows {
                let pairs = [0, 2, 4, 6].map(|j| (row(r + j), row(r + j + 1)));
                let res = row_pairs::<F, 4>(t, pairs, end(r + 8), &data);
                for (o, v) in out[r..r + 8].iter_mut().zip(res.as_flattened()) {
                    *o = *v;
                }
                r += 8;
            }
            while r < n_rows {
                let two = r + 1 < n_rows;
                let (a, b) = (row(r), row(if two { r + 1 } else { r }));
                let [res] = row_pairs::<F, 1>(t, [(a, b)], end(r + 2), &data);
                for (o, v) in out[r..].iter_mut().zip(res).take(1 + two as usize) {
                    *o = v;
                }
                r += 2;
            }
            continue;
        }
        // Weight rows two at a time, then a lone last one.
        let span = tile.first..tile.first + tile.rows;
        let mut rows = w.chunks_exact(bpr).zip(out.chunks_exact_mut(batch));
        while let Some((w0, o0)) = rows.next() {
            let o0 = &mut o0[span.clone()];
            match rows.next() {
                Some((w1, o1)) => {
                    let (w, o) = ([w0, w1], [o0, &mut o1[span.clone()]]);
                    match pairs {
                        1 => tile_rows::<F, 1, 2>(t, w, &data, o),
                        2 => tile_rows::<F, 2, 2>(t, w, &data, o),
                        3 => tile_rows::<F, 3, 2>(t, w, &data, o),
                        _ => tile_rows::<F, 4, 2>(t, w, &data, o),
                    }
                }
                None => match pairs {
                    1 => tile_rows::<F, 1, 1>(t, [w0], &data, [o0]),
                    2 => tile_rows::<F, 2, 1>(t, [w0], &data, [o0]),
                    3 => tile_rows::<F, 3, 1>(t, [w0], &data, [o0]),
                    _ => tile_rows::<F, 4, 1>(t, [w0], &data, [o0]),
                },
            }
        }
    }
}
