//! The quantized kernels against ggml's own CPU kernels (the ones llama.cpp runs), called
//! through the llama.cpp bindings: for every quantized weight format, the same weight bytes
//! and the same activation bytes go through `quant::gemm::matmul` and through ggml's
//! `vec_dot`, and the results may differ only by the order of float additions. Random
//! weights cover every format; the default model's own Q4_1 and Q8_0 matrices follow.
#![cfg(feature = "llama-cpp")]

use llama_cpp_sys_2 as sys;
use quant::formats::quantize_to_vec;
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

/// ggml's `vec_dot` of each weight row with each activation row, `out[b * rows + r]`.
fn ggml_matmul(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    // SAFETY: ggml_cpu_init only fills ggml's lookup tables; it may be called repeatedly.
    unsafe { sys::ggml_cpu_init() };
    // SAFETY: the traits table has an entry for every ggml type id, and these ids are ggml's.
    let traits = unsafe { &*sys::ggml_get_type_traits_cpu(ty.info().id as sys::ggml_type) };
    let vec_dot = traits
        .vec_dot
        .expect("ggml has a dot product for this type");
    assert_eq!(
        traits.vec_dot_type,
        act_type(ty).info().id as sys::ggml_type
    );
    let row_bytes = w.len() / rows;
    let mut out = vec![0f32; x.len() / cols * rows];
    for (b, xb) in x.chunks_exact(cols).enumerate() {
        // The activation bytes the native kernels use (the reference quantizer's).
        let a = quantize_to_vec(act_type(ty), xb).unwrap();
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

/// Compares the native GEMM with ggml's: each result within 2e-6 of Σ|w·x| (what reordering
/// f32 additions can change).
fn check(ty: GgmlType, w: &[u8], rows: usize, cols: usize, x: &[f32], what: &str) {
    let m = QMatrix::new(ty, rows, cols, w).unwrap();
    let mut ours = vec![0f32; x.len() / cols * rows];
    matmul(&m, x, &mut ours, &mut Scratch::default()).unwrap();
    let theirs = ggml_matmul(ty, w, rows, cols, x);
    let wf = quant::formats::dequantize_to_vec(ty, w).unwrap();
    for (i, (&o, &t)) in ours.iter().zip(&theirs).enumerate() {
        let (b, r) = (i / rows, i % rows);
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
    let file = quant::gguf::GgufFile::open(passuntil_tests::default_model()).unwrap();
    let mut seed = 7;
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.ffn_down.weight",
        "blk.29.ffn_gate.weight",
        "token_embd.weight",
    ] {
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
