//! Block formats: quantization error within ggml's per-type bounds, exact known vectors,
//! robustness on extreme values, and byte entry points at any alignment.

use quant::formats::{dequantize_bytes, dequantize_to_vec, quantize_to_vec};
use quant::GgmlType;
use rand::{Rng, SeedableRng};

/// ggml's `test-quantize-fns` data: `0.1 + 2·cos(i + offset)`.
fn ggml_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
        .collect()
}

/// ggml's `array_rmse`: `sqrt(Σ(a−b)²) / n` (sic: divided by n outside the root).
fn ggml_rmse(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    sum.sqrt() / a.len() as f64
}

fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (err / norm).sqrt()
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize_to_vec(ty, x).unwrap();
    assert_eq!(q.len(), x.len() / ty.block_size() * ty.type_size());
    dequantize_to_vec(ty, &q).unwrap()
}

#[test]
fn quantization_error_within_ggml_bounds() {
    // ggml tests/test-quantize-fns.cpp: MAX_QUANTIZATION_TOTAL_ERROR and its 2- and 3-bit
    // variants, on 32·128 values.
    let x = ggml_data(0.0, 32 * 128);
    for ty in GgmlType::all() {
        let bound = match ty {
            GgmlType::Q2K => 0.0075,
            GgmlType::Q3K => 0.0040,
            _ => 0.002,
        };
        let err = ggml_rmse(&x, &round_trip(ty, &x));
        assert!(err < bound, "{ty}: ggml error {err} ≥ {bound}");
    }
}

#[test]
fn relative_error_per_type_on_gaussian_data() {
    // Tighter than ggml's check: relative RMSE on N(0,1)-like data, per type, 1.2× what the
    // reference quantizers reach (a quantizer that loses a bit fails).
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..256 * 64)
        .map(|_| {
            let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        })
        .collect();
    let bounds = [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 2.6e-4),
        (GgmlType::BF16, 2.0e-3),
        (GgmlType::Q8_0, 6.4e-3),
        (GgmlType::Q8_1, 6.4e-3),
        (GgmlType::Q8K, 8.2e-3),
        (GgmlType::Q6K, 2.1e-2),
        (GgmlType::Q5_0, 5.1e-2),
        (GgmlType::Q5_1, 4.6e-2),
        (GgmlType::Q5K, 4.4e-2),
        (GgmlType::Q4_0, 1.03e-1),
        (GgmlType::Q4_1, 9.5e-2),
        (GgmlType::Q4K, 8.6e-2),
        (GgmlType::Q3K, 1.82e-1),
        (GgmlType::Q2K, 3.56e-1),
    ];
    assert_eq!(bounds.len(), GgmlType::all().count());
    for (ty, bound) in bounds {
        let err = rel_rmse(&x, &round_trip(ty, &x));
        eprintln!("{ty:5} relative rmse {err:.5} (bound {bound})");
        assert!(err <= bound, "{ty}: relative rmse {err} > {bound}");
    }
}

#[test]
fn known_vectors() {
    // Q8_0 of 0..32: amax 31, d = 31/127, q = round(i·127/31).
    let x: Vec<f32> = (0..32).map(|i| i as f32).collect();
    let q = quantize_to_vec(GgmlType::Q8_0, &x).unwrap();
    assert_eq!(&q[..2], &half::f16::from_f32(31.0 / 127.0).to_le_bytes());
    for i in 0..32 {
        assert_eq!(q[2 + i] as i8, (i as f32 * 127.0 / 31.0).round() as i8);
    }
    // Q4_0 of -8..8 by halves: max magnitude -8 → d = 1, q = x + 8.
    let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32 - 8.0).collect();
    let q = quantize_to_vec(GgmlType::Q4_0, &x).unwrap();
    assert_eq!(&q[..2], &half::f16::from_f32(1.0).to_le_bytes());
    for j in 0..16 {
        assert_eq!(q[2 + j], (j as u8) | ((j as u8) << 4));
    }
    assert_eq!(dequantize_to_vec(GgmlType::Q4_0, &q).unwrap(), x);
    // Q4_1 of 0..16 twice: min 0, d = 1, exact.
    let x: Vec<f32> = (0..32).map(|i| (i % 16) as f32).collect();
    let q = quantize_to_vec(GgmlType::Q4_1, &x).unwrap();
    assert_eq!(dequantize_to_vec(GgmlType::Q4_1, &q).unwrap(), x);
    // Q5_0 of -16..16: exact, with the fifth bit set for the upper half.
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    let q = quantize_to_vec(GgmlType::Q5_0, &x).unwrap();
    assert_eq!(&q[2..6], &0xffff_0000u32.to_le_bytes());
    assert_eq!(dequantize_to_vec(GgmlType::Q5_0, &q).unwrap(), x);
    // Q8_K keeps the largest magnitude at -127·d and fills the group sums.
    let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 10.0).collect();
    let q = quantize_to_vec(GgmlType::Q8K, &x).unwrap();
    let d = f32::from_le_bytes(q[..4].try_into().unwrap());
    assert_eq!(d, 1.0 / (-127.0 / 15.5));
    assert_eq!(q[4 + 255] as i8, -127);
    let qs: Vec<i16> = q[4..260].iter().map(|&b| b as i8 as i16).collect();
    for g in 0..16 {
        let bsum = i16::from_le_bytes([q[260 + 2 * g], q[261 + 2 * g]]);
        assert_eq!(bsum, qs[16 * g..16 * g + 16].iter().sum::<i16>());
    }
}

#[test]
fn extreme_values_never_panic() {
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("zeros", vec![0.0; 256]),
        ("negative zeros", vec![-0.0; 256]),
        ("all equal", vec![3.25; 256]),
        ("all equal negative", vec![-1e-3; 256]),
        ("subnormal", vec![f32::MIN_POSITIVE / 8.0; 256]),
        (
            "huge",
            (0..256)
                .map(|i| if i % 2 == 0 { 1e30 } else { -3e29 })
                .collect(),
        ),
        (
            "one spike",
            (0..256)
                .map(|i| if i == 77 { 1000.0 } else { 0.001 })
                .collect(),
        ),
        (
            "nan",
            (0..256)
                .map(|i| if i == 5 { f32::NAN } else { i as f32 })
                .collect(),
        ),
        (
            "inf",
            (0..256)
                .map(|i| if i == 9 { f32::INFINITY } else { -(i as f32) })
                .collect(),
        ),
        ("max", vec![f32::MAX; 256]),
    ];
    for (name, x) in &cases {
        for ty in GgmlType::all() {
            let y = round_trip(ty, x);
            let finite_in = x.iter().all(|v| v.is_finite() && v.abs() < 6e4);
            if finite_in {
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "{ty} on {name}: non-finite output"
                );
            }
            if name.contains("zeros") {
                assert!(y.iter().all(|&v| v == 0.0), "{ty} on {name}: {y:?}");
            }
        }
    }
    // All-equal blocks come back (close to) exactly for the formats with a minimum.
    for ty in [GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q4K, GgmlType::Q5K] {
        let y = round_trip(ty, &cases[3].1);
        assert!(
            y.iter().all(|&v| (v + 1e-3).abs() < 1e-5),
            "{ty}: {:?}",
            &y[..4]
        );
    }
}

#[test]
fn byte_entry_points_work_at_any_alignment() {
    let x = ggml_data(0.5, 512);
    for ty in GgmlType::all() {
        let q = quantize_to_vec(ty, &x).unwrap();
        let aligned = dequantize_to_vec(ty, &q).unwrap();
        let mut shifted = vec![0u8; q.len() + 1];
        shifted[1..].copy_from_slice(&q);
        let mut out = vec![0.0; x.len()];
        dequantize_bytes(ty, &shifted[1..], &mut out).unwrap();
        assert_eq!(
            aligned.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{ty}"
        );
        // And quantizing into a misaligned buffer gives the same bytes.
        let mut qs = vec![0u8; q.len() + 1];
        quant::formats::quantize_bytes(ty, &x, &mut qs[1..]).unwrap();
        assert_eq!(&qs[1..], &q[..], "{ty}");
    }
}

#[test]
fn arbitrary_bytes_dequantize_without_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for ty in GgmlType::all() {
        for _ in 0..50 {
            let blocks = rng.random_range(0..4);
            let bytes: Vec<u8> = (0..blocks * ty.type_size()).map(|_| rng.random()).collect();
            let y = dequantize_to_vec(ty, &bytes).unwrap();
            assert_eq!(y.len(), blocks * ty.block_size());
        }
    }
}
