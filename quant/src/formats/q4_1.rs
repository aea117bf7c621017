//! Q4_1: blocks of 32 weights, 4-bit quants with an f16 scale and minimum: `x = d·q + m`.
//! Mirrors ggml's `block_q4_1`, `quantize_row_q4_1_ref` and `dequantize_row_q4_1`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{min_max, Block};
use crate::types::GgmlType;

/// Weights per Q4_1 block (`QK4_1`).
pub const QK4_1: usize = 32;

/// ggml's `block_q4_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Delta.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Nibbles: element `j` in the low half of byte `j`, element `j + 16` in the high half.
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const SIZE: usize = QK4_1;

    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
        let mut qs = [0u8; QK4_1 / 2];
        for (j, b) in qs.iter_mut().enumerate() {
            *b = q(x[j]) | (q(x[j + QK4_1 / 2]) << 4);
        }
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &b) in self.qs.iter().enumerate() {
            out[j] = (b & 0xf) as f32 * d + m;
            out[j + QK4_1 / 2] = (b >> 4) as f32 * d + m;
        }
    }
}
