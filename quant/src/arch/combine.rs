//! How one block's exact integer sums become f32: the scale its eight lane sums are
//! multiplied by, and the two factors of the term its scalar sum gives (fused into a running
//! sum, as llama.cpp's x86 kernels, built with contraction, add `m·s`). This is the only float
//! arithmetic of the quantized kernels besides the accumulation itself, shared by every
//! instruction set so that all of them round the same way.
//!
//! The formulas follow from each format's dequantization (`x = d·q`, `x = d·q + m`,
//! `x = d·sc·q − dmin·m`) and the activation's `a = d_a·q_a`.

/// Q4_0, Q5_0, Q8_0 (weights `d_w·q`) times Q8_0: lanes `Σ q·q_a` scaled by `d_w · d_a`.
#[inline(always)]
pub(crate) fn scaled([dw, da]: [f32; 2]) -> (f32, [f32; 2]) {
    (dw * da, [0.0; 2])
}

/// Q4_1, Q5_1 (weights `d_w·q + m_w`) times Q8_1 (`s_a = d_a·Σq_a`): lanes `Σ q·q_a` scaled
/// by `d_w · d_a`, plus `m_w · s_a`.
#[inline(always)]
pub(crate) fn scaled_min([dw, mw]: [f32; 2], [da, sa]: [f32; 2]) -> (f32, [f32; 2]) {
    (dw * da, [mw, sa])
}

/// Q2_K, Q4_K, Q5_K (weights `d·sc_j·q − dmin·m_j`) times Q8_K: lanes `Σ sc·q·q_a` scaled by
/// `d · d_a`, minus `dmin · d_a · Σ_j m_j Σ q_a`.
#[inline(always)]
pub(crate) fn k_min([d, dmin]: [f32; 2], da: f32, msum: i32) -> (f32, [f32; 2]) {
    (d * da, [-(dmin * da), msum as f32])
}

/// Q3_K, Q6_K (weights `d·sc_j·(u − o)`) times Q8_K: lanes `Σ sc·u·q_a` scaled by `d · d_a`,
/// minus `d · d_a · o·Σ_j sc_j Σ q_a`.
#[inline(always)]
pub(crate) fn k_offset(d: f32, da: f32, offset: i32) -> (f32, [f32; 2]) {
    (d * da, [-(d * da), offset as f32])
}
