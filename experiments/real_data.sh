#!/usr/bin/env bash
# The real-data runs behind docs/results/real_data.md, dataset by dataset in issue order (HH, UltraFeedback,
# TL;DR, StackExchange): the paper's three columns, then the selection-rule and noise-robustness ablation.
# Every command resumes where it stopped (run dirs derive from the overrides), so re-running this script
# continues an interrupted queue; finished runs only re-export their summary.
#   bash experiments/real_data.sh                 # everything (many hours on a 2-core CPU)
#   bash experiments/real_data.sh hh_rlhf         # one dataset
#   SEEDS=0 bash experiments/real_data.sh         # one seed
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
for d in ${1:-hh_rlhf ultrafeedback summarize stack_exchange}; do
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=seed_only,full_data,ser
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser=top_gap,zscore,paper
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.weighting=confidence
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser=top_gap ser.weighting=confidence
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.relabel=drop ser.agreement.kind=dropout
done
