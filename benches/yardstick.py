#!/usr/bin/env python3
"""The yardstick: passuntil's engine against llama.cpp's own tools, interleaved, one table.

llama.cpp's `llama-bench` and `llama-batched-bench` are built once from the complete
llama.cpp tree that the `llama-cpp-python` source package vendors (the llama-cpp-sys-2 crate's
tree has no tools) with CMake Release, GGML_NATIVE=ON and OpenMP, into a cache
(`$PASSUNTIL_CACHE/llama.cpp-tools/`, default `~/.cache/passuntil/llama.cpp-tools/`). Then,
for each round, the tools and the `engine` criterion bench run one after the other on the
same model file with the same threads and shapes, alternating which goes first:

- prefill: 512 prompt tokens in one batch (`llama-bench -p 512 -n 0`);
- decode: N single-sequence steps after a 128-token prompt (`llama-bench -p 0 -n N -d 128`);
- batched: S samples (default 64) sharing a 128-token prompt, N new tokens each
  (`llama-batched-bench -npp 128 -ntg N -npl S -pps`, its S_TG column; the native figure
  also counts the prompt's evaluation in its time).

The native engine runs each case in two modes: `native` (8-bit activations with llama.cpp's
bits) and `native q8-fast` (the same activations on repacked weights, `--activations
q8-fast`: batch-invariant, not llama.cpp's bits). On a CPU with AMX the tools are built
without it (see `build_tools`).

With `--backend` the bench also runs the in-process llama.cpp backend (`--features
llama-cpp`, which needs cmake, clang and libclang-dev), so its distance from the tools shows
too. With `--busy` a process keeps one core busy throughout (a shared node). The table
prints each round's value and the ratios of their medians; `--json FILE` keeps everything.

    python3 benches/yardstick.py [--rounds 2] [--threads 2] [--new-tokens 32] [--samples 64]
                                 [--backend] [--busy]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SDIST = "llama-cpp-python==0.3.36"  # vendors llama.cpp b11312
TOOLS = ["llama-bench", "llama-batched-bench"]
REPO = Path(__file__).resolve().parent.parent
PROMPT = 128
# The native engine's modes the bench runs: llama.cpp's bits, and the repacked kernels.
ENGINES = ["native", "native-q8-fast"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def cache_dir():
    base = os.environ.get("PASSUNTIL_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "passuntil"


def cpu_has_amx():
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_int8" in flags or " amx_tile" in flags


def build_tools():
    """Builds the tools once; returns the directory that holds them.

    On a CPU with AMX the tools are built without it (`-mno-amx-*` beside GGML_NATIVE's
    `-march=native`): b11312's AMX kernels for Q4_1 die with SIGILL at their first
    `tileloadd` on the KVM guests this was measured on, so llama.cpp's tools could not run at
    all. Every other instruction set of the CPU stays on, and so do the other repacked paths.
    """
    no_amx = cpu_has_amx()
    name = SDIST.replace("==", "-") + ("-noamx" if no_amx else "")
    root = cache_dir() / "llama.cpp-tools" / name
    bindir = root / "build" / "bin"
    if all((bindir / t).is_file() for t in TOOLS):
        return bindir
    for tool in ["cmake", "c++"]:
        if shutil.which(tool) is None:
            sys.exit(f"yardstick: `{tool}` is needed to build llama.cpp's tools (apt-get install cmake g++)")
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             SDIST, "-d", tmp], stdout=subprocess.DEVNULL)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        src = root / "src"
        if src.exists():
            shutil.rmtree(src)
        with tarfile.open(sdist) as tar:
            members = []
            for m in tar.getmembers():
                parts = Path(m.name).parts
                if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp") and ".git" not in parts:
                    m.name = str(Path(*parts[3:]))
                    members.append(m)
            tar.extractall(src, members=members, filter="data")
    flags = []
    if no_amx:
        log("yardstick: this CPU has AMX; building llama.cpp's tools without it (see build_tools)")
        off = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        flags = [f"-DCMAKE_C_FLAGS={off}", f"-DCMAKE_CXX_FLAGS={off}"]
    run(["cmake", "-S", src, "-B", root / "build", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
         "-DGGML_OPENMP=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         *flags],
        stdout=subprocess.DEVNULL)
    run(["cmake", "--build", root / "build", "-j", str(os.cpu_count() or 2), "--target", *TOOLS],
        stdout=subprocess.DEVNULL)
    return bindir


def model_path(args):
    if args.model:
        return Path(args.model)
    out = run(["cargo", "run", "--release", "-q", "-p", "passuntil-cli", "--bin", "pass-until", "--",
               "models", "fetch", "smollm2-135m"], cwd=REPO, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def llama_bench(bindir, model, threads, extra):
    out = run([bindir / "llama-bench", "-m", model, "-t", str(threads), "-r", "3", "-o", "json", *extra],
              capture_output=True, text=True)
    rows = json.loads(out.stdout)
    # The sdist's tree carries no git metadata; its vendored llama.cpp is b11312.
    build = f"b{rows[0]['build_number']}" if rows[0]["build_number"] else f"b11312 from {SDIST}"
    return rows[0]["avg_ts"], build


def batched_bench(bindir, model, threads, new, samples):
    ctx = samples * (PROMPT + new) + 256
    out = run([bindir / "llama-batched-bench", "-m", model, "-t", str(threads), "-c", str(ctx),
               "-b", "2048", "-ub", "512", "-npp", str(PROMPT), "-ntg", str(new), "-npl", str(samples),
               "-pps", "--output-format", "jsonl"], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and "speed_tg" in line:
            return json.loads(line)["speed_tg"]
    raise RuntimeError("llama-batched-bench printed no result:\n" + out.stderr[-2000:])


def tools_round(bindir, model, args):
    pp, build = llama_bench(bindir, model, args.threads, ["-p", "512", "-n", "0"])
    tg, _ = llama_bench(bindir, model, args.threads, ["-p", "0", "-n", str(args.new_tokens), "-d", str(PROMPT)])
    tgb = batched_bench(bindir, model, args.threads, args.new_tokens, args.samples)
    return {"prefill": pp, "decode": tg, "batched": tgb}, build


def target_dir():
    out = run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
              capture_output=True, text=True)
    return Path(json.loads(out.stdout)["target_directory"])


def engine_round(args, crit, model):
    env = dict(os.environ, PASSUNTIL_BENCH_THREADS=str(args.threads),
               PASSUNTIL_BENCH_NEW_TOKENS=str(args.new_tokens),
               PASSUNTIL_BENCH_SAMPLES=str(args.samples),
               PASSUNTIL_BENCH_MODEL=str(model))
    cmd = ["cargo", "bench", "-q", "-p", "passuntil-benches", "--bench", "engine"]
    if args.backend:
        cmd += ["--features", "llama-cpp"]
    run(cmd + ["--", "--noplot"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    result = {}
    for engine in ENGINES + (["llama.cpp"] if args.backend else []):
        for case in ["prefill", "decode", "batched"]:
            d = crit / case / engine / "new"
            mean_ns = json.loads((d / "estimates.json").read_text())["mean"]["point_estimate"]
            elems = json.loads((d / "benchmark.json").read_text())["throughput"]["Elements"]
            result[f"{engine}/{case}"] = elems / (mean_ns * 1e-9)
    return result


def busy_core():
    """A process that keeps one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=32, help="decode steps and new tokens per sample")
    p.add_argument("--samples", type=int, default=64, help="samples of the batched case")
    p.add_argument("--model", help="a GGUF file (default: the default model, fetched on first use)")
    p.add_argument("--backend", action="store_true", help="also bench the in-process llama.cpp backend")
    p.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    p.add_argument("--json", help="write every measurement here")
    args = p.parse_args()

    bindir = build_tools()
    model = model_path(args)
    crit = target_dir() / "criterion"
    # Build the bench before anything is timed.
    run(["cargo", "bench", "-q", "-p", "passuntil-benches", "--bench", "engine", "--no-run"]
        + (["--features", "llama-cpp"] if args.backend else []), cwd=REPO)
    busy = busy_core() if args.busy else None
    rounds, build = [], None
    try:
        for r in range(args.rounds):
            log(f"round {r + 1} of {args.rounds}")
            order = ["tools", "engine"] if r % 2 == 0 else ["engine", "tools"]
            row = {}
            for what in order:
                if what == "tools":
                    t, build = tools_round(bindir, model, args)
                    row.update({f"tools/{k}": v for k, v in t.items()})
                else:
                    row.update(engine_round(args, crit, model))
            rounds.append(row)
    finally:
        if busy:
            busy.kill()

    def med(key):
        return statistics.median(r[key] for r in rounds)

    def vals(key):
        return " / ".join(f"{r[key]:,.0f}" for r in rounds)

    cases = [("prefill", "prefill 512"),
             ("decode", f"decode, {args.new_tokens} steps after {PROMPT}"),
             ("batched", f"batched, {args.samples} × {args.new_tokens} sharing {PROMPT}")]
    print(f"\nllama.cpp tools {build}, CMake Release, GGML_NATIVE=ON, OpenMP; model {model.name}; "
          f"{args.threads} threads; {args.rounds} interleaved rounds"
          + ("; one core kept busy by another process" if args.busy else "") + "; tokens/s\n")
    head = "| case | native | native q8-fast | llama.cpp tools | native / tools | q8-fast / tools |"
    sep = "|---|---|---|---|---|---|"
    if args.backend:
        head += " llama.cpp backend | backend / tools |"
        sep += "---|---|"
    print(head)
    print(sep)
    for key, name in cases:
        tools = med('tools/' + key)
        line = f"| {name} | {vals('native/' + key)} | {vals('native-q8-fast/' + key)} | " \
               f"{vals('tools/' + key)} | {med('native/' + key) / tools:.2f} | " \
               f"{med('native-q8-fast/' + key) / tools:.2f} |"
        if args.backend:
            line += f" {vals('llama.cpp/' + key)} | {med('llama.cpp/' + key) / med('tools/' + key):.2f} |"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "tools_build": build, "model": str(model), "threads": args.threads,
            "new_tokens": args.new_tokens, "samples": args.samples, "busy": args.busy, "rounds": rounds,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))


if __name__ == "__main__":
    main()
