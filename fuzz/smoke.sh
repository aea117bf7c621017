#!/usr/bin/env bash
# A short run of every fuzz target, without installing cargo-fuzz: the targets are built as
# libFuzzer binaries with the instrumentation `cargo fuzz build` asks rustc for (coverage
# counters, comparison tracing, AddressSanitizer, debug assertions), then each runs for
# FUZZ_SECONDS (default 30) over its corpus in fuzz/corpus/<target>. A crash stops the script
# with libFuzzer's report and leaves the input in fuzz/artifacts/<target>/.
#
# Usage: fuzz/smoke.sh [target...]   (default: every file in fuzz/fuzz_targets)
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-30}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# The sanitizer flag is unstable; RUSTC_BOOTSTRAP lets the stable toolchain take it, as it
# does for cargo-fuzz. `--target` keeps these flags off build scripts and proc macros.
export RUSTC_BOOTSTRAP=1
RUSTFLAGS_EXTRA="${RUSTFLAGS:-}"
RUSTFLAGS="-Cpasses=sancov-module"
for arg in -sanitizer-coverage-level=4 -sanitizer-coverage-inline-8bit-counters \
    -sanitizer-coverage-pc-table -sanitizer-coverage-trace-compares \
    -sanitizer-coverage-stack-depth -simplifycfg-branch-fold-threshold=0; do
    RUSTFLAGS+=" -Cllvm-args=$arg"
done
# One codegen unit, as cargo-fuzz: with several, the coverage pass keeps functions from being
# imported across units and the binary runs slower; on 2 cores a build with 16 units also
# took longer here (7:01 against 5:26).
RUSTFLAGS+=" --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Ccodegen-units=1"
# The caller's own RUSTFLAGS go last, so they can override these.
RUSTFLAGS+="${RUSTFLAGS_EXTRA:+ $RUSTFLAGS_EXTRA}"
export RUSTFLAGS
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi
bins=()
for t in "${targets[@]}"; do
    bins+=(--bin "$t")
done
cargo build --release --target "$triple" --target-dir target "${bins[@]}"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    echo "--- $t: ${seconds} s"
    "target/$triple/release/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
        -rss_limit_mb=4096 "corpus/$t"
done
