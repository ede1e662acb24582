#!/usr/bin/env bash
# schedule=coevolve against its baselines on the CPU (docs/results/coevolve.md): SmolLM2-135M-Instruct as
# the policy, the MiniLM RM, the embedded data's exact gold judge; the same number of policy updates in each.
# Resumable: re-running continues where it stopped and skips finished runs. Hours of CPU: run it in the
# background (nohup bash experiments/coevolve.sh &), then `bash experiments/coevolve.sh tables`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0,1,2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# fp32 on every machine (trainer.precision's default is bf16 where the CPU has bf16 units): one precision for the
# whole table whichever machine a session runs on, and the config hash that lets a restored record be skipped
export SER_PRECISION=${SER_PRECISION:-32-true}
S=outputs/ser/sweeps
PAR="launcher=joblib hydra.launcher.n_jobs=$JOBS"
# one sweep, then every finished run's record into experiments/records/ (commit them)
sweep() { $PY run.py -m "$@" $PAR; $PY experiments/records.py save $S; }
# the finished runs kept in experiments/records/ (a fresh checkout has no outputs/): restored, then skipped
$PY experiments/records.py restore $S
if [ "${1:-}" != tables ]; then
  # the RM co-evolves; the RM frozen after loop 0 (fixed-RM online DPO, TRL's setting); a full-data RM
  sweep experiment=coevolve/cpu seed=$SEEDS coevolve.rm=self,frozen,full_data
  # offline: DPO on the fixed pool's SER self-labels + the seed (schedule=ser_dpo), same policy settings
  sweep experiment=coevolve/cpu schedule=ser_dpo evaluate.gold.judge=synthetic seed=$SEEDS policy.steps=96
fi
$PY experiments/coevolve_report.py $S --out docs/results/coevolve
