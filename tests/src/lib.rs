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
    PATH.get_or_init(|| {
        let model = engine::models::known(engine::models::DEFAULT_MODEL).expect("registered");
        engine::models::fetch(model, &mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("cannot fetch the default model: {e}"))
    })
}

/// Path of the default model's weights dequantized to F32 (lossless: the same function as the
/// Q4_1 file, without 8-bit activations), written on first use into the cache's `derived/`
/// folder. The writer renames a finished `.partial` file into place, so a file that is there
/// is whole.
pub fn exact_weights() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = default_model();
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
    })
}
