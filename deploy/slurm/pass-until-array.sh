#!/bin/bash
#SBATCH --job-name=pass-until --array=0-15 --cpus-per-task=8 --time=12:00:00
#SBATCH --requeue --open-mode=append --output=pass-until-%A_%a.out
# Array task I runs shard I of SHARDS (keep SHARDS the array's size). Preempted, requeued or
# resubmitted, a task runs this same command again and resumes its shard where it stopped.
#   submit:     sbatch pass-until-array.sh [more `pass-until run` options, which win]
#   lost task:  SHARDS=16 sbatch --array=I pass-until-array.sh
#   afterwards: pass-until merge runs/arith/shard-* --out runs/arith/all
#               pass-until report runs/arith/all
set -euo pipefail
SHARDS=${SHARDS:-16}
exec pass-until run -m smollm2-135m --task tasks/arithmetic.jsonl --r 2 --max-samples 100000 \
    --threads "${SLURM_CPUS_PER_TASK:-1}" \
    --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" --out "runs/arith/shard-$SLURM_ARRAY_TASK_ID" "$@"
