#!/usr/bin/env bash
# SER on the largest real preference data reachable here (docs/results/real_largest.md): every HH-RLHF
# helpfulness subset (data=hh_helpful_shared, ~5,100 pairs), TL;DR and UltraFeedback, with every MiniLM block
# trained at 256 tokens (experiment=real/*), the setting in which seed RMs leave chance on validation.
# Resumable: re-running continues where it stopped and skips finished runs. On the 2-core CPU this is
# a day of compute; run it in the background and collect what finished:
#   nohup bash experiments/real_largest.sh > real_largest.log 2>&1 &
#   bash experiments/real_largest.sh tables
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0,1,2,3,4,5}
PAR="launcher=joblib hydra.launcher.n_jobs=$JOBS"
. experiments/queue_lib.sh
if [ "${1:-}" != tables ]; then
  # the two small datasets first (TL;DR 1.8k and UltraFeedback 1.2k pairs: ~70 min for six seeds of the three
  # schedules at JOBS=2), then HH (5.1k pairs: a seed's three runs take ~2.5 h), so whole tables land early
  for d in summarize ultrafeedback hh_helpful; do
    # seed first: Hydra's sweeper runs the product in the order the overrides are given, so the three schedules
    # of a seed finish together and a queue stopped part way leaves whole paired seeds for the table
    sweep experiment=real/$d seed=$SEEDS schedule=seed_only,ser,full_data
  done
  # The synthetic screen's choice (docs/results/README.md: each loop continues from the last RM) on real data,
  # beside the default SER of the table above and against its seed_only / full_data runs: does it transfer?
  # ~6 min a TL;DR or UltraFeedback run, ~25 min an HH one, two at a time.
  for d in summarize ultrafeedback hh_helpful; do
    sweep experiment=real/$d seed=$SEEDS schedule=ser ser.retrain_from=last
  done
  # The RM choice (docs/results/real_rm_choice.md, made on seed 0's validation: MiniLM every block 70.49 against
  # SmolLM2-135M-Instruct with LoRA 56.56) on two more splits, after the table: each SmolLM2 seed RM is ~1.6 h
  # of CPU, and the table's MiniLM seed_only runs are the other column.
  sweep experiment=real/hh_helpful schedule=seed_only seed=0,1,2 rm=smollm2
fi
# the tables of what has finished so far: a dataset with no run yet is left out, a table with no run at all is not written
shopt -s nullglob extglob
table() {  # OUT METRIC RUN_DIR...
  local out=$1 metric=$2; shift 2
  if [ $# -eq 0 ]; then echo "no runs yet for docs/results/$out" >&2; return; fi
  $PY experiments/collect.py "$@" --metric "$metric" --out "docs/results/$out" --regenerate "bash experiments/real_largest.sh tables"
}
# the default's runs: a run dir named by its seed alone (a switch such as ser.retrain_from=last follows the seed)
table real_largest test_accuracy $S/experiment=real_{hh_helpful,summarize,ultrafeedback},schedule=*,seed=+([0-9])
# SER with each loop continuing from the last RM, beside the default SER, against the same references
last=($S/experiment=real_{hh_helpful,summarize,ultrafeedback},schedule=ser,seed=+([0-9]),ser.retrain_from=last/summary.json)
if [ ${#last[@]} -gt 0 ]; then
  table real_largest_retrain_last test_accuracy --group-by data,rm,schedule,variant \
    $S/experiment=real_{hh_helpful,summarize,ultrafeedback},schedule=*,seed=+([0-9])?(,ser.retrain_from=last)
fi
# the RM choice compares two RMs: until SmolLM2 has a run, the committed page (measured on seed 0) is kept
# (finished runs only: a SmolLM2 run started and stopped part way has a run dir and no summary.json)
smollm2=($S/experiment=real_hh_helpful,rm=smollm2,schedule=seed_only,seed=*/summary.json)
smollm2=("${smollm2[@]%/summary.json}")
if [ ${#smollm2[@]} -eq 0 ]; then echo "no SmolLM2 run yet: docs/results/real_rm_choice.md kept" >&2
else table real_rm_choice val_accuracy $S/experiment=real_hh_helpful,schedule=seed_only,seed=[012] "${smollm2[@]}"
fi
