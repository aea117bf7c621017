//! The llama.cpp backend on the default model: tokenization round trips, greedy generation,
//! many samples sharing one prompt with reproducible seeds, hostile batches, and the parity
//! harness run llama.cpp against itself (what its batch non-invariance looks like).
#![cfg(feature = "llama-cpp")]

use std::collections::BTreeSet;

use engine::backend::{BackendError, Batch, Context, Logits, TokenizeOptions};
use engine::generate::{generate, greedy, GenerateOptions, StopReason};
use engine::llama_cpp::{ContextOptions, LlamaCppModel};
use engine::sampling::SamplingParams;

/// llama.cpp's worker threads spin while they wait; tests running side by side on two cores
/// would starve each other, so each test holds this lock while it uses llama.cpp.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn model() -> std::sync::Arc<LlamaCppModel> {
    LlamaCppModel::open(passuntil_tests::default_model(), 0)
        .expect("llama.cpp loads the default model")
}

const RAW: TokenizeOptions = TokenizeOptions {
    add_special: false,
    parse_special: false,
};

#[test]
fn tokenize_detokenize_round_trips() {
    let _one = serial();
    let m = model();
    let b = m
        .new_context(&ContextOptions {
            n_ctx: 512,
            n_seq_max: 1,
            ..Default::default()
        })
        .unwrap();
    // Ids as llama.cpp gives them (see LLAMA-CPP-2.md).
    assert_eq!(
        b.tokenize(b"Hello, world! 12345", RAW).unwrap(),
        [19556, 28, 905, 17, 216, 33, 34, 35, 36, 37]
    );
    let texts = [
        "plain ASCII text, with punctuation: (a+b)*c = 42.",
        "Ünïcödé façade — naïve café; Ελληνικά; русский; 中文字符; 日本語のテキスト",
        "emoji 😀🎉👩‍👩‍👧‍👦 flags 🇫🇷 and skin tones 👍🏽",
        "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
        "whitespace   runs\t\ttabs\n\n\nnewlines      and trailing spaces   ",
        "numbers 3.14159 1e-10 -0x7fff 1,000,000 2024-11-26",
        "<|im_start|>user\nspecial tokens as plain text<|im_end|>",
        "",
    ];
    for t in texts {
        let ids = b.tokenize(t.as_bytes(), RAW).unwrap();
        let back = b.detokenize(&ids).unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), t, "ids {ids:?}");
        // Streaming piece by piece gives the same text.
        let mut d = engine::detok::Detokenizer::new();
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&d.push(&b.token_piece(id).unwrap()));
        }
        streamed.push_str(&d.finish());
        assert_eq!(streamed, t);
    }
    // With special parsing, chat markers become single tokens.
    let chat = b
        .tokenize(
            b"<|im_start|>user\nhi<|im_end|>",
            TokenizeOptions::default(),
        )
        .unwrap();
    assert_eq!(chat[0], 1);
    assert!(b.info().is_eog(2), "<|im_end|> ends generation");
    assert!(b
        .info()
        .chat_template
        .as_deref()
        .unwrap_or("")
        .contains("im_start"));
}

#[test]
fn greedy_generation_is_deterministic() {
    let _one = serial();
    let m = model();
    let mut b = m
        .new_context(&ContextOptions {
            n_ctx: 1024,
            n_seq_max: 4,
            ..Default::default()
        })
        .unwrap();
    let prompts = [
        "The capital of France is",
        "def fibonacci(n):\n",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    ];
    for p in prompts {
        let ids = b
            .tokenize(p.as_bytes(), TokenizeOptions::default())
            .unwrap();
        let first = greedy(&mut b, &ids, 64).unwrap();
        let again = greedy(&mut b, &ids, 64).unwrap();
        assert_eq!(first, again, "{p:?}");
        assert!(
            first.tokens.len() == 64 || first.stop == StopReason::Eog,
            "{p:?}: {} tokens",
            first.tokens.len()
        );
        assert!(first.logprob < 0.0 && first.logprob.is_finite());
        let text = String::from_utf8_lossy(&b.detokenize(&first.tokens).unwrap()).into_owned();
        eprintln!("{p:?} → {text:?}");
        assert!(!text.trim().is_empty());
    }
    // The model knows this one.
    let ids = b
        .tokenize(prompts[0].as_bytes(), TokenizeOptions::default())
        .unwrap();
    let paris = greedy(&mut b, &ids, 4).unwrap().tokens;
    let text = b.detokenize(&paris).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("Paris"));
}

#[test]
fn shared_prompt_samples_are_distinct_and_reproducible() {
    let _one = serial();
    let m = model();
    let mut b = m
        .new_context(&ContextOptions {
            n_ctx: 2048,
            n_seq_max: 16,
            ..Default::default()
        })
        .unwrap();
    let prompt = b
        .tokenize(
            b"Once upon a time, in a small village,",
            TokenizeOptions::default(),
        )
        .unwrap();
    let opts = GenerateOptions {
        max_tokens: 24,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: 50,
            top_p: 0.95,
            repeat_penalty: 1.1,
            ..SamplingParams::default()
        },
        seed: 1234,
        problem: 7,
        stop_at_eog: true,
        top_logprobs: 0,
        stop: Vec::new(),
    };
    let a = generate(&mut b, &prompt, 0, 16, &opts).unwrap();
    assert_eq!(a.len(), 16);
    let distinct: BTreeSet<&Vec<u32>> = a.iter().map(|s| &s.tokens).collect();
    assert!(
        distinct.len() >= 12,
        "only {} distinct samples of 16",
        distinct.len()
    );
    // The same seed gives the same samples.
    let again = generate(&mut b, &prompt, 0, 16, &opts).unwrap();
    assert_eq!(a, again);
    // Another seed gives other samples.
    let other = generate(
        &mut b,
        &prompt,
        0,
        16,
        &GenerateOptions {
            seed: 99,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(a, other);
    // More samples than the context holds sequences run in waves.
    let many = generate(&mut b, &prompt, 0, 40, &opts).unwrap();
    assert_eq!(
        many.iter().map(|s| s.index).collect::<Vec<_>>(),
        (0..40).collect::<Vec<_>>()
    );
}

#[test]
fn hostile_batches_are_errors() {
    let _one = serial();
    let m = model();
    let mut b = m
        .new_context(&ContextOptions {
            n_ctx: 64,
            n_seq_max: 2,
            ..Default::default()
        })
        .unwrap();
    let mut out = Logits::new(b.info().n_vocab);
    let mut batch = Batch::new();
    batch.add(1, 0, &[0, 1, 2], true);
    assert!(matches!(
        b.decode(&batch, &mut out),
        Err(BackendError::TooManySequences { .. })
    ));
    batch.clear();
    batch.add(1, 0, &[5], true);
    assert!(matches!(
        b.decode(&batch, &mut out),
        Err(BackendError::TooManySequences { .. })
    ));
    batch.clear();
    batch.add(60_000, 0, &[0], true);
    assert!(matches!(
        b.decode(&batch, &mut out),
        Err(BackendError::InvalidToken { .. })
    ));
    batch.clear();
    batch.add(1, b.n_ctx(), &[0], true);
    assert!(matches!(
        b.decode(&batch, &mut out),
        Err(BackendError::PositionPastContext { .. })
    ));
    assert!(matches!(
        b.copy_sequence(0, 9),
        Err(BackendError::SequenceOutOfRange { .. })
    ));
    // A prompt longer than the context is refused before decoding.
    let long: Vec<u32> = vec![28; b.n_ctx() as usize + 1];
    assert!(matches!(
        greedy(&mut b, &long, 4),
        Err(BackendError::PositionPastContext { .. })
    ));
    // And a valid batch still works afterwards.
    batch.clear();
    batch.add_sequence(&[19556, 28, 905], 0, 0, false);
    b.decode(&batch, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn parity_of_llama_cpp_with_itself() {
    let _one = serial();
    let m = model();
    let opts = ContextOptions {
        n_ctx: 512,
        n_seq_max: 1,
        ..Default::default()
    };
    let mut a = m.new_context(&opts).unwrap();
    let prompts = [
        "The quick brown fox",
        "In 1492, Columbus",
        "import numpy as np\n",
    ];
    // Same settings, same chunking: identical.
    let mut same = m.new_context(&opts).unwrap();
    for r in engine::parity::compare(&mut a, &mut same, &prompts, 24, usize::MAX).unwrap() {
        assert!(r.same_tokens);
        assert_eq!(r.max_abs_logit_diff, 0.0, "{r:?}");
        assert_eq!(r.greedy_agreement, r.positions);
    }
    // One thread and 7-row micro-batches: llama.cpp is not batch-invariant, so logits move a
    // little; the distributions stay practically equal.
    let mut b = m
        .new_context(&ContextOptions {
            n_ubatch: 7,
            threads: Some(1),
            ..opts.clone()
        })
        .unwrap();
    for r in engine::parity::compare(&mut a, &mut b, &prompts, 24, 7).unwrap() {
        eprintln!(
            "{:?}: greedy {}/{} max|Δlogit| {:.3e} mean KL {:.3e} top-1 {:.3}",
            r.prompt,
            r.greedy_agreement,
            r.positions,
            r.max_abs_logit_diff,
            r.mean_kl,
            r.top1_agreement
        );
        assert!(r.mean_kl < 1e-3, "{r:?}");
        assert!(r.top1_agreement >= 0.9, "{r:?}");
    }
}

#[test]
fn llama_cpp_loads_files_our_writer_wrote() {
    let _one = serial();
    // Rewrite the default model through GgufWriter (metadata and every tensor as read).
    let src = quant::gguf::GgufFile::open(passuntil_tests::default_model()).unwrap();
    let mut w = quant::gguf::GgufWriter::with_metadata(src.metadata().clone());
    for t in src.tensors() {
        w.add_tensor(t.name(), &t.info.shape, t.ty(), t.data)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("rewritten.gguf");
    w.write_to_path(&copy).unwrap();

    let opts = ContextOptions {
        n_ctx: 256,
        n_seq_max: 1,
        ..Default::default()
    };
    let greedy_of = |path: &std::path::Path| {
        let m = LlamaCppModel::open(path, 0).unwrap();
        let mut b = m.new_context(&opts).unwrap();
        let ids = b
            .tokenize(b"The capital of France is", TokenizeOptions::default())
            .unwrap();
        greedy(&mut b, &ids, 8).unwrap().tokens
    };
    assert_eq!(
        greedy_of(&copy),
        greedy_of(passuntil_tests::default_model())
    );
}

#[test]
fn requantized_models_load_in_llama_cpp_and_keep_their_answer() {
    use engine::quantize::{Mix, Target};
    use quant::requant::requantize;
    use quant::GgmlType;
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let src = passuntil_tests::default_model();
    let original = quant::gguf::GgufFile::open(src).unwrap();
    let opts = ContextOptions {
        n_ctx: 256,
        n_seq_max: 1,
        ..Default::default()
    };
    let answer = |path: &std::path::Path| {
        let m = LlamaCppModel::open(path, 0).unwrap();
        let mut b = m.new_context(&opts).unwrap();
        let ids = b
            .tokenize(b"The capital of France is", TokenizeOptions::default())
            .unwrap();
        let s = greedy(&mut b, &ids, 2).unwrap();
        String::from_utf8(b.detokenize(&s.tokens).unwrap()).unwrap()
    };
    for target in [Target::Type(GgmlType::Q8_0), Target::Mix(Mix::Q4KM)] {
        let out = dir.path().join(format!("{target}.gguf"));
        let plan = requantize(src, &out, &target, 2, &mut |_| {}).unwrap();
        let file = quant::gguf::GgufFile::open(&out).unwrap();
        assert_eq!(file.tensor_infos().len(), original.tensor_infos().len());
        let ty = |name: &str| file.tensor(name).unwrap().ty();
        match target {
            Target::Type(_) => {
                assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q8_0);
                assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
                // Q4_1 values re-quantized to Q8_0 stay within half a step, plus what storing
                // the step in f16 adds (up to 127 steps × 2⁻¹¹ relative).
                let a = original
                    .tensor("blk.3.ffn_up.weight")
                    .unwrap()
                    .to_f32()
                    .unwrap();
                let b = file
                    .tensor("blk.3.ffn_up.weight")
                    .unwrap()
                    .to_f32()
                    .unwrap();
                for (row_a, row_b) in a.chunks(32).zip(b.chunks(32)) {
                    let amax = row_a.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (x, y) in row_a.iter().zip(row_b) {
                        assert!((x - y).abs() <= amax / 127.0 * 0.57 + 1e-6);
                    }
                }
            }
            Target::Mix(_) => {
                // llama.cpp's Q4_K_M on a 30-layer model with 576-wide rows: ffn_down in
                // use_more_bits layers Q6_K, else Q4_K; 576-wide rows fall back to 32-blocks;
                // the tied embedding is the output head (Q6_K → Q8_0).
                assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6K);
                assert_eq!(ty("blk.3.ffn_down.weight"), GgmlType::Q4K);
                assert_eq!(ty("blk.5.ffn_down.weight"), GgmlType::Q6K);
                assert_eq!(ty("blk.3.attn_q.weight"), GgmlType::Q5_0);
                assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q8_0);
                assert_eq!(ty("blk.3.attn_v.weight"), GgmlType::Q5_0);
                assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
                assert_eq!(
                    file.metadata()
                        .get("general.file_type")
                        .and_then(|v| v.as_u64()),
                    Some(15)
                );
            }
        }
        assert!(plan.bits_per_weight() > 5.0, "{}", plan.bits_per_weight());
        let said = answer(&out);
        assert!(said.contains("Paris"), "{target}: {said:?}");
    }
}

/// The sampler's truncation against llama.cpp's own chain on real logits: for each prompt and
/// setting, `engine::sampling::distribution` keeps exactly the tokens that llama.cpp's
/// top-k → top-p → min-p → temperature samplers leave, with the same probabilities (to float
/// rounding: llama.cpp computes them in f32).
#[test]
fn truncation_matches_llama_cpp_s_sampler_chain() {
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::data_array::LlamaTokenDataArray;
    use llama_cpp_2::token::LlamaToken;

    let _one = serial();
    let m = model();
    let mut ctx = m
        .new_context(&ContextOptions {
            n_ctx: 256,
            n_seq_max: 1,
            ..Default::default()
        })
        .unwrap();
    let settings = [
        // `generate`'s defaults.
        (0.8, 40, 0.95, 0.05),
        (0.7, 5, 0.8, 0.1),
        (1.0, 0, 0.9, 0.1),
        (1.5, 0, 0.5, 0.0),
        (0.6, 100, 1.0, 0.2),
    ];
    let mut compared = 0;
    for prompt in [
        "The capital of France is",
        "Once upon a time,",
        "def fibonacci(n):\n   ",
    ] {
        let tokens = ctx
            .tokenize(prompt.as_bytes(), TokenizeOptions::default())
            .unwrap();
        let mut batch = Batch::new();
        for (i, &t) in tokens.iter().enumerate() {
            batch.add(t, i as u32, &[0], i + 1 == tokens.len());
        }
        let mut logits = Logits::new(0);
        ctx.clear().unwrap();
        ctx.decode(&batch, &mut logits).unwrap();
        let row = logits.row(0);
        for &(temp, top_k, top_p, min_p) in &settings {
            let params = SamplingParams {
                temperature: temp,
                top_k,
                top_p,
                min_p,
                ..Default::default()
            };
            let ours = engine::sampling::distribution(row, &params, &[]).unwrap();
            let mut chain = vec![];
            if top_k > 0 {
                chain.push(LlamaSampler::top_k(top_k as i32));
            }
            chain.push(LlamaSampler::top_p(top_p, 1));
            chain.push(LlamaSampler::min_p(min_p, 1));
            chain.push(LlamaSampler::temp(temp));
            let mut sampler = LlamaSampler::chain_simple(chain);
            let mut data = LlamaTokenDataArray::from_iter(
                row.iter()
                    .enumerate()
                    .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
                false,
            );
            data.apply_sampler(&mut sampler);
            let max = data
                .data
                .iter()
                .fold(f64::NEG_INFINITY, |a, d| a.max(d.logit() as f64));
            let z: f64 = data
                .data
                .iter()
                .map(|d| (d.logit() as f64 - max).exp())
                .sum();
            let mut theirs: Vec<(u32, f64)> = data
                .data
                .iter()
                .map(|d| (d.id().0 as u32, (d.logit() as f64 - max).exp() / z))
                .collect();
            theirs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let ids = |v: &[(u32, f64)]| v.iter().map(|x| x.0).collect::<BTreeSet<u32>>();
            assert_eq!(
                ids(&ours),
                ids(&theirs),
                "{prompt:?}, T {temp}, top-k {top_k}, top-p {top_p}, min-p {min_p}"
            );
            for (t, p) in &ours {
                let q = theirs.iter().find(|x| x.0 == *t).unwrap().1;
                assert!((p - q).abs() < 1e-5, "token {t}: {p} vs {q}");
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 15);
}
