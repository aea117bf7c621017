//! Benchmarks of passuntil live in `benches/`; this library holds what they share.
//!
//! Run them with `cargo bench -p passuntil-benches -- <filter>`.

/// Deterministic, roughly Gaussian test data (`n` values), without a random-number crate.
pub fn gaussian_like(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| (0..4).map(|_| next()).sum::<f32>() - 2.0)
        .collect()
}
