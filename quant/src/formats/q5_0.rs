//! Q5_0: blocks of 32 weights, 5-bit quants around 16 and one f16 scale: `x = d·(q − 16)`.
//! Mirrors ggml's `block_q5_0`, `quantize_row_q5_0_ref` and `dequantize_row_q5_0`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{signed_absmax, Block};
use crate::types::GgmlType;

/// Weights per Q5_0 block (`QK5_0`).
pub const QK5_0: usize = 32;

/// ggml's `block_q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Delta.
    pub d: f16,
    /// Fifth bit of each quant, little-endian u32: bit `j` belongs to element `j`.
    pub qh: [u8; 4],
    /// Low nibbles: element `j` in the low half of byte `j`, element `j + 16` in the high half.
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const SIZE: usize = QK5_0;

    fn quantize(x: &[f32]) -> Self {
        let (_, max) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v * id + 16.5) as i8).clamp(0, 31) as u8;
        let (qs, qh) = pack_5bit(|j| q(x[j]));
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        unpack_5bit(&self.qs, self.qh, |j, q| {
            out[j] = (q as i32 - 16) as f32 * d
        });
    }
}

/// Packs 32 five-bit quants (`q(j)` for element `j`) into low nibbles and a high-bit word,
/// the layout shared by Q5_0 and Q5_1.
pub(crate) fn pack_5bit(q: impl Fn(usize) -> u8) -> ([u8; 16], u32) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for (j, b) in qs.iter_mut().enumerate() {
        let (x0, x1) = (q(j), q(j + 16));
        *b = (x0 & 0xf) | ((x1 & 0xf) << 4);
        qh |= (((x0 & 0x10) >> 4) as u32) << j;
        qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
    }
    (qs, qh)
}

/// Calls `f(j, q)` with each element's five-bit quant, the inverse of [`pack_5bit`].
#[inline]
pub(crate) fn unpack_5bit(qs: &[u8; 16], qh: [u8; 4], mut f: impl FnMut(usize, u8)) {
    let qh = u32::from_le_bytes(qh);
    for (j, &b) in qs.iter().enumerate() {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        f(j, (b & 0xf) | h0);
        f(j + 16, (b >> 4) | h1);
    }
}
