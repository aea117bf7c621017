//! The native engine on the default model: a sensible greedy continuation, logits that do
//! not depend on the batch, and (with the `llama-cpp` feature) agreement with llama.cpp.

use engine::backend::{Batch, Context, Logits, TokenizeOptions};
use engine::generate::{greedy, greedy_each};
use engine::native::NativeModel;

fn model() -> std::sync::Arc<NativeModel> {
    NativeModel::open(passuntil_tests::default_model()).expect("the default model loads")
}

#[test]
fn greedy_continuation_is_sensible() {
    let m = model();
    let mut b = m.new_context(256, 1).unwrap();
    let prompt = b
        .tokenize(b"The capital of France is", TokenizeOptions::default())
        .unwrap();
    let sample = greedy(&mut b, &prompt, 8).unwrap();
    let text = String::from_utf8_lossy(&b.detokenize(&sample.tokens).unwrap()).into_owned();
    assert!(text.starts_with(" Paris"), "{text:?}");
}

/// Several prompts continued side by side, one batch per step, give each prompt's own greedy
/// continuation and log-probability (the native engine is batch-invariant); a
/// context too small for all of them continues them one at a time, to the same tokens.
#[test]
fn greedy_continuations_side_by_side_are_each_alone() {
    const N: usize = 24;
    let m = model();
    let opts = TokenizeOptions::default();
    // The chat turn ends early (the model answers and closes its turn), so the others go on
    // in batches without it.
    let texts: [&[u8]; 3] = [
        b"The capital of France is",
        b"<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n",
        b"1, 2, 3,",
    ];
    let mut b = m.new_context(256, 4).unwrap();
    let prompts: Vec<_> = texts.iter().map(|t| b.tokenize(t, opts).unwrap()).collect();
    let together = greedy_each(&mut b, &prompts, N).unwrap();
    let mut one = m.new_context(64, 1).unwrap();
    let apart = greedy_each(&mut one, &prompts, N).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = greedy(&mut b, p, N).unwrap();
        assert_eq!(together[i].tokens, alone.tokens, "prompt {i}");
        assert_eq!(apart[i].tokens, alone.tokens, "prompt {i}");
        assert_eq!(together[i].logprob, alone.logprob, "prompt {i}");
        assert!(!alone.tokens.is_empty());
    }
    let lengths: Vec<usize> = together.iter().map(|s| s.tokens.len()).collect();
    assert!(lengths[1] < N && lengths[0] == N, "{lengths:?}");
    assert!(greedy_each(&mut b, &[prompts[0].clone(), Vec::new()], 4).is_err());
}

#[test]
fn logits_do_not_depend_on_the_batch() {
    let m = model();
    let mut b = m.new_context(128, 4).unwrap();
    let opts = TokenizeOptions::default();
    let p0 = b.tokenize(b"Once upon a time", opts).unwrap();
    let p1 = b.tokenize(b"def fibonacci(n):\n    return", opts).unwrap();
    let p2 = b.tokenize(b"12 + 30 =", opts).unwrap();
    let mut alone = Logits::new(0);
    let mut batch = Batch::new();
    for (i, &t) in p0.iter().enumerate() {
        batch.add(t, i as u32, &[0], i + 1 == p0.len());
    }
    b.decode(&batch, &mut alone).unwrap();
    b.clear().unwrap();
    // The same sequence among others, in sequence 3 this time.
    let mut batch = Batch::new();
    for (s, p) in [(1u32, &p1), (3, &p0), (2, &p2)] {
        for (i, &t) in p.iter().enumerate() {
            batch.add(t, i as u32, &[s], i + 1 == p.len());
        }
    }
    let mut mixed = Logits::new(0);
    b.decode(&batch, &mut mixed).unwrap();
    let same = alone
        .row(0)
        .iter()
        .zip(mixed.row(1))
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "a row's logits changed with its batch");
}

#[test]
fn a_sample_is_the_same_alone_and_among_64_on_1_or_2_threads() {
    use engine::generate::{generate, GenerateOptions};
    use engine::sampling::SamplingParams;

    let m = model();
    let opts = GenerateOptions {
        max_tokens: 16,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 40,
            ..Default::default()
        },
        seed: 11,
        problem: 3,
        stop_at_eog: true,
        top_logprobs: 0,
        stop: Vec::new(),
    };
    // 64 sequences forked from one prompt: the prompt's cells are shared, so 64 × 16 new
    // cells plus the prompt fit in 1100.
    let mut many = m.new_context(1100, 64).unwrap().with_threads(2).unwrap();
    let prompt = many
        .tokenize(b"Once upon a time, there was a", TokenizeOptions::default())
        .unwrap();
    let batch = generate(&mut many, &prompt, 0, 64, &opts).unwrap();
    assert_eq!(batch.len(), 64);
    let distinct: std::collections::BTreeSet<_> = batch.iter().map(|s| &s.tokens).collect();
    assert!(
        distinct.len() > 32,
        "samples should differ: {}",
        distinct.len()
    );
    let mut one = m.new_context(256, 1).unwrap().with_threads(1).unwrap();
    for index in [0u64, 37, 63] {
        let alone = generate(&mut one, &prompt, index, 1, &opts)
            .unwrap()
            .remove(0);
        let inside = &batch[index as usize];
        assert_eq!(alone.index, index);
        assert_eq!(alone.tokens, inside.tokens, "sample {index}");
        assert_eq!(alone.logprob.to_bits(), inside.logprob.to_bits());
    }
}

#[test]
fn cache_limits_are_errors_and_freed_cells_are_reused() {
    use engine::backend::BackendError;

    let m = model();
    let mut b = m.new_context(16, 2).unwrap();
    let mut logits = Logits::new(0);
    let rows = |seq: u32, from: u32, to: u32| {
        let mut batch = Batch::new();
        for p in from..to {
            batch.add(42, p, &[seq], p + 1 == to);
        }
        batch
    };
    b.decode(&rows(0, 0, 10), &mut logits).unwrap();
    // Forking takes no cells: sequence 1 continues with 6 of its own.
    b.copy_sequence(0, 1).unwrap();
    b.decode(&rows(1, 10, 16), &mut logits).unwrap();
    let forked = logits.row(0).to_vec();
    // All 16 cells are taken.
    let err = b.decode(&rows(0, 10, 11), &mut logits).unwrap_err();
    assert!(
        matches!(err, BackendError::CacheFull { n_ctx: 16 }),
        "{err}"
    );
    // A position past the context is refused whatever is free.
    let err = b.decode(&rows(1, 16, 17), &mut logits).unwrap_err();
    assert!(
        matches!(err, BackendError::PositionPastContext { pos: 16, .. }),
        "{err}"
    );
    // Freeing sequence 1 returns its own cells, and the same continuation on sequence 0
    // computes the same logits.
    b.remove_sequence(1, 0, None).unwrap();
    b.decode(&rows(0, 10, 16), &mut logits).unwrap();
    assert_eq!(logits.row(0), &forked[..]);
    assert!(b.copy_sequence(0, 2).is_err());
}

#[test]
fn hooks_see_every_block_and_the_final_norm_without_changing_logits() {
    use engine::hooks::{HookData, HookPoint};
    use std::sync::{Arc, Mutex};

    let m = model();
    let n_layer = m.config().n_layer;
    let d = m.config().n_embd;
    let mut b = m.new_context(64, 2).unwrap();
    let mut batch = Batch::new();
    batch.add_sequence(&[504, 3575, 282], 0, 0, false);
    batch.add_sequence(&[4649, 314], 0, 1, false);
    let mut plain = Logits::new(0);
    b.decode(&batch, &mut plain).unwrap();
    b.clear().unwrap();

    /// What the hook saw at one point: where, which rows, their states.
    type Seen = (HookPoint, Vec<usize>, Vec<f32>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    b.set_hook(Some(Box::new(move |h: &HookData<'_>| {
        assert_eq!(h.hidden.len(), h.rows.len() * h.n_embd);
        sink.lock()
            .unwrap()
            .push((h.point, h.rows.to_vec(), h.hidden.to_vec()));
    })));
    let mut hooked = Logits::new(0);
    b.decode(&batch, &mut hooked).unwrap();
    assert!(b.set_hook(None).is_some());
    assert_eq!(plain.row(0), hooked.row(0));
    assert_eq!(plain.row(1), hooked.row(1));

    let all = seen.lock().unwrap();
    assert_eq!(all.len(), 4 * n_layer + 1);
    // Per block: its attention input, attention output, FFN input, then its output.
    for (l, four) in all[..4 * n_layer].chunks(4).enumerate() {
        let points: Vec<HookPoint> = four.iter().map(|s| s.0).collect();
        assert_eq!(
            points,
            [
                HookPoint::AttnInput(l),
                HookPoint::AttnOutput(l),
                HookPoint::FfnInput(l),
                HookPoint::Block(l)
            ]
        );
        for (_, rows, hidden) in four {
            assert_eq!(rows, &[0, 1, 2, 3, 4]);
            assert_eq!(hidden.len(), 5 * d);
        }
    }
    let seen: Vec<&Seen> = all
        .iter()
        .filter(|s| matches!(s.0, HookPoint::Block(_) | HookPoint::FinalNorm))
        .collect();
    // The final norm covers the rows that asked for logits (the last of each sequence), and
    // is RMSNorm of the last block's output times output_norm.weight; the head applied to the
    // last block's output (the logit lens at the top) gives the logits.
    let (point, rows, normed) = &seen[n_layer];
    assert_eq!(*point, HookPoint::FinalNorm);
    assert_eq!(rows, &[2, 4]);
    let file = quant::gguf::GgufFile::open(passuntil_tests::default_model()).unwrap();
    let w = file.tensor("output_norm.weight").unwrap().to_f32().unwrap();
    let last = &seen[n_layer - 1].2;
    for (k, &r) in rows.iter().enumerate() {
        let x = &last[r * d..(r + 1) * d];
        let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ms + m.config().rms_eps).sqrt();
        for j in 0..d {
            let want = x[j] * scale * w[j];
            let got = normed[k * d + j];
            assert!(
                (want - got).abs() <= 1e-5 * want.abs().max(1.0),
                "{j}: {want} {got}"
            );
        }
    }
}

#[test]
fn teacher_forced_scores_equal_the_generation_logprobs() {
    use engine::generate::{generate, score_continuation, GenerateOptions};

    let m = model();
    let mut b = m.new_context(128, 1).unwrap();
    let prompt = b
        .tokenize(b"def fibonacci(n):", TokenizeOptions::default())
        .unwrap();
    let opts = GenerateOptions {
        max_tokens: 12,
        seed: 5,
        top_logprobs: 4,
        ..Default::default()
    };
    let s = generate(&mut b, &prompt, 0, 1, &opts).unwrap().remove(0);
    assert_eq!(s.per_token.len(), s.tokens.len());
    // Scored in one batch, the sampled tokens get the log-probabilities they were drawn with.
    let scored = score_continuation(&mut b, &prompt, &s.tokens, 4, 64).unwrap();
    for (i, (g, t)) in s.per_token.iter().zip(&scored.per_token).enumerate() {
        assert_eq!(g.logprob.to_bits(), t.logprob.to_bits(), "token {i}");
        assert_eq!(g.top, t.top, "token {i}");
        assert!(g.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    assert!((scored.logprob - s.logprob).abs() < 1e-9);
    assert_eq!(
        scored.is_greedy,
        scored.greedy.iter().all(|&g| g),
        "{:?}",
        scored.greedy
    );
    assert!(score_continuation(&mut b, &prompt, &[u32::MAX], 0, 8).is_err());
}

#[cfg(feature = "llama-cpp")]
use passuntil_tests::parity::{
    llama_cpp_context, llama_cpp_turn, report, rewrite, totals, BITWISE, PARITY_PROMPTS,
    VARIANT_LAYERS,
};

/// The parity check on the default model's weights exactly: its Q4_1 and Q8_0 tensors
/// dequantized into an F32 file (lossless), which takes the float kernels instead of the
/// quantized ones. 10 prompts × 128 greedy tokens from llama.cpp, scored by both: mean KL below
/// 1e-3 (measured: about 4e-7; the float matrix products are not llama.cpp's sequence) and
/// llama.cpp's greedy token reproduced at ≥ 99% of positions.
#[cfg(feature = "llama-cpp")]
#[test]
fn matches_llama_cpp_on_exact_weights() {
    let _turn = llama_cpp_turn();
    use engine::llama_cpp::LlamaCppModel;

    let f32_file = passuntil_tests::exact_weights();
    let m = NativeModel::open(f32_file).unwrap();
    let mut native = m.new_context(512, 1).unwrap();
    let lm = LlamaCppModel::open(f32_file, 0).unwrap();
    let mut llama = llama_cpp_context(&lm);
    let parity =
        engine::parity::compare(&mut llama, &mut native, &PARITY_PROMPTS, 128, 64).unwrap();
    let (mut positions, mut agree, mut kl) = (0, 0.0, 0.0);
    for r in &parity {
        report(r);
        assert!(r.same_tokens, "{}: tokenized differently", r.prompt);
        positions += r.positions;
        agree += r.top1_agreement * r.positions as f64;
        kl += r.mean_kl * r.positions as f64;
    }
    let (agree, kl) = (agree / positions as f64, kl / positions as f64);
    eprintln!("{positions} positions: greedy tokens identical at {agree:.4}, mean KL {kl:.2e}");
    assert!(positions >= 1000, "{positions} positions");
    assert!(agree >= 0.99, "greedy agreement {agree}");
    assert!(kl < 1e-3, "mean KL {kl}");
}

/// RoPE scaling against llama.cpp, on the exact weights' first `VARIANT_LAYERS` blocks with
/// the settings written into them: linear scaling with per-pair frequency factors
/// (`rope_freqs.weight`, as Llama 3.1 files have), and YaRN from a shorter original context
/// with an attention factor (as Qwen2.5's long-context files have).
#[cfg(feature = "llama-cpp")]
#[test]
fn rope_scaling_and_factors_match_llama_cpp() {
    let _turn = llama_cpp_turn();
    use engine::llama_cpp::LlamaCppModel;
    use quant::gguf::{GgufFile, Value};

    let tmp = tempfile::tempdir().unwrap();
    let plain_file = tmp.path().join("plain.gguf");
    let src = GgufFile::open(passuntil_tests::exact_weights()).unwrap();
    rewrite(
        &src,
        src.metadata().clone(),
        VARIANT_LAYERS,
        &[],
        &plain_file,
    );
    let plain = NativeModel::open(&plain_file).unwrap();
    let prompts = &PARITY_PROMPTS[..3];

    let scaled = |ty: &str| {
        vec![
            ("llama.rope.scaling.type", Value::String(ty.into())),
            ("llama.rope.scaling.factor", Value::F32(4.0)),
        ]
    };
    let mut yarn = scaled("yarn");
    yarn.push((
        "llama.rope.scaling.original_context_length",
        Value::U32(2048),
    ));
    yarn.push(("llama.rope.scaling.attn_factor", Value::F32(0.8)));
    // Slow the upper half of the 32 frequency pairs 8×.
    let factors: Vec<f32> = (0..32).map(|i| if i < 16 { 1.0 } else { 8.0 }).collect();
    let variants = [
        (
            "linear",
            scaled("linear"),
            vec![("rope_freqs.weight".to_owned(), factors)],
        ),
        ("yarn", yarn, vec![]),
    ];
    for (name, settings, extra) in variants {
        let path = tmp.path().join(format!("{name}.gguf"));
        let mut md = src.metadata().clone();
        for (k, v) in settings {
            md.insert(k, v);
        }
        rewrite(&src, md, VARIANT_LAYERS, &extra, &path);
        {
            let m = NativeModel::open(&path).unwrap();
            assert_eq!(m.config().rope_freq_scale, 0.25);
            assert_eq!(m.config().rope_yarn.is_some(), name == "yarn");
            let mut native = m.new_context(512, 1).unwrap();
            let lm = LlamaCppModel::open(&path, 0).unwrap();
            let mut llama = llama_cpp_context(&lm);
            let parity = engine::parity::compare(&mut llama, &mut native, prompts, 48, 64).unwrap();
            for r in &parity {
                report(r);
                assert!(
                    r.mean_kl < 1e-4,
                    "{name}, {}: mean KL {}",
                    r.prompt,
                    r.mean_kl
                );
                assert_eq!(r.greedy_agreement, r.positions, "{name}, {}", r.prompt);
            }
            // The settings matter: the unscaled model's logits are far from these.
            let mut unscaled = plain.new_context(512, 1).unwrap();
            let far = engine::parity::compare(&mut native, &mut unscaled, prompts, 16, 64).unwrap();
            assert!(far.iter().any(|r| r.mean_kl > 1e-2), "{name}: {far:?}");
        }
        // The models are closed: the file goes before the next one is written.
        std::fs::remove_file(&path).unwrap();
    }
}

/// The qwen2 architecture (query/key/value biases, NeoX RoPE ordering) against llama.cpp: the
/// default model's exact weights (first `VARIANT_LAYERS` blocks) relabelled as qwen2, with
/// random biases added. The function
/// is not the trained one (the weights were laid out for the other ordering), but it is
/// well defined, and both engines must compute it alike.
#[cfg(feature = "llama-cpp")]
#[test]
fn qwen2_biases_and_neox_rope_match_llama_cpp() {
    let _turn = llama_cpp_turn();
    use engine::llama_cpp::LlamaCppModel;
    use quant::gguf::{GgufFile, Metadata, Value};

    let tmp = tempfile::tempdir().unwrap();
    let qwen = tmp.path().join("qwen2.gguf");
    {
        let src = GgufFile::open(passuntil_tests::exact_weights()).unwrap();
        let mut md = Metadata::new();
        for (k, v) in src.metadata().iter() {
            let k = match k.strip_prefix("llama.") {
                Some(rest) => format!("qwen2.{rest}"),
                None => k.to_owned(),
            };
            md.insert(k, v.clone());
        }
        md.insert("general.architecture", Value::String("qwen2".into()));
        let mut seed = 3u64;
        let mut bias = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        };
        let mut biases = Vec::new();
        for l in 0..VARIANT_LAYERS {
            for (name, n) in [("attn_q", 576), ("attn_k", 192), ("attn_v", 192)] {
                biases.push((format!("blk.{l}.{name}.bias"), bias(n)));
            }
        }
        rewrite(&src, md, VARIANT_LAYERS, &biases, &qwen);
    }
    let m = NativeModel::open(&qwen).unwrap();
    assert!(m.config().rope_neox);
    let mut native = m.new_context(512, 1).unwrap();
    let lm = LlamaCppModel::open(&qwen, 0).unwrap();
    let mut llama = llama_cpp_context(&lm);
    let parity =
        engine::parity::compare(&mut llama, &mut native, &PARITY_PROMPTS[..3], 32, 64).unwrap();
    for r in &parity {
        report(r);
        assert!(r.mean_kl < 1e-4, "{}: mean KL {}", r.prompt, r.mean_kl);
        assert!(
            r.top1_agreement >= 0.99,
            "{}: top-1 {}",
            r.prompt,
            r.top1_agreement
        );
    }
}

/// Issue 5's parity check on the shipped Q4_1 file: 10 prompts × 128 greedy tokens from
/// llama.cpp, scored by both engines teacher-forced: mean KL below 1e-3 and llama.cpp's greedy
/// token reproduced at ≥ 99% of positions.
///
/// On x86-64 with AVX2 and FMA the native engine follows llama.cpp's float sequence step by
/// step (activation quantizer, kernel accumulation order, vector `exp`, softmax and attention
/// sums, RMSNorm, RoPE), and then the logits must be equal bit for bit. Any one-ulp difference
/// upstream of an 8-bit activation rounding would show: flips compound over 30 layers to a
/// mean KL of about 3e-3 (what this test measured before the sequences matched).
#[cfg(feature = "llama-cpp")]
#[test]
fn matches_llama_cpp_on_the_default_model() {
    let _turn = llama_cpp_turn();
    use engine::llama_cpp::LlamaCppModel;

    let m = model();
    let mut native = m.new_context(512, 1).unwrap();
    let lm = LlamaCppModel::open(passuntil_tests::default_model(), 0).unwrap();
    let mut llama = llama_cpp_context(&lm);
    let parity =
        engine::parity::compare(&mut llama, &mut native, &PARITY_PROMPTS, 128, 64).unwrap();
    let (positions, agree, kl, max_diff) = totals(&parity);
    assert!(positions >= 1000, "{positions} positions");
    assert!(agree >= 0.99, "greedy agreement {agree}");
    assert!(kl < 1e-3, "mean KL {kl}");
    if BITWISE {
        assert_eq!(max_diff, 0.0, "logits differ from llama.cpp's");
    }
}

/// Exact activations (`Activations::Exact`) on the Q4_1 file against llama.cpp on the same
/// weights dequantized to F32, which llama.cpp multiplies without rounding activations: the
/// weights are then the only difference left, and there is none (mean KL below 1e-5; only
/// the order of f32 sums differs). The default 8-bit mode is far from it by comparison.
#[cfg(feature = "llama-cpp")]
#[test]
fn exact_activations_match_llama_cpp_on_dequantized_weights() {
    let _turn = llama_cpp_turn();
    use engine::llama_cpp::LlamaCppModel;
    use engine::Activations;

    let m = model();
    let mut exact = m
        .new_context(512, 1)
        .unwrap()
        .with_activations(Activations::Exact);
    let lm = LlamaCppModel::open(passuntil_tests::exact_weights(), 0).unwrap();
    let mut llama = llama_cpp_context(&lm);
    let parity = engine::parity::compare(&mut llama, &mut exact, &PARITY_PROMPTS, 64, 64).unwrap();
    let (mut positions, mut kl) = (0, 0.0);
    for r in &parity {
        report(r);
        positions += r.positions;
        kl += r.mean_kl * r.positions as f64;
        assert_eq!(r.greedy_agreement, r.positions, "{}", r.prompt);
    }
    let kl = kl / positions as f64;
    eprintln!("exact activations: {positions} positions, mean KL {kl:.2e}");
    assert!(kl < 1e-5, "mean KL {kl}");
    let mut q8 = m.new_context(512, 1).unwrap();
    let far = engine::parity::compare(&mut llama, &mut q8, &PARITY_PROMPTS[..3], 64, 64).unwrap();
    let far_kl = far.iter().map(|r| r.mean_kl).sum::<f64>() / 3.0;
    eprintln!("8-bit activations: mean KL {far_kl:.2e}");
    assert!(far_kl > 100.0 * kl, "{far_kl} vs {kl}");
}

/// The logits of one prompt alone on one thread and of the same prompt beside another on two
/// threads, in activation mode `mode`: bitwise the same (asserted); returns them.
fn alone_and_mixed(mode: engine::Activations) -> Vec<f32> {
    let m = model();
    let opts = TokenizeOptions::default();
    let mut one = m
        .new_context(128, 4)
        .unwrap()
        .with_threads(1)
        .unwrap()
        .with_activations(mode);
    let p0 = one.tokenize(b"Once upon a time", opts).unwrap();
    let p1 = one.tokenize(b"def fibonacci(n):", opts).unwrap();
    let mut alone = Logits::new(0);
    let mut batch = Batch::new();
    for (i, &t) in p0.iter().enumerate() {
        batch.add(t, i as u32, &[0], i + 1 == p0.len());
    }
    one.decode(&batch, &mut alone).unwrap();
    let mut two = m
        .new_context(128, 4)
        .unwrap()
        .with_threads(2)
        .unwrap()
        .with_activations(mode);
    let mut batch = Batch::new();
    for (s, p) in [(1u32, &p1), (2, &p0)] {
        for (i, &t) in p.iter().enumerate() {
            batch.add(t, i as u32, &[s], i + 1 == p.len());
        }
    }
    let mut mixed = Logits::new(0);
    two.decode(&batch, &mut mixed).unwrap();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(
        same(alone.row(0), mixed.row(1)),
        "{mode}: alone and mixed differ"
    );
    alone.row(0).to_vec()
}

/// The default mode's logits of the prompt `alone_and_mixed` uses.
fn q8_logits() -> Vec<f32> {
    let m = model();
    let mut q8 = m.new_context(128, 4).unwrap();
    let p0 = q8
        .tokenize(b"Once upon a time", TokenizeOptions::default())
        .unwrap();
    let mut batch = Batch::new();
    for (i, &t) in p0.iter().enumerate() {
        batch.add(t, i as u32, &[0], i + 1 == p0.len());
    }
    let mut rounded = Logits::new(0);
    q8.decode(&batch, &mut rounded).unwrap();
    rounded.row(0).to_vec()
}

/// llama.cpp has no such mode, and says so (when the feature is on).
fn llama_cpp_refuses(mode: engine::Activations) {
    #[cfg(feature = "llama-cpp")]
    {
        let lm =
            engine::llama_cpp::LlamaCppModel::open(passuntil_tests::default_model(), 0).unwrap();
        let e = engine::Model::context(
            lm,
            &engine::ContextOptions {
                activations: mode,
                ..engine::ContextOptions::new(64, 1)
            },
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("native"), "{mode}: {e}");
    }
    let _ = mode;
}

/// Exact activations keep the batch invariance: a sample's logits alone and among others, on
/// one or two threads, are the same bits; and they differ from the 8-bit mode's.
#[test]
fn exact_activations_do_not_depend_on_the_batch() {
    use engine::Activations;
    let exact = alone_and_mixed(Activations::Exact);
    assert_ne!(exact, q8_logits());
    llama_cpp_refuses(Activations::Exact);
}

/// The repacked kernels (`q8-fast`) keep the batch and thread invariance, and are as close to
/// the unrounded computation as the default mode. They are not close to the default mode's
/// bits: a one-ulp difference in a block's sum moves some activation across a rounding
/// boundary at the next 8-bit quantization, so the two drift apart by as much as 8-bit
/// activations differ from exact ones (measured on this prompt: hidden states 1e-3 apart
/// after the first block, 3e-2 at the final norm, against 4e-2 for exact against q8). So both
/// are scored against exact activations on four prompts' greedy continuations (teacher-forced:
/// every position's distribution, mean KL and argmax agreement).
#[test]
fn fast_kernels_do_not_depend_on_the_batch_and_are_as_close_to_exact_as_q8() {
    use engine::Activations;
    let fast = alone_and_mixed(Activations::Q8Fast);
    assert_ne!(fast, q8_logits(), "q8-fast took the default kernels");
    let m = model();
    let mut exact = m
        .new_context(256, 1)
        .unwrap()
        .with_activations(Activations::Exact);
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time, in a small village,",
        "Water boils at",
    ];
    let mut against_exact = |mode: Activations| {
        let mut b = m.new_context(256, 1).unwrap().with_activations(mode);
        let parity = engine::parity::compare(&mut exact, &mut b, &prompts, 48, 64).unwrap();
        // Per position (teacher-forced), not the greedy prefix before the first divergence:
        // one early near-tie ends a prefix, which made that measure swing between machines
        // (0.54 on an AVX-512 VM, 0.86 on an AVX2 one for the same mode).
        let (mut positions, mut agree, mut prefix, mut kl) = (0, 0.0, 0, 0.0);
        for r in &parity {
            positions += r.positions;
            agree += r.top1_agreement * r.positions as f64;
            prefix += r.greedy_agreement;
            kl += r.mean_kl * r.positions as f64;
        }
        let (agree, kl) = (agree / positions as f64, kl / positions as f64);
        let prefix = prefix as f64 / positions as f64;
        eprintln!(
            "{mode} against exact: {positions} positions, argmax agreement {agree:.3} \
             (greedy prefix {prefix:.3}), mean KL {kl:.2e}"
        );
        (agree, kl)
    };
    let (q8_agree, q8_kl) = against_exact(Activations::Q8);
    let (fast_agree, fast_kl) = against_exact(Activations::Q8Fast);
    // Measured (AVX2 build, 2026-12-04): mean KL 3.2e-3 against q8's 2.9e-3; argmax
    // agreement per position 0.983 against 0.994, greedy prefixes 0.58 against 0.86 (174
    // positions, where one flipped near-tie is 0.006).
    assert!(
        fast_kl < 1.5 * q8_kl,
        "mean KL {fast_kl} against q8's {q8_kl}"
    );
    assert!(
        fast_agree >= q8_agree - 0.05,
        "agreement {fast_agree} against q8's {q8_agree}"
    );
    llama_cpp_refuses(Activations::Q8Fast);
}
