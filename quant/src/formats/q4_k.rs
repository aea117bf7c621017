//! Q4_K: super-blocks of 256 weights in 8 groups of 32; 4-bit quants, 6-bit group scales and
//! mins under two f16 super-scales: `x = d·sc·q − dmin·m` (4.5 bits per weight).
//! Mirrors ggml's `block_q4_K`, `quantize_row_q4_K_ref` and `dequantize_row_q4_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquant::{
    get_scale_min_k4, make_qkx2_quants, quantize_scales_mins_k4, rms_plus_abs_weights, Qkx2,
};
use super::{nearest_int, Block};
use crate::types::{GgmlType, QK_K};

/// Bytes of packed 6-bit scales and mins in Q4_K/Q5_K (`K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins (see `get_scale_min_k4`).
    pub scales: [u8; K_SCALE_SIZE],
    /// Quants: each 64-weight chunk is 32 bytes, elements `l` (low) and `l + 32` (high).
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// Chooses the group scales and mins of a Q4_K/Q5_K super-block and the final quants in
/// `[0, nmax]` (the part both reference quantizers share). Returns (scales, d, dmin, quants).
pub(crate) fn quantize_k4_groups(
    x: &[f32],
    params: &Qkx2,
) -> ([u8; K_SCALE_SIZE], f16, f16, [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        rms_plus_abs_weights(xs, &mut weights);
        (scales[j], mins[j]) = make_qkx2_quants(params, xs, &weights, &mut l[32 * j..32 * j + 32]);
    }
    let (packed, d, dmin) = quantize_scales_mins_k4(&scales, &mins);
    let (d, dmin) = (f16::from_f32(d), f16::from_f32(dmin));
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dd = d.to_f32() * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, params.nmax) as u8;
        }
    }
    (packed, d, dmin, l)
}

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let params = Qkx2 {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (scales, d, dmin, l) = quantize_k4_groups(x, &params);
        let mut qs = [0u8; QK_K / 2];
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            for (i, b) in q.iter_mut().enumerate() {
                *b = l[64 * c + i] | (l[64 * c + i + 32] << 4);
            }
        }
        BlockQ4K {
            d,
            dmin,
            scales,
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (c, y) in out.chunks_exact_mut(64).enumerate().take(QK_K / 64) {
            let q = &self.qs[32 * c..32 * c + 32];
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            for (l, &b) in q.iter().enumerate() {
                y[l] = d1 * (b & 0xf) as f32 - m1;
                y[l + 32] = d2 * (b >> 4) as f32 - m2;
            }
        }
    }
}
