//! x86-64: [`Avx2`] (AVX2 + FMA + F16C) and [`Avx512`] (AVX-512 F/BW/VL + VNNI) tokens, the
//! [`Simd`] operations on 256-bit integer vectors, and the `#[target_feature]` entry points
//! that instantiate the generic kernels.
//!
//! AVX2 multiplies bytes with `vpmaddubsw` (unsigned × signed, pairs summed into i16, exact
//! within the ranges [`Simd`] states) then `vpmaddwd`, which leaves lane `l` with bytes
//! `4l..4l + 4`; signed weights use the sign trick (`|a| · sign(w, a)`). AVX-512 replaces each
//! pair with one `vpdpbusd` (same grouping), and runs float rows in one 512-bit register of
//! 16 lanes.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::generic::Simd;

pub(crate) mod gather;
pub(crate) mod paired;
pub(crate) mod panels;

/// Proof that the CPU has AVX2, FMA and F16C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    #[inline(always)]
    /// The sum of the eight lanes.
    fn hsum(self, acc: __m256i) -> i32 {
        // SAFETY: AVX2 is present (token).
        unsafe {
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256(acc, 1),
            );
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
            _mm_cvtsi128_si32(s)
        }
    }

    /// The token, if the CPU has the features.
    #[inline]
    pub(crate) fn new() -> Option<Avx2> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2(()))
    }
}

/// Proof that the CPU has AVX2/FMA/F16C and AVX-512 F, BW, VL and VNNI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(Avx2);

impl Avx512 {
    /// The token, if the CPU has the features.
    #[inline]
    pub(crate) fn new() -> Option<Avx512> {
        let avx2 = Avx2::new()?;
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni"))
        .then_some(Avx512(avx2))
    }
}

// Every method below runs instructions of the token's features; the token's existence proves
// the CPU has them (its constructor checked), which is the safety argument of each `unsafe`
// block. The methods are `#[inline(always)]` so that they are compiled inside the
// `#[target_feature]` entry points at the end of this file.

impl Simd for Avx2 {
    type V = __m256i;
    type Acc = __m256i;
    type F8 = __m256;
    type F = (__m256, __m256);
    const F_REGS: usize = 8;

    #[inline(always)]
    fn prefetch(self, p: *const u8) {
        crate::arch::prefetch_line(p)
    }

    #[inline(always)]
    fn load(self, b: &[u8; 32]) -> __m256i {
        // SAFETY: AVX is present (token); `b` is 32 readable bytes, loaded unaligned.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }
    #[inline(always)]
    fn nibbles(self, b: &[u8; 16]) -> __m256i {
        // SAFETY: AVX2 is present (token); `b` is 16 readable bytes, loaded unaligned.
        unsafe {
            let v = _mm_loadu_si128(b.as_ptr().cast());
            let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
            _mm256_and_si256(both, _mm256_set1_epi8(0xf))
        }
    }
    #[inline(always)]
    fn shr_and(self, v: __m256i, shift: u32, mask: u8) -> __m256i {
        // SAFETY: AVX2 is present (token). Bits shifted across byte boundaries are masked off.
        unsafe {
            let s = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32));
            _mm256_and_si256(s, _mm256_set1_epi8(mask as i8))
        }
    }
    #[inline(always)]
    fn shl4(self, v: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token). Bytes are below 16, so nothing crosses a byte.
        unsafe { _mm256_slli_epi16(v, 4) }
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token).
        unsafe { _mm256_or_si256(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token).
        unsafe { _mm256_sub_epi8(a, b) }
    }
    #[inline(always)]
    fn splat(self, x: u8) -> __m256i {
        // SAFETY: AVX is present (token).
        unsafe { _mm256_set1_epi8(x as i8) }
    }
    #[inline(always)]
    fn bit_set(self, v: __m256i, bit: u8, value: u8) -> __m256i {
        // SAFETY: AVX2 is present (token).
        unsafe {
            let m = _mm256_set1_epi8(bit as i8);
            let hit = _mm256_cmpeq_epi8(_mm256_and_si256(v, m), m);
            _mm256_and_si256(hit, _mm256_set1_epi8(value as i8))
        }
    }
    #[inline(always)]
    fn bits32(self, word: u32, value: u8) -> __m256i {
        // SAFETY: AVX2 is present (token).
        unsafe {
            // Byte i of the result gets byte i / 8 of the word, then keeps bit i % 8.
            let w = _mm256_set1_epi32(word as i32);
            let spread = _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            );
            let bytes = _mm256_shuffle_epi8(w, spread);
            let m = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let hit = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, m), m);
            _mm256_and_si256(hit, _mm256_set1_epi8(value as i8))
        }
    }
    #[inline(always)]
    fn zero(self) -> __m256i {
        // SAFETY: AVX is present (token).
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    fn dot_u(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token). With w ≤ 127 and |a| ≤ 128 a pair sums to at most
        // 32512 in magnitude, so vpmaddubsw does not saturate.
        unsafe {
            let p = _mm256_maddubs_epi16(w, a);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn dot_s(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token). |a| as unsigned is exact (|-128| = 128) and
        // negating w is exact for |w| ≤ 127; a pair is at most 32512 in magnitude.
        unsafe {
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn dot_w8(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX2 is present (token). |w| as unsigned is exact (|-128| = 128) and
        // negating a is exact for |a| ≤ 127; a pair is at most 32512 in magnitude.
        unsafe {
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn dot_u2(self, acc: __m256i, w: __m256i, a: __m256i, s0: i16, s1: i16) -> __m256i {
        // SAFETY: AVX2 is present (token). vpmaddubsw is exact as in `dot_u`; its i16 lanes
        // 0..8 come from bytes 0..16, lanes 8..16 from bytes 16..32, and vpmaddwd multiplies
        // them by their half's scale into exact i32 sums.
        unsafe {
            let p = _mm256_maddubs_epi16(w, a);
            let sc = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc))
        }
    }
    #[inline(always)]
    fn lanes(self, acc: __m256i) -> [i32; 8] {
        let mut out = [0i32; 8];
        // SAFETY: AVX is present (token); `out` is 32 writable bytes.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), acc) };
        out
    }
    #[inline(always)]
    fn acc_from(self, lanes: [i32; 8]) -> __m256i {
        // SAFETY: AVX is present (token); `lanes` is 32 readable bytes.
        unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) }
    }
    #[inline(always)]
    fn f8zero(self) -> __m256 {
        // SAFETY: AVX is present (token).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn f8fma(self, acc: __m256, x: __m256i, scale: f32) -> __m256 {
        // SAFETY: AVX and FMA are present (token).
        unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(scale), acc) }
    }
    #[inline(always)]
    fn f8reduce(self, acc: __m256) -> f32 {
        // SAFETY: AVX is present (token).
        unsafe { reduce8(acc) }
    }
    #[inline(always)]
    fn f16x2(self, h: [f16; 2]) -> [f32; 2] {
        let bits = h[0].to_bits() as u32 | (h[1].to_bits() as u32) << 16;
        // SAFETY: F16C is present (token).
        let v = unsafe { _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)) };
        // SAFETY: SSE is present on every x86-64 CPU.
        unsafe { [_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v))] }
    }
    #[inline(always)]
    fn fzero(self) -> (__m256, __m256) {
        // SAFETY: AVX is present (token).
        unsafe { (_mm256_setzero_ps(), _mm256_setzero_ps()) }
    }
    #[inline(always)]
    fn fload(self, x: &[f32; 16]) -> (__m256, __m256) {
        // SAFETY: AVX is present (token); `x` is 16 readable floats, loaded unaligned.
        unsafe {
            (
                _mm256_loadu_ps(x.as_ptr()),
                _mm256_loadu_ps(x.as_ptr().add(8)),
            )
        }
    }
    #[inline(always)]
    fn fload_f16(self, x: &[f16; 16]) -> (__m256, __m256) {
        // SAFETY: F16C is present (token); `x` is 32 readable bytes, loaded unaligned.
        unsafe {
            let p = x.as_ptr().cast::<__m128i>();
            (
                _mm256_cvtph_ps(_mm_loadu_si128(p)),
                _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))),
            )
        }
    }
    #[inline(always)]
    fn fload_bf16(self, x: &[bf16; 16]) -> (__m256, __m256) {
        // SAFETY: AVX2 is present (token); `x` is 32 readable bytes, loaded unaligned. A bf16
        // is the high half of an f32.
        unsafe {
            let p = x.as_ptr().cast::<__m128i>();
            let lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16);
            let hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(1))), 16);
            (_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi))
        }
    }
    #[inline(always)]
    fn fsplat(self, x: f32) -> (__m256, __m256) {
        // SAFETY: AVX is present (token).
        unsafe { (_mm256_set1_ps(x), _mm256_set1_ps(x)) }
    }
    #[inline(always)]
    fn fstore(self, v: (__m256, __m256), out: &mut [f32; 16]) {
        // SAFETY: AVX is present (token); `out` is 16 writable floats.
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v.0);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), v.1);
        }
    }
    #[inline(always)]
    fn fma(
        self,
        acc: (__m256, __m256),
        a: (__m256, __m256),
        b: (__m256, __m256),
    ) -> (__m256, __m256) {
        // SAFETY: FMA is present (token).
        unsafe {
            (
                _mm256_fmadd_ps(a.0, b.0, acc.0),
                _mm256_fmadd_ps(a.1, b.1, acc.1),
            )
        }
    }
    #[inline(always)]
    fn fadd(self, a: (__m256, __m256), b: (__m256, __m256)) -> (__m256, __m256) {
        // SAFETY: AVX is present (token).
        unsafe { (_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
    }
    #[inline(always)]
    fn freduce(self, acc: (__m256, __m256)) -> f32 {
        // SAFETY: AVX is present (token).
        unsafe { reduce8(_mm256_add_ps(acc.0, acc.1)) }
    }
}

/// Lanes `l + 4`, then `l + 2`, then `l + 1` of 8 (the end of the 16-lane tree).
#[inline(always)]
unsafe fn reduce8(v: __m256) -> f32 {
    // SAFETY: the caller runs with AVX (both entry tokens imply it).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

impl Simd for Avx512 {
    type V = __m256i;
    type Acc = __m256i;
    type F8 = __m256;
    type F = __m512;
    const F_REGS: usize = 32;

    #[inline(always)]
    fn prefetch(self, p: *const u8) {
        self.0.prefetch(p)
    }

    #[inline(always)]
    fn load(self, b: &[u8; 32]) -> __m256i {
        self.0.load(b)
    }
    #[inline(always)]
    fn nibbles(self, b: &[u8; 16]) -> __m256i {
        self.0.nibbles(b)
    }
    #[inline(always)]
    fn shr_and(self, v: __m256i, shift: u32, mask: u8) -> __m256i {
        self.0.shr_and(v, shift, mask)
    }
    #[inline(always)]
    fn shl4(self, v: __m256i) -> __m256i {
        self.0.shl4(v)
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        self.0.or(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m256i, b: __m256i) -> __m256i {
        self.0.sub(a, b)
    }
    #[inline(always)]
    fn splat(self, x: u8) -> __m256i {
        self.0.splat(x)
    }
    #[inline(always)]
    fn bit_set(self, v: __m256i, bit: u8, value: u8) -> __m256i {
        // SAFETY: AVX-512 BW and VL are present (token).
        unsafe {
            let k = _mm256_test_epi8_mask(v, _mm256_set1_epi8(bit as i8));
            _mm256_maskz_mov_epi8(k, _mm256_set1_epi8(value as i8))
        }
    }
    #[inline(always)]
    fn bits32(self, word: u32, value: u8) -> __m256i {
        // SAFETY: AVX-512 BW and VL are present (token); the word is a byte mask.
        unsafe { _mm256_maskz_mov_epi8(word, _mm256_set1_epi8(value as i8)) }
    }
    #[inline(always)]
    fn zero(self) -> __m256i {
        self.0.zero()
    }
    #[inline(always)]
    fn dot_u(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL are present (token); vpdpbusd sums into i32 without
        // saturation.
        unsafe { _mm256_dpbusd_epi32(acc, w, a) }
    }
    #[inline(always)]
    fn dot_s(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL are present (token); |a| as unsigned and -w are exact
        // for |w| ≤ 127.
        unsafe { _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(a), _mm256_sign_epi8(w, a)) }
    }
    #[inline(always)]
    fn dot_w8(self, acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL are present (token); |w| as unsigned and -a are exact
        // for |a| ≤ 127.
        unsafe { _mm256_dpbusd_epi32(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(a, w)) }
    }
    #[inline(always)]
    fn dot_u2(self, acc: __m256i, w: __m256i, a: __m256i, s0: i16, s1: i16) -> __m256i {
        // SAFETY: AVX-512 VNNI and VL are present (token). vpdpbusd's lanes 0..4 hold bytes
        // 0..16, lanes 4..8 bytes 16..32; each is scaled by its half's scale (exact in i32).
        unsafe {
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a);
            let sc = _mm256_set_m128i(_mm_set1_epi32(s1 as i32), _mm_set1_epi32(s0 as i32));
            _mm256_add_epi32(acc, _mm256_mullo_epi32(p, sc))
        }
    }
    #[inline(always)]
    fn lanes(self, acc: __m256i) -> [i32; 8] {
        self.0.lanes(acc)
    }
    #[inline(always)]
    fn acc_from(self, lanes: [i32; 8]) -> __m256i {
        self.0.acc_from(lanes)
    }
    #[inline(always)]
    fn f8zero(self) -> __m256 {
        self.0.f8zero()
    }
    #[inline(always)]
    fn f8fma(self, acc: __m256, x: __m256i, scale: f32) -> __m256 {
        self.0.f8fma(acc, x, scale)
    }
    #[inline(always)]
    fn f8reduce(self, acc: __m256) -> f32 {
        self.0.f8reduce(acc)
    }
    #[inline(always)]
    fn f16x2(self, h: [f16; 2]) -> [f32; 2] {
        self.0.f16x2(h)
    }
    #[inline(always)]
    fn fzero(self) -> __m512 {
        // SAFETY: AVX-512 F is present (token).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn fload(self, x: &[f32; 16]) -> __m512 {
        // SAFETY: AVX-512 F is present (token); `x` is 16 readable floats, loaded unaligned.
        unsafe { _mm512_loadu_ps(x.as_ptr()) }
    }
    #[inline(always)]
    fn fload_f16(self, x: &[f16; 16]) -> __m512 {
        // SAFETY: AVX-512 F is present (token); `x` is 32 readable bytes, loaded unaligned.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(x.as_ptr().cast())) }
    }
    #[inline(always)]
    fn fload_bf16(self, x: &[bf16; 16]) -> __m512 {
        // SAFETY: AVX-512 F is present (token); `x` is 32 readable bytes, loaded unaligned.
        unsafe {
            let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(x.as_ptr().cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32(w, 16))
        }
    }
    #[inline(always)]
    fn fsplat(self, x: f32) -> __m512 {
        // SAFETY: AVX-512 F is present (token).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn fstore(self, v: __m512, out: &mut [f32; 16]) {
        // SAFETY: AVX-512 F is present (token); `out` is 16 writable floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn fma(self, acc: __m512, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512 F is present (token).
        unsafe { _mm512_fmadd_ps(a, b, acc) }
    }
    #[inline(always)]
    fn fadd(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512 F is present (token).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn freduce(self, acc: __m512) -> f32 {
        // SAFETY: AVX-512 F is present (token).
        unsafe {
            let lo = _mm512_castps512_ps256(acc);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
            reduce8(_mm256_add_ps(lo, hi))
        }
    }
}

super::entry_points!(Avx2, "avx2,fma,f16c");
super::entry_points!(Avx512, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni");

// Activation quantizers. Each follows its reference quantizer's arithmetic exactly (the same
// scale, the same products, the same rounding), so it writes the same bytes for finite input.

/// The largest |x| of 8-float vectors (exact: max is order-independent for finite values).
#[inline(always)]
unsafe fn abs_max(v: &[__m256]) -> f32 {
    // SAFETY: the caller runs with AVX.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for &x in v {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
        }
        let s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Rust's `f32 as i8` of integral floats: NaN to 0, then clamped to -128..=127.
#[inline(always)]
unsafe fn saturate_i8(x: __m256) -> __m256i {
    // SAFETY: the caller runs with AVX.
    unsafe {
        let x = _mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-128.0)),
            _mm256_set1_ps(127.0),
        );
        _mm256_cvttps_epi32(x)
    }
}

/// The reference's `nearest_int` on 8 lanes: the same float-magic rounding, so values past
/// its exact range (and NaN) come out as the reference's do.
#[inline(always)]
unsafe fn nearest_int(x: __m256) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        let v = _mm256_castps_si256(_mm256_add_ps(x, _mm256_set1_ps(12_582_912.0)));
        let m = _mm256_and_si256(v, _mm256_set1_epi32(0x007f_ffff));
        _mm256_sub_epi32(m, _mm256_set1_epi32(0x0040_0000))
    }
}

/// Four vectors of 8 i32 (each in -128..=127) as 32 bytes in order.
#[inline(always)]
unsafe fn pack_i8(q: [__m256i; 4]) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        let a = _mm256_packs_epi32(q[0], q[1]);
        let b = _mm256_packs_epi32(q[2], q[3]);
        let p = _mm256_packs_epi16(a, b);
        // The packs interleave 128-bit halves; restore element order.
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Q8_0/Q8_1's scale and rounded quants of one block of 32, as [`super::ActQ8`] makes them
/// (`127/amax`, halves to even: llama.cpp's x86 activation quantizer).
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_block(x: &[f32; 32]) -> (f32, __m256i, i32) {
    // SAFETY: AVX2 is enabled on this function; `x` is 32 readable floats.
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let (d, id) = super::ActQ8::scale(abs_max(&v));
        let idv = _mm256_set1_ps(id);
        let q = v.map(|v| {
            let r = _mm256_round_ps(_mm256_mul_ps(v, idv), _MM_FROUND_TO_NEAREST_INT);
            saturate_i8(r)
        });
        let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        (d, pack_i8(q), Avx2(()).hsum(s))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn store32(v: __m256i, out: &mut [i8; 32]) {
    // SAFETY: AVX is enabled on this function; `out` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}

impl super::Q8Act for crate::formats::BlockQ8_0 {
    fn quantize_avx2(_: Avx2, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            // SAFETY: the token proves AVX2, FMA and F16C.
            let (d, q, _) = unsafe { q8_block(x) };
            o.d = f16::from_f32(d);
            // SAFETY: as above.
            unsafe { store32(q, &mut o.qs) };
        }
    }
}

impl super::Q8Act for crate::formats::BlockQ8_1 {
    fn quantize_avx2(_: Avx2, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<32>().0.iter().zip(out) {
            // SAFETY: the token proves AVX2, FMA and F16C.
            let (d, q, sum) = unsafe { q8_block(x) };
            o.d = f16::from_f32(d);
            o.s = f16::from_f32(sum as f32 * d);
            // SAFETY: as above.
            unsafe { store32(q, &mut o.qs) };
        }
    }
}

/// One Q8_K block: the reference's signed maximum (the first value of largest magnitude),
/// `iscale = -127 / max`, round-to-nearest-even quants and sums of 16.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8k_block(x: &[f32; 256], o: &mut crate::formats::BlockQ8K) {
    // SAFETY: AVX2 is enabled on this function; `x` is 256 readable floats and `o.qs` 256
    // writable bytes.
    unsafe {
        let v: [__m256; 32] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
        let amax = abs_max(&v);
        *o = bytemuck::Zeroable::zeroed();
        if amax == 0.0 {
            return;
        }
        let sign = _mm256_set1_ps(-0.0);
        let am = _mm256_set1_ps(amax);
        let mut max = amax;
        for (c, &v) in v.iter().enumerate() {
            let hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), am, _CMP_EQ_OQ));
            if hit != 0 {
                max = x[8 * c + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let is = _mm256_set1_ps(iscale);
        for (c, v) in v.as_chunks::<4>().0.iter().enumerate() {
            // The packs saturate, as the reference's clamp to -128..=127 does.
            let q = v.map(|v| nearest_int(_mm256_mul_ps(is, v)));
            _mm256_storeu_si256(o.qs.as_mut_ptr().add(32 * c).cast(), pack_i8(q));
        }
        for (s, g) in o.bsums.iter_mut().zip(o.qs.as_chunks::<16>().0) {
            let w = _mm256_cvtepi8_epi16(_mm_loadu_si128(g.as_ptr().cast()));
            let p = _mm256_madd_epi16(w, _mm256_set1_epi16(1));
            *s = Avx2(()).hsum(p) as i16;
        }
        o.d = 1.0 / iscale;
    }
}

impl super::Q8Act for crate::formats::BlockQ8K {
    fn quantize_avx2(_: Avx2, x: &[f32], out: &mut [Self]) {
        for (x, o) in x.as_chunks::<256>().0.iter().zip(out) {
            // SAFETY: the token proves AVX2, FMA and F16C.
            unsafe { q8k_block(x, o) };
        }
    }
}
