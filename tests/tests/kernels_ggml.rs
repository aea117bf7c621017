//! The quantized kernels against ggml's own CPU kernels (the ones llama.cpp runs), called
//! through the llama.cpp bindings: for every quantized weight format, the same weight bytes
//! and the same f32 activations go through `quant::gemm::matmul` and through ggml's
//! `from_float` and `vec_dot`. The activation bytes must be ggml's exactly. On x86 builds with
//! AVX2 and FMA (llama.cpp's build follows ours), every format's results must be ggml's bit
//! for bit, the K-quants' included (each follows its own x86 kernel's accumulation order);
//! elsewhere they may differ by the order of float additions. Random weights cover every format; the default
//! model's own Q4_1 and Q8_0 matrices follow. ggml's vector `swiglu` and `soft_max` (its
//! polynomial `exp`) are compared with `engine::numerics` bit for bit on those builds too.
#![cfg(feature = "llama-cpp")]

use llama_cpp_sys_2 as sys;
use quant::dot::quantize_activations;
use quant::formats::{quantize_to_vec, BlockQ8K, BlockQ8_0, BlockQ8_1};
use quant::gemm::{matmul, QMatrix, Scratch};
use quant::GgmlType;

/// The activation format ggml pairs with a weight format.
fn act_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        _ => GgmlType::Q8K,
    }
}

/// ggml's CPU type traits for `ty`.
fn traits(ty: GgmlType) -> &'static sys::ggml_type_traits_cpu {
    // SAFETY: ggml_cpu_init only fills ggml's lookup tables; it may be called repeatedly.
    unsafe { sys::ggml_cpu_init() };
    // SAFETY: the traits table has an entry for every ggml type id, and these ids are ggml's.
    unsafe { &*sys::ggml_get_type_traits_cpu(ty.info().id as sys::ggml_type) }
}

/// One activation row quantized by ggml's `from_float` (what llama.cpp's matrix products do).
fn ggml_activations(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let from_float = traits(ty).from_float.expect("ggml quantizes to this type");
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    // SAFETY: `x` holds whole blocks of `ty` and `out` their bytes.
    unsafe { from_float(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    out
}

/// One activation row quantized by the native activation quantizer, as bytes.
fn native_activations(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    fn run<A: quant::dot::Activation + bytemuck::Pod>(x: &[f32]) -> Vec<u8> {
        let mut out = vec![A::zeroed(); x.len() / A::SIZE];
        quantize_activations(x, &mut out).unwrap();
        bytemuck::cast_slice(&out).to_vec()
    }
    match ty {
        GgmlType::Q8_0 => run::<BlockQ8_0>(x),
        GgmlType::Q8_1 => run::<BlockQ8_1>(x),
        GgmlType::Q8K => run::<BlockQ8K>(x),
        _ => unreachable!("not an activation format: {ty:?}"),
    }
}

/// ggml's `vec_dot` of each weight row with each activation row, `out[b * rows + r]`, the
/// activations quantized by ggml; checks on the way that the native quantizer writes the same
/// activation bytes.
fn ggml_matmul(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let vec_dot = traits(ty)
        .vec_dot
        .expect("ggml has a dot product for this type");
    assert_eq!(
        traits(ty).vec_dot_type,
        act_type(ty).info().id as sys::ggml_type
    );
    let row_bytes = w.len() / rows;
    let mut out = vec![0f32; x.len() / cols * rows];
    for (b, xb) in x.chunks_exact(cols).enumerate() {
        let a = ggml_activations(act_type(ty), xb);
        assert!(
            a == native_activations(act_type(ty), xb),
            "{ty:?}: activation row {b} quantized differently from ggml"
        );
        for r in 0..rows {
            // SAFETY: `w` holds `rows` rows of `cols` values of `ty`, `a` one row of `cols`
            // values of its activation type, and `nrc = 1` reads one of each.
            unsafe {
                vec_dot(
                    cols as i32,
                    &mut out[b * rows + r],
                    0,
                    w[r * row_bytes..].as_ptr().cast(),
                    0,
                    a.as_ptr().cast(),
                    0,
                    1,
                )
            };
        }
    }
    out
}

/// Compares the native GEMM with ggml's: bitwise where [`bitwise`] says so, otherwise each
/// result within 2e-6 of Σ|w·x| (what reordering f32 additions can change).
fn check(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], what: &str) {
    let m = QMatrix::new(ty, rows, cols, w).unwrap();
    let mut ours = vec![0f32; x.len() / cols * rows];
    matmul(&m, x, &mut ours, &mut Scratch::default()).unwrap();
    // Each activation row alone takes the single-row kernels; the results are the same bits.
    for (xb, ob) in x.chunks_exact(cols).zip(ours.chunks_exact(rows)) {
        let mut alone = vec![0f32; rows];
        matmul(&m, xb, &mut alone, &mut Scratch::default()).unwrap();
        assert!(
            alone
                .iter()
                .zip(ob)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what} ({ty:?}): a row alone differs from the same row in a batch"
        );
    }
    let theirs = ggml_matmul(ty, w, rows, cols, x);
    let wf = quant::formats::dequantize_to_vec(ty, w).unwrap();
    for (i, (&o, &t)) in ours.iter().zip(&theirs).enumerate() {
        let (b, r) = (i / rows, i % rows);
        // Every format's `vec_dot` (the K-quants' too; what llama.cpp runs for matrices it does
        // not repack) where this build follows llama.cpp's x86 float sequence.
        if passuntil_tests::parity::BITWISE {
            assert!(
                o.to_bits() == t.to_bits(),
                "{what} ({ty:?}): row {r}, batch {b}: ours {o:e}, ggml {t:e}"
            );
            continue;
        }
        let mag: f64 = wf[r * cols..(r + 1) * cols]
            .iter()
            .zip(&x[b * cols..(b + 1) * cols])
            .map(|(&a, &c)| (a as f64 * c as f64).abs())
            .sum();
        assert!(
            ((o - t) as f64).abs() <= 2e-6 * mag + 1e-30,
            "{what} ({ty:?}): row {r}, batch {b}: ours {o}, ggml {t}, Σ|w·x| {mag}"
        );
    }
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

#[test]
fn every_quantized_format_agrees_with_ggml() {
    let (rows, cols, batch) = (37, 512, 3);
    let mut seed = 42;
    for ty in quant::gemm::WEIGHT_TYPES {
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            // ggml rounds f32 activations to the weight's float type; no shared bytes.
            continue;
        }
        // Weights with rows of different scales, activations with an outlier per row.
        let wf: Vec<f32> = (0..rows * cols)
            .map(|i| lcg(&mut seed) * (1 + i / cols) as f32 * 0.01)
            .collect();
        let w = quantize_to_vec(ty, &wf).unwrap();
        let mut x: Vec<f32> = (0..batch * cols).map(|_| lcg(&mut seed) * 3.0).collect();
        for b in 0..batch {
            x[b * cols + 7 * b + 1] = 40.0;
        }
        check(ty, &w, rows, cols, &x, "random");
    }
}

#[test]
fn default_model_matrices_agree_with_ggml() {
    real_matrices_agree_with_ggml(
        passuntil_tests::default_model(),
        &[
            "blk.0.attn_q.weight",
            "blk.0.ffn_down.weight",
            "blk.29.ffn_gate.weight",
            "token_embd.weight",
        ],
    );
}

/// Gemma 3's Q4_K_M file: its Q4_K, Q6_K, Q5_0 and Q8_0 matrices.
#[test]
fn gemma_matrices_agree_with_ggml() {
    real_matrices_agree_with_ggml(
        passuntil_tests::gemma_model(),
        &[
            "blk.0.attn_output.weight",
            "blk.0.ffn_down.weight",
            "blk.2.ffn_down.weight",
            "blk.0.attn_q.weight",
            "blk.0.attn_v.weight",
        ],
    );
}

fn real_matrices_agree_with_ggml(path: &std::path::Path, names: &[&str]) {
    let file = quant::gguf::GgufFile::open(path).unwrap();
    let mut seed = 7;
    for &name in names {
        let t = file.tensor(name).unwrap();
        let (rows, cols) = (t.info.n_rows() as usize, t.info.row_len() as usize);
        // A slice of the embedding table is enough.
        let rows = rows.min(4096);
        let bytes = &t.data[..t.data.len() / t.info.n_rows() as usize * rows];
        let x: Vec<f32> = (0..2 * cols)
            .map(|_| lcg(&mut seed) * lcg(&mut seed) * 4.0)
            .collect();
        check(t.ty(), bytes, rows, cols, &x, name);
    }
}

// ggml's own vector routines, exported by its CPU library with C linkage.
extern "C" {
    fn ggml_vec_swiglu_f32(n: i32, y: *mut f32, x: *const f32, g: *const f32);
    fn ggml_vec_soft_max_f32(n: i32, y: *mut f32, x: *const f32, max: f32) -> f64;
}

/// Values across SiLU's and `exp`'s whole range: ordinary, large, tiny, saturating.
fn wide_values(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 7 {
            0 => lcg(seed) * 120.0,
            1 => lcg(seed) * 1e-3,
            2 => lcg(seed) * 30.0,
            _ => lcg(seed) * 6.0,
        })
        .collect()
}

/// `engine::numerics` is ggml's vector code bit for bit: SwiGLU and softmax.
#[test]
#[cfg_attr(
    not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )),
    ignore = "engine::numerics follows ggml's vector code on x86 builds with AVX2 and FMA"
)]
fn numerics_equal_ggml_s() {
    swiglu_equals_ggml_s();
    softmax_equals_ggml_s_on_a_padded_row();
}

/// `engine::numerics::swiglu` is ggml's `swiglu` bit for bit, vector part and tail.
fn swiglu_equals_ggml_s() {
    let mut seed = 5;
    for n in [1536, 1541, 7] {
        let x = wide_values(n, &mut seed);
        let g = wide_values(n, &mut seed);
        let mut theirs = vec![0f32; n];
        // SAFETY: `x`, `g` and `theirs` hold `n` floats each.
        unsafe { ggml_vec_swiglu_f32(n as i32, theirs.as_mut_ptr(), x.as_ptr(), g.as_ptr()) };
        let mut ours = x.clone();
        engine::numerics::swiglu(&mut ours, &g);
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                o.to_bits() == t.to_bits(),
                "n {n}, element {i} (x {}, g {}): ours {o:e}, ggml {t:e}",
                x[i],
                g[i]
            );
        }
    }
}

/// `engine::numerics::softmax` is ggml's `soft_max` over a row padded to whole vectors with
/// masked (−∞) cells, as llama.cpp's KV cache pads it: exps, per-vector sums in f64 and the
/// scaling by `(f32)(1/sum)`, bit for bit.
fn softmax_equals_ggml_s_on_a_padded_row() {
    let mut seed = 9;
    for n in [256usize, 37, 1, 130] {
        let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 12.0).collect();
        let padded = n.div_ceil(16) * 16;
        let mut xp = x.clone();
        xp.resize(padded, f32::NEG_INFINITY);
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut theirs = vec![0f32; padded];
        // SAFETY: `xp` and `theirs` hold `padded` floats each.
        let sum =
            unsafe { ggml_vec_soft_max_f32(padded as i32, theirs.as_mut_ptr(), xp.as_ptr(), max) };
        let inv = (1.0 / sum) as f32;
        let mut ours = x.clone();
        engine::numerics::softmax(&mut ours);
        for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            let t = t * inv;
            assert!(
                o.to_bits() == t.to_bits(),
                "n {n}, element {i}: ours {o:e}, ggml {t:e}"
            );
        }
        assert!(
            theirs[n..].iter().all(|&v| v == 0.0),
            "masked cells add nothing"
        );
    }
}
