//! The panel kernels ([`crate::panels`]) for AVX-512 VNNI (sixteen weight rows in the lanes
//! of one register, up to eight activation rows at a time) and for AVX2 (each half of the
//! panel, eight rows, in one register; up to four activation rows at a time).
//!
//! **AVX-512.**
//! For each block, the panel's quants are loaded (and for the nibble formats split into low
//! and high halves) once: eight registers, register `c` holding quants `4c..4c + 4` of each of
//! the sixteen rows. Each activation row then takes eight `vpdpbusd`s against its own quants,
//! four at a time broadcast from memory, starting from its `−offset·Σq`: sixteen exact block
//! sums, converted, scaled by `d_w·d_a` and fused-multiply-added into its accumulator (and
//! Q4_1's minimum against the row's sum into the same accumulator), the portable kernel's
//! operations in its order. A single activation row (decoding) prefetches the quants 2 KiB
//! ahead and the next panel's scales of the block in use, as it streams every weight from
//! memory once.
//!
//! **AVX2** has no `vpdpbusd`: `vpmaddubsw` multiplies unsigned by signed bytes and adds
//! neighbouring pairs into 16 bits (saturating), and `vpmaddwd` against ones adds the pairs
//! into a row's 32-bit lane. Both stay exact:
//!
//! - nibble formats (quants 0..15): a pair is at most 2·15·128 = 3,840 in magnitude, so a
//!   block's eight lines are summed in 16 bits (at most 30,720) and widened once, then the
//!   activation block's `start` is added;
//! - Q8_0 (stored plus 128): the quants are made signed again and the sign moved onto the
//!   activation (`|w|` against `sign(a, w)`), a pair at most 2·128·127 = 32,512, each line
//!   widened on its own; this is `Σ w·a`, which is what `start` plus the stored quants'
//!   products come to. An activation of −128 has no positive counterpart in a byte, so a
//!   block that holds one ([`PanelAct::extreme`]; the quantizer gives them only for
//!   subnormal blocks) is summed by the portable kernel's [`block_sum`].
//!
//! Registers decide the AVX2 tile's shape. For the nibble formats this kernel takes up to
//! four activation rows one half of the panel at a time (their four accumulators and four
//! sixteen-bit sums, the half's low and high nibbles and two broadcast lines: fourteen
//! registers; both halves at once spill), though from four rows on the kernel below serves
//! them. Q8_0 takes both halves, so that each broadcast line serves sixteen weight rows.
//! A single activation row (decoding) takes both halves and streams the weights once.
//!
//! From four activation rows on, the nibble formats take another kernel
//! ([`Avx2::panel_tile_unsigned`]): the panel is unpacked once per panel and task (its
//! calls for the same panel's further rows reuse it) into signed bytes
//! `q − 8` in memory, the activations are packed plus 128, and `vpmaddubsw` reads the weights
//! from memory as its signed operand, so three rows take both halves at once; 11-26% faster
//! than the kernel above in the `gemm_fast` bench (Q4_1, one thread).
//!
//! The float steps are the portable kernel's, in its order, so every instruction set gives
//! the same bits.

use std::arch::x86_64::*;

use super::{Avx2, Avx512};
use crate::arch::{prefetch_line, PREFETCH_AHEAD};
use crate::panels::{block_sum, Kind, PanelAct, PANEL_ROWS};

impl Avx512 {
    /// [`crate::panels`]' tile: one panel times activation rows of `nb` blocks, eight at a time.
    pub(crate) fn panel_tile(
        self,
        kind: Kind,
        qs: &[u8],
        scales: &[u8],
        acts: &[PanelAct],
        nb: usize,
        out: &mut [[f32; PANEL_ROWS]],
    ) {
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn run<const NIB: bool, const MIN: bool>(
            t: Avx512,
            qs: &[u8],
            scales: &[u8],
            acts: &[PanelAct],
            nb: usize,
            out: &mut [[f32; PANEL_ROWS]],
        ) {
            let mut done = 0;
            // Eight rows at a time, then four, two and one.
            for step in [8, 4, 2, 1] {
                while out.len() - done >= step {
                    let a = &acts[done * nb..(done + step) * nb];
                    let o = &mut out[done..done + step];
                    match step {
                        8 => tile::<NIB, MIN, 8>(t, qs, scales, a, nb, o),
                        4 => tile::<NIB, MIN, 4>(t, qs, scales, a, nb, o),
                        2 => tile::<NIB, MIN, 2>(t, qs, scales, a, nb, o),
                        _ => tile::<NIB, MIN, 1>(t, qs, scales, a, nb, o),
                    }
                    done += step;
                }
            }
        }
        assert!(acts.len() == out.len() * nb);
        assert!(qs.len() >= nb * kind.qbytes() && scales.len() >= nb * kind.sbytes());
        // SAFETY: the token proves the CPU has the features `run` is compiled for.
        unsafe {
            match kind {
                Kind::Q4_0 => run::<true, false>(self, qs, scales, acts, nb, out),
                Kind::Q4_1 => run::<true, true>(self, qs, scales, acts, nb, out),
                Kind::Q8_0 => run::<false, false>(self, qs, scales, acts, nb, out),
            }
        }
    }
}

/// A single activation row streams the weights once: block `k`'s share of them, fetched
/// ahead of use. Quants [`PREFETCH_AHEAD`] bytes on from `q` (block `k`'s; the panels of a
/// matrix lie one after the other, so this crosses into the next panel), and at every cache
/// line of scales the next panel's scales of block `k` (`s` is block `k`'s): a panel's scales
/// lie after its quants, so a fixed distance ahead of them would reach the next panel's
/// scales only after its first blocks had been read, and those blocks missed in every panel
/// (a fifth of a decoding profile on AVX2). Hints: an address past the end is never read.
#[inline(always)]
fn prefetch_block(q: *const u8, s: *const u8, k: usize, qbytes: usize, sbytes: usize, nb: usize) {
    let ahead = q.wrapping_add(PREFETCH_AHEAD);
    for l in 0..qbytes / 64 {
        prefetch_line(ahead.wrapping_add(64 * l));
    }
    if (k * sbytes).is_multiple_of(64) {
        let next = crate::panels::panel_stride(qbytes, sbytes, nb);
        prefetch_line(s.wrapping_add(next));
    }
}

/// `T` activation rows (`acts`, `nb` blocks each) times the panel.
#[inline(always)]
fn tile<const NIB: bool, const MIN: bool, const T: usize>(
    _: Avx512,
    qs: &[u8],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
) {
    let qbytes = if NIB { 256 } else { 512 };
    let sbytes = if MIN { 64 } else { 32 };
    // SAFETY: AVX-512 F/BW/VNNI and F16C are present (the caller runs under the token). Every
    // load is in bounds: `panel_tile` checked that `qs` holds `nb` blocks of `qbytes` and
    // `scales` `nb` of `sbytes`, and that `acts` holds `T` rows of `nb` blocks; the stores
    // write `T` arrays of sixteen f32.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); T];
        let low = _mm512_set1_epi8(0xf);
        for k in 0..nb {
            let q = qs.as_ptr().add(k * qbytes);
            let mut w = [_mm512_setzero_si512(); 8];
            if NIB {
                for c in 0..4 {
                    let v = _mm512_loadu_si512(q.add(64 * c).cast());
                    w[c] = _mm512_and_si512(v, low);
                    w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                }
            } else {
                for (c, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(q.add(64 * c).cast());
                }
            }
            let s = scales.as_ptr().add(k * sbytes);
            if T == 1 {
                prefetch_block(q, s, k, qbytes, sbytes, nb);
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(s.cast()));
            let mw = match MIN {
                true => _mm512_cvtph_ps(_mm256_loadu_si256(s.add(32).cast())),
                false => _mm512_setzero_ps(),
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = acts.get_unchecked(r * nb + k);
                let aq = a.qs.as_ptr().cast::<i32>();
                // Two chains of four, then one addition: the same exact integer, half the
                // dependent latency of one chain of eight.
                let mut lo = _mm512_set1_epi32(a.start);
                let mut hi = _mm512_setzero_si512();
                for c in 0..4 {
                    let (a0, a1) = (aq.add(c).read_unaligned(), aq.add(c + 4).read_unaligned());
                    lo = _mm512_dpbusd_epi32(lo, w[c], _mm512_set1_epi32(a0));
                    hi = _mm512_dpbusd_epi32(hi, w[c + 4], _mm512_set1_epi32(a1));
                }
                let sum = _mm512_add_epi32(lo, hi);
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d));
                *acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sum), *acc);
                if MIN {
                    *acc = _mm512_fmadd_ps(mw, _mm512_set1_ps(a.s), *acc);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), acc);
        }
    }
}

/// Activation rows per AVX2 tile: their accumulators and sums and a half panel's nibbles fill
/// the sixteen registers.
const AVX2_TILE: usize = 4;

impl Avx2 {
    /// [`crate::panels`]' tile: one panel times activation rows of `nb` blocks, four at a time.
    pub(crate) fn panel_tile(
        self,
        kind: Kind,
        qs: &[u8],
        scales: &[u8],
        acts: &[PanelAct],
        nb: usize,
        out: &mut [[f32; PANEL_ROWS]],
    ) {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn run<const NIB: bool, const MIN: bool>(
            t: Avx2,
            qs: &[u8],
            scales: &[u8],
            acts: &[PanelAct],
            nb: usize,
            out: &mut [[f32; PANEL_ROWS]],
        ) {
            let mut done = 0;
            for step in [AVX2_TILE, 2, 1] {
                while out.len() - done >= step {
                    let a = &acts[done * nb..(done + step) * nb];
                    let o = &mut out[done..done + step];
                    // The nibble formats take one half of the panel at a time: four rows'
                    // accumulators and sixteen-bit sums, the half's low and high nibbles and
                    // two broadcast lines fit the sixteen registers. Q8_0 takes both halves
                    // per block, so that each broadcast line of an activation row serves
                    // sixteen weight rows (measured no slower than one half at a time), and
                    // so does a single row, which streams the weights once.
                    match (NIB, step) {
                        (true, AVX2_TILE) => {
                            for h in 0..2 {
                                tile_avx2::<NIB, MIN, AVX2_TILE, 1>(t, qs, scales, a, nb, o, h);
                            }
                        }
                        (true, 2) => {
                            for h in 0..2 {
                                tile_avx2::<NIB, MIN, 2, 1>(t, qs, scales, a, nb, o, h);
                            }
                        }
                        (false, AVX2_TILE) => {
                            tile_avx2::<NIB, MIN, AVX2_TILE, 2>(t, qs, scales, a, nb, o, 0)
                        }
                        (false, 2) => tile_avx2::<NIB, MIN, 2, 2>(t, qs, scales, a, nb, o, 0),
                        _ => tile_avx2::<NIB, MIN, 1, 2>(t, qs, scales, a, nb, o, 0),
                    }
                    done += step;
                }
            }
        }
        assert!(acts.len() == out.len() * nb);
        assert!(qs.len() >= nb * kind.qbytes() && scales.len() >= nb * kind.sbytes());
        // SAFETY: the token proves the CPU has the features `run` is compiled for.
        unsafe {
            match kind {
                Kind::Q4_0 => run::<true, false>(self, qs, scales, acts, nb, out),
                Kind::Q4_1 => run::<true, true>(self, qs, scales, acts, nb, out),
                Kind::Q8_0 => run::<false, false>(self, qs, scales, acts, nb, out),
            }
        }
    }
}

/// Bytes of one unpacked nibble block: eight lines of sixteen rows' four quants minus 8, then
/// the rows' `−128·Σ(q − 8)`.
const UNPACKED: usize = 8 * 64 + 4 * PANEL_ROWS;

thread_local! {
    /// A panel's nibble blocks unpacked by [`unpack_panel`].
    static UNPACKED_PANEL: std::cell::RefCell<Vec<__m256i>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Avx2 {
    /// [`crate::panels`]' tile for the nibble formats with activations packed plus 128
    /// ([`crate::panels::ActForm::Unsigned`]): the panel's quants are unpacked once per call
    /// to signed bytes `q − 8` in memory, where `vpmaddubsw` takes them as its signed operand
    /// (the activation, plus 128, is the unsigned one) without spending a register on them,
    /// so that three activation rows take both halves of the panel at once (each broadcast
    /// line serves sixteen weight rows) and no nibble is split per activation row. Each block
    /// sum is `Σ (q_a + 128)(q_w − 8)` plus the weights' `−128·Σ(q_w − 8)` plus the
    /// activation's `start`: the same exact integer as [`Avx2::panel_tile`]'s, so the same
    /// bits. A pair of products is at most 2·255·8 = 4,080 in magnitude and eight of them
    /// 32,640, so the sixteen-bit sums stay exact.
    ///
    /// `fresh` is false only when this thread's previous call unpacked the same panel (the
    /// caller's next rows against it): its unpacked quants are used again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn panel_tile_unsigned(
        self,
        kind: Kind,
        fresh: bool,
        qs: &[u8],
        scales: &[u8],
        acts: &[PanelAct],
        nb: usize,
        out: &mut [[f32; PANEL_ROWS]],
    ) {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn run<const MIN: bool>(
            t: Avx2,
            fresh: bool,
            qs: &[u8],
            scales: &[u8],
            acts: &[PanelAct],
            nb: usize,
            out: &mut [[f32; PANEL_ROWS]],
        ) {
            UNPACKED_PANEL.with_borrow_mut(|w| {
                if fresh || w.len() != nb * UNPACKED / 32 {
                    w.resize(nb * UNPACKED / 32, _mm256_setzero_si256());
                    unpack_panel(t, qs, nb, w);
                }
                let w: &[__m256i] = w;
                let mut done = 0;
                for step in [3, 2, 1] {
                    while out.len() - done >= step {
                        let a = &acts[done * nb..(done + step) * nb];
                        let o = &mut out[done..done + step];
                        match step {
                            3 => tile_unsigned::<MIN, 3>(t, w, scales, a, nb, o),
                            2 => tile_unsigned::<MIN, 2>(t, w, scales, a, nb, o),
                            _ => tile_unsigned::<MIN, 1>(t, w, scales, a, nb, o),
                        }
                        done += step;
                    }
                }
            })
        }
        assert!(kind.nibbles(), "{kind:?} has no nibbles to unpack");
        assert!(acts.len() == out.len() * nb);
        assert!(qs.len() >= nb * kind.qbytes() && scales.len() >= nb * kind.sbytes());
        // SAFETY: the token proves the CPU has the features `run` is compiled for.
        unsafe {
            match kind.min() {
                true => run::<true>(self, fresh, qs, scales, acts, nb, out),
                false => run::<false>(self, fresh, qs, scales, acts, nb, out),
            }
        }
    }
}

/// The panel's `nb` nibble blocks (`qs`) into `w`, [`UNPACKED`] bytes each: line `c` (0-7)
/// holds the low (`c < 4`) or high nibbles of stored line `c mod 4`, minus 8, as signed bytes;
/// then each row's `−128·Σ(q − 8)` over the block, rows 0-7 and 8-15 in one register each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unpack_panel(_: Avx2, qs: &[u8], nb: usize, w: &mut [__m256i]) {
    assert!(qs.len() >= nb * 256 && w.len() >= nb * UNPACKED / 32);
    let low = _mm256_set1_epi8(0xf);
    let eight = _mm256_set1_epi8(8);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for k in 0..nb {
        let o = &mut w[k * UNPACKED / 32..(k + 1) * UNPACKED / 32];
        // Each byte position (a row's quant slot) summed over the eight lines in bytes: eight
        // values of −8..7 stay within −64..56. Then one `vpmaddubsw` and `vpmaddwd` per half
        // add a row's four slots.
        let mut bytes = [_mm256_setzero_si256(); 2];
        for c in 0..4 {
            for h in 0..2 {
                // SAFETY: block `k`'s quants are bytes `256k..256k + 256` of `qs` (asserted).
                let v = unsafe {
                    _mm256_loadu_si256(qs.as_ptr().add(256 * k + 64 * c + 32 * h).cast())
                };
                let lo = _mm256_sub_epi8(_mm256_and_si256(v, low), eight);
                let hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), eight);
                o[2 * c + h] = lo;
                o[2 * (c + 4) + h] = hi;
                bytes[h] = _mm256_add_epi8(bytes[h], _mm256_add_epi8(lo, hi));
            }
        }
        for h in 0..2 {
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, bytes[h]), ones16);
            o[16 + h] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, 7));
        }
    }
}

/// `T` activation rows (`acts`, plus 128, `nb` blocks each) times both halves of the panel
/// unpacked in `w` ([`unpack_panel`]). Compiled for AVX2 itself (not only inlined into such
/// a function): its assembly names `ymm` registers, which the build's baseline may lack.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_unsigned<const MIN: bool, const T: usize>(
    _: Avx2,
    w: &[__m256i],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
) {
    let sbytes = if MIN { 64 } else { 32 };
    assert!(w.len() >= nb * UNPACKED / 32 && acts.len() >= T * nb && out.len() >= T);
    // SAFETY: AVX2, FMA and F16C are present (the caller runs under the token). Every load is
    // in bounds: `w` holds `nb` unpacked blocks and `acts` `T` rows of `nb` (asserted), and
    // `panel_tile_unsigned` checked that `scales` holds `nb` blocks of `sbytes`; the stores
    // write `T` arrays of sixteen f32. The assembly only reads memory (declared `readonly`;
    // it writes no flags and no stack): four bytes at `qs + 4c` and `qs + 16 + 4c` (c < 4,
    // within the 32 quants) and 32 bytes at `wk + 64c (+ 32)` and `wk + 64(c + 4) (+ 32)`,
    // within the block's 512 bytes of lines; every register it writes is an output.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for k in 0..nb {
            let wk = w.as_ptr().add(k * UNPACKED / 32);
            let s = scales.as_ptr().add(k * sbytes);
            let a: [&PanelAct; T] = std::array::from_fn(|r| acts.get_unchecked(r * nb + k));
            let mut s16 = [[_mm256_setzero_si256(); 2]; T];
            for c in 0..4 {
                for (r, [s0, s1]) in s16.iter_mut().enumerate() {
                    // Lines c and c + 4 of row r's activation, broadcast, times both halves'
                    // lines c and c + 4 of the weights, read from memory by `vpmaddubsw`
                    // itself. Written out because LLVM, left to itself, keeps the weights
                    // in registers and spills the broadcasts (7% slower than the nibble
                    // kernel this replaces).
                    std::arch::asm!(
                        "vpbroadcastd {b0}, dword ptr [{alo}]",
                        "vpbroadcastd {b1}, dword ptr [{ahi}]",
                        "vpmaddubsw {t0}, {b0}, ymmword ptr [{w0}]",
                        "vpmaddubsw {t1}, {b1}, ymmword ptr [{w1}]",
                        "vpaddw {t0}, {t0}, {t1}",
                        "vpaddw {s0}, {s0}, {t0}",
                        "vpmaddubsw {t0}, {b0}, ymmword ptr [{w0} + 32]",
                        "vpmaddubsw {t1}, {b1}, ymmword ptr [{w1} + 32]",
                        "vpaddw {t0}, {t0}, {t1}",
                        "vpaddw {s1}, {s1}, {t0}",
                        alo = in(reg) a[r].qs.as_ptr().add(4 * c),
                        ahi = in(reg) a[r].qs.as_ptr().add(16 + 4 * c),
                        w0 = in(reg) wk.add(2 * c),
                        w1 = in(reg) wk.add(2 * (c + 4)),
                        s0 = inout(ymm_reg) *s0,
                        s1 = inout(ymm_reg) *s1,
                        b0 = out(ymm_reg) _,
                        b1 = out(ymm_reg) _,
                        t0 = out(ymm_reg) _,
                        t1 = out(ymm_reg) _,
                        options(pure, readonly, nostack, preserves_flags),
                    );
                }
            }
            for h in 0..2 {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(s.add(16 * h).cast()));
                let mw = match MIN {
                    true => _mm256_cvtph_ps(_mm_loadu_si128(s.add(32 + 16 * h).cast())),
                    false => _mm256_setzero_ps(),
                };
                let wsum = *wk.add(16 + h);
                for r in 0..T {
                    // Q4_0's `start` is (8 − 8)·Σq = 0.
                    debug_assert!(MIN || a[r].start == 0);
                    let mut sum = _mm256_add_epi32(_mm256_madd_epi16(s16[r][h], ones), wsum);
                    if MIN {
                        sum = _mm256_add_epi32(sum, _mm256_set1_epi32(a[r].start));
                    }
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(a[r].d));
                    acc[r][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum), acc[r][h]);
                    if MIN {
                        acc[r][h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a[r].s), acc[r][h]);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            for (h, acc) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * h), acc);
            }
        }
    }
}

/// `T` activation rows (`acts`, `nb` blocks each) times `H` halves of the panel from half
/// `h0` on: one activation row takes both halves per block (it streams the weights once);
/// several take one half at a time, so that their accumulators and sums stay in registers.
#[inline(always)]
fn tile_avx2<const NIB: bool, const MIN: bool, const T: usize, const H: usize>(
    _: Avx2,
    qs: &[u8],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
    h0: usize,
) {
    let qbytes = if NIB { 256 } else { 512 };
    let sbytes = if MIN { 64 } else { 32 };
    debug_assert!(h0 + H <= 2, "half {h0} + {H} of a two-half panel");
    // SAFETY: AVX2, FMA and F16C are present (the caller runs under the token). Every load is
    // in bounds: `panel_tile` checked that `qs` holds `nb` blocks of `qbytes` and `scales`
    // `nb` of `sbytes`, and that `acts` holds `T` rows of `nb` blocks; `h0 + H <= 2` (the
    // callers in `run` pass (H, h0) = (2, 0), (1, 0) or (1, 1); asserted below), so the
    // loads stay in each block's two halves and the stores write `T` arrays of sixteen f32
    // at lanes `8·h0..8·(h0 + H)`.
    unsafe {
        let low = _mm256_set1_epi8(0xf);
        let flip = _mm256_set1_epi8(i8::MIN);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_ps(); H]; T];
        for k in 0..nb {
            let q = qs.as_ptr().add(k * qbytes + 32 * h0);
            let s = scales.as_ptr().add(k * sbytes + 16 * h0);
            if T == 1 {
                prefetch_block(q, s, k, qbytes, sbytes, nb);
            }
            let a: [&PanelAct; T] = std::array::from_fn(|r| acts.get_unchecked(r * nb + k));
            // Each row's block sums, in the halves' lanes (rows 8h..8h + 8 of the panel).
            let mut sums = [[_mm256_setzero_si256(); H]; T];
            let line = |r: usize, c: usize| {
                _mm256_set1_epi32(a[r].qs.as_ptr().cast::<i32>().add(c).read_unaligned())
            };
            if NIB {
                // Lines c and c + 4 share their bytes (low and high nibbles); each half's
                // sixteen-bit sums stay below 30,720.
                let mut s16 = [[_mm256_setzero_si256(); H]; T];
                for c in 0..4 {
                    let v: [__m256i; H] =
                        std::array::from_fn(|h| _mm256_loadu_si256(q.add(64 * c + 32 * h).cast()));
                    let lo = v.map(|v| _mm256_and_si256(v, low));
                    let hi = v.map(|v| _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
                    for (r, s16) in s16.iter_mut().enumerate() {
                        let (b0, b1) = (line(r, c), line(r, c + 4));
                        for h in 0..H {
                            let p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo[h], b0),
                                _mm256_maddubs_epi16(hi[h], b1),
                            );
                            s16[h] = if c == 0 {
                                p
                            } else {
                                _mm256_add_epi16(s16[h], p)
                            };
                        }
                    }
                }
                for (r, s16) in s16.iter().enumerate() {
                    let start = _mm256_set1_epi32(a[r].start);
                    for h in 0..H {
                        sums[r][h] = _mm256_add_epi32(_mm256_madd_epi16(s16[h], ones), start);
                    }
                }
            } else {
                // Q8_0, signed again: |w| against sign(a, w), widened line by line.
                for c in 0..8 {
                    let w: [__m256i; H] = std::array::from_fn(|h| {
                        _mm256_xor_si256(_mm256_loadu_si256(q.add(64 * c + 32 * h).cast()), flip)
                    });
                    let wabs = w.map(|w| _mm256_abs_epi8(w));
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let b = line(r, c);
                        for h in 0..H {
                            let p = _mm256_maddubs_epi16(wabs[h], _mm256_sign_epi8(b, w[h]));
                            let p = _mm256_madd_epi16(p, ones);
                            sums[h] = if c == 0 {
                                p
                            } else {
                                _mm256_add_epi32(sums[h], p)
                            };
                        }
                    }
                }
                for (r, sums) in sums.iter_mut().enumerate() {
                    if a[r].extreme != 0 {
                        let block = std::slice::from_raw_parts(q.sub(32 * h0), qbytes);
                        for (h, sum) in sums.iter_mut().enumerate() {
                            let exact: [i32; 8] = std::array::from_fn(|i| {
                                block_sum(NIB, block, 8 * (h0 + h) + i, a[r])
                            });
                            *sum = _mm256_loadu_si256(exact.as_ptr().cast());
                        }
                    }
                }
            }
            for h in 0..H {
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(s.add(16 * h).cast()));
                let mw = match MIN {
                    true => _mm256_cvtph_ps(_mm_loadu_si128(s.add(32 + 16 * h).cast())),
                    false => _mm256_setzero_ps(),
                };
                for r in 0..T {
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(a[r].d));
                    acc[r][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[r][h]), acc[r][h]);
                    if MIN {
                        acc[r][h] = _mm256_fmadd_ps(mw, _mm256_set1_ps(a[r].s), acc[r][h]);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            for (h, acc) in acc.into_iter().enumerate() {
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * (h0 + h)), acc);
            }
        }
    }
}
