//! Shared helpers for the end-to-end tests: the real default model, fetched once per test
//! binary into the user's cache (or `$PASSUNTIL_CACHE`) and checked against its sha256.
//! A fetch failure fails the test with the fetcher's message; nothing is skipped.
//! Files derived from it (the exact-weights F32 file) are written once into the same cache,
//! so a test run holds one copy on disk however many tests use it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Path of the default model (`smollm2-135m`), fetching it on first use.
pub fn default_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| known_model(engine::models::DEFAULT_MODEL))
}

/// Path of Gemma 3 270M (`gemma3-270m`, Q4_K_M), fetching it on first use.
pub fn gemma_model() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| known_model("gemma3-270m"))
}

fn known_model(name: &str) -> PathBuf {
    let model = engine::models::known(name).expect("registered");
    engine::models::fetch(model, &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("cannot fetch {name}: {e}"))
}

/// Path of the default model's weights dequantized to F32 (lossless: the same function as the
/// Q4_1 file, without 8-bit activations), written on first use into the cache's `derived/`
/// folder. The writer renames a finished `.partial` file into place, so a file that is there
/// is whole.
pub fn exact_weights() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| dequantized(default_model()))
}

/// Gemma 3 270M's weights dequantized to F32 (about 1.1 GB), as [`exact_weights`].
pub fn gemma_exact_weights() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| dequantized(gemma_model()))
}

fn dequantized(src: &Path) -> PathBuf {
    let dir = engine::models::cache_dir()
        .unwrap_or_else(|e| panic!("no cache folder for derived files: {e}"))
        .join("derived");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let path = dir.join(format!("{stem}.exact-f32.gguf"));
    if !path.is_file() {
        quant::requant::requantize(
            src,
            &path,
            &engine::quantize::Target::Type(quant::GgmlType::F32),
            2,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    path
}

/// What the parity tests against llama.cpp share: prompts, turns, contexts, reports and a
/// writer of variant files.
#[cfg(feature = "llama-cpp")]
pub mod parity {
    /// Ten prompts of different kinds for the parity checks.
    pub const PARITY_PROMPTS: [&str; 10] = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "def add(a, b):\n    return",
        "Water boils at a temperature of",
        "The three primary colors are",
        "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
        "import numpy as np\n\nx = np.arange(10)\n",
        "Les feuilles d'automne tombent",
        "1, 1, 2, 3, 5, 8, 13,",
        "Q: Why is the sky blue?\nA:",
    ];

    /// Layers kept in the files the RoPE-scaling and qwen2 checks write: those settings act in
    /// every layer alike, and a shorter stack keeps each written file near 200 MB (the F32
    /// embedding is most of it) and the checks quick.
    pub const VARIANT_LAYERS: u32 = 8;

    /// Writes `dst`: `src`'s tensors of the first `layers` blocks (and every tensor outside the
    /// blocks) under the metadata `md`, with `{arch}.block_count` set to `layers`, plus the 1-D
    /// F32 tensors `extra`.
    pub fn rewrite(
        src: &quant::gguf::GgufFile,
        mut md: quant::gguf::Metadata,
        layers: u32,
        extra: &[(String, Vec<f32>)],
        dst: &std::path::Path,
    ) {
        let arch = md.get_str("general.architecture").unwrap().to_owned();
        md.insert(
            format!("{arch}.block_count"),
            quant::gguf::Value::U32(layers),
        );
        let mut w = quant::gguf::GgufWriter::with_metadata(md);
        for t in src.tensors() {
            let block = t
                .info
                .name
                .strip_prefix("blk.")
                .and_then(|rest| rest.split('.').next())
                .map(|n| n.parse::<u32>().unwrap());
            if block.is_some_and(|b| b >= layers) {
                continue;
            }
            w.add_tensor(t.info.name.clone(), &t.info.shape, t.info.ty, t.data)
                .unwrap();
        }
        for (name, values) in extra {
            let bytes: Vec<u8> = bytemuck::cast_slice(values).to_vec();
            w.add_tensor(
                name.clone(),
                &[values.len() as u64],
                quant::GgmlType::F32,
                bytes,
            )
            .unwrap();
        }
        w.write_to_path(dst).unwrap();
    }

    /// The tests that run llama.cpp take turns: its threads wait for each other by spinning, and
    /// two contexts computing at once on CI's two cores spend most of their time in those waits
    /// (77% of samples in `ggml_barrier` when two ran together here).
    pub fn llama_cpp_turn() -> std::sync::MutexGuard<'static, ()> {
        static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
        // A test that failed while holding the turn leaves nothing to clean up.
        TURN.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns off ggml's tiled K-quant matrix product (`GGML_CPU_TILED_MM=0`) before llama.cpp
    /// first multiplies in this process. ggml takes it for batches of 8 rows or more and its
    /// `vec_dot` below, and the two round differently, so llama.cpp's logits for a row
    /// would depend on how many rows share its batch; the parity checks compare with
    /// `vec_dot`, which the native K-quant kernels follow.
    pub fn vec_dot_only() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| std::env::set_var("GGML_CPU_TILED_MM", "0"));
    }

    pub fn llama_cpp_context(
        m: &std::sync::Arc<engine::llama_cpp::LlamaCppModel>,
    ) -> engine::llama_cpp::LlamaCppContext {
        vec_dot_only();
        m.new_context(&engine::llama_cpp::ContextOptions {
            // Room for the parity prompts side by side: their greedy continuations run as
            // one batch per step (`engine::parity::compare`). Scoring clears the cache and
            // uses one sequence; llama.cpp's attention spans the cells in use (padded), not
            // the whole cache, so the larger cache does not change a scored row.
            n_ctx: 2048,
            n_seq_max: 16,
            // Flash attention on the CPU sums values in f16; without it llama.cpp keeps them
            // in f32, as the native engine does.
            flash_attention: Some(false),
            ..Default::default()
        })
        .unwrap()
    }

    pub fn report(r: &engine::parity::PromptParity) {
        eprintln!(
            "{:?}: same tokens {}, greedy {}/{}, mean KL {:.2e}, top-1 {:.3}, max |Δlogit| {:.3}",
            r.prompt,
            r.same_tokens,
            r.greedy_agreement,
            r.positions,
            r.mean_kl,
            r.top1_agreement,
            r.max_abs_logit_diff
        );
    }

    /// Whether this build follows llama.cpp's CPU float sequence step by step (x86-64 with
    /// AVX2 and FMA, as llama.cpp's native build there), so that logits must be equal bit for
    /// bit where both run the same kernels.
    pub const BITWISE: bool = cfg!(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ));

    /// Prints each prompt's parity and the totals, checks that both engines tokenized alike,
    /// and returns positions, greedy agreement, mean KL and max |Δlogit| over all prompts.
    pub fn totals(parity: &[engine::parity::PromptParity]) -> (usize, f64, f64, f32) {
        let (mut positions, mut agree, mut kl, mut max_diff) = (0, 0.0, 0.0, 0f32);
        for r in parity {
            report(r);
            assert!(r.same_tokens, "{}: tokenized differently", r.prompt);
            positions += r.positions;
            agree += r.top1_agreement * r.positions as f64;
            kl += r.mean_kl * r.positions as f64;
            max_diff = max_diff.max(r.max_abs_logit_diff);
        }
        let (agree, kl) = (agree / positions as f64, kl / positions as f64);
        eprintln!(
            "{positions} positions: greedy tokens identical at {agree:.4}, mean KL {kl:.2e}, \
             max |Δlogit| {max_diff:e}"
        );
        (positions, agree, kl, max_diff)
    }
}
