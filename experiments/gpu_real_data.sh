#!/usr/bin/env bash
# The GPU counterpart of real_data.sh: experiment=gpu/* (every MiniLM block trained, 512 tokens) on
# the real samples in ../shared/data, several runs at a time on one GPU (MiniLM needs ~2 GB each).
# Each run is its own `run.py -m` job, so run dirs match a plain multirun's and a rerun skips finished runs.
#   bash experiments/gpu_real_data.sh               # runs + tables
#   bash experiments/gpu_real_data.sh runs          # only the runs (e.g. on a GPU machine without pandas)
#   bash experiments/gpu_real_data.sh tables        # only the tables, from finished runs
#   JOBS=4 SEEDS="0 1" DATASETS=hh_rlhf bash experiments/gpu_real_data.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-8}
SEEDS=${SEEDS:-0 1 2}
DATASETS=${DATASETS:-hh_rlhf summarize ultrafeedback stack_exchange}
SCHEDULES=${SCHEDULES:-ser seed_only full_data}   # ser first: the longest runs start first
S=outputs/ser/sweeps
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false
if [ "${1:-}" != tables ]; then
  mkdir -p outputs/gpu_logs
  for s in $SCHEDULES; do for d in $DATASETS; do for seed in $SEEDS; do
    echo "experiment=gpu/$d schedule=$s seed=$seed"
  done; done; done | PY=$PY xargs -P "$JOBS" -I{} bash -c '
    log=outputs/gpu_logs/$(echo "{}" | tr " /=" "_._").log
    start=$(date +%s)
    if $PY run.py -m {} >"$log" 2>&1; then echo "done $(( $(date +%s) - start ))s: {}"
    else echo "FAILED: {} (log: $log)"; tail -n 25 "$log"; fi'
fi
if [ "${1:-}" != runs ]; then
  shopt -s nullglob
  $PY experiments/collect.py $S/experiment=gpu_*,schedule=*,seed=[012] --group-by data,rm,schedule,variant \
      --regenerate "bash experiments/gpu_real_data.sh tables" --out docs/results/real_gpu_main >/dev/null
fi
