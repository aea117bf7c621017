//! Fuzz every block format: the first byte picks the type, the rest is taken as blocks of it
//! (the trailing partial block is dropped). Dequantizing never panics and gives exactly
//! `blocks × block_size` values; quantizing those values again never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quant::formats::{dequantize_to_vec, quantize_to_vec};
use quant::GgmlType;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let types: Vec<GgmlType> = GgmlType::all().collect();
    let ty = types[sel as usize % types.len()];
    let whole = rest.len() / ty.type_size() * ty.type_size();
    let x = dequantize_to_vec(ty, &rest[..whole]).expect("whole blocks dequantize");
    assert_eq!(x.len(), whole / ty.type_size() * ty.block_size());
    let q = quantize_to_vec(ty, &x).expect("whole blocks quantize");
    assert_eq!(q.len(), whole);
    // A misaligned view of the same bytes dequantizes to the same bits.
    let mut shifted = vec![0u8; whole + 1];
    shifted[1..].copy_from_slice(&rest[..whole]);
    let y = dequantize_to_vec(ty, &shifted[1..]).expect("misaligned blocks dequantize");
    assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
});
