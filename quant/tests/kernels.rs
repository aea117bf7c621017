//! Every kernel against the reference, on every instruction set this machine has (and NEON
//! when the tests run under qemu for aarch64): integer block sums equal, results and
//! quantized activations bitwise equal, results close to the f64 dot product of the
//! dequantized values, and matrix products batch-invariant.

use bytemuck::Zeroable;
use quant::dispatch::Isa;
use quant::dot::{
    block_sums_with, quantize_activations_with, vec_dot_many_with, vec_dot_with, Activation,
    KernelError, VecDot,
};
use quant::formats::{
    bf16, dequantize_row, f16, quantize_row, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use quant::gemm::{matmul_many_with, matmul_with, QMatrix, Scratch};
use quant::GgmlType;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// The instruction sets to compare with the reference (all the machine has but scalar).
fn vector_isas() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    // Say which paths ran: a machine without any is still tested against itself.
    eprintln!("instruction sets under test: scalar + {isas:?}");
    isas
}

/// A finite f16 drawn from the whole range: zeros, subnormals, tiny and huge normals.
fn finite_f16(rng: &mut StdRng) -> f16 {
    loop {
        let h = f16::from_bits(rng.random());
        if h.is_finite() {
            return h;
        }
    }
}

/// Random blocks of any bytes, with every f16/f32 scale replaced by a finite one (non-finite
/// scales are rejected when a model loads).
fn random_blocks<B: Block>(
    rng: &mut StdRng,
    n: usize,
    fix: impl Fn(&mut B, &mut StdRng),
) -> Vec<B> {
    let mut v = vec![B::zeroed(); n];
    rng.fill_bytes(bytemuck::cast_slice_mut(&mut v));
    for b in &mut v {
        fix(b, rng);
    }
    v
}

/// Activation blocks with any quants the quantizers can make (-127..=127; -128 never occurs)
/// and consistent sums.
trait RandomAct: Activation {
    fn random(rng: &mut StdRng, n: usize) -> Vec<Self>;
}

fn no_min(qs: &mut [i8]) {
    for q in qs {
        *q = (*q).max(-127);
    }
}

impl RandomAct for BlockQ8_0 {
    fn random(rng: &mut StdRng, n: usize) -> Vec<Self> {
        random_blocks(rng, n, |b: &mut Self, r| {
            b.d = finite_f16(r);
            no_min(&mut b.qs);
        })
    }
}

impl RandomAct for BlockQ8_1 {
    fn random(rng: &mut StdRng, n: usize) -> Vec<Self> {
        random_blocks(rng, n, |b: &mut Self, r| {
            b.d = finite_f16(r);
            b.s = finite_f16(r);
            no_min(&mut b.qs);
        })
    }
}

impl RandomAct for BlockQ8K {
    fn random(rng: &mut StdRng, n: usize) -> Vec<Self> {
        random_blocks(rng, n, |b: &mut Self, r| {
            b.d = r.random_range(-1e3f32..1e3) * 10f32.powi(r.random_range(-30..15));
            no_min(&mut b.qs);
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
        })
    }
}

impl RandomAct for f32 {
    fn random(rng: &mut StdRng, n: usize) -> Vec<Self> {
        (0..n).map(|_| wide_f32(rng)).collect()
    }
}

/// An f32 from ±0, subnormals and magnitudes up to 1e15 (products stay finite).
fn wide_f32(rng: &mut StdRng) -> f32 {
    match rng.random_range(0..8) {
        0 => 0.0,
        1 => -0.0,
        2 => {
            f32::from_bits(rng.random_range(1..0x0080_0000)) * if rng.random() { 1.0 } else { -1.0 }
        }
        _ => rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-20..15)),
    }
}

fn random_weights<W: Block>(rng: &mut StdRng, n: usize) -> Vec<W> {
    // Every f16 field of a weight block sits at an even offset; rewrite each one that is not
    // finite. Field positions differ per format, so the blocks are fixed through their bytes.
    let mut v: Vec<W> = random_blocks(rng, n, |_: &mut W, _| {});
    let f16_offsets: &[usize] = match W::TYPE {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        GgmlType::F16 => &[0],
        GgmlType::F32 | GgmlType::BF16 => &[],
        t => panic!("no weight layout for {t}"),
    };
    for b in &mut v {
        let bytes: &mut [u8] = bytemuck::bytes_of_mut(b);
        for &o in f16_offsets {
            bytes[o..o + 2].copy_from_slice(&finite_f16(rng).to_bits().to_le_bytes());
        }
        match W::TYPE {
            GgmlType::F32 => bytes.copy_from_slice(&wide_f32(rng).to_le_bytes()),
            GgmlType::BF16 => {
                bytes.copy_from_slice(&bf16::from_f32(wide_f32(rng)).to_bits().to_le_bytes())
            }
            _ => {}
        }
    }
    v
}

fn dequantized<B: Block>(b: &[B]) -> Vec<f32> {
    let mut out = vec![0.0; b.len() * B::SIZE];
    dequantize_row(b, &mut out).unwrap();
    out
}

/// Block counts that cover empty rows, single blocks, odd counts and tails of float rows.
const LENGTHS: [usize; 7] = [0, 1, 2, 3, 7, 17, 40];

fn check_format<W: VecDot>(seed: u64)
where
    W::Act: RandomAct,
{
    let mut rng = StdRng::seed_from_u64(seed);
    let isas = vector_isas();
    for &n in &LENGTHS {
        // Weight blocks, activation blocks covering the same values.
        let n_act = n * W::SIZE / W::Act::SIZE;
        let w: Vec<W> = random_weights(&mut rng, n + 1);
        let a = W::Act::random(&mut rng, n_act + 3);
        // Misaligned views: start one block (or a few floats) in.
        let (w, a) = (&w[1..], &a[3..]);
        let reference = vec_dot_with(Isa::Scalar, w, a).unwrap();
        let ref_parts = block_sums_with(Isa::Scalar, w, a).unwrap();
        for &isa in &isas {
            let got = vec_dot_with(isa, w, a).unwrap();
            assert_eq!(
                got.to_bits(),
                reference.to_bits(),
                "{} on {isa}, {n} blocks: {got} vs reference {reference}",
                W::TYPE
            );
            assert_eq!(
                block_sums_with(isa, w, a).unwrap(),
                ref_parts,
                "{} on {isa}: integer block sums",
                W::TYPE
            );
        }
        // The reference is what the dequantized values give, up to f32 rounding.
        // (Q4_1/Q5_1 use the activation's stored f16 sum, which the dequantized values do not
        // show; the next test covers them.)
        let (x, y) = (dequantized(w), dequantized(a));
        let exact: f64 = x.iter().zip(&y).map(|(&p, &q)| p as f64 * q as f64).sum();
        let mag: f64 = x
            .iter()
            .zip(&y)
            .map(|(&p, &q)| (p as f64 * q as f64).abs())
            .sum();
        if W::TYPE != GgmlType::Q4_1 && W::TYPE != GgmlType::Q5_1 && mag < 1e36 {
            let k = x.len().max(1) as f64;
            assert!(
                (reference as f64 - exact).abs() <= 1e-6 * k * mag + 1e-30,
                "{} {n} blocks: {reference} vs f64 {exact} (magnitude {mag})",
                W::TYPE
            );
        }
    }
}

#[test]
fn every_format_on_every_isa_matches_the_reference() {
    check_format::<BlockQ4_0>(1);
    check_format::<BlockQ4_1>(2);
    check_format::<BlockQ5_0>(3);
    check_format::<BlockQ5_1>(4);
    check_format::<BlockQ8_0>(5);
    check_format::<BlockQ2K>(6);
    check_format::<BlockQ3K>(7);
    check_format::<BlockQ4K>(8);
    check_format::<BlockQ5K>(9);
    check_format::<BlockQ6K>(10);
    check_format::<f32>(11);
    check_format::<f16>(12);
    check_format::<bf16>(13);
}

/// Values shaped like real blocks: smooth, spiky, all equal, all zero, tiny and huge.
fn shaped_values(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    for c in 0..n / 32 {
        for i in 0..32 {
            let u: f32 = rng.random_range(-1.0..1.0);
            x.push(match c % 7 {
                0 => u,
                1 => u * 1e-30,
                2 => u * 1e20,
                3 => 0.75,
                4 => 0.0,
                5 => {
                    if i == 5 {
                        100.0
                    } else {
                        u * 1e-3
                    }
                }
                _ => f32::from_bits(rng.random_range(1..0x0080_0000)),
            });
        }
    }
    x
}

fn check_quantized_roundtrip<W: VecDot>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let k = 8 * 256;
    let wx: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let ax: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut w = vec![W::zeroed(); k / W::SIZE];
    quantize_row(&wx, &mut w).unwrap();
    let mut a = vec![W::Act::zeroed(); k / W::Act::SIZE];
    quantize_activations_with(Isa::Scalar, &ax, &mut a).unwrap();
    // Against the dequantized weights and the float activations: what is left is the
    // activations' 8-bit rounding (step 1/127 here), a few tenths at most; a misplaced quant
    // or scale would be off by several units.
    let exact: f64 = dequantized(&w)
        .iter()
        .zip(&ax)
        .map(|(&p, &q)| p as f64 * q as f64)
        .sum();
    let got = vec_dot_with(Isa::Scalar, &w, &a).unwrap() as f64;
    let tol = 0.02 * (k as f64).sqrt();
    assert!((got - exact).abs() < tol, "{}: {got} vs {exact}", W::TYPE);
}

#[test]
fn quantized_dot_products_approximate_the_float_ones() {
    check_quantized_roundtrip::<BlockQ4_0>(21);
    check_quantized_roundtrip::<BlockQ4_1>(22);
    check_quantized_roundtrip::<BlockQ5_0>(23);
    check_quantized_roundtrip::<BlockQ5_1>(24);
    check_quantized_roundtrip::<BlockQ8_0>(25);
    check_quantized_roundtrip::<BlockQ2K>(26);
    check_quantized_roundtrip::<BlockQ3K>(27);
    check_quantized_roundtrip::<BlockQ4K>(28);
    check_quantized_roundtrip::<BlockQ5K>(29);
    check_quantized_roundtrip::<BlockQ6K>(30);
}

fn check_activation_quantizer<A: Activation>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let isas = vector_isas();
    for blocks in [1, 2, 9] {
        let mut x = shaped_values(&mut rng, blocks * 256 + 32);
        // A tie in magnitude: the first of ±max decides Q8_K's sign.
        x[43] = -3.0;
        x[44] = 3.0;
        // Misaligned: start three floats in.
        let x = &x[3..3 + blocks * 256];
        let n = x.len() / A::SIZE;
        // Q8_K activations are the reference quantizer's; Q8_0/Q8_1 ones are llama.cpp's
        // activation quantizer for this target, which the scalar path writes.
        let mut reference = vec![A::zeroed(); n];
        if A::TYPE == quant::GgmlType::Q8K {
            quantize_row(x, &mut reference).unwrap();
        } else {
            quantize_activations_with(Isa::Scalar, x, &mut reference).unwrap();
        }
        for &isa in &isas {
            let mut got = vec![A::zeroed(); n];
            quantize_activations_with(isa, &x[..n * A::SIZE], &mut got).unwrap();
            assert_eq!(
                bytemuck::cast_slice::<A, u8>(&got),
                bytemuck::cast_slice::<A, u8>(&reference),
                "{} quantized on {isa}",
                A::TYPE
            );
        }
    }
    // Lengths are checked on every path.
    for isa in Isa::available() {
        let mut out = vec![A::zeroed(); 1];
        assert!(quantize_activations_with(isa, &vec![0.0; A::SIZE + 1], &mut out).is_err());
        assert!(quantize_activations_with(isa, &vec![0.0; 2 * A::SIZE], &mut out).is_err());
    }
}

#[test]
fn activation_quantizers_write_the_same_bytes_on_every_path() {
    check_activation_quantizer::<BlockQ8_0>(31);
    check_activation_quantizer::<BlockQ8_1>(32);
    check_activation_quantizer::<BlockQ8K>(33);
}

/// Q8_0/Q8_1 activations round as llama.cpp's `from_float` does on this target: on x86-64 and
/// AArch64 halves go to even (the weights' reference quantizer rounds them away from zero).
#[test]
fn activation_quantizers_round_halves_as_llama_cpp() {
    // amax = 127 makes d = 1 and the multiplier exactly 1 on every target.
    let mut x = [0f32; 32];
    x[0] = 127.0;
    x[1..6].copy_from_slice(&[2.5, -2.5, 3.5, 0.5, -0.5]);
    let even = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
    let want: [i8; 5] = if even {
        [2, -2, 4, 0, 0]
    } else {
        [3, -3, 4, 1, -1]
    };
    for isa in Isa::available() {
        let mut a = [BlockQ8_1::zeroed(); 1];
        quantize_activations_with(isa, &x, &mut a).unwrap();
        assert_eq!(
            a[0].qs[..6],
            [127, want[0], want[1], want[2], want[3], want[4]],
            "{isa}"
        );
        let sum: i32 = a[0].qs.iter().map(|&q| q as i32).sum();
        assert_eq!(a[0].s.to_f32(), sum as f32, "{isa}");
        let mut b = [BlockQ8_0::zeroed(); 1];
        quantize_activations_with(isa, &x, &mut b).unwrap();
        assert_eq!(b[0].qs, a[0].qs, "{isa}");
    }
    // The weights' reference quantizer keeps rounding halves away from zero.
    let mut r = [BlockQ8_0::zeroed(); 1];
    quantize_row(&x, &mut r).unwrap();
    assert_eq!(r[0].qs[..6], [127, 3, -3, 4, 1, -1]);
}

#[test]
fn length_mismatches_are_errors() {
    let w = vec![BlockQ4_0::zeroed(); 2];
    let a = vec![BlockQ8_0::zeroed(); 3];
    for isa in Isa::available() {
        let e = vec_dot_with(isa, &w, &a).unwrap_err();
        assert!(
            matches!(
                e,
                KernelError::Mismatch {
                    weights: 64,
                    activations: 96,
                    ..
                }
            ),
            "{e}"
        );
        let mut out = [0.0; 1];
        assert!(vec_dot_many_with(isa, &w, &[&a[..2], &a[..2]], &mut out).is_err());
        assert!(vec_dot_many_with(isa, &w, &[&a[..2], &a[..1]], &mut [0.0; 2]).is_err());
    }
    let bytes = vec![0u8; 18 * 4];
    assert!(QMatrix::new(GgmlType::Q4_0, 2, 64, &bytes).is_ok());
    assert!(QMatrix::new(GgmlType::Q4_0, 3, 64, &bytes).is_err());
    assert!(QMatrix::new(GgmlType::Q4_0, 4, 16, &bytes).is_err());
    let m = QMatrix::new(GgmlType::Q4_0, 2, 64, &bytes).unwrap();
    let mut s = Scratch::default();
    assert!(matmul_with(Isa::Scalar, &m, &[0.0; 65], &mut [0.0; 2], &mut s).is_err());
    assert!(matmul_with(Isa::Scalar, &m, &[0.0; 128], &mut [0.0; 2], &mut s).is_err());
    let q8k = QMatrix::new(GgmlType::Q8K, 1, 256, &[0u8; 292]).unwrap();
    assert!(matmul_with(Isa::Scalar, &q8k, &[0.0; 256], &mut [0.0; 1], &mut s).is_err());
}

fn on_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

/// Outputs of `rows` for activation rows `x` (batch × cols) computed in batches of `size`.
fn batched(isa: Isa, m: &QMatrix<'_>, x: &[f32], size: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len() / m.cols() * m.rows()];
    let mut s = Scratch::default();
    for (xb, ob) in x
        .chunks(size * m.cols())
        .zip(out.chunks_mut(size * m.rows()))
    {
        matmul_with(isa, m, xb, ob, &mut s).unwrap();
    }
    out
}

#[test]
fn matrix_products_are_batch_and_thread_invariant() {
    let mut rng = StdRng::seed_from_u64(41);
    let types = quant::gemm::WEIGHT_TYPES;
    let (rows, cols, batch) = (37, 512, 257);
    let x: Vec<f32> = (0..batch * cols)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    for ty in types {
        let wx: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let bytes = quant::formats::quantize_to_vec(ty, &wx).unwrap();
        let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        let alone = on_threads(1, || batched(Isa::Scalar, &m, &x, 1));
        for isa in Isa::available() {
            for threads in [1, 2] {
                for size in [1, 3, 64, 257] {
                    let got = on_threads(threads, || batched(isa, &m, &x, size));
                    let same = got
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{ty} on {isa}, {threads} threads, batches of {size}");
                }
            }
        }
        // And each output is the row's dot product.
        let deq = quant::formats::dequantize_to_vec(ty, &bytes).unwrap();
        for (b, r) in [(0, 0), (100, 36), (256, 17)] {
            let exact: f32 = deq[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x[b * cols..(b + 1) * cols])
                .map(|(p, q)| p * q)
                .sum();
            let got = alone[b * rows + r];
            assert!(
                (got - exact).abs() < 0.05 * (cols as f32).sqrt(),
                "{ty}: {got} vs {exact}"
            );
        }
    }
}

/// Several matrices of one type and width in one step: each output is bitwise the matrix's
/// own product, on every instruction set, batch size and thread count; mixed types or widths
/// and outputs of the wrong number or size are errors.
#[test]
fn several_matrices_in_one_step_equal_one_by_one() {
    let mut rng = StdRng::seed_from_u64(71);
    let cols = 256;
    for ty in quant::gemm::WEIGHT_TYPES {
        let bytes: Vec<Vec<u8>> = [37, 12, 5]
            .iter()
            .map(|&rows| {
                let w: Vec<f32> = (0..rows * cols)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                quant::formats::quantize_to_vec(ty, &w).unwrap()
            })
            .collect();
        let ms: Vec<QMatrix<'_>> = bytes
            .iter()
            .zip([37, 12, 5])
            .map(|(b, rows)| QMatrix::new(ty, rows, cols, b).unwrap())
            .collect();
        for batch in [1, 2, 9] {
            let x: Vec<f32> = (0..batch * cols)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            for isa in Isa::available() {
                let mut s = Scratch::default();
                let alone: Vec<Vec<f32>> = ms
                    .iter()
                    .map(|m| {
                        let mut out = vec![0.0; batch * m.rows()];
                        matmul_with(isa, m, &x, &mut out, &mut s).unwrap();
                        out
                    })
                    .collect();
                for threads in [1, 2] {
                    let mut got: Vec<Vec<f32>> = ms
                        .iter()
                        .map(|m| vec![f32::NAN; batch * m.rows()])
                        .collect();
                    on_threads(threads, || {
                        let mut outs: Vec<&mut [f32]> =
                            got.iter_mut().map(|o| o.as_mut_slice()).collect();
                        matmul_many_with(isa, &ms, &x, &mut outs, &mut s).unwrap();
                    });
                    for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
                        let same = g.iter().zip(a).all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(
                            same,
                            "{ty} on {isa}, batch {batch}, {threads} threads: matrix {i}"
                        );
                    }
                }
            }
        }
    }
    // Errors name the shape; nothing to do is not one.
    let mut s = Scratch::default();
    let q8 = quant::formats::quantize_to_vec(GgmlType::Q8_0, &[0.5; 64]).unwrap();
    let q4 = quant::formats::quantize_to_vec(GgmlType::Q4_0, &[0.5; 64]).unwrap();
    let a = QMatrix::new(GgmlType::Q8_0, 2, 32, &q8).unwrap();
    let wide = QMatrix::new(GgmlType::Q8_0, 1, 64, &q8).unwrap();
    let other = QMatrix::new(GgmlType::Q4_0, 2, 32, &q4).unwrap();
    let x = [0.25f32; 32];
    let (mut o1, mut o2) = ([0.0f32; 2], [0.0f32; 2]);
    for ms in [[a, wide], [a, other]] {
        let e = matmul_many_with(Isa::Scalar, &ms, &x, &mut [&mut o1, &mut o2], &mut s);
        assert!(e.unwrap_err().to_string().contains("one type and width"));
    }
    let e = matmul_many_with(Isa::Scalar, &[a, a], &x, &mut [&mut o1], &mut s);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("1 outputs for 2 matrices"));
    let e = matmul_many_with(
        Isa::Scalar,
        &[a, a],
        &x,
        &mut [&mut o1, &mut [0.0; 3]],
        &mut s,
    );
    assert!(e.unwrap_err().to_string().contains("output holds 3 values"));
    assert!(matmul_many_with(Isa::Scalar, &[], &x, &mut [], &mut s).is_ok());
}

/// Matrix products of weight blocks with any bytes (finite scales) against activation rows
/// spanning many magnitudes: every instruction set equals the reference bitwise, for shapes
/// that exercise the paired AVX-512 kernels' edges (one or an odd number of blocks per row, an
/// odd number of weight rows, tiles of 1 to 8 activation rows, a short tile after a full one
/// and a lone last row; for float weights, rows shorter than, equal to and between the
/// kernels' 16-value chunks).
fn check_matrix_edges<W: Block>(seed: u64, bprs: &[usize]) {
    let mut rng = StdRng::seed_from_u64(seed);
    for &bpr in bprs {
        for rows in [1, 2, 3, 5, 7, 13] {
            let w: Vec<W> = random_weights(&mut rng, rows * bpr);
            let m = QMatrix::new(W::TYPE, rows, bpr * W::SIZE, bytemuck::cast_slice(&w)).unwrap();
            for batch in [1, 2, 3, 7, 8, 9, 17] {
                let x: Vec<f32> = (0..batch * m.cols())
                    .map(|i| {
                        let scale = 10f32.powi((i / 32 % 9) as i32 - 4);
                        rng.random_range(-1.0f32..1.0) * scale
                    })
                    .collect();
                let mut reference = vec![0.0; batch * rows];
                let mut s = Scratch::default();
                matmul_with(Isa::Scalar, &m, &x, &mut reference, &mut s).unwrap();
                for isa in vector_isas() {
                    let mut got = vec![0.0; batch * rows];
                    matmul_with(isa, &m, &x, &mut got, &mut s).unwrap();
                    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            r.to_bits(),
                            "{} on {isa}: {rows} rows × {bpr} blocks, batch {batch}, output {i}: \
                             {g} vs reference {r}",
                            W::TYPE
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn matrix_products_of_any_blocks_match_the_reference() {
    let blocks = [1, 2, 3, 17];
    check_matrix_edges::<BlockQ4_0>(51, &blocks);
    check_matrix_edges::<BlockQ4_1>(52, &blocks);
    check_matrix_edges::<BlockQ5_0>(53, &blocks);
    check_matrix_edges::<BlockQ5_1>(54, &blocks);
    check_matrix_edges::<BlockQ8_0>(55, &blocks);
    check_matrix_edges::<BlockQ4K>(56, &blocks);
    check_matrix_edges::<BlockQ2K>(57, &blocks);
    check_matrix_edges::<BlockQ3K>(58, &blocks);
    check_matrix_edges::<BlockQ5K>(59, &blocks);
    check_matrix_edges::<BlockQ6K>(60, &blocks);
    let values = [1, 15, 16, 33, 100];
    check_matrix_edges::<f32>(61, &values);
    check_matrix_edges::<f16>(62, &values);
    check_matrix_edges::<bf16>(63, &values);
}

/// Attention's gathered products: each instruction set equals the reference bitwise, both
/// are close to f64 sums, and rows outside the matrix or outputs of the wrong size are errors.
#[test]
fn gathered_products_match_the_reference() {
    use quant::dot::{gathered_axpy_with, gathered_dots_with, Gather};
    let mut rng = StdRng::seed_from_u64(61);
    // Lengths of whole and partial 16-value chunks and tiles of four, groups of one, three
    // and four output vectors, row lists shorter than the 16 lanes and many times longer.
    let shapes = [1, 15, 16, 64, 70, 80, 256].into_iter().flat_map(|len| {
        [1, 3, 4]
            .into_iter()
            .flat_map(move |group| [5, 23, 300].map(move |picked| (len, group, picked)))
    });
    for (len, group, picked) in shapes {
        {
            let (stride, n_rows) = (len * 2 + 3, 40);
            let data: Vec<f32> = (0..stride * n_rows)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect();
            let rows: Vec<u32> = (0..picked)
                .map(|_| rng.random_range(0..n_rows as u32))
                .collect();
            let offset = len + 1;
            let m = Gather::new(&data, stride, offset, len, &rows).unwrap();
            let xs: Vec<f32> = (0..group * len)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // Some zero weights, which are skipped.
            let w: Vec<f32> = (0..group * rows.len())
                .map(|i| {
                    if i % 5 == 0 {
                        0.0
                    } else {
                        rng.random_range(0.0..1.0)
                    }
                })
                .collect();
            let mut dots = vec![0.0; group * rows.len()];
            gathered_dots_with(Isa::Scalar, &xs, &m, &mut dots).unwrap();
            let mut acc = vec![0.5; group * len];
            gathered_axpy_with(Isa::Scalar, &w, &m, &mut acc).unwrap();
            for g in 0..group {
                for (i, &r) in rows.iter().enumerate() {
                    let row = &data[r as usize * stride + offset..][..len];
                    let exact: f64 = row
                        .iter()
                        .zip(&xs[g * len..(g + 1) * len])
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    assert!((dots[g * rows.len() + i] as f64 - exact).abs() < 1e-4 * len as f64);
                }
                for j in 0..len {
                    let exact: f64 = 0.5
                        + rows
                            .iter()
                            .enumerate()
                            .map(|(i, &r)| {
                                w[g * rows.len() + i] as f64
                                    * data[r as usize * stride + offset + j] as f64
                            })
                            .sum::<f64>();
                    assert!((acc[g * len + j] as f64 - exact).abs() < 1e-4 * rows.len() as f64);
                }
            }
            for isa in vector_isas() {
                let mut got = vec![0.0; dots.len()];
                gathered_dots_with(isa, &xs, &m, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&dots)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "dots on {isa}, len {len}, group {group}, {picked} rows"
                );
                let mut got = vec![0.5; acc.len()];
                gathered_axpy_with(isa, &w, &m, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&acc)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "axpy on {isa}, len {len}, group {group}, {picked} rows"
                );
            }
            // The same values stored as f16 (a key/value cache): on every instruction set,
            // the bits of the reference over the values widened to f32.
            let halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
            let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
            let m32 = Gather::new(&widened, stride, offset, len, &rows).unwrap();
            let m16 = Gather::new_f16(&halves, stride, offset, len, &rows).unwrap();
            let mut want_dots = vec![0.0; dots.len()];
            gathered_dots_with(Isa::Scalar, &xs, &m32, &mut want_dots).unwrap();
            let mut want_acc = vec![0.5; acc.len()];
            gathered_axpy_with(Isa::Scalar, &w, &m32, &mut want_acc).unwrap();
            for isa in std::iter::once(Isa::Scalar).chain(vector_isas()) {
                let mut got = vec![0.0; dots.len()];
                gathered_dots_with(isa, &xs, &m16, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&want_dots)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "f16 dots on {isa}, len {len}, group {group}, {picked} rows"
                );
                let mut got = vec![0.5; acc.len()];
                gathered_axpy_with(isa, &w, &m16, &mut got).unwrap();
                assert!(
                    got.iter()
                        .zip(&want_acc)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "f16 axpy on {isa}, len {len}, group {group}, {picked} rows"
                );
            }
        }
    }
    // Shapes that do not fit are errors, not panics.
    let data = vec![0f32; 64];
    assert!(Gather::new(&data, 16, 0, 16, &[4]).is_err());
    assert!(Gather::new(&data, 16, 8, 16, &[0]).is_err());
    assert!(Gather::new(&data, 16, 0, 0, &[0]).is_err());
    assert!(Gather::new(&data, usize::MAX, 0, 16, &[u32::MAX]).is_err());
    let halves = vec![f16::ZERO; 64];
    assert!(Gather::new_f16(&halves, 16, 0, 16, &[4]).is_err());
    assert!(Gather::new_f16(&halves, 16, 8, 16, &[0]).is_err());
    let m = Gather::new(&data, 16, 0, 16, &[0, 3]).unwrap();
    assert!(gathered_dots_with(Isa::Scalar, &[0.0; 15], &m, &mut [0.0; 2]).is_err());
    assert!(gathered_dots_with(Isa::Scalar, &[0.0; 16], &m, &mut [0.0; 3]).is_err());
    assert!(gathered_axpy_with(Isa::Scalar, &[0.0; 3], &m, &mut [0.0; 16]).is_err());
    assert!(gathered_axpy_with(Isa::Scalar, &[0.0; 2], &m, &mut [0.0; 15]).is_err());
    let none = Gather::new(&data, 16, 0, 16, &[]).unwrap();
    gathered_dots_with(Isa::Scalar, &[0.0; 16], &none, &mut []).unwrap();
    gathered_axpy_with(Isa::Scalar, &[], &none, &mut [0.0; 16]).unwrap();
}

/// Attention's weighted sums in sequence order ([`quant::dot::sequential_axpy`]): on every
/// instruction set and for f32 and f16 rows, the bits of the definition (each element one
/// chain of fused multiply-adds in row order from its starting value), whatever the tile an
/// output vector falls in (alone or beside others), zero weights included rather than
/// skipped (a zero against an infinity gives NaN everywhere).
#[test]
fn sequential_axpy_is_its_definition_everywhere() {
    use quant::dot::{sequential_axpy_with, Gather};
    let mut rng = StdRng::seed_from_u64(67);
    let shapes = [1, 15, 16, 32, 48, 64, 70, 80, 256]
        .into_iter()
        .flat_map(|len| {
            [1, 2, 3, 4, 5, 7]
                .into_iter()
                .flat_map(move |group| [0, 1, 5, 23, 300].map(move |picked| (len, group, picked)))
        });
    for (len, group, picked) in shapes {
        let (stride, n_rows) = (len * 2 + 3, 40);
        let mut data: Vec<f32> = (0..stride * n_rows)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let offset = len + 1;
        if len == 70 && group == 3 {
            // An infinity in a row that a zero weight meets (below: weight i % 5 == 0).
            data[offset + 7] = f32::INFINITY;
        }
        let rows: Vec<u32> = (0..picked)
            .map(|i| match i {
                0 => 0,
                _ => rng.random_range(0..n_rows as u32),
            })
            .collect();
        let w: Vec<f32> = (0..group * picked)
            .map(|i| match i % 5 {
                0 => 0.0,
                _ => rng.random_range(0.0..1.0),
            })
            .collect();
        let start: Vec<f32> = (0..group * len)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
        let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        for (values, is_f16) in [(&data, false), (&widened, true)] {
            let mut want = start.clone();
            for g in 0..group {
                for (i, &r) in rows.iter().enumerate() {
                    let row = &values[r as usize * stride + offset..][..len];
                    for (e, &x) in row.iter().enumerate() {
                        let o = &mut want[g * len + e];
                        *o = w[g * picked + i].mul_add(x, *o);
                    }
                }
            }
            if len == 70 && group == 3 && picked > 0 {
                assert!(
                    want[7].is_nan(),
                    "zero times infinity is NaN in the definition"
                );
            }
            let m = match is_f16 {
                false => Gather::new(values, stride, offset, len, &rows).unwrap(),
                true => Gather::new_f16(&halves, stride, offset, len, &rows).unwrap(),
            };
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
            for isa in std::iter::once(Isa::Scalar).chain(vector_isas()) {
                let mut got = start.clone();
                sequential_axpy_with(isa, &w, &m, &mut got).unwrap();
                assert!(
                    same(&got, &want),
                    "{isa}, f16 {is_f16}, len {len}, group {group}, {picked} rows"
                );
                // Each output vector alone: the same bits as beside the others.
                for g in 0..group {
                    let mut one = start[g * len..(g + 1) * len].to_vec();
                    let wg = &w[g * picked..(g + 1) * picked];
                    sequential_axpy_with(isa, wg, &m, &mut one).unwrap();
                    assert!(
                        same(&one, &want[g * len..(g + 1) * len]),
                        "{isa}, vector {g} of {group} alone, len {len}, {picked} rows"
                    );
                }
            }
        }
    }
    let data = vec![0f32; 64];
    let m = Gather::new(&data, 16, 0, 16, &[0, 3]).unwrap();
    assert!(sequential_axpy_with(Isa::Scalar, &[0.0; 3], &m, &mut [0.0; 16]).is_err());
    assert!(sequential_axpy_with(Isa::Scalar, &[0.0; 2], &m, &mut [0.0; 15]).is_err());
}

/// The documented sequence of an exact product, one output at a time: value `i` fused into
/// lane `i mod 16` in order, then the lanes summed pairwise.
fn exact_reference(w: &[f32], x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for (i, (&a, &b)) in w.iter().zip(x).enumerate() {
        lanes[i % 16] = a.mul_add(b, lanes[i % 16]);
    }
    let mut step = 8;
    while step > 0 {
        for l in 0..step {
            lanes[l] += lanes[l + step];
        }
        step /= 2;
    }
    lanes[0]
}

/// Exact-activation products for every weight type: each output is the documented sequence
/// over the dequantized weights bit for bit (so the same on every target with FMA), whatever
/// the batch, thread count and number of matrices in the step, and close to the f64 sum.
#[test]
fn exact_products_follow_their_sequence_on_any_batch() {
    use quant::gemm::{matmul_exact, matmul_many_exact};
    let mut rng = StdRng::seed_from_u64(97);
    for ty in quant::gemm::WEIGHT_TYPES {
        // Float rows whose width is not a multiple of 16; four blocks of 256 otherwise.
        let cols = if ty.block_size() == 1 { 1000 } else { 1024 };
        for rows in [1, 5, 38] {
            let wx: Vec<f32> = (0..rows * cols)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let bytes = quant::formats::quantize_to_vec(ty, &wx).unwrap();
            let deq = quant::formats::dequantize_to_vec(ty, &bytes).unwrap();
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let batch = 9;
            let x: Vec<f32> = (0..batch * cols)
                .map(|i| rng.random_range(-2.0f32..2.0) * 10f32.powi((i / 64 % 5) as i32 - 2))
                .collect();
            let mut all = vec![0.0; batch * rows];
            on_threads(2, || {
                matmul_exact(&m, &x, &mut all, &mut Scratch::default())
            })
            .unwrap();
            for b in 0..batch {
                let xb = &x[b * cols..(b + 1) * cols];
                let mut alone = vec![0.0; rows];
                on_threads(1, || {
                    matmul_exact(&m, xb, &mut alone, &mut Scratch::default())
                })
                .unwrap();
                for r in 0..rows {
                    let wr = &deq[r * cols..(r + 1) * cols];
                    let want = exact_reference(wr, xb);
                    let (got, one) = (all[b * rows + r], alone[r]);
                    assert_eq!(got.to_bits(), want.to_bits(), "{ty} ({b}, {r})");
                    assert_eq!(one.to_bits(), want.to_bits(), "{ty} ({b}, {r}) alone");
                    let f64_sum: f64 = wr.iter().zip(xb).map(|(&p, &q)| p as f64 * q as f64).sum();
                    let mag: f64 = wr
                        .iter()
                        .zip(xb)
                        .map(|(&p, &q)| (p as f64 * q as f64).abs())
                        .sum();
                    assert!(((got as f64) - f64_sum).abs() <= 1e-5 * mag + 1e-30, "{ty}");
                }
            }
            // Two matrices in one step give each its own result.
            let mut a = vec![0.0; batch * rows];
            let mut b = vec![0.0; batch * rows];
            matmul_many_exact(&[m, m], &x, &mut [&mut a, &mut b], &mut Scratch::default()).unwrap();
            assert!(a.iter().zip(&all).all(|(p, q)| p.to_bits() == q.to_bits()));
            assert!(b.iter().zip(&all).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
    // Shapes are checked as for the quantized products.
    let m = QMatrix::new(GgmlType::Q8_0, 2, 32, &[0u8; 68]).unwrap();
    assert!(matmul_exact(&m, &[0.0; 31], &mut [0.0; 2], &mut Scratch::default()).is_err());
    assert!(matmul_exact(&m, &[0.0; 32], &mut [0.0; 3], &mut Scratch::default()).is_err());
}
