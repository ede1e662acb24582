#!/usr/bin/env bash
# The real-data runs behind docs/results/real_*.md, in priority order; every command resumes where it
# stopped (run dirs derive from the overrides), so re-running this script continues an interrupted queue.
#   bash experiments/real_data.sh            # all of it (hours on a 2-core CPU)
#   bash experiments/real_data.sh hh_rlhf    # one dataset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATASETS=${1:-"hh_rlhf ultrafeedback summarize stack_exchange"}
SEEDS=${SEEDS:-0,1,2}
for d in $DATASETS; do   # the paper's three columns
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser,full_data,seed_only
done
for d in $DATASETS; do   # issue 8's ablation: scale-free rules and noise-robust options
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser=zscore,top_gap,paper
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.weighting=confidence
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.relabel=drop ser.agreement.kind=dropout
done
