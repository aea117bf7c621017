//! The storage layer on the real default model: the file is what DESIGN.md says, every tensor
//! dequantizes, and the reference quantizers reproduce its Q4_1 and Q8_0 blocks.

use std::collections::BTreeMap;

use quant::formats::{quantize_to_vec, BlockQ4_1, BlockQ8_0};
use quant::gguf::GgufFile;
use quant::GgmlType;

#[test]
fn inspect_reports_the_default_model() {
    let r = evals::inspect::inspect(passuntil_tests::default_model()).unwrap();
    assert_eq!(r.tensors.len(), 272);
    let counts: BTreeMap<&str, usize> = r
        .totals
        .iter()
        .map(|t| (t.ty.as_str(), t.tensors))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("f32", 61), ("q4_1", 210), ("q8_0", 1)])
    );
    let emb = r
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .unwrap();
    assert_eq!(
        (emb.ty.as_str(), emb.shape.as_slice()),
        ("q8_0", &[576, 49152][..])
    );
    let s = &r.summary;
    assert_eq!(s.architecture, "llama");
    assert_eq!(s.block_count, Some(30));
    assert_eq!(s.embedding_length, Some(576));
    assert_eq!(s.head_count, Some(9));
    assert_eq!(s.head_count_kv, Some(3));
    assert_eq!(s.vocab_size, Some(49152));
    assert_eq!(s.tokenizer.as_deref(), Some("gpt2"));
}

#[test]
fn every_tensor_dequantizes_to_finite_values() {
    let file = GgufFile::open(passuntil_tests::default_model()).unwrap();
    for t in file.tensors() {
        let x = t.to_f32().unwrap();
        assert_eq!(x.len() as u64, t.info.n_elements(), "{}", t.name());
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{} has non-finite values",
            t.name()
        );
        let rms = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
        assert!(
            rms > 1e-3 && rms < 10.0,
            "{}: implausible rms {rms}",
            t.name()
        );
    }
}

/// Re-quantizes each block's dequantized values and counts blocks that come back identical.
fn requantize_share<B: quant::formats::Block + PartialEq>(blocks: &[B]) -> (usize, usize) {
    let mut same = 0;
    let mut x = vec![0.0f32; B::SIZE];
    for b in blocks {
        b.dequantize(&mut x);
        let q = quantize_to_vec(B::TYPE, &x).unwrap();
        same += usize::from(q == bytemuck::bytes_of(b));
    }
    (same, blocks.len())
}

#[test]
fn requantizing_real_blocks_gives_the_same_bytes() {
    let file = GgufFile::open(passuntil_tests::default_model()).unwrap();
    let (mut same, mut total) = ((0, 0), (0, 0));
    for t in file.tensors() {
        match t.ty() {
            GgmlType::Q4_1 => {
                let (s, n) = requantize_share(t.blocks::<BlockQ4_1>().unwrap());
                same.0 += s;
                total.0 += n;
            }
            GgmlType::Q8_0 => {
                let (s, n) = requantize_share(t.blocks::<BlockQ8_0>().unwrap());
                same.1 += s;
                total.1 += n;
            }
            _ => {}
        }
    }
    let share = |s: usize, n: usize| 100.0 * s as f64 / n as f64;
    eprintln!(
        "q4_1: {}/{} blocks identical ({:.4}%)",
        same.0,
        total.0,
        share(same.0, total.0)
    );
    eprintln!(
        "q8_0: {}/{} blocks identical ({:.4}%)",
        same.1,
        total.1,
        share(same.1, total.1)
    );
    assert_eq!(total, (3_317_760, 884_736));
    assert_eq!(same, total);
}
