//! The float steps of the forward pass outside the matrix products, in the order and with the
//! approximations llama.cpp's CPU backend uses in a build for the same target: its vector
//! `exp` (a polynomial, not the C library's), SiLU built on it, softmax sums taken per vector
//! and accumulated in f64, and RMSNorm's f64 sum of squares.
//!
//! Matching these bit for bit matters more than it seems. Before every matrix product both
//! engines round activations to 8 bits, and one ulp of difference upstream occasionally moves
//! a value across a rounding boundary; over 30 layers and a growing KV cache such flips spread
//! to every logit. With the same steps, the native engine's logits equal llama.cpp's exactly
//! (checked in `tests/tests/native.rs` on the default model).
//!
//! llama.cpp picks its vector code when it is compiled, from the target's features, and so do
//! these functions (`cfg!(target_feature)`): the AVX-512 `exp` (its final step a `vscalefps`),
//! the AVX2/NEON one (the same polynomial, scaled through the exponent bits), or the C
//! library's `expf` elsewhere. Within one build every CPU path gives the same bits.

/// How many values llama.cpp's vector loops take at a time in this build (the tail goes
/// through the C library), and which `exp` they use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// AVX-512 F and DQ: 16 lanes, `exp` finished with `scalef`.
    Avx512,
    /// AVX2 and FMA: 8 lanes.
    Avx2,
    /// AArch64 NEON: 4 lanes, the AVX2 `exp`.
    Neon,
    /// Anything else: the C library's `expf`, one value at a time.
    Libm,
}

const FLAVOR: Flavor = if cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx512f",
    target_feature = "avx512dq"
)) {
    Flavor::Avx512
} else if cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
)) {
    Flavor::Avx2
} else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
    Flavor::Neon
} else {
    Flavor::Libm
};

/// Values per vector in llama.cpp's loops for this build.
const WIDTH: usize = match FLAVOR {
    Flavor::Avx512 => 16,
    Flavor::Avx2 => 8,
    Flavor::Neon => 4,
    Flavor::Libm => 1,
};

// The polynomial of ggml's vector `exp` (ARM's optimized-routines `expf`): e^x = 2^n · e^b
// with n = round(x·log2 e) and b = x − n·ln 2 (ln 2 split in two), e^b ≈ 1 + c0·b + ... + c4·b^5.
const SHIFT: f32 = 12_582_912.0; // 0x1.8p23
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
const C0: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
const C1: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
const C2: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
const C3: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
const C4: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7

/// `e^x` as llama.cpp's vector code computes it in this build (the C library's `expf` where
/// it has none).
#[inline]
pub fn exp(x: f32) -> f32 {
    match FLAVOR {
        Flavor::Avx512 => exp_scalef(x),
        Flavor::Avx2 | Flavor::Neon => exp_bits(x),
        Flavor::Libm => x.exp(),
    }
}

/// The reduction `(z, n, b)` shared by both variants.
#[inline(always)]
fn reduce(x: f32) -> (f32, f32, f32) {
    let z = x.mul_add(LOG2E, SHIFT);
    let n = z - SHIFT;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    (z, n, b)
}

/// The AVX-512 variant: `j = e^b` in full, then `j · 2^n` in one rounding (`vscalefps`);
/// beyond |n| > 192, 0 or infinity.
#[inline(always)]
fn exp_scalef(x: f32) -> f32 {
    let (_, n, b) = reduce(x);
    let u = b * b;
    let j = C4
        .mul_add(b, C3)
        .mul_add(u, C2.mul_add(b, C1))
        .mul_add(u, C0.mul_add(b, 1.0));
    // Within |n| ≤ 192, n is an integer: `j · 2^n` is exact in f64, so one rounding to f32
    // (subnormals included) is what `vscalefps` gives. Written without branches, so that
    // loops over it vectorize; NaN passes through the scaling, as in the vector code.
    // The biased exponent n + 1023 read out of the mantissa (a float-to-int conversion that
    // vectorizes, unlike `as`).
    let magic = n.clamp(-192.0, 192.0) + 1023.0 + SHIFT;
    let biased = magic.to_bits().wrapping_sub(SHIFT.to_bits()) as u64;
    let scaled = (j as f64 * f64::from_bits(biased << 52)) as f32;
    let beyond = if n <= 0.0 { 0.0 } else { f32::INFINITY };
    if n.abs() > 192.0 {
        beyond
    } else {
        scaled
    }
}

/// The AVX2/NEON variant: `e^b − 1` as `j`, then `k + k·j` with `k = 2^n` built in the
/// exponent bits, and two-step scaling where `2^n` does not fit (|n| > 126).
///
/// Every case is computed and one is picked, as the vector code does with its masks: no
/// branch, so that loops over it (softmax, SwiGLU) vectorize.
#[inline(always)]
fn exp_bits(x: f32) -> f32 {
    let (z, n, b) = reduce(x);
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = C4
        .mul_add(b, C3)
        .mul_add(u, C2.mul_add(b, C1))
        .mul_add(u, C0 * b);
    let near = k.mul_add(j, k);
    let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    let far = if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    };
    // NaN fails this test and takes `far` (ggml's `|n| > 126` mask takes `near`): either
    // way the result is `j`'s NaN (`k` and `s2` are never NaN).
    if n.abs() <= 126.0 {
        near
    } else {
        far
    }
}

/// SiLU as llama.cpp's vector code computes it: `x / (1 + e^(−x))`.
#[inline(always)]
fn silu_vec(x: f32) -> f32 {
    x / (1.0 + exp(0.0 - x))
}

/// SiLU with the C library's `expf` (llama.cpp's scalar tail).
#[inline(always)]
fn silu_libm(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU in place: `gate_i ← silu(gate_i) · up_i` for one row, as llama.cpp's `swiglu`
/// computes it (whole vectors through the vector `exp`, the tail through the C library's).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let vec = gate.len() / WIDTH * WIDTH;
    let (head, tail) = gate.split_at_mut(vec);
    for (a, &b) in head.iter_mut().zip(up) {
        *a = silu_vec(*a) * b;
    }
    for (a, &b) in tail.iter_mut().zip(&up[vec..]) {
        *a = silu_libm(*a) * b;
    }
}

/// GELU's tanh approximation as ggml evaluates it, `0.5·x·(1 + tanh(√(2/π)·x·(1 + a·x²)))`
/// with `a = 0.044715`, the C library's `tanh`, and `1 + a·x·x` fused as the build contracts
/// it.
fn gelu_tanh(x: f32) -> f32 {
    const COEF_A: f32 = 0.044715;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = (COEF_A * x).mul_add(x, 1.0);
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh())
}

/// ggml's GELU table: for every f16 bit pattern, GELU of its value rounded to f16.
fn gelu_table() -> &'static [half::f16] {
    static TABLE: std::sync::OnceLock<Vec<half::f16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| half::f16::from_f32(gelu_tanh(half::f16::from_bits(bits).to_f32())))
            .collect()
    })
}

/// GeGLU in place: `gate_i ← gelu(gate_i) · up_i` for one row, as ggml's CPU backend computes
/// it: GELU looked up in a table of f16 values at the gate rounded to f16, 0 at or below −10
/// and the identity at or above 10.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    for (a, &b) in gate.iter_mut().zip(up) {
        let x = *a;
        *a = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * b
        } else {
            table[half::f16::from_f32(x).to_bits() as usize].to_f32() * b
        };
    }
}

/// Each value rounded to f16 and back, in place: what the f16 KV cache holds, and the f16
/// operands llama.cpp's attention products take.
pub fn round_to_f16(x: &mut [f32]) {
    for x in x.iter_mut() {
        *x = half::f16::from_f32(*x).to_f32();
    }
}

/// Soft-capping of logits in place: `c · tanh(x / c)`, as ggml's scale, tanh, scale.
pub fn softcap(logits: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for x in logits {
        *x = (*x * inv).tanh() * cap;
    }
}

/// The sum of one vector of values as llama.cpp's softmax adds it: a tree over the lanes,
/// lane `l` plus lane `l + W/2` first.
#[inline(always)]
fn vector_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    lanes[..v.len()].copy_from_slice(v);
    let mut step = WIDTH / 2;
    if FLAVOR == Flavor::Neon {
        // `vaddvq_f32`: pairwise, (l0 + l1) + (l2 + l3).
        return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    }
    while step > 0 {
        for l in 0..step {
            lanes[l] += lanes[l + step];
        }
        step /= 2;
    }
    lanes[0]
}

/// The largest value, NaNs ignored (−∞ for none): a maximum, the same in any order, taken
/// in 16 lanes.
fn max_of(x: &[f32]) -> f32 {
    let (chunks, tail) = x.as_chunks::<16>();
    let mut lanes = [f32::NEG_INFINITY; 16];
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    lanes
        .into_iter()
        .chain(tail.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Softmax of one row of attention scores in place, as llama.cpp's `soft_max` computes it for
/// a KV cache padded to whole vectors with masked cells: `e^(s − max)` per value, the sum
/// taken per vector (the masked tail of the last one adding zeros) and accumulated in f64,
/// then every value times `(f32)(1/sum)`. A row without a finite maximum (every score
/// masked, or NaN) becomes NaN, for the caller's checks of the logits to report.
pub fn softmax(scores: &mut [f32]) {
    let max = max_of(scores);
    if !max.is_finite() {
        scores.fill(f32::NAN);
        return;
    }
    // The exponentials in one plain loop (which the compiler vectorizes whole), then the
    // sums vector by vector.
    for x in scores.iter_mut() {
        *x = exp(*x - max);
    }
    let mut sum = 0f64;
    let (full, tail) = scores.as_chunks::<WIDTH>();
    for chunk in full {
        sum += vector_sum(chunk) as f64;
    }
    if !tail.is_empty() {
        sum += vector_sum(tail) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for x in scores.iter_mut() {
        *x *= inv;
    }
}

/// RMSNorm of one row times the norm's weights, as llama.cpp computes it: the squares (each
/// rounded to f32) summed in f64, the mean rounded to f32, `scale = 1/√(mean + eps)`, then
/// `(x · scale) · w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// RMSNorm's `1/√(mean(x²) + eps)` in llama.cpp's steps.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// [`rms_norm`] of a row into itself.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_polynomial_s() {
        assert!((LOG2E as f64 - std::f64::consts::LOG2_E).abs() < 1e-7);
        assert!((LN2_HI as f64 + LN2_LO as f64 - std::f64::consts::LN_2).abs() < 1e-12);
        // e^b − 1 ≈ b + b²/2 + b³/6 + ...: the coefficients are close to Taylor's.
        for (c, t) in [
            (C0, 1.0),
            (C1, 0.5),
            (C2, 1.0 / 6.0),
            (C3, 1.0 / 24.0),
            (C4, 1.0 / 120.0),
        ] {
            assert!((c as f64 - t).abs() < 0.02 * t, "{c} against {t}");
        }
    }

    #[test]
    fn exp_is_close_to_the_c_library_s() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.043;
            for f in [exp_scalef, exp_bits] {
                let (a, b) = (f(x), x.exp());
                assert!(
                    ((a - b) / b).abs() < 4e-7,
                    "e^{x}: {a} against the C library's {b}"
                );
            }
        }
        for f in [exp_scalef, exp_bits] {
            assert_eq!(f(0.0), 1.0);
            assert_eq!(f(-200.0), 0.0);
            assert_eq!(f(200.0), f32::INFINITY);
            assert_eq!(f(f32::NEG_INFINITY), 0.0);
            assert!(f(f32::NAN).is_nan());
            // Subnormal results: e^-100 ≈ 3.7e-44.
            let tiny = f(-100.0);
            assert!(tiny > 0.0 && tiny < f32::MIN_POSITIVE);
        }
    }

    #[test]
    fn softmax_sums_to_one_and_handles_masked_rows() {
        let mut s: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        softmax(&mut s);
        let total: f32 = s.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        let mut masked = [f32::NEG_INFINITY; 3];
        softmax(&mut masked);
        assert!(masked.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn swiglu_and_rms_norm_follow_their_formulas() {
        let mut g: Vec<f32> = (0..21).map(|i| i as f32 * 0.5 - 5.0).collect();
        let u: Vec<f32> = (0..21).map(|i| 1.0 + i as f32 * 0.1).collect();
        let want: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b)
            .collect();
        swiglu(&mut g, &u);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
        }
        let x = [3.0f32, -4.0];
        let mut out = [0.0; 2];
        rms_norm(&x, &[1.0, 2.0], 0.0, &mut out);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] + 8.0 / r).abs() < 1e-6);
    }
}
