//! Q5_K: super-blocks of 256 weights in 8 groups of 32; 5-bit quants (4 low bits plus a
//! high-bit plane), 6-bit group scales and mins under two f16 super-scales:
//! `x = d·sc·q − dmin·m` (5.5 bits per weight).
//! Mirrors ggml's `block_q5_K`, `quantize_row_q5_K_ref` and `dequantize_row_q5_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquant::{get_scale_min_k4, Qkx2};
use super::q4_k::{quantize_k4_groups, K_SCALE_SIZE};
use super::Block;
use crate::types::{GgmlType, QK_K};

/// ggml's `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: in 64-weight chunk `c`, element `l` uses bit `2c`, element `l + 32` bit
    /// `2c + 1` of byte `l`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, laid out as in Q4_K.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let params = Qkx2 {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let (scales, d, dmin, l) = quantize_k4_groups(x, &params);
        let mut qs = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 8];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            for (j, b) in q.iter_mut().enumerate() {
                let (mut l1, mut l2) = (l[64 * c + j], l[64 * c + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= 1 << (2 * c);
                }
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= 2 << (2 * c);
                }
                *b = l1 | (l2 << 4);
            }
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, y) in out.chunks_exact_mut(64).enumerate().take(QK_K / 64) {
            let ql = &self.qs[32 * c..32 * c + 32];
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for (l, (&b, &h)) in ql.iter().zip(&self.qh).enumerate() {
                let hi1 = if h & u1 != 0 { 16 } else { 0 };
                let hi2 = if h & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((b & 0xf) + hi1) as f32 - m1;
                y[l + 32] = d2 * ((b >> 4) + hi2) as f32 - m2;
            }
        }
    }
}
