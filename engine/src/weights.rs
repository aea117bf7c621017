//! The f64 arithmetic behind log-probabilities and draws over a whole vocabulary row: `e^x`,
//! the row's maximum, and the sum of the weights `e^(x − max)` in one fixed order, written so
//! that the compiler vectorizes them and every build computes the same bits.
//!
//! - [`exp`] is branch-free: `e^x = 2^n · e^r` with `n = round(x·log2 e)` and `r = x − n·ln 2`
//!   (ln 2 in two parts, each step one fused multiply-add), `e^r` by its Taylor series to
//!   `r^13` in Horner form (|r| ≤ ln 2 / 2, where the first term left out is below 4e-18), then
//!   `2^n` applied in two exact steps so that overflow gives infinity and underflow rounds
//!   once into the subnormals. It stays within one unit in the last place of the correctly
//!   rounded value (checked against the C library in the tests). Only IEEE operations with a
//!   single rounding each (`mul_add` is a fused multiply-add), so a loop over it gives the same
//!   bits in SIMD lanes as one value at a time, on any CPU.
//! - A row's weights are summed in blocks of [`BLOCK`] values, each block as a fixed tree
//!   (pairs, then pairs of pairs; a short last block padded with zeros), and the block sums one
//!   after another ([`sum_weights`]). A draw walks the same block sums to find the block where
//!   the target falls, then that block's values one by one ([`pick`]).
//!
//! The C library's `exp` and a plain left-to-right sum gave results that differed from these
//! only in the last bits; they cost a sampling run at 256 sequences about a sixth of its wall
//! time on 2 cores, one scalar call per vocabulary entry.

/// Values summed as one tree before the block sums are chained.
pub const BLOCK: usize = 8;

const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52: adding it rounds to an integer
const LOG2E: f64 = std::f64::consts::LOG2_E;
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fefa_39ef); // ln 2 rounded to f64
const LN2_LO: f64 = f64::from_bits(0x3c7a_bc9e_3b39_803f); // ln 2 − LN2_HI

/// `1/k!` for k = 2..=13, highest first (Horner's order).
const INV_FACT: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    1.0 / 2.0,
];

/// `2^n` for an integer-valued `n` in `-1022.0..=1023.0`, built in the exponent bits.
#[inline(always)]
fn pow2(n: f64) -> f64 {
    // `n + 1023` lands in the low mantissa bits of `SHIFT + n + 1023` (an exact sum).
    let biased = (n + 1023.0 + SHIFT).to_bits().wrapping_sub(SHIFT.to_bits());
    f64::from_bits(biased << 52)
}

/// `e^x` within one unit in the last place; 0 for −∞, ∞ for ∞, NaN for NaN (see the module
/// docs for how).
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // Beyond ±1500 the result is 0 or ∞ either way; the clamp keeps ±∞ out of the reduction
    // (NaN passes through it).
    let x = x.clamp(-1500.0, 1500.0);
    let n = x.mul_add(LOG2E, SHIFT) - SHIFT;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = INV_FACT[0];
    for c in &INV_FACT[1..] {
        p = p.mul_add(r, *c);
    }
    let p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    // 2^n in two steps: the first keeps p · 2^a normal (exact), the second rounds once.
    let a = n.clamp(-1022.0, 1023.0);
    let b = (n - a).clamp(-1022.0, 1023.0);
    p * pow2(a) * pow2(b)
}

/// The largest value of a row, or the index of its first NaN. `−∞` for an empty row.
pub fn max_or_nan(row: &[f32]) -> Result<f32, usize> {
    // Sixteen running maxima and a NaN flag per lane: a loop the compiler vectorizes. The
    // maximum of a set does not depend on the order it is taken in.
    const LANES: usize = 16;
    let (chunks, tail) = row.as_chunks::<LANES>();
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    for c in chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            nan |= v.is_nan();
            *m = if v > *m { v } else { *m };
        }
    }
    for &v in tail {
        nan |= v.is_nan();
        m[0] = if v > m[0] { v } else { m[0] };
    }
    if nan {
        return Err(row.iter().position(|v| v.is_nan()).expect("a NaN was seen"));
    }
    Ok(m.into_iter()
        .fold(f32::NEG_INFINITY, |a, v| if v > a { v } else { a }))
}

/// A block's sum: pairs, then pairs of pairs.
#[inline(always)]
fn tree(b: &[f64; BLOCK]) -> f64 {
    ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]))
}

/// The last, short block padded with zeros (adding zero changes no sum).
fn padded(tail: &[f64]) -> [f64; BLOCK] {
    let mut b = [0.0; BLOCK];
    b[..tail.len()].copy_from_slice(tail);
    b
}

/// Fills `w` with `e^((x − max) · scale)` for each `x` of `row` and returns their sum in the
/// module's order ([`sum_weights`]).
pub fn weights(row: &[f32], max: f64, scale: f64, w: &mut Vec<f64>) -> f64 {
    w.clear();
    w.resize(row.len(), 0.0);
    for (w, &x) in w.iter_mut().zip(row) {
        *w = exp((x as f64 - max) * scale);
    }
    sum_weights(w)
}

/// The sum of `w`: each block of [`BLOCK`] as a tree, the block sums left to right.
pub fn sum_weights(w: &[f64]) -> f64 {
    let (blocks, tail) = w.as_chunks::<BLOCK>();
    let mut z = blocks.iter().fold(0.0, |z, b| z + tree(b));
    if !tail.is_empty() {
        z += tree(&padded(tail));
    }
    z
}

/// `log Σ e^(x − max) + max` over `row` (whose largest value is `max`, finite), the terms and
/// order of [`weights`] at scale 1, without keeping them.
pub fn log_sum_exp(row: &[f32], max: f32) -> f64 {
    let m = max as f64;
    let (blocks, tail) = row.as_chunks::<BLOCK>();
    let block = |b: &[f32; BLOCK]| tree(&b.map(|x| exp(x as f64 - m)));
    let mut z = blocks.iter().fold(0.0, |z, b| z + block(b));
    if !tail.is_empty() {
        let mut b = [f32::NEG_INFINITY; BLOCK];
        b[..tail.len()].copy_from_slice(tail);
        z += block(&b);
    }
    m + z.ln()
}

/// The index the cumulative weights first pass `target` at, and its weight: the block sums of
/// [`sum_weights`] are added until they pass it, then that block's weights one by one; a
/// weight of 0 is never picked. `None` when the running sum never passes `target` (it was
/// rounded up to the total).
pub fn pick(w: &[f64], target: f64) -> Option<(usize, f64)> {
    let (blocks, tail) = w.as_chunks::<BLOCK>();
    let tail = (!tail.is_empty()).then(|| padded(tail));
    let mut acc = 0.0;
    for (k, b) in blocks.iter().chain(tail.as_ref()).enumerate() {
        let next = acc + tree(b);
        if target < next {
            // Within the block, left to right from the sum before it.
            let mut a = acc;
            for (j, &v) in b.iter().enumerate() {
                a += v;
                if target < a && v > 0.0 {
                    return Some((k * BLOCK + j, v));
                }
            }
        }
        acc = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between two finite, positive values.
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn exp_is_within_one_ulp_of_the_c_library() {
        // Dense over the range a draw uses (x ≤ 0), and over the rest of the finite range.
        let mut worst = (0u64, 0.0f64);
        let mut x = -745.0f64;
        let mut check = |x: f64| {
            let (got, want) = (exp(x), x.exp());
            let d = ulps(got, want);
            if d > worst.0 {
                worst = (d, x);
            }
        };
        while x < 709.7 {
            check(x);
            x += 0.000_731_3;
        }
        for i in 0..200_000u64 {
            // Small arguments, where |r| is tiny.
            check((i as f64 - 100_000.0) * 1e-9);
        }
        assert!(worst.0 <= 1, "{} ulps at x = {}", worst.0, worst.1);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e300), 0.0);
        assert_eq!(exp(-746.0), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        // The subnormals, rounded once.
        for x in [-708.5, -720.0, -740.0, -744.4] {
            let (got, want) = (exp(x), x.exp());
            assert!(got > 0.0 && got < f64::MIN_POSITIVE, "{x}");
            assert!(ulps(got, want) <= 1, "{x}: {got:e} against {want:e}");
        }
        assert!(exp(709.78) > 1e308 && exp(709.78).is_finite());
    }

    #[test]
    fn one_value_at_a_time_gives_the_vector_bits() {
        // The loop in `weights` is vectorized; the scalar call must give the same bits.
        let row: Vec<f32> = (0..1003u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 9) % 4000) as f32 / 61.0 - 40.0)
            .collect();
        let max = max_or_nan(&row).unwrap() as f64;
        let mut w = Vec::new();
        let z = weights(&row, max, 1.3, &mut w);
        for (x, w) in row.iter().zip(&w) {
            let one = std::hint::black_box(exp)((*x as f64 - max) * 1.3);
            assert_eq!(w.to_bits(), one.to_bits());
        }
        let by_hand: f64 = w
            .chunks(BLOCK)
            .map(|c| tree(&padded(c)))
            .fold(0.0, |z, t| z + t);
        assert_eq!(z.to_bits(), by_hand.to_bits());
    }

    #[test]
    fn log_sum_exp_has_the_weights_terms() {
        for n in [1usize, 7, 8, 9, 64, 49_157] {
            let row: Vec<f32> = (0..n as u32)
                .map(|i| ((i.wrapping_mul(40_503) >> 3) % 977) as f32 / 37.0 - 12.0)
                .collect();
            let max = max_or_nan(&row).unwrap();
            let mut w = Vec::new();
            let z = weights(&row, max as f64, 1.0, &mut w);
            assert_eq!(
                log_sum_exp(&row, max).to_bits(),
                (max as f64 + z.ln()).to_bits()
            );
            let plain = max as f64
                + row
                    .iter()
                    .map(|&x| (x as f64 - max as f64).exp())
                    .sum::<f64>()
                    .ln();
            assert!((log_sum_exp(&row, max) - plain).abs() < 1e-12, "{n}");
        }
    }

    #[test]
    fn max_finds_the_largest_and_the_first_nan() {
        let mut row: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        row[777] = 3.0;
        row.push(f32::NEG_INFINITY);
        assert_eq!(max_or_nan(&row), Ok(3.0));
        assert_eq!(
            max_or_nan(&row[..5]),
            Ok(row[..5].iter().copied().fold(f32::MIN, f32::max))
        );
        assert_eq!(max_or_nan(&[]), Ok(f32::NEG_INFINITY));
        row[500] = f32::NAN;
        row[900] = f32::NAN;
        assert_eq!(max_or_nan(&row), Err(500));
    }

    #[test]
    fn pick_inverts_the_cumulative_weights() {
        let w = [0.5, 0.0, 1.0, 0.25, 0.25, 0.0, 0.0, 1.0, 2.0, 0.0, 1.0];
        let z = sum_weights(&w);
        assert_eq!(z, 6.0);
        // Left to right, zero weights skipped.
        let cases = [
            (0.0, 0),
            (0.49, 0),
            (0.5, 2),
            (1.49, 2),
            (1.5, 3),
            (1.75, 4),
            (2.0, 7),
            (3.0, 8),
            (5.0, 10),
            (5.99, 10),
        ];
        for (t, want) in cases {
            assert_eq!(pick(&w, t).map(|p| p.0), Some(want), "target {t}");
        }
        assert_eq!(pick(&w, 6.0), None);
        assert_eq!(pick(&[0.0; 3], 0.0), None);
    }
}
