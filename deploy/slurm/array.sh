#!/usr/bin/env bash
# An all-classes job as a Slurm job array: one array task per shard, each on one GPU.
#   sbatch --array=0-3 deploy/slurm/array.sh [RUN OPTIONS]   (4 shards; ARTIFACTS, OUT, DEVICE from the environment)
#   sbatch --dependency=afterok:<array job id> --wrap 'dgn-engine gallery results/shard-* --into results/all'
# A task that fails or is preempted is resubmitted as it was (sbatch --array=<id>); it resumes from its
# finished targets. Every task needs dgn-engine on PATH (pip install 'dgn-engine[gpu]' in a venv) and
# the artifacts folder where it runs.
#SBATCH --job-name=dgn-engine
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=dgn-engine-%A_%a.log
set -euo pipefail
: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-(N-1)}"
count=${SLURM_ARRAY_TASK_COUNT:?submit with sbatch --array=0-(N-1)}
exec dgn-engine run --artifacts "${ARTIFACTS:-artifacts}" --all-classes --device "${DEVICE:-cuda}" \
  --shard "$SLURM_ARRAY_TASK_ID/$count" --out "${OUT:-results}/shard-$SLURM_ARRAY_TASK_ID" --quiet "$@"
