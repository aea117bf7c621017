//! The reference quantizers reproduce ggml's `quantize_row_*_ref` bit for bit.
//!
//! The hashes below are sha256 digests of what ggml's own `quantize_row_*_ref` (llama.cpp's
//! vendored `ggml/src/ggml-quants.c`, as shipped in llama-cpp-sys-2 0.1.161, compiled with
//! `gcc -O2 -ffp-contract=off`, i.e. ISO C float semantics) wrote for the input that
//! [`golden_input`] generates. Built with `-march=native` and default contraction, gcc fuses
//! multiply-adds inside ggml's K-quant scale searches, and a few K-quant blocks (0.2–4%) come out
//! differently; the legacy formats and Q3_K/Q8_K are unaffected.

use quant::formats::quantize_to_vec;
use quant::GgmlType;
use sha2::{Digest, Sha256};

/// 64 super-blocks (16 Ki values) of assorted shapes, every value exactly representable so
/// the same input is trivial to produce in C: uniform, tiny, huge, sparse spikes, positive
/// offset, all-equal, all-zero and alternating-sign blocks.
fn golden_input() -> Vec<f32> {
    let mut state: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as i32 - (1 << 23)) as f32 / (1 << 23) as f32 // [-1, 1), exact
    };
    let mut x = Vec::with_capacity(64 * 256);
    for block in 0..64 {
        for i in 0..256 {
            let u = next();
            let v = match block % 8 {
                0 => u,
                1 => u / 1024.0,
                2 => u * 4096.0,
                3 => {
                    if i % 37 == 0 {
                        u * 64.0
                    } else {
                        u / 8.0
                    }
                }
                4 => u + 1.5,
                5 => 0.75,
                6 => 0.0,
                _ => {
                    if i % 2 == 0 {
                        u.abs()
                    } else {
                        -u.abs() * 2.0
                    }
                }
            };
            x.push(v);
        }
    }
    x
}

const GOLDEN: [(GgmlType, &str); 12] = [
    (
        GgmlType::Q4_0,
        "ad37778d2a9c38cb782abf19b2b18a7118bd99291ef9de4bc1d35052540860c9",
    ),
    (
        GgmlType::Q4_1,
        "3876cd4e472377c515a835b1322dd42a8b7560888b28eb819431b2ac26b23309",
    ),
    (
        GgmlType::Q5_0,
        "5f2e6999122f360c5f7b098dabff46e0c93cabc0b20651b2ffe27cba7990ee2e",
    ),
    (
        GgmlType::Q5_1,
        "5df5962eddecf32efd26200d5d6196d4b9475e71e620f4b7a1501ee3543bf1f2",
    ),
    (
        GgmlType::Q8_0,
        "0d0cebc244fdcda98fb4671efa018a5f651064a8993df909c09134ae7899cdcc",
    ),
    (
        GgmlType::Q8_1,
        "8a488199a94de64ba1b4dfa497bb4331615190c23b87dd23c0933cb8006cbd71",
    ),
    (
        GgmlType::Q2K,
        "b63387231226eee25ac877345f4d92967179e977947b10b4ee7844f5d4505241",
    ),
    (
        GgmlType::Q3K,
        "269350f77667ac285a8e43e6f23de327de53352118ccc83706a4c411bab97751",
    ),
    (
        GgmlType::Q4K,
        "403b483337f0f5c484886fa660effff896671ea85b3d0f01db2a17868d453f12",
    ),
    (
        GgmlType::Q5K,
        "6757829a0006ef9659a59a93f0f3443ff4bcfc0d61aa905165d948ecf695e572",
    ),
    (
        GgmlType::Q6K,
        "b8d41fd2258b0c87f43d26660ed140b666a4ec0e22bc9e48bc220e49e8d61c94",
    ),
    (
        GgmlType::Q8K,
        "c2ea7161a226d11a2682bf74240258ff1cb13a3cc8b7bf25e237f14d311c6978",
    ),
];

#[test]
fn quantizers_match_ggml_bit_for_bit() {
    let x = golden_input();
    if let Ok(dir) = std::env::var("PASSUNTIL_WRITE_GOLDEN_INPUT") {
        let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(format!("{dir}/golden.f32"), bytes).unwrap();
    }
    let mut wrong = Vec::new();
    for (ty, want) in GOLDEN {
        let got = Sha256::digest(quantize_to_vec(ty, &x).unwrap());
        let got: String = got.iter().map(|b| format!("{b:02x}")).collect();
        if got != want {
            wrong.push(format!("{ty}: {got}"));
        }
    }
    assert!(wrong.is_empty(), "differs from ggml:\n{}", wrong.join("\n"));
}
