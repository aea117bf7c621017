//! Q8_1: Q8_0 plus `s = d·Σq` per block, the activation format for Q4_1 and Q5_1 weights
//! (the sum lets a dot product add the weights' minimum in one multiply).
//! Mirrors ggml's `block_q8_1` and `quantize_row_q8_1_ref`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::q8_scale;
use super::Block;
use crate::types::GgmlType;

/// Values per Q8_1 block (`QK8_1`).
pub const QK8_1: usize = 32;

/// ggml's `block_q8_1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Delta.
    pub d: f16,
    /// `d * sum(qs)`.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl Block for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const SIZE: usize = QK8_1;

    fn quantize(x: &[f32]) -> Self {
        let (d, id) = q8_scale(x);
        let qs: [i8; QK8_1] = std::array::from_fn(|j| (x[j] * id).round() as i8);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = q as f32 * d;
        }
    }
}
