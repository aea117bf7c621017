//! The engine on the default model (`smollm2-135m`, fetched on first use): prefill, decode
//! and batched sampling on the native engine, and on llama.cpp in the same run when the
//! `llama-cpp` feature is on, so the two can be compared on one machine.
//!
//! - `prefill/<backend>`: one 512-token prompt evaluated in one batch (tokens/s).
//! - `decode/<backend>`: greedy single-sequence steps after a 128-token prompt, the prompt
//!   not timed (tokens/s); as many steps as the samples below have new tokens.
//! - `batched/<backend>`: 64 samples sharing one 128-token prompt, 128 new tokens each at
//!   temperature 1 without stopping at end-of-generation (generated tokens/s; the prompt's
//!   evaluation is timed too). One iteration generates 8192 tokens;
//!   `PASSUNTIL_BENCH_NEW_TOKENS=N` sets the new tokens of both cases and
//!   `PASSUNTIL_BENCH_SAMPLES=S` the samples (`benches/yardstick.py` uses 32 new tokens and
//!   64 samples by default, beside llama.cpp's tools on the same shapes).
//!
//! - `sampling/weights`: the exponentials and their sum over one vocabulary row that a draw
//!   at temperature 1 computes (no model).
//!
//! Each case runs twice on the native engine: `native` (8-bit activations, llama.cpp's bits)
//! and `native-q8-fast` (the same activations on repacked weights, `Activations::Q8Fast`).
//!
//! `PASSUNTIL_BENCH_THREADS` sets the threads of both engines (default 2, the targets' setting);
//! `PASSUNTIL_BENCH_MODEL` another model (a GGUF path or a known name, such as `gemma3-270m`);
//! `PASSUNTIL_BENCH_CLOCK=cpu` times with the process's CPU time ([`passuntil_benches::Clock`]).
//!
//! ```sh
//! cargo bench -p passuntil-benches --features llama-cpp --bench engine
//! ```

use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::backend::{Batch, Context, Logits, Token};
use engine::generate::{generate, GenerateOptions};
use engine::sampling::{argmax, SamplingParams};
use passuntil_benches::Clock;

fn threads() -> usize {
    std::env::var("PASSUNTIL_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn new_tokens() -> usize {
    std::env::var("PASSUNTIL_BENCH_NEW_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128)
}

fn samples() -> usize {
    std::env::var("PASSUNTIL_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(64)
}

fn model_path() -> std::path::PathBuf {
    let name = std::env::var("PASSUNTIL_BENCH_MODEL")
        .unwrap_or_else(|_| engine::models::DEFAULT_MODEL.to_owned());
    engine::models::resolve(&name, &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("cannot resolve the bench model {name}: {e}"))
}

/// A deterministic prompt of `n` ordinary tokens (ids from the middle of the vocabulary).
fn prompt(n: usize) -> Vec<Token> {
    (0..n as u32).map(|i| 1000 + (i * 7919) % 30000).collect()
}

fn prefill_once(b: &mut dyn Context, tokens: &[Token], logits: &mut Logits) {
    b.clear().unwrap();
    let mut batch = Batch::new();
    batch.add_sequence(tokens, 0, 0, false);
    b.decode(&batch, logits).unwrap();
}

/// Evaluates `tokens` as sequence 0 on an emptied cache, then times `steps` greedy
/// single-row decode steps on `clock` (the bench's own: wall or CPU time).
fn decode_steps(
    clock: &Clock,
    b: &mut dyn Context,
    tokens: &[Token],
    steps: usize,
    logits: &mut Logits,
) -> Duration {
    prefill_once(b, tokens, logits);
    let mut batch = Batch::new();
    let mut next = tokens[tokens.len() - 1];
    let start = clock.start();
    for s in 0..steps {
        batch.clear();
        batch.add(next, (tokens.len() + s) as u32, &[0], true);
        b.decode(&batch, logits).unwrap();
        next = argmax(logits.row(0)).unwrap() as Token;
    }
    clock.end(start)
}

fn batched(b: &mut dyn Context, tokens: &[Token]) -> usize {
    let opts = GenerateOptions {
        max_tokens: new_tokens(),
        sampling: SamplingParams::default(),
        seed: 1,
        stop_at_eog: false,
        ..GenerateOptions::default()
    };
    generate(b, tokens, 0, samples() as u64, &opts)
        .unwrap()
        .iter()
        .map(|s| s.tokens.len())
        .sum()
}

type Open<'a> = Box<dyn FnMut(u32, u32) -> Box<dyn Context + 'a> + 'a>;

/// Runs the three groups' cases for one backend.
fn cases(c: &mut Criterion<Clock>, name: &str, open: &mut Open<'_>) {
    let mut logits = Logits::new(0);
    {
        let mut g = c.benchmark_group("prefill");
        g.sample_size(10).warm_up_time(Duration::from_secs(1));
        g.throughput(Throughput::Elements(512));
        let mut b = open(1024, 1);
        let p = prompt(512);
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| prefill_once(b.as_mut(), &p, &mut logits))
        });
    }
    {
        let mut g = c.benchmark_group("decode");
        g.sample_size(10).warm_up_time(Duration::from_secs(1));
        let steps = new_tokens();
        g.throughput(Throughput::Elements(steps as u64));
        let mut b = open((128 + steps + 1) as u32, 1);
        let p = prompt(128);
        let clock = Clock::from_env();
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter_custom(|iters| {
                (0..iters)
                    .map(|_| decode_steps(&clock, b.as_mut(), &p, steps, &mut logits))
                    .sum()
            })
        });
    }
    {
        let mut g = c.benchmark_group("batched");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        let n = samples();
        g.throughput(Throughput::Elements((n * new_tokens()) as u64));
        let mut b = open((128 + n * (new_tokens() + 1) + 64) as u32, n as u32 + 1);
        let p = prompt(128);
        g.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| batched(b.as_mut(), &p))
        });
    }
}

fn engines(c: &mut Criterion<Clock>) {
    let path = model_path();
    let t = threads();
    let native = engine::native::NativeModel::open(&path).unwrap();
    // llama.cpp's bits, then the repacked kernels (`q8-fast`; the panels are built when the
    // first context is made, before anything is timed).
    for (name, mode) in [
        ("native", engine::Activations::Q8),
        ("native-q8-fast", engine::Activations::Q8Fast),
    ] {
        let mut open: Open<'_> = Box::new(|n_ctx, n_seq| {
            Box::new(
                native
                    .new_context(n_ctx, n_seq)
                    .unwrap()
                    .with_threads(t)
                    .unwrap()
                    .with_activations(mode),
            )
        });
        cases(c, name, &mut open);
    }
    #[cfg(feature = "llama-cpp")]
    {
        use engine::llama_cpp::{ContextOptions, LlamaCppModel};
        let lm = LlamaCppModel::open(&path, 0).unwrap();
        // A stream of cells per sequence, as `pass-until run` uses llama.cpp (and as
        // llama-batched-bench does): each holds the prompt and one sample's tokens.
        let per_seq = (128 + new_tokens() + 1).next_multiple_of(256) as u32;
        let mut open: Open<'_> = Box::new(|n_ctx, n_seq| {
            Box::new(
                lm.new_context(&ContextOptions {
                    n_ctx: if n_seq > 1 { n_seq * per_seq } else { n_ctx },
                    n_seq_max: n_seq,
                    threads: Some(t as u32),
                    n_batch: 512,
                    unified_kv: false,
                    ..ContextOptions::default()
                })
                .unwrap(),
            )
        });
        cases(c, "llama.cpp", &mut open);
    }
}

/// One draw's weights over a vocabulary row of the default model's size: `e^(x − max)` for
/// 49,152 logits spread over 30 nats and their sum ([`engine::weights::weights`], what a
/// sample at temperature 1 computes per step), in logits per second.
fn sampling(c: &mut Criterion<Clock>) {
    let row: Vec<f32> = (0..49_152u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0 * 30.0 - 20.0)
        .collect();
    let max = engine::weights::max_or_nan(&row).unwrap() as f64;
    let mut w = Vec::new();
    let mut g = c.benchmark_group("sampling");
    g.throughput(Throughput::Elements(row.len() as u64));
    g.bench_function("weights", |b| {
        b.iter(|| engine::weights::weights(&row, max, 1.0, &mut w))
    });
}

criterion_group! {
    name = benches;
    config = passuntil_benches::criterion();
    targets = sampling, engines
}
criterion_main!(benches);
