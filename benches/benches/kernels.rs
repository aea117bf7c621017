//! Kernels: dot products per format × instruction set at L1, L2 and DRAM working sets, the
//! quantized GEMM at the default model's shapes, and this machine's memory bandwidth measured
//! in the same run (the ceiling for DRAM-sized GEMV).
//!
//! Units: `vec_dot` and `membw` report bytes of weights read per second; `gemm` reports
//! elements per second where one element is one floating-point operation (a multiply-add
//! counts 2), i.e. FLOP/s. Weight GB/s of a GEMM is FLOP/s × row bytes / (2 · cols · batch).
//!
//! Groups: `cargo bench -p passuntil-benches --bench kernels -- membw` (or `vec_dot`, `gemm`,
//! `gemm_fast` (the panel kernels of `q8-fast`),
//! `gemm_ggml_case`, `quantize_act`, `attention` (the gathered products over a key/value
//! cache)). `gemm_ggml_case` is the matrix llama.cpp's
//! `test-backend-ops perf -o MUL_MAT` times, for a side-by-side comparison.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use passuntil_benches::Clock;
use quant::dispatch::Isa;
use quant::dot::{
    gathered_axpy_with, gathered_dots_with, quantize_activations_with, sequential_axpy_with,
    vec_dot_many_with, Activation, Gather, VecDot,
};
use quant::formats::{
    bf16, f16, quantize_row, Block, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K,
    BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
};
use quant::gemm::{matmul_with, QMatrix, Scratch};
use quant::panels::{matmul_panels_with, PanelMatrix};
use quant::GgmlType;
use rayon::prelude::*;

/// Activation length of every `vec_dot` row (the default model's FFN width).
const K: usize = 1536;

/// Working sets of weights: inside L1, inside L2, far beyond the last-level cache.
const SETS: [(&str, usize); 3] = [("L1", 16 << 10), ("L2", 512 << 10), ("DRAM", 256 << 20)];

fn quiet(g: &mut criterion::BenchmarkGroup<'_, Clock>) {
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    g.sample_size(10);
}

/// `bytes` of weights of type `W`: a few rows quantized from Gaussian-like data, repeated.
fn weights<W: Block>(bytes: usize) -> Vec<W> {
    let unique = 64 * K;
    let x = passuntil_benches::gaussian_like(unique, 7);
    let mut seed = vec![W::zeroed(); unique / W::SIZE];
    quantize_row(&x, &mut seed).unwrap();
    let blocks = (bytes / std::mem::size_of::<W>()).max(K / W::SIZE);
    let blocks = blocks / (K / W::SIZE) * (K / W::SIZE);
    seed.iter().cycle().take(blocks).copied().collect()
}

fn activations<A: Activation>(n: usize) -> Vec<A> {
    let x = passuntil_benches::gaussian_like(n, 11);
    let mut a = vec![A::zeroed(); n / A::SIZE];
    quantize_activations_with(Isa::Scalar, &x, &mut a).unwrap();
    a
}

fn bench_vec_dot<W: VecDot>(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group(format!("vec_dot/{}", W::TYPE));
    quiet(&mut g);
    let a = activations::<W::Act>(K);
    let per_row = K / W::SIZE;
    for (set, bytes) in SETS {
        let w = weights::<W>(bytes);
        let total = std::mem::size_of_val(w.as_slice());
        g.throughput(Throughput::Bytes(total as u64));
        let mut out = [0f32];
        for isa in Isa::available() {
            if set == "DRAM" && isa == Isa::Scalar {
                continue; // minutes per sample, and no question it answers
            }
            g.bench_function(BenchmarkId::new(isa.name(), set), |b| {
                b.iter(|| {
                    for row in w.chunks_exact(per_row) {
                        vec_dot_many_with(isa, row, &[&a], &mut out).unwrap();
                    }
                    out[0]
                })
            });
        }
    }
    g.finish();
}

fn vec_dot(c: &mut Criterion<Clock>) {
    bench_vec_dot::<BlockQ4_0>(c);
    bench_vec_dot::<BlockQ4_1>(c);
    bench_vec_dot::<BlockQ5_0>(c);
    bench_vec_dot::<BlockQ5_1>(c);
    bench_vec_dot::<BlockQ8_0>(c);
    bench_vec_dot::<BlockQ2K>(c);
    bench_vec_dot::<BlockQ3K>(c);
    bench_vec_dot::<BlockQ4K>(c);
    bench_vec_dot::<BlockQ5K>(c);
    bench_vec_dot::<BlockQ6K>(c);
    bench_vec_dot::<f32>(c);
    bench_vec_dot::<f16>(c);
    bench_vec_dot::<bf16>(c);
}

/// Streaming read of a 256 MiB buffer on every thread, then on one: the bandwidth a GEMV over
/// DRAM-sized weights can at best reach.
fn membw(c: &mut Criterion<Clock>) {
    let buf: Vec<u64> = (0..(256usize << 20) / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("membw");
    quiet(&mut g);
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    g.bench_function("read_all_threads", |b| {
        b.iter(|| {
            buf.par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |s, &v| s.wrapping_add(v)))
                .reduce(|| 0, u64::wrapping_add)
        })
    });
    g.bench_function("read_one_thread", |b| {
        b.iter(|| buf.iter().fold(0u64, |s, &v| s.wrapping_add(v)))
    });
    g.finish();
}

/// The default model's matrix shapes (rows × cols): attention projections, FFN up/gate, FFN
/// down, output head.
const SHAPES: [(usize, usize); 4] = [(576, 576), (1536, 576), (576, 1536), (49152, 576)];

/// Each of `types` at the default model's shapes (those its blocks divide) and batches 1, 8,
/// 64, 256, timing `run(matrix, prepare(matrix), ...)` on each batch.
fn gemm_group<P>(
    c: &mut Criterion<Clock>,
    name: &str,
    types: &[GgmlType],
    prepare: impl Fn(&QMatrix<'_>) -> P,
    run: impl Fn(&QMatrix<'_>, &P, &[f32], &mut [f32], &mut Scratch),
) {
    let isa = Isa::best();
    for &ty in types {
        let mut g = c.benchmark_group(format!("{name}/{ty}/{isa}"));
        quiet(&mut g);
        // K-quant rows must be whole super-blocks of 256 (llama.cpp falls back to other types).
        for (rows, cols) in SHAPES.into_iter().filter(|s| s.1 % ty.block_size() == 0) {
            let x = passuntil_benches::gaussian_like(rows * cols, 3);
            let bytes = quant::formats::quantize_to_vec(ty, &x).unwrap();
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let p = prepare(&m);
            for batch in [1, 8, 64, 256] {
                let a = passuntil_benches::gaussian_like(batch * cols, 5);
                let mut out = vec![0f32; batch * rows];
                let mut scratch = Scratch::default();
                g.throughput(Throughput::Elements((2 * rows * cols * batch) as u64));
                let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("b{batch}"));
                g.bench_function(id, |b| b.iter(|| run(&m, &p, &a, &mut out, &mut scratch)));
            }
        }
        g.finish();
    }
}

fn gemm(c: &mut Criterion<Clock>) {
    let isa = Isa::best();
    // The float formats too: models served unquantized, and the exact-weights files the
    // parity tests use.
    let types = [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::F16,
        GgmlType::F32,
    ];
    gemm_group(
        c,
        "gemm",
        &types,
        |_| (),
        |m, _, a, out, s| matmul_with(isa, m, a, out, s).unwrap(),
    );
}

/// The same shapes with the panel kernels (`q8-fast`: weights repacked at load, block sums in
/// integers) for the default model's formats that have them.
fn gemm_fast(c: &mut Criterion<Clock>) {
    let isa = Isa::best();
    let types = [GgmlType::Q4_1, GgmlType::Q8_0];
    let prepare = |m: &QMatrix<'_>| PanelMatrix::new(m).unwrap();
    gemm_group(c, "gemm_fast", &types, prepare, |_, p, a, out, s| {
        matmul_panels_with(isa, &[p], a, &mut [out], s).unwrap()
    });
}

/// The case llama.cpp's `test-backend-ops perf -o MUL_MAT` times (m = 4096 rows, k = 14336,
/// n = 1, 8, 512), so that the two can be set side by side on one machine.
fn gemm_ggml_case(c: &mut Criterion<Clock>) {
    let isa = Isa::best();
    let (rows, cols) = (4096, 14336);
    let x = passuntil_benches::gaussian_like(rows * cols, 3);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4K] {
        let mut g = c.benchmark_group(format!("gemm_ggml_case/{ty}/{isa}"));
        quiet(&mut g);
        let bytes = quant::formats::quantize_to_vec(ty, &x).unwrap();
        let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
        for batch in [1, 8, 512] {
            let a = passuntil_benches::gaussian_like(batch * cols, 5);
            let mut out = vec![0f32; batch * rows];
            let mut scratch = Scratch::default();
            g.throughput(Throughput::Elements((2 * rows * cols * batch) as u64));
            g.bench_function(BenchmarkId::new("4096x14336", format!("b{batch}")), |b| {
                b.iter(|| matmul_with(isa, &m, &a, &mut out, &mut scratch).unwrap())
            });
        }
        g.finish();
    }
}

fn bench_quantize<A: Activation>(c: &mut Criterion<Clock>) {
    let mut g = c.benchmark_group(format!("quantize_act/{}", A::TYPE));
    quiet(&mut g);
    let x = passuntil_benches::gaussian_like(64 * 256, 9);
    let mut out = vec![A::zeroed(); x.len() / A::SIZE];
    g.throughput(Throughput::Elements(x.len() as u64));
    for isa in Isa::available() {
        g.bench_function(isa.name(), |b| {
            b.iter(|| quantize_activations_with(isa, &x, &mut out).unwrap())
        });
    }
    g.finish();
}

fn quantize_act(c: &mut Criterion<Clock>) {
    bench_quantize::<BlockQ8_0>(c);
    bench_quantize::<BlockQ8_1>(c);
    bench_quantize::<BlockQ8K>(c);
}

/// Attention's gathered products as batched sampling meets them in the default model: three
/// query heads against one key/value head of 64 values over 160 cells, the 128 of a shared
/// prompt and 32 of the sequence's own, which lie 64 cells apart (each decoding step wrote
/// one cell per sequence). `hot`: one sequence's cells, read again and again (20 KiB as f16,
/// 40 KiB as f32: in L1 or L2); `cold`: each call the next of 64 sequences of the next layer
/// of a 64 MiB cache (f16; 128 MiB as f32), as a batched step meets them: the shared cells
/// are read again within a layer and stay cached, a sequence's own come from memory.
/// Elements: multiply-adds × 2.
fn attention(c: &mut Criterion<Clock>) {
    const HD: usize = 64;
    const SHARED: usize = 128;
    const OWN: usize = 32;
    const SEQS: usize = 64;
    const GROUP: usize = 3;
    let n = SHARED + OWN;
    let cells_per_cache = |layers: usize| layers * (SHARED + SEQS * OWN);
    for (set, layers) in [
        ("hot", 1),
        ("cold", (64 << 20) / (2 * HD * cells_per_cache(1))),
    ] {
        let cells = cells_per_cache(layers);
        let x = passuntil_benches::gaussian_like(cells * HD, 5);
        let cache: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let wide: Vec<f32> = cache.iter().map(|v| v.to_f32()).collect();
        // Sequence `s` of layer `l`: the layer's shared cells, then its own every 64 cells.
        // `hot` reads sequence 0 of its single layer only.
        let lists = if layers == 1 { 1 } else { layers * SEQS };
        let slots: Vec<Vec<u32>> = (0..lists)
            .map(|t| {
                let (l, s) = (t / SEQS, t % SEQS);
                let base = l * (SHARED + SEQS * OWN);
                (0..SHARED)
                    .map(|i| base + i)
                    .chain((0..OWN).map(|j| base + SHARED + j * SEQS + s))
                    .map(|c| c as u32)
                    .collect()
            })
            .collect();
        let q = passuntil_benches::gaussian_like(GROUP * HD, 3);
        let w: Vec<f32> = passuntil_benches::gaussian_like(GROUP * n, 9)
            .iter()
            .map(|v| v.abs() / n as f32)
            .collect();
        let mut g = c.benchmark_group(format!("attention/{set}"));
        quiet(&mut g);
        g.throughput(Throughput::Elements((2 * GROUP * n * HD) as u64));
        for isa in Isa::available() {
            let mut t = 0;
            let mut scores = vec![0f32; GROUP * n];
            let mut out = vec![0f32; GROUP * HD];
            for f32_rows in [false, true] {
                let suffix = if f32_rows { "_f32" } else { "" };
                // The next sequence's rows, as the cache holds them (f16) or widened.
                let mut next = || {
                    t = (t + 1) % slots.len();
                    match f32_rows {
                        true => Gather::new(&wide, HD, 0, HD, &slots[t]),
                        false => Gather::new_f16(&cache, HD, 0, HD, &slots[t]),
                    }
                    .unwrap()
                };
                g.bench_function(BenchmarkId::new(format!("dots{suffix}"), isa.name()), |b| {
                    b.iter(|| gathered_dots_with(isa, &q, &next(), &mut scores).unwrap())
                });
                g.bench_function(BenchmarkId::new(format!("axpy{suffix}"), isa.name()), |b| {
                    b.iter(|| gathered_axpy_with(isa, &w, &next(), &mut out).unwrap())
                });
                // `q8-fast`'s weighted sums: one chain per element in cell order.
                let id = BenchmarkId::new(format!("seq_axpy{suffix}"), isa.name());
                g.bench_function(id, |b| {
                    b.iter(|| sequential_axpy_with(isa, &w, &next(), &mut out).unwrap())
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = passuntil_benches::criterion();
    targets =
    membw,
    vec_dot,
    gemm,
    gemm_fast,
    gemm_ggml_case,
    quantize_act,
    attention
}
criterion_main!(benches);
