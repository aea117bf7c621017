//! Plain float "formats": F32, F16 and BF16, blocks of one value.
//!
//! F16 rounds to nearest-even like ggml's `GGML_FP32_TO_FP16`; BF16 follows ggml's
//! `ggml_compute_fp32_to_bf16` bit for bit (round to nearest-even, NaN kept quiet).

use half::{bf16, f16};

use super::Block;
use crate::types::GgmlType;

impl Block for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const SIZE: usize = 1;

    fn quantize(x: &[f32]) -> Self {
        x[0]
    }

    fn dequantize(&self, out: &mut [f32]) {
        out[0] = *self;
    }
}

impl Block for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const SIZE: usize = 1;

    fn quantize(x: &[f32]) -> Self {
        f16::from_f32(x[0])
    }

    fn dequantize(&self, out: &mut [f32]) {
        out[0] = self.to_f32();
    }
}

/// f32 → bf16 as ggml rounds it.
pub fn f32_to_bf16(x: f32) -> bf16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep the sign and payload's top bits, force the quiet bit.
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    bf16::from_bits((u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16)
}

impl Block for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const SIZE: usize = 1;

    fn quantize(x: &[f32]) -> Self {
        f32_to_bf16(x[0])
    }

    fn dequantize(&self, out: &mut [f32]) {
        out[0] = f32::from_bits((self.to_bits() as u32) << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_like_ggml() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0).to_bits(), 0x3f82);
        assert!(f32::from(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY).to_bits(), 0x7f80);
    }
}
