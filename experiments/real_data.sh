#!/usr/bin/env bash
# The real-data runs behind docs/results/real_data.md, dataset by dataset in issue order (HH, UltraFeedback,
# TL;DR, StackExchange): the paper's three columns, then the selection-rule and noise-robustness ablation,
# then issue 3's ablations on HH. Every command resumes where it stopped (run dirs derive from the
# overrides), so re-running this script continues an interrupted queue; finished runs are skipped.
#   bash experiments/real_data.sh                 # everything (many hours on a 2-core CPU)
#   bash experiments/real_data.sh hh_rlhf         # one dataset's columns and rule ablation
#   bash experiments/real_data.sh ablations       # issue 3's ablations only
#   SEEDS=0 bash experiments/real_data.sh         # one seed
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
WHAT=${1:-hh_rlhf ultrafeedback summarize stack_exchange ablations}
for d in $WHAT; do
  [ "$d" = ablations ] && continue
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=seed_only,full_data,ser
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser=top_gap,zscore,paper
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.weighting=confidence
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser=top_gap ser.weighting=confidence
  $PY run.py -m experiment=cpu/$d seed=$SEEDS schedule=ser ser.relabel=drop ser.agreement.kind=dropout
done
case " $WHAT " in *" ablations "*)
  $PY run.py -m experiment=cpu/hh_rlhf seed=$SEEDS schedule=seed_only,ser,full_data splits.seed_fraction=0.05,0.1,0.25,0.5
  $PY run.py -m experiment=cpu/hh_rlhf seed=$SEEDS schedule=ser ser.rule=union,status1_only
  $PY run.py -m experiment=cpu/hh_rlhf seed=$SEEDS schedule=ser ser.confidence=pointwise,pairwise
  $PY run.py -m experiment=cpu/hh_rlhf seed=$SEEDS schedule=ser ser.thresholds.tau_high=0.6 ser.thresholds.tau_low=0.4 ser.thresholds.delta=0.4
  $PY run.py -m experiment=cpu/hh_rlhf seed=$SEEDS schedule=ser ser.thresholds.tau_high=0.52 ser.thresholds.tau_low=0.48 ser.thresholds.delta=0.2
esac
