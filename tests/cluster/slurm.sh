#!/usr/bin/env bash
# The cluster path, run for real: a one-node Slurm cluster on this machine runs the README's
# job-array recipe (deploy/slurm/pass-until-array.sh, verbatim) as a 4-task array; one task is
# requeued mid-run, another cancelled mid-run and resubmitted, a second `pass-until run` is
# pointed at a running task's directory; then `merge` and `report`. The merged samples
# (timing fields aside) and report must equal those of one unsharded run with the same seed
# (samples still in flight when a problem was decided depend on scheduling: see below).
#
#   tests/cluster/slurm.sh PATH/TO/pass-until
#
# Needs root (it installs slurm-wlm and munge with apt-get when missing and starts munged,
# slurmctld and slurmd, all confined to a temporary directory, and stops them afterwards).
# Where it cannot start them it says so loudly and exits 0, unless PASSUNTIL_REQUIRE_SLURM=1
# (CI), where that is a failure. KEEP=1 keeps the temporary directory.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${1:?usage: tests/cluster/slurm.sh PATH/TO/pass-until}")
recipe=$repo/deploy/slurm/pass-until-array.sh
started=$(date +%s)
log() { printf '[slurm test %3ds] %s\n' "$(($(date +%s) - started))" "$*"; }
skip() {
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf '!!! SLURM TEST SKIPPED: %s\n' "$*" >&2
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
    if [[ ${PASSUNTIL_REQUIRE_SLURM:-0} == 1 ]]; then
        exit 1
    fi
    exit 0
}
fail() {
    log "FAILED: $*" >&2
    exit 1
}

# The README shows the recipe file as it is.
python3 - "$repo/README.md" "$recipe" <<'PY' || fail "README's Slurm recipe differs from deploy/slurm/pass-until-array.sh"
import re, sys
readme, recipe = (open(p).read() for p in sys.argv[1:])
blocks = re.findall(r"```(?:sh|bash)\n(#!/bin/bash\n#SBATCH.*?)```", readme, re.S)
sys.exit(0 if blocks == [recipe] else 1)
PY

[[ $(id -u) == 0 ]] || skip "not root (the daemons need it); run as root to check the Slurm path"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } ||
        skip "cannot install slurm-wlm and munge with apt-get"
fi

w=$(mktemp -d /tmp/passuntil-slurm.XXXXXX)
chmod 755 "$w"
daemons_up=0
cleanup() {
    local rc=$?
    if [[ $daemons_up == 1 ]]; then
        scancel --quiet --user=root 2>/dev/null || true
        # Jobs (and their pass-until) end before the daemons and the directory go.
        for _ in $(seq 50); do
            [[ -z $(squeue -h 2>/dev/null) ]] && break
            sleep 0.2
        done
        pkill -f "pass-until run .*--out runs/arith/shard-" 2>/dev/null || true
        for d in slurmd slurmctld munged; do
            [[ -f $w/$d.pid ]] && kill "$(cat "$w/$d.pid")" 2>/dev/null || true
        done
        sleep 1
    fi
    if [[ $rc != 0 ]]; then
        for f in "$w"/slurmctld.log "$w"/slurmd.log "$w"/work/pass-until-*.out; do
            [[ -f $f ]] && { echo "--- $f (last 30 lines)"; tail -n 30 "$f"; }
        done >&2
    fi
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $w"; else rm -rf "$w"; fi
}
trap cleanup EXIT

# A one-node cluster, everything under $w, on ports of its own. `holder` is how pass-until
# names this machine in its locks.
host=$(hostname -s)
holder=$(cat /proc/sys/kernel/hostname)
mkdir -p "$w/state" "$w/spool" "$w/work/tasks"
head -c 1024 /dev/urandom >"$w/munge.key"
chmod 600 "$w/munge.key"
cat >"$w/slurm.conf" <<EOF
ClusterName=passuntil-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits until its credentials expire (120 s by default) before it may start.
AuthInfo=socket=$w/munge.sock,cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$w/state
SlurmdSpoolDir=$w/spool
SlurmctldPidFile=$w/slurmctld.pid
SlurmdPidFile=$w/slurmd.pid
SlurmctldLogFile=$w/slurmctld.log
SlurmdLogFile=$w/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$w/slurm.conf
daemons_up=1
munged --force --key-file="$w/munge.key" --socket="$w/munge.sock" --pid-file="$w/munged.pid" \
    --log-file="$w/munged.log" --seed-file="$w/munged.seed" || skip "munged does not start"
slurmctld -f "$SLURM_CONF" || skip "slurmctld does not start (see $w/slurmctld.log)"
slurmd -f "$SLURM_CONF" || skip "slurmd does not start (see $w/slurmd.log)"
for _ in $(seq 60); do
    [[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && break
    sleep 0.5
done
[[ $(sinfo -h -o %t 2>/dev/null) == idle ]] || skip "the node does not come up: $(sinfo 2>&1 | tr '\n' ' ')"
log "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"

# The recipe's working directory: its task path, and pass-until on PATH (sbatch exports the
# submitting environment, PASSUNTIL_CACHE included).
cd "$w/work"
cp "$repo/tasks/arithmetic.jsonl" tasks/
export PATH=$(dirname "$bin"):$PATH
pass-until models fetch smollm2-135m >/dev/null
# The recipe with this machine's sizes: 4 shards of 1 CPU, and limits that keep it short
# (small batches, so that each shard runs long enough to be interrupted mid-run).
shrink=(--max-samples 128 --max-tokens 16 --batch 4)
submit() { SHARDS=4 sbatch --parsable --cpus-per-task=1 "$@" "$recipe" "${shrink[@]}"; }
job=$(submit --array=0-3)
log "submitted array job $job"

state() { squeue -h -j "$1" -o %T 2>/dev/null || true; }
# Waits until shard $1 has written at least one sample while its task is running.
wait_mid_run() {
    local s=runs/arith/shard-$1/samples.jsonl
    for _ in $(seq 600); do
        if [[ $(state "$2") == RUNNING && -s $s ]]; then return 0; fi
        sleep 0.1
    done
    fail "shard $1 ($2) never got going: state '$(state "$2")'"
}
wait_gone() {
    for _ in $(seq 1200); do
        [[ -z $(squeue -h -j "$1" 2>/dev/null) ]] && return 0
        sleep 0.2
    done
    fail "$1 still queued or running after 240 s: $(squeue -h -j "$1")"
}

# Task 0 is requeued mid-run (as preemption with PreemptMode=REQUEUE does).
wait_mid_run 0 "${job}_0"
log "requeueing ${job}_0 after $(wc -l <runs/arith/shard-0/samples.jsonl) samples"
scontrol requeue "${job}_0" || fail "could not requeue ${job}_0 (state '$(state "${job}_0")')"

# Task 1 is cancelled mid-run, then resubmitted on its own.
wait_mid_run 1 "${job}_1"
log "cancelling ${job}_1 after $(wc -l <runs/arith/shard-1/samples.jsonl) samples"
scancel "${job}_1"
wait_gone "${job}_1"
job1=$(submit --array=1)
log "resubmitted shard 1 as ${job1}_1"

# A second attempt at a running task's directory is refused, naming the holder.
wait_mid_run 2 "${job}_2"
if out=$(pass-until run -m smollm2-135m --task tasks/arithmetic.jsonl --r 2 \
    --shard 2/4 --out runs/arith/shard-2 "${shrink[@]}" 2>&1); then
    fail "a second pass-until in shard-2's directory was let in: $out"
fi
grep -qF "on $holder)" <<<"$out" && grep -q "is in use by another pass-until (pid [0-9]* on " <<<"$out" ||
    fail "the refusal does not name the holder: $out"
log "a second attempt at shard 2 was refused: ${out##*: }"

wait_gone "$job"
wait_gone "$job1"
log "array done"
for t in "${job}_0" "${job}_2" "${job}_3" "${job1}_1"; do
    info=$(scontrol show job "$t")
    grep -q "JobState=COMPLETED" <<<"$info" && grep -q "ExitCode=0:0" <<<"$info" ||
        fail "$t did not complete: $(grep -o 'JobState=[A-Z_]*\|ExitCode=[0-9:]*' <<<"$info" | tr '\n' ' ')"
done
grep -q "Restarts=1" <<<"$(scontrol show job "${job}_0")" || fail "${job}_0 was not requeued"
# The requeued attempt found the killed one's lock and said so (its log is appended to).
grep "took over .*shard-0 from an attempt that ended without releasing it (pid [0-9]* on " \
    "pass-until-${job}_0.out" | grep -qF "on $holder)" ||
    fail "the requeued task did not report taking over the lock"
# The resubmitted shard 1 resumed its samples rather than starting again.
grep -q "samples this session ([1-9][0-9]* before)" "pass-until-${job1}_1.out" ||
    fail "the resubmitted shard 1 did not resume: $(tail -n 3 "pass-until-${job1}_1.out")"

# Merge refuses an incomplete set, naming what is missing, then merges the whole.
if out=$(pass-until merge runs/arith/shard-{0,1,3} --out runs/arith/partial 2>&1); then
    fail "merge of 3 of 4 shards succeeded"
fi
grep -q "shards 2/4 are missing" <<<"$out" || fail "merge did not name the missing shard: $out"
pass-until merge runs/arith/shard-* --out runs/arith/all
pass-until report runs/arith/all --json >merged.json

# The same run, unsharded, on one process.
pass-until run -m smollm2-135m --task tasks/arithmetic.jsonl --r 2 --max-samples 100000 \
    --out runs/arith/one "${shrink[@]}" >/dev/null 2>one.err || fail "unsharded run: $(cat one.err)"
pass-until report runs/arith/one --json >one.json
# Every sample is a function of (seed, problem, index) alone, so the two runs agree on every
# sample both hold, and on exactly which samples decide each problem (index < its trials).
# Samples still in flight when a problem was decided ("beyond" in the report) are kept too;
# how many there were depends on scheduling, and they change no result.
python3 - <<'PY' || fail "the merged run differs from the unsharded one"
import json, sys
timing = {"session", "elapsed_s", "judge_ms"}
reports = {d: json.load(open(f)) for d, f in (("all", "merged.json"), ("one", "one.json"))}
def samples(d):
    rows = [json.loads(l) for l in open(f"runs/arith/{d}/samples.jsonl")]
    return {(r["p"], r["index"]): {k: v for k, v in r.items() if k not in timing} for r in rows}
def deciding(d, rows):
    trials = {p["p"]: p["trials"] for p in reports[d]["problems"]}
    return {k: v for k, v in rows.items() if k[1] < trials[k[0]]}
a, b = samples("all"), samples("one")
shared = a.keys() & b.keys()
bad = [k for k in sorted(shared) if a[k] != b[k]]
if bad:
    sys.exit(f"{len(bad)} samples differ, first (p, index) = {bad[0]}:\n{a[bad[0]]}\n{b[bad[0]]}")
da, db = deciding("all", a), deciding("one", b)
if da.keys() != db.keys():
    sys.exit(f"deciding samples differ: {sorted(da.keys() ^ db.keys())[:10]}")
for r in reports.values():
    for k in ("shard", "merged_from", "checksum", "judge_isolation"):
        r["run"].pop(k, None)
    del r["throughput"]
    for p in r["problems"]:
        del p["beyond"]
ra, rb = reports["all"], reports["one"]
if ra != rb:
    sys.exit(f"reports differ:\n{json.dumps(ra)[:3000]}\n{json.dumps(rb)[:3000]}")
print(f"merged == unsharded: {len(da)} deciding samples of {ra['task']['problems']} problems "
      f"identical, {len(shared)} samples held by both identical, reports equal")
PY
log "passed"
