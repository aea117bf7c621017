//! Shared helpers for the end-to-end tests: the real default model, fetched once per test
//! binary into the user's cache (or `$PASSUNTIL_CACHE`) and checked against its sha256.
//! A fetch failure fails the test with the fetcher's message; nothing is skipped.

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
