#!/usr/bin/env bash
# schedule=coevolve against its baselines on the CPU (docs/results/coevolve.md): SmolLM2-135M-Instruct as
# the policy, the MiniLM RM, the embedded data's exact gold judge; the same number of policy updates in each.
# Resumable: re-running continues where it stopped and skips finished runs. Hours of CPU: run it in the
# background (nohup bash experiments/coevolve.sh &), then `bash experiments/coevolve.sh tables`.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0,1,2}
. experiments/queue_lib.sh
# one run at a time in each of two lanes (one when JOBS=1), each run's record saved when it finishes: a sweep of
# several runs on two workers left one core idle behind its longest run and saved nothing until all had ended
PAR="launcher=joblib hydra.launcher.n_jobs=1"
lane() { for args in "$@"; do sweep experiment=coevolve/cpu $args; done; }
if [ "${1:-}" != tables ]; then
  online=() offline=()
  for s in ${SEEDS//,/ }; do
    # the RM co-evolves; the RM frozen after loop 0 (fixed-RM online DPO, TRL's setting)
    online+=("seed=$s coevolve.rm=self" "seed=$s coevolve.rm=frozen")
    # offline: DPO on the fixed pool's SER self-labels + the seed (schedule=ser_dpo), same policy settings
    offline+=("seed=$s schedule=ser_dpo evaluate.gold.judge=synthetic policy.steps=96")
  done
  # a full-data RM: a ceiling, after the comparisons the table is for
  for s in ${SEEDS//,/ }; do offline+=("seed=$s coevolve.rm=full_data"); done
  if [ "$JOBS" -ge 2 ]; then lane "${online[@]}" & first=$!; lane "${offline[@]}"; wait "$first"
  else lane "${online[@]}" "${offline[@]}"; fi
fi
$PY experiments/coevolve_report.py $S --out docs/results/coevolve
