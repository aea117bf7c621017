//! AArch64: the [`Neon`] token, the [`Simd`] operations on pairs of 128-bit registers, the
//! `#[target_feature]` entry points and the activation quantizers.
//!
//! Bytes are multiplied with `sdot` where the CPU has dotprod, otherwise with `smull`/`smull2`
//! (exact i16 products) added pairwise into i32; both are exact for any signed bytes, so one
//! product serves every operand range, and both leave lane `l` with bytes `4l..4l + 4`. `vrndaq_f32` is C's `roundf`, and the saturating narrows (`sqxtn`) are the
//! reference's clamps.

use std::arch::aarch64::*;

use half::{bf16, f16};

use super::generic::Simd;
use crate::formats::{BlockQ8K, BlockQ8_0, BlockQ8_1};

pub(crate) mod panels;

/// Proof that the CPU has NEON (every AArch64 Linux CPU does; the check is kept honest).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon(());

impl Neon {
    /// The token, if the CPU has NEON.
    #[inline]
    pub(crate) fn new() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon(()))
    }
}

/// Proof that the CPU has NEON and the dot-product extension (`sdot`, Armv8.2 and later).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeonDot(());

impl NeonDot {
    /// The token, if the CPU has NEON and dotprod.
    #[inline]
    pub(crate) fn new() -> Option<NeonDot> {
        (std::arch::is_aarch64_feature_detected!("neon")
            && std::arch::is_aarch64_feature_detected!("dotprod")
            && !dotprod_disabled())
        .then_some(NeonDot(()))
    }
}

/// `PASSUNTIL_NEON_DOTPROD=0` keeps the NEON path off `sdot`, so that tests on a CPU with
/// dotprod also cover the plain NEON kernels. Read once.
fn dotprod_disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("PASSUNTIL_NEON_DOTPROD").is_ok_and(|v| v.trim() == "0"))
}

/// `Σ w·a` of 16 signed bytes into 4 i32 lanes with `sdot` (exact for any bytes).
///
/// # Safety
/// The CPU must have the dotprod extension (callers hold a [`NeonDot`] token).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot_raw(acc: int32x4_t, w: uint8x16_t, a: uint8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the instruction touches registers only; dotprod is enabled on this function.
    unsafe {
        std::arch::asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) w,
            in(vreg) a,
            options(pure, nomem, nostack)
        );
    }
    acc
}

/// [`sdot_raw`] for the [`NeonDot`] methods.
#[inline(always)]
fn sdot16(acc: int32x4_t, w: uint8x16_t, a: uint8x16_t) -> int32x4_t {
    // SAFETY: only the `NeonDot` methods call this, and that token proves dotprod.
    unsafe { sdot_raw(acc, w, a) }
}

// Every method below runs NEON instructions; the token proves the CPU has them, which is the
// safety argument of each `unsafe` block. Loads read exactly the array they are given.

/// `w·a` of 16 signed bytes added into 4 i32 lanes (lane `l`: bytes `4l..4l + 4`), exactly.
#[inline(always)]
fn dot16(acc: int32x4_t, w: uint8x16_t, a: uint8x16_t) -> int32x4_t {
    // SAFETY: NEON is present (callers hold the token).
    unsafe {
        let (w, a) = (vreinterpretq_s8_u8(w), vreinterpretq_s8_u8(a));
        // Pairs of bytes 0..8 and 8..16, then adjacent pairs: quads in order.
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
        let hi = vpaddlq_s16(vmull_high_s8(w, a));
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

macro_rules! neon_simd {
    ($tok:ident, $dot16:ident) => {
        impl Simd for $tok {
            type V = (uint8x16_t, uint8x16_t);
            type Acc = (int32x4_t, int32x4_t);
            type F8 = (float32x4_t, float32x4_t);
            type F = [float32x4_t; 4];
            const F_REGS: usize = 8;

            #[inline(always)]
            fn prefetch(self, p: *const u8) {
                $crate::arch::prefetch_line(p)
            }

            #[inline(always)]
            fn load(self, b: &[u8; 32]) -> Self::V {
                // SAFETY: NEON is present (token); `b` is 32 readable bytes.
                unsafe { (vld1q_u8(b.as_ptr()), vld1q_u8(b.as_ptr().add(16))) }
            }
            #[inline(always)]
            fn nibbles(self, b: &[u8; 16]) -> Self::V {
                // SAFETY: NEON is present (token); `b` is 16 readable bytes.
                unsafe {
                    let v = vld1q_u8(b.as_ptr());
                    (vandq_u8(v, vdupq_n_u8(0xf)), vshrq_n_u8::<4>(v))
                }
            }
            #[inline(always)]
            fn shr_and(self, v: Self::V, shift: u32, mask: u8) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe {
                    let s = vdupq_n_s8(-(shift as i8));
                    let m = vdupq_n_u8(mask);
                    (vandq_u8(vshlq_u8(v.0, s), m), vandq_u8(vshlq_u8(v.1, s), m))
                }
            }
            #[inline(always)]
            fn shl4(self, v: Self::V) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe { (vshlq_n_u8::<4>(v.0), vshlq_n_u8::<4>(v.1)) }
            }
            #[inline(always)]
            fn or(self, a: Self::V, b: Self::V) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe { (vorrq_u8(a.0, b.0), vorrq_u8(a.1, b.1)) }
            }
            #[inline(always)]
            fn sub(self, a: Self::V, b: Self::V) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe { (vsubq_u8(a.0, b.0), vsubq_u8(a.1, b.1)) }
            }
            #[inline(always)]
            fn splat(self, x: u8) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe { (vdupq_n_u8(x), vdupq_n_u8(x)) }
            }
            #[inline(always)]
            fn bit_set(self, v: Self::V, bit: u8, value: u8) -> Self::V {
                // SAFETY: NEON is present (token).
                unsafe {
                    let (b, x) = (vdupq_n_u8(bit), vdupq_n_u8(value));
                    (vandq_u8(vtstq_u8(v.0, b), x), vandq_u8(vtstq_u8(v.1, b), x))
                }
            }
            #[inline(always)]
            fn bits32(self, word: u32, value: u8) -> Self::V {
                const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
                let b = word.to_le_bytes();
                // SAFETY: NEON is present (token); BITS is 16 readable bytes. Byte i takes byte i / 8
                // of the word and keeps bit i % 8.
                unsafe {
                    let m = vld1q_u8(BITS.as_ptr());
                    let x = vdupq_n_u8(value);
                    let lo = vcombine_u8(vdup_n_u8(b[0]), vdup_n_u8(b[1]));
                    let hi = vcombine_u8(vdup_n_u8(b[2]), vdup_n_u8(b[3]));
                    (vandq_u8(vtstq_u8(lo, m), x), vandq_u8(vtstq_u8(hi, m), x))
                }
            }
            #[inline(always)]
            fn zero(self) -> Self::Acc {
                // SAFETY: NEON is present (token).
                unsafe { (vdupq_n_s32(0), vdupq_n_s32(0)) }
            }
            #[inline(always)]
            fn dot_u(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc {
                self.dot_w8(acc, w, a)
            }
            #[inline(always)]
            fn dot_s(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc {
                self.dot_w8(acc, w, a)
            }
            #[inline(always)]
            fn dot_w8(self, acc: Self::Acc, w: Self::V, a: Self::V) -> Self::Acc {
                ($dot16(acc.0, w.0, a.0), $dot16(acc.1, w.1, a.1))
            }
            #[inline(always)]
            fn dot_u2(self, acc: Self::Acc, w: Self::V, a: Self::V, s0: i16, s1: i16) -> Self::Acc {
                // SAFETY: NEON is present (token). Each half's exact sums are scaled in i32.
                unsafe {
                    let lo = $dot16(vdupq_n_s32(0), w.0, a.0);
                    let hi = $dot16(vdupq_n_s32(0), w.1, a.1);
                    (
                        vmlaq_n_s32(acc.0, lo, s0 as i32),
                        vmlaq_n_s32(acc.1, hi, s1 as i32),
                    )
                }
            }
            #[inline(always)]
            fn lanes(self, acc: Self::Acc) -> [i32; 8] {
                let mut out = [0i32; 8];
                // SAFETY: NEON is present (token); `out` is 8 writable i32.
                unsafe {
                    vst1q_s32(out.as_mut_ptr(), acc.0);
                    vst1q_s32(out.as_mut_ptr().add(4), acc.1);
                }
                out
            }
            #[inline(always)]
            fn acc_from(self, lanes: [i32; 8]) -> Self::Acc {
                // SAFETY: NEON is present (token); `lanes` is 8 readable i32.
                unsafe { (vld1q_s32(lanes.as_ptr()), vld1q_s32(lanes.as_ptr().add(4))) }
            }
            #[inline(always)]
            fn f8zero(self) -> Self::F8 {
                // SAFETY: NEON is present (token).
                unsafe { (vdupq_n_f32(0.0), vdupq_n_f32(0.0)) }
            }
            #[inline(always)]
            fn f8fma(self, acc: Self::F8, x: Self::Acc, scale: f32) -> Self::F8 {
                // SAFETY: NEON is present (token).
                unsafe {
                    let s = vdupq_n_f32(scale);
                    (
                        vfmaq_f32(acc.0, vcvtq_f32_s32(x.0), s),
                        vfmaq_f32(acc.1, vcvtq_f32_s32(x.1), s),
                    )
                }
            }
            #[inline(always)]
            fn f8reduce(self, acc: Self::F8) -> f32 {
                // SAFETY: NEON is present (token). Lanes 0-3 and 4-7.
                unsafe {
                    let t = vaddq_f32(acc.0, acc.1); // l + 4
                    let u = vadd_f32(vget_low_f32(t), vget_high_f32(t)); // l + 2
                    vget_lane_f32::<0>(u) + vget_lane_f32::<1>(u)
                }
            }
            #[inline(always)]
            fn f16x2(self, h: [f16; 2]) -> [f32; 2] {
                h.map(f16::to_f32)
            }
            #[inline(always)]
            fn fzero(self) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token).
                unsafe { [vdupq_n_f32(0.0); 4] }
            }
            #[inline(always)]
            fn fload(self, x: &[f32; 16]) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token); `x` is 16 readable floats.
                unsafe { std::array::from_fn(|i| vld1q_f32(x.as_ptr().add(4 * i))) }
            }
            #[inline(always)]
            fn fload_f16(self, x: &[f16; 16]) -> [float32x4_t; 4] {
                // Widening f16 is exact however it is done; `half` does it without the unstable
                // half-precision vector types.
                let w: [f32; 16] = std::array::from_fn(|i| x[i].to_f32());
                self.fload(&w)
            }
            #[inline(always)]
            fn fload_bf16(self, x: &[bf16; 16]) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token); `x` is 16 readable u16. A bf16 is the high half of
                // an f32.
                unsafe {
                    let p = x.as_ptr().cast::<u16>();
                    std::array::from_fn(|i| {
                        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.add(4 * i))))
                    })
                }
            }
            #[inline(always)]
            fn fsplat(self, x: f32) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token).
                unsafe { [vdupq_n_f32(x); 4] }
            }
            #[inline(always)]
            fn fstore(self, v: [float32x4_t; 4], out: &mut [f32; 16]) {
                // SAFETY: NEON is present (token); `out` is 16 writable floats.
                unsafe {
                    for (i, v) in v.into_iter().enumerate() {
                        vst1q_f32(out.as_mut_ptr().add(4 * i), v);
                    }
                }
            }
            #[inline(always)]
            fn fma(
                self,
                acc: [float32x4_t; 4],
                a: [float32x4_t; 4],
                b: [float32x4_t; 4],
            ) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token).
                unsafe { std::array::from_fn(|i| vfmaq_f32(acc[i], a[i], b[i])) }
            }
            #[inline(always)]
            fn fadd(self, a: [float32x4_t; 4], b: [float32x4_t; 4]) -> [float32x4_t; 4] {
                // SAFETY: NEON is present (token).
                unsafe { std::array::from_fn(|i| vaddq_f32(a[i], b[i])) }
            }
            #[inline(always)]
            fn freduce(self, acc: [float32x4_t; 4]) -> f32 {
                // SAFETY: NEON is present (token). Registers hold lanes 0-3, 4-7, 8-11, 12-15.
                unsafe {
                    let s0 = vaddq_f32(acc[0], acc[2]); // l + 8, l < 4
                    let s1 = vaddq_f32(acc[1], acc[3]); // l + 8, 4 ≤ l < 8
                    let t = vaddq_f32(s0, s1); // l + 4
                    let u = vadd_f32(vget_low_f32(t), vget_high_f32(t)); // l + 2
                    vget_lane_f32::<0>(u) + vget_lane_f32::<1>(u)
                }
            }
        }
    };
}

neon_simd!(Neon, dot16);
neon_simd!(NeonDot, sdot16);

super::entry_points!(Neon, "neon");
super::entry_points!(NeonDot, "neon,dotprod");

// Activation quantizers, writing the bytes of `super::ActQ8` (Q8_0/Q8_1) and of the
// reference (Q8_K).

/// Q8_0/Q8_1's scale, quants and their sum for one block of 32, as [`super::ActQ8`] makes
/// them (`1/d`, halves to even: llama.cpp's NEON activation quantizer).
#[inline(always)]
fn q8_block(x: &[f32; 32], qs: &mut [i8; 32]) -> (f32, i32) {
    // SAFETY: NEON is present (callers hold the token); `x` is 32 readable floats and `qs` 32
    // writable bytes.
    unsafe {
        let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(x.as_ptr().add(4 * i)));
        let mut m = vdupq_n_f32(0.0);
        for &v in &v {
            m = vmaxq_f32(m, vabsq_f32(v));
        }
        let (d, id) = super::ActQ8::scale(vmaxvq_f32(m));
        let mut sum = vdupq_n_s32(0);
        for (i, p) in v.chunks_exact(2).enumerate() {
            // fcvtzs saturates and maps NaN to 0, and the narrows saturate: Rust's `as i8`.
            let a = vcvtq_s32_f32(vrndnq_f32(vmulq_n_f32(p[0], id)));
            let b = vcvtq_s32_f32(vrndnq_f32(vmulq_n_f32(p[1], id)));
            let h = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
            let q = vqmovn_s16(h);
            vst1_s8(qs.as_mut_ptr().add(8 * i), q);
            sum = vpadalq_s16(sum, vmovl_s8(q));
        }
        (d, vaddvq_s32(sum))
    }
}

impl super::Q8Act for BlockQ8_0 {
    fn quantize_neon(_: Neon, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            let (d, _) = q8_block(x, &mut o.qs);
            o.d = f16::from_f32(d);
        }
    }
}

impl super::Q8Act for BlockQ8_1 {
    fn quantize_neon(_: Neon, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            let (d, sum) = q8_block(x, &mut o.qs);
            o.d = f16::from_f32(d);
            o.s = f16::from_f32(sum as f32 * d);
        }
    }
}

impl super::Q8Act for BlockQ8K {
    fn quantize_neon(_: Neon, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<256>().0.iter().zip(out) {
            q8k_block(x, o);
        }
    }
}

/// One Q8_K block as the reference makes it: the first value of largest magnitude sets
/// `iscale = -127 / max`; quants through the float-magic `nearest_int`, clamped.
#[inline(always)]
fn q8k_block(x: &[f32; 256], o: &mut BlockQ8K) {
    // SAFETY: NEON is present (callers hold the token); `x` is 256 readable floats and `o.qs`
    // 256 writable bytes.
    unsafe {
        let mut m = vdupq_n_f32(0.0);
        for c in 0..64 {
            m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x.as_ptr().add(4 * c))));
        }
        let amax = vmaxvq_f32(m);
        *o = bytemuck::Zeroable::zeroed();
        if amax == 0.0 {
            return;
        }
        let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let magic = vdupq_n_f32(12_582_912.0);
        let (mask, off) = (vdupq_n_s32(0x007f_ffff), vdupq_n_s32(0x0040_0000));
        for c in 0..32 {
            let q: [int32x4_t; 2] = std::array::from_fn(|h| {
                let v = vmulq_n_f32(vld1q_f32(x.as_ptr().add(8 * c + 4 * h)), iscale);
                let bits = vreinterpretq_s32_f32(vaddq_f32(v, magic));
                vsubq_s32(vandq_s32(bits, mask), off)
            });
            let n = vqmovn_s16(vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1])));
            vst1_s8(o.qs.as_mut_ptr().add(8 * c), n);
        }
        for (s, g) in o.bsums.iter_mut().zip(o.qs.as_chunks::<16>().0) {
            *s = vaddlvq_s8(vld1q_s8(g.as_ptr()));
        }
        o.d = 1.0 / iscale;
    }
}
