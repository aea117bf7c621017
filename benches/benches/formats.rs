//! Block formats: reference quantization and dequantization throughput per type, in weights
//! per second, on an L2-sized row set (64 Ki weights). Also the cost of opening and validating
//! the default model's GGUF.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use passuntil_benches::Clock;
use quant::formats::{dequantize_bytes, quantize_bytes};
use quant::GgmlType;

const N: usize = 64 * 1024;

fn formats(c: &mut Criterion<Clock>) {
    let x = passuntil_benches::gaussian_like(N, 1);
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Elements(N as u64));
    for ty in GgmlType::all() {
        let mut q = vec![0u8; N / ty.block_size() * ty.type_size()];
        quantize_bytes(ty, &x, &mut q).unwrap();
        let mut y = vec![0f32; N];
        g.bench_function(BenchmarkId::from_parameter(ty), |b| {
            b.iter(|| dequantize_bytes(ty, &q, &mut y).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("quantize_ref");
    g.throughput(Throughput::Elements(N as u64));
    for ty in GgmlType::all() {
        let mut q = vec![0u8; N / ty.block_size() * ty.type_size()];
        g.bench_function(BenchmarkId::from_parameter(ty), |b| {
            b.iter(|| quantize_bytes(ty, &x, &mut q).unwrap())
        });
    }
    g.finish();
}

fn gguf_open(c: &mut Criterion<Clock>) {
    let model = engine::models::known(engine::models::DEFAULT_MODEL).unwrap();
    let path =
        engine::models::fetch(model, &mut |m| eprintln!("{m}")).expect("fetch default model");
    let mut g = c.benchmark_group("gguf");
    g.bench_function("open_default_model", |b| {
        b.iter(|| quant::gguf::GgufFile::open(&path).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = passuntil_benches::criterion();
    targets = formats, gguf_open
}
criterion_main!(benches);
