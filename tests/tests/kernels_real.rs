//! The kernels on real tensors of the default model: its own Q4_1 and Q8_0 matrices, and one
//! of its FFN matrices requantized into every format. Every instruction set this machine has
//! gives the reference's bits, and each result is the dot product of the dequantized weights
//! with the activations, up to the activations' 8-bit rounding. The panel kernels (`q8-fast`)
//! are checked the same way on the types that have them.

use quant::dispatch::Isa;
use quant::formats::{dequantize_to_vec, quantize_to_vec};
use quant::gemm::{matmul_with, QMatrix, Scratch};
use quant::gguf::GgufFile;
use quant::GgmlType;

/// `out` on every instruction set equals the reference bitwise; returns the reference.
fn same_on_every_isa(m: &QMatrix<'_>, x: &[f32]) -> Vec<f32> {
    let mut scratch = Scratch::default();
    let mut reference = vec![0.0; x.len() / m.cols() * m.rows()];
    matmul_with(Isa::Scalar, m, x, &mut reference, &mut scratch).unwrap();
    for isa in Isa::available() {
        let mut got = vec![0.0; reference.len()];
        matmul_with(isa, m, x, &mut got, &mut scratch).unwrap();
        let differ = got
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{} on {isa}: {differ} outputs differ", m.ty());
    }
    reference
}

/// The same for the panel kernels (`q8-fast`) where the type has them: every instruction set
/// gives the portable kernel's bits; returns them.
fn panels_same_on_every_isa(m: &QMatrix<'_>, x: &[f32]) -> Option<Vec<f32>> {
    use quant::panels::{matmul_panels_with, PanelMatrix, PANEL_TYPES};
    if !PANEL_TYPES.contains(&m.ty()) {
        return None;
    }
    let p = PanelMatrix::new(m).unwrap();
    let mut scratch = Scratch::default();
    let mut reference = vec![0.0; x.len() / m.cols() * m.rows()];
    matmul_panels_with(Isa::Scalar, &[&p], x, &mut [&mut reference], &mut scratch).unwrap();
    for isa in Isa::available() {
        let mut got = vec![0.0; reference.len()];
        matmul_panels_with(isa, &[&p], x, &mut [&mut got], &mut scratch).unwrap();
        let differ = got
            .iter()
            .zip(&reference)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{} panels on {isa}: {differ} outputs differ",
            m.ty()
        );
    }
    Some(reference)
}

/// [`same_on_every_isa`] and [`panels_same_on_every_isa`], each close to the dequantized
/// product.
fn check(m: &QMatrix<'_>, x: &[f32]) {
    let y = same_on_every_isa(m, x);
    close_to_dequantized(m, x, &y);
    if let Some(y) = panels_same_on_every_isa(m, x) {
        close_to_dequantized(m, x, &y);
    }
}

/// Each output is close to the f64 dot product of dequantized weights and f32 activations:
/// the activations' 8-bit rounding (a step of max|x|/127 per block) is all that separates them.
fn close_to_dequantized(m: &QMatrix<'_>, x: &[f32], y: &[f32]) {
    let w = dequantize_to_vec(m.ty(), m.data()).unwrap();
    let (rows, cols) = (m.rows(), m.cols());
    for (b, xr) in x.chunks_exact(cols).enumerate() {
        let step = xr.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
        for (r, wr) in w.chunks_exact(cols).enumerate() {
            let exact: f64 = wr.iter().zip(xr).map(|(&p, &q)| p as f64 * q as f64).sum();
            let wnorm: f64 = wr.iter().map(|&p| (p as f64).powi(2)).sum::<f64>().sqrt();
            // Rounding errors are at most step/2 each and independent: a 6σ bound.
            let tol = 6.0 * step * 0.3 * wnorm + 1e-4 * exact.abs();
            let got = y[b * rows + r] as f64;
            assert!(
                (got - exact).abs() <= tol,
                "{} row {r}, activation {b}: {got} vs {exact} (tolerance {tol})",
                m.ty()
            );
        }
    }
}

#[test]
fn real_tensors_on_every_isa_and_format() {
    let file = GgufFile::open(passuntil_tests::default_model()).unwrap();
    let emb = file.tensor("token_embd.weight").unwrap();
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    let down = file.tensor("blk.3.ffn_down.weight").unwrap();
    let up = file.tensor("blk.3.ffn_up.weight").unwrap();
    assert_eq!(
        (emb.ty(), q.ty(), down.ty()),
        (GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::Q4_1)
    );

    // Activations: real vectors (token embeddings, 576 wide; FFN rows, 1536 wide), 5 of each.
    let emb_f = emb.to_f32().unwrap();
    let x576: Vec<f32> = emb_f[1000 * 576..1005 * 576].to_vec();
    let up_f = up.to_f32().unwrap();
    let x1536: Vec<f32> = up_f[..5 * 1536].to_vec();

    // The model's own matrices: attention Q (Q4_1) and 512 rows of the embedding (Q8_0).
    let m = QMatrix::new(q.ty(), 576, 576, q.data).unwrap();
    check(&m, &x576);
    let rows = 512usize;
    let emb_rows = &emb.data[..rows * GgmlType::Q8_0.row_bytes(576).unwrap() as usize];
    let m = QMatrix::new(GgmlType::Q8_0, rows, 576, emb_rows).unwrap();
    check(&m, &x576);

    // 64 rows of an FFN down matrix (1536 wide, so every K-quant fits) in every format.
    let down_f = down.to_f32().unwrap();
    let w = &down_f[..64 * 1536];
    for ty in quant::gemm::WEIGHT_TYPES {
        let bytes = quantize_to_vec(ty, w).unwrap();
        let m = QMatrix::new(ty, 64, 1536, &bytes).unwrap();
        check(&m, &x1536);
    }
}
