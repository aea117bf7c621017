//! Q5_1: blocks of 32 weights, 5-bit quants with an f16 scale and minimum: `x = d·q + m`.
//! Mirrors ggml's `block_q5_1`, `quantize_row_q5_1_ref` and `dequantize_row_q5_1`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q5_0::{pack_5bit, unpack_5bit};
use super::{min_max, Block};
use crate::types::GgmlType;

/// Weights per Q5_1 block (`QK5_1`).
pub const QK5_1: usize = 32;

/// ggml's `block_q5_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Delta.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bit of each quant, little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low nibbles: element `j` in the low half of byte `j`, element `j + 16` in the high half.
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const SIZE: usize = QK5_1;

    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| (((v - min) * id + 0.5) as u8).min(31);
        let (qs, qh) = pack_5bit(|j| q(x[j]));
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        unpack_5bit(&self.qs, self.qh, |j, q| out[j] = q as f32 * d + m);
    }
}
