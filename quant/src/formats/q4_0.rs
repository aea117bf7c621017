//! Q4_0: blocks of 32 weights, 4-bit quants around 8 and one f16 scale: `x = d·(q − 8)`.
//! Mirrors ggml's `block_q4_0`, `quantize_row_q4_0_ref` and `dequantize_row_q4_0`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{signed_absmax, Block};
use crate::types::GgmlType;

/// Weights per Q4_0 block (`QK4_0`).
pub const QK4_0: usize = 32;

/// ggml's `block_q4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Delta.
    pub d: f16,
    /// Nibbles: element `j` in the low half of byte `j`, element `j + 16` in the high half.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const SIZE: usize = QK4_0;

    fn quantize(x: &[f32]) -> Self {
        let (_, max) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
        let mut qs = [0u8; QK4_0 / 2];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(x[j]) | (q(x[j + QK4_0 / 2]) << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = ((b & 0xf) as i32 - 8) as f32 * d;
            out[j + QK4_0 / 2] = ((b >> 4) as i32 - 8) as f32 * d;
        }
    }
}
