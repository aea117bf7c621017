//! Q3_K: super-blocks of 256 weights in 16 groups of 16; 3-bit quants (2 low bits plus a
//! high-bit mask), signed 6-bit group scales and one f16 super-scale: `x = d·sc·(q − 4)`
//! (3.4375 bits per weight).
//! Mirrors ggml's `block_q3_K`, `quantize_row_q3_K_ref` and `dequantize_row_q3_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquant::{make_q3_quants, pack_q3k_scales, q3k_scale};
use super::q2_k::{get_2bit, pack_2bit};
use super::{nearest_int, Block};
use crate::types::{GgmlType, QK_K};

/// ggml's `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bit of each quant: element `e` is bit `e / 32` of byte `e % 32`.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits of each quant, in the Q2_K layout.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, offset by 32.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

impl Block for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut b = BlockQ3K::zeroed();
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            let ls: [u8; 16] = std::array::from_fn(|j| {
                // ggml stores nearest_int into an int8_t (wrapping) before clamping.
                ((nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32) as u8
            });
            b.scales = pack_q3k_scales(&ls);
            b.d = f16::from_f32(1.0 / iscale);
        }
        for j in 0..QK_K / 16 {
            let d = b.d.to_f32() * q3k_scale(j, &b.scales) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let mut low = [0u8; QK_K];
        for (e, (&q, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
            let q = q as u8 & 7;
            if q > 3 {
                b.hmask[e % 32] |= 1 << (e / 32);
            }
            *lo = q & 3;
        }
        b.qs = pack_2bit(&low);
        b
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d_all = self.d.to_f32();
        for (e, y) in out.iter_mut().enumerate().take(QK_K) {
            let dl = d_all * q3k_scale(e / 16, &self.scales) as f32;
            let high = (self.hmask[e % 32] >> (e / 32)) & 1;
            let q = get_2bit(&self.qs, e) as i32 - if high != 0 { 0 } else { 4 };
            *y = dl * q as f32;
        }
    }
}
