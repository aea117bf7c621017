//! The NEON panel kernel ([`crate::panels`]): a panel's sixteen weight rows in four 128-bit
//! registers of four rows each, up to four activation rows at a time, for both NEON tokens
//! (`sdot` with dotprod, `smull` and pairwise additions without).
//!
//! Line `c` of a block holds bytes `4c..4c + 4` of each of the panel's rows, so one product of
//! a 16-byte quarter of the line against the activation's four bytes, broadcast, leaves each
//! lane with one row's partial sum: no horizontal sum. Both products are exact for any signed
//! bytes. The nibble formats' quants (0..15) are summed as they are and the activation block's
//! `start` added; Q8_0's quants, stored plus 128, are made signed again and summed directly,
//! which is the integer `start` plus the stored quants' products come to. The float steps are
//! the portable kernel's, in its order (`d_w·d_a`, a fused multiply-add of the sum, Q4_1's
//! minimum fused in after), so every instruction set gives the same bits.

use std::arch::aarch64::*;

use super::{dot16, sdot16, Neon, NeonDot};
use crate::panels::{Kind, PanelAct, PANEL_ROWS};

/// Activation rows per tile: their sums and a block's lines fill the 32 vector registers.
const NEON_TILE: usize = 4;

/// Four f16 at `p`, widened to f32 (exact) with `fcvtl`, which every AArch64 CPU with SIMD
/// has (the half-precision vector types of the intrinsics are not stable).
///
/// # Safety
/// `p` must point to four readable `u16`.
#[inline(always)]
unsafe fn widen4(p: *const u16) -> float32x4_t {
    // SAFETY: the caller gives four readable u16; NEON is present (callers hold a token).
    unsafe {
        let h = vld1_u16(p);
        let r: float32x4_t;
        std::arch::asm!(
            "fcvtl {0:v}.4s, {1:v}.4h",
            out(vreg) r,
            in(vreg) h,
            options(pure, nomem, nostack)
        );
        r
    }
}

/// `T` activation rows (`acts`, `nb` blocks each) times the panel; `dot` adds the products of
/// 16 signed bytes into four lanes of four.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<const NIB: bool, const MIN: bool, const T: usize>(
    dot: impl Fn(int32x4_t, uint8x16_t, uint8x16_t) -> int32x4_t + Copy,
    qs: &[u8],
    scales: &[u8],
    acts: &[PanelAct],
    nb: usize,
    out: &mut [[f32; PANEL_ROWS]],
) {
    let qbytes = if NIB { 256 } else { 512 };
    let sbytes = if MIN { 64 } else { 32 };
    // SAFETY: NEON is present (the caller holds a token, and `dot` is that token's). Every
    // load is in bounds: `panel_tile` checked that `qs` holds `nb` blocks of `qbytes` and
    // `scales` `nb` of `sbytes`, and that `acts` holds `T` rows of `nb` blocks (each `qs` 32
    // bytes, 16-aligned by `PanelAct`'s layout, so every 4-byte line is aligned); the stores
    // write `T` arrays of sixteen f32.
    unsafe {
        let low = vdupq_n_u8(0xf);
        let flip = vdupq_n_u8(0x80);
        let mut acc = [[vdupq_n_f32(0.0); 4]; T];
        for k in 0..nb {
            let q = qs.as_ptr().add(k * qbytes);
            let s = scales.as_ptr().add(k * sbytes).cast::<u16>();
            let a: [&PanelAct; T] = std::array::from_fn(|r| acts.get_unchecked(r * nb + k));
            let line = |r: usize, c: usize| {
                vreinterpretq_u8_s32(vld1q_dup_s32(a[r].qs.as_ptr().cast::<i32>().add(c)))
            };
            let mut sums = [[vdupq_n_s32(0); 4]; T];
            if NIB {
                // Lines c and c + 4 are the low and high nibbles of the same bytes.
                for c in 0..4 {
                    let v: [uint8x16_t; 4] =
                        std::array::from_fn(|j| vld1q_u8(q.add(64 * c + 16 * j)));
                    let lo = v.map(|v| vandq_u8(v, low));
                    let hi = v.map(|v| vshrq_n_u8::<4>(v));
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let (b0, b1) = (line(r, c), line(r, c + 4));
                        for j in 0..4 {
                            sums[j] = dot(dot(sums[j], lo[j], b0), hi[j], b1);
                        }
                    }
                }
                for (r, sums) in sums.iter_mut().enumerate() {
                    let start = vdupq_n_s32(a[r].start);
                    for sum in sums.iter_mut() {
                        *sum = vaddq_s32(*sum, start);
                    }
                }
            } else {
                for c in 0..8 {
                    let w: [uint8x16_t; 4] =
                        std::array::from_fn(|j| veorq_u8(vld1q_u8(q.add(64 * c + 16 * j)), flip));
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let b = line(r, c);
                        for j in 0..4 {
                            sums[j] = dot(sums[j], w[j], b);
                        }
                    }
                }
            }
            for j in 0..4 {
                let dw = widen4(s.add(4 * j));
                let mw = match MIN {
                    true => widen4(s.add(PANEL_ROWS + 4 * j)),
                    false => vdupq_n_f32(0.0),
                };
                for r in 0..T {
                    let scale = vmulq_n_f32(dw, a[r].d);
                    acc[r][j] = vfmaq_f32(acc[r][j], scale, vcvtq_f32_s32(sums[r][j]));
                    if MIN {
                        acc[r][j] = vfmaq_n_f32(acc[r][j], mw, a[r].s);
                    }
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            for (j, v) in acc.into_iter().enumerate() {
                vst1q_f32(o.as_mut_ptr().add(4 * j), v);
            }
        }
    }
}

macro_rules! neon_panels {
    ($tok:ident, $features:literal, $dot:ident) => {
        impl $tok {
            /// [`crate::panels`]' tile: one panel times activation rows of `nb` blocks, four at
            /// a time.
            pub(crate) fn panel_tile(
                self,
                kind: Kind,
                qs: &[u8],
                scales: &[u8],
                acts: &[PanelAct],
                nb: usize,
                out: &mut [[f32; PANEL_ROWS]],
            ) {
                #[target_feature(enable = $features)]
                fn run<const NIB: bool, const MIN: bool>(
                    qs: &[u8],
                    scales: &[u8],
                    acts: &[PanelAct],
                    nb: usize,
                    out: &mut [[f32; PANEL_ROWS]],
                ) {
                    let mut done = 0;
                    for step in [NEON_TILE, 2, 1] {
                        while out.len() - done >= step {
                            let a = &acts[done * nb..(done + step) * nb];
                            let o = &mut out[done..done + step];
                            match step {
                                NEON_TILE => {
                                    tile::<NIB, MIN, NEON_TILE>($dot, qs, scales, a, nb, o)
                                }
                                2 => tile::<NIB, MIN, 2>($dot, qs, scales, a, nb, o),
                                _ => tile::<NIB, MIN, 1>($dot, qs, scales, a, nb, o),
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
                        Kind::Q4_0 => run::<true, false>(qs, scales, acts, nb, out),
                        Kind::Q4_1 => run::<true, true>(qs, scales, acts, nb, out),
                        Kind::Q8_0 => run::<false, false>(qs, scales, acts, nb, out),
                    }
                }
            }
        }
    };
}

neon_panels!(Neon, "neon", dot16);
neon_panels!(NeonDot, "neon,dotprod", sdot16);
