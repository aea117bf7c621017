//! Block formats, bit-compatible with ggml.
//!
//! Every format is a `#[repr(C)]` block struct that implements [`Block`]: the reference
//! quantizer (following ggml's `quantize_row_*_ref`, which is what model files are made with)
//! and the dequantizer (ggml's `dequantize_row_*`). Plain float types are blocks of one.
//!
//! Two layers of entry points:
//! - typed: [`quantize_row`] / [`dequantize_row`] over `&[B]` for a known block type;
//! - by [`GgmlType`] over raw bytes: [`quantize_bytes`] / [`dequantize_bytes`], which accept
//!   slices at any alignment (bytes from a file, from a fuzzer) and check every length.

use bytemuck::Pod;

use crate::types::GgmlType;

mod float;
pub(crate) mod kquant;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

pub use half::{bf16, f16};
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;

/// One block of a ggml format: `SIZE` weights stored in `size_of::<Self>()` bytes.
pub trait Block: Pod + std::fmt::Debug + Send + Sync {
    /// The type this block stores.
    const TYPE: GgmlType;
    /// Weights per block.
    const SIZE: usize;

    /// Reference quantization of exactly `SIZE` values (ggml's `quantize_row_*_ref` for one
    /// block). Callers pass `x.len() == SIZE`; the row functions guarantee it.
    fn quantize(x: &[f32]) -> Self;

    /// Writes this block's `SIZE` values into `out` (`out.len() == SIZE`).
    fn dequantize(&self, out: &mut [f32]);
}

/// A length that does not fit a format's block structure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LengthError {
    /// The number of values is not a multiple of the block size.
    #[error("{ty}: {len} values is not a whole number of blocks of {block_size}")]
    NotWholeBlocks {
        /// The format.
        ty: GgmlType,
        /// The number of values given.
        len: usize,
        /// The format's block size.
        block_size: usize,
    },
    /// A byte slice is not a whole number of blocks.
    #[error("{ty}: {len} bytes is not a whole number of {type_size}-byte blocks")]
    NotWholeBlockBytes {
        /// The format.
        ty: GgmlType,
        /// The number of bytes given.
        len: usize,
        /// Bytes per block.
        type_size: usize,
    },
    /// Input and output describe different numbers of values.
    #[error("{ty}: input holds {input} values but output has room for {output}")]
    Mismatch {
        /// The format.
        ty: GgmlType,
        /// Values in the input.
        input: usize,
        /// Values the output holds.
        output: usize,
    },
}

/// Quantizes `x` into `out` with the reference quantizer.
pub fn quantize_row<B: Block>(x: &[f32], out: &mut [B]) -> Result<(), LengthError> {
    check_values::<B>(x.len(), out.len())?;
    for (xb, yb) in x.chunks_exact(B::SIZE).zip(out.iter_mut()) {
        *yb = B::quantize(xb);
    }
    Ok(())
}

/// Dequantizes `blocks` into `out`.
pub fn dequantize_row<B: Block>(blocks: &[B], out: &mut [f32]) -> Result<(), LengthError> {
    check_values::<B>(out.len(), blocks.len())?;
    for (b, yb) in blocks.iter().zip(out.chunks_exact_mut(B::SIZE)) {
        b.dequantize(yb);
    }
    Ok(())
}

fn check_values<B: Block>(values: usize, blocks: usize) -> Result<(), LengthError> {
    if !values.is_multiple_of(B::SIZE) {
        return Err(LengthError::NotWholeBlocks {
            ty: B::TYPE,
            len: values,
            block_size: B::SIZE,
        });
    }
    if values / B::SIZE != blocks {
        return Err(LengthError::Mismatch {
            ty: B::TYPE,
            input: values,
            output: blocks.saturating_mul(B::SIZE),
        });
    }
    Ok(())
}

/// Number of values `bytes` holds as type `ty`, if it is a whole number of blocks.
pub fn values_in_bytes(ty: GgmlType, bytes: usize) -> Result<usize, LengthError> {
    let ts = ty.type_size();
    if !bytes.is_multiple_of(ts) {
        return Err(LengthError::NotWholeBlockBytes {
            ty,
            len: bytes,
            type_size: ts,
        });
    }
    Ok(bytes / ts * ty.block_size())
}

/// Something to do with a block type chosen at run time; see [`with_block`].
pub trait BlockFn {
    /// The result.
    type Output;
    /// Runs with the block type `B`.
    fn call<B: Block>(self) -> Self::Output;
}

/// Calls `f` with the block type of `ty`: the one place a run-time type becomes a static one.
pub fn with_block<F: BlockFn>(ty: GgmlType, f: F) -> F::Output {
    match ty {
        GgmlType::F32 => f.call::<f32>(),
        GgmlType::F16 => f.call::<f16>(),
        GgmlType::BF16 => f.call::<bf16>(),
        GgmlType::Q4_0 => f.call::<BlockQ4_0>(),
        GgmlType::Q4_1 => f.call::<BlockQ4_1>(),
        GgmlType::Q5_0 => f.call::<BlockQ5_0>(),
        GgmlType::Q5_1 => f.call::<BlockQ5_1>(),
        GgmlType::Q8_0 => f.call::<BlockQ8_0>(),
        GgmlType::Q8_1 => f.call::<BlockQ8_1>(),
        GgmlType::Q2K => f.call::<BlockQ2K>(),
        GgmlType::Q3K => f.call::<BlockQ3K>(),
        GgmlType::Q4K => f.call::<BlockQ4K>(),
        GgmlType::Q5K => f.call::<BlockQ5K>(),
        GgmlType::Q6K => f.call::<BlockQ6K>(),
        GgmlType::Q8K => f.call::<BlockQ8K>(),
    }
}

/// Dequantizes raw bytes of type `ty` (any alignment) into `out`.
pub fn dequantize_bytes(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), LengthError> {
    struct Run<'a>(&'a [u8], &'a mut [f32]);
    impl BlockFn for Run<'_> {
        type Output = Result<(), LengthError>;
        fn call<B: Block>(self) -> Self::Output {
            let Run(bytes, out) = self;
            let n = values_in_bytes(B::TYPE, bytes.len())?;
            if n != out.len() {
                return Err(LengthError::Mismatch {
                    ty: B::TYPE,
                    input: n,
                    output: out.len(),
                });
            }
            match bytemuck::try_cast_slice::<u8, B>(bytes) {
                Ok(blocks) => dequantize_row(blocks, out),
                Err(_) => {
                    // Misaligned input: copy each block out first.
                    let size = std::mem::size_of::<B>();
                    for (raw, yb) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(B::SIZE)) {
                        bytemuck::pod_read_unaligned::<B>(raw).dequantize(yb);
                    }
                    Ok(())
                }
            }
        }
    }
    with_block(ty, Run(bytes, out))
}

/// Quantizes `x` as type `ty` into raw bytes `out` (any alignment).
pub fn quantize_bytes(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), LengthError> {
    struct Run<'a>(&'a [f32], &'a mut [u8]);
    impl BlockFn for Run<'_> {
        type Output = Result<(), LengthError>;
        fn call<B: Block>(self) -> Self::Output {
            let Run(x, out) = self;
            let n = values_in_bytes(B::TYPE, out.len())?;
            check_values::<B>(x.len(), n / B::SIZE)?;
            let size = std::mem::size_of::<B>();
            for (xb, raw) in x.chunks_exact(B::SIZE).zip(out.chunks_exact_mut(size)) {
                raw.copy_from_slice(bytemuck::bytes_of(&B::quantize(xb)));
            }
            Ok(())
        }
    }
    with_block(ty, Run(x, out))
}

/// Dequantizes raw bytes of type `ty` into a new vector.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>, LengthError> {
    let mut out = vec![0.0; values_in_bytes(ty, bytes.len())?];
    dequantize_bytes(ty, bytes, &mut out)?;
    Ok(out)
}

/// Quantizes `x` as type `ty` into a new byte vector.
pub fn quantize_to_vec(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, LengthError> {
    let bs = ty.block_size();
    if !x.len().is_multiple_of(bs) {
        return Err(LengthError::NotWholeBlocks {
            ty,
            len: x.len(),
            block_size: bs,
        });
    }
    let mut out = vec![0u8; x.len() / bs * ty.type_size()];
    quantize_bytes(ty, x, &mut out)?;
    Ok(out)
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float-magic trick.
///
/// Exact for |x| ≤ 4194303 (every use in the quantizers stays in that range for finite data).
/// Outside that range, or for NaN, it returns a value in `[-2^22, 2^22)` instead of panicking.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Index of the first value with the largest magnitude, and that value (ggml's
/// `amax`/`max` scan, which keeps the first maximum).
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// The smallest and largest value (ggml's min/max scan starting from ±FLT_MAX).
#[inline]
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        // Out of range and NaN do not panic.
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(f32::INFINITY);
        let _ = nearest_int(-1e30);
    }

    #[test]
    fn lengths_are_checked() {
        let mut out = vec![0u8; 18];
        assert!(matches!(
            quantize_bytes(GgmlType::Q4_0, &[0.0; 31], &mut out),
            Err(LengthError::NotWholeBlocks { .. })
        ));
        assert!(matches!(
            quantize_bytes(GgmlType::Q4_0, &[0.0; 64], &mut out),
            Err(LengthError::Mismatch { .. })
        ));
        let mut y = vec![0.0; 32];
        assert!(matches!(
            dequantize_bytes(GgmlType::Q4_0, &[0u8; 17], &mut y),
            Err(LengthError::NotWholeBlockBytes { .. })
        ));
        assert!(matches!(
            dequantize_bytes(GgmlType::Q4_0, &[0u8; 36], &mut y),
            Err(LengthError::Mismatch { .. })
        ));
    }
}
