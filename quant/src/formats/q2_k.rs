//! Q2_K: super-blocks of 256 weights in 16 groups of 16; 2-bit quants, 4-bit group scales and
//! mins under two f16 super-scales: `x = d·sc·q − dmin·m` (2.625 bits per weight).
//! Mirrors ggml's `block_q2_K`, `quantize_row_q2_K_ref` and `dequantize_row_q2_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquant::{make_qkx2_quants, Qkx2};
use super::{nearest_int, Block};
use crate::types::{GgmlType, QK_K};

/// ggml's `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Group scales (low nibble) and mins (high nibble), 4 bits each.
    pub scales: [u8; QK_K / 16],
    /// Quants: in each 128-weight half, byte `l` holds elements `l`, `l+32`, `l+64`, `l+96`
    /// in bits 0-1, 2-3, 4-5, 6-7.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the quantized scales.
    pub d: f16,
    /// Super-block scale for the quantized mins.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// Packs 256 two-bit values into the Q2_K/Q3_K `qs` layout.
pub(crate) fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for half in 0..2 {
        let (j, q) = (half * 128, &mut qs[half * 32..half * 32 + 32]);
        for (i, b) in q.iter_mut().enumerate() {
            *b = l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
    qs
}

/// The 2-bit value of element `e` (0..256) in the Q2_K/Q3_K `qs` layout.
#[inline]
pub(crate) fn get_2bit(qs: &[u8; QK_K / 4], e: usize) -> u8 {
    let (half, r) = (e / 128, e % 128);
    (qs[half * 32 + r % 32] >> (2 * (r / 32))) & 3
}

impl Block for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        const Q4SCALE: f32 = 15.0;
        let params = Qkx2 {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut mins = [0f32; QK_K / 16];
        let mut weights = [0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(&params, xs, &weights, &mut l[16 * j..16 * j + 16]);
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let mut b = BlockQ2K::zeroed();
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for (sc, &s) in b.scales.iter_mut().zip(&scales) {
                *sc = nearest_int(iscale * s) as u8;
            }
            b.d = f16::from_f32(max_scale / Q4SCALE);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for (sc, &m) in b.scales.iter_mut().zip(&mins) {
                *sc |= (nearest_int(iscale * m) << 4) as u8;
            }
            b.dmin = f16::from_f32(max_min / Q4SCALE);
        }
        for j in 0..QK_K / 16 {
            let d = b.d.to_f32() * (b.scales[j] & 0xf) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = b.dmin.to_f32() * (b.scales[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }
        b.qs = pack_2bit(&l);
        b
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (e, y) in out.iter_mut().enumerate().take(QK_K) {
            let sc = self.scales[e / 16];
            let dl = d * (sc & 0xf) as f32;
            let ml = min * (sc >> 4) as f32;
            *y = dl * get_2bit(&self.qs, e) as f32 - ml;
        }
    }
}
