//! Q8_0: blocks of 32 signed 8-bit quants with one f16 scale: `x = d·q`. Also the activation
//! format that Q4_0, Q5_0 and Q8_0 weights are multiplied with.
//! Mirrors ggml's `block_q8_0`, `quantize_row_q8_0_ref` and `dequantize_row_q8_0`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use crate::types::GgmlType;

/// Weights per Q8_0 block (`QK8_0`).
pub const QK8_0: usize = 32;

/// ggml's `block_q8_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Delta.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// Scale `amax / 127` and its inverse, as ggml's Q8_0/Q8_1 reference quantizers compute them.
#[inline]
pub(crate) fn q8_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const SIZE: usize = QK8_0;

    fn quantize(x: &[f32]) -> Self {
        let (d, id) = q8_scale(x);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs: std::array::from_fn(|j| (x[j] * id).round() as i8),
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}
