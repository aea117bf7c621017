//! Q8_K: super-blocks of 256 signed 8-bit quants with an f32 scale and per-16 sums, the
//! activation format that K-quant weights are multiplied with (never stored in model files).
//! Mirrors ggml's `block_q8_K`, `quantize_row_q8_K_ref` and `dequantize_row_q8_K`.

use bytemuck::{Pod, Zeroable};

use super::{nearest_int, signed_absmax, Block};
use crate::types::{GgmlType, QK_K};

/// ggml's `block_q8_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Delta.
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// Sum of the quants in each group of 16.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl Block for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let (amax, max) = signed_absmax(x);
        let mut b = BlockQ8K::zeroed();
        if amax == 0.0 {
            return b;
        }
        // ggml uses -127 (not -128) so that IQ kernels stay simple.
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
        b
    }

    fn dequantize(&self, out: &mut [f32]) {
        for (y, &q) in out.iter_mut().zip(&self.qs) {
            *y = self.d * q as f32;
        }
    }
}
