//! Q6_K: super-blocks of 256 weights in 16 groups of 16; 6-bit quants (4 low bits plus 2
//! high bits), signed 8-bit group scales and one f16 super-scale: `x = d·sc·(q − 32)`
//! (6.5625 bits per weight).
//! Mirrors ggml's `block_q6_K`, `quantize_row_q6_K_ref` and `dequantize_row_q6_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::kquant::{make_qx_quants_rmse1, GROUP_MAX_EPS};
use super::{nearest_int, Block};
use crate::types::{GgmlType, QK_K};

/// ggml's `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low four bits: in each 128-weight half, byte `l` holds elements `l` (low nibble) and
    /// `l + 64` (high nibble), byte `l + 32` holds `l + 32` and `l + 96`.
    pub ql: [u8; QK_K / 2],
    /// High two bits: in each half, byte `l` holds elements `l`, `l+32`, `l+64`, `l+96` in bits
    /// 0-1, 2-3, 4-5, 6-7.
    pub qh: [u8; QK_K / 4],
    /// Sixteen signed 8-bit group scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The unsigned 6-bit quant of element `e` (0..256).
    #[inline]
    fn quant(&self, e: usize) -> u8 {
        let (half, r) = (e / 128, e % 128);
        let (l, part) = (r % 32, r / 32);
        let low = (self.ql[64 * half + l + 32 * (part & 1)] >> (4 * (part >> 1))) & 0xf;
        let high = (self.qh[32 * half + l] >> (2 * part)) & 3;
        low | (high << 4)
    }
}

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6K;
    const SIZE: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let s =
                make_qx_quants_rmse1(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        let mut b = BlockQ6K::zeroed();
        if max_abs_scale < GROUP_MAX_EPS {
            return b;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        for (sc, &s) in b.scales.iter_mut().zip(&scales) {
            *sc = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let d = b.d.to_f32() * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(x[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for half in 0..2 {
            let (j, ql, qh) = (128 * half, 64 * half, 32 * half);
            for i in 0..32 {
                let q = |o: usize| l[j + i + o] as u8;
                b.ql[ql + i] = (q(0) & 0xf) | ((q(64) & 0xf) << 4);
                b.ql[ql + i + 32] = (q(32) & 0xf) | ((q(96) & 0xf) << 4);
                b.qh[qh + i] =
                    (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
            }
        }
        b
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (e, y) in out.iter_mut().enumerate().take(QK_K) {
            let q = self.quant(e) as i32 - 32;
            *y = d * self.scales[e / 16] as f32 * q as f32;
        }
    }
}
