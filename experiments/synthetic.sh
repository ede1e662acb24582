#!/usr/bin/env bash
# The embedded default's results (docs/results/synthetic.md). Every command resumes where it stopped and
# skips finished runs (run dirs derive from the overrides), so re-running this script continues it.
#   bash experiments/synthetic.sh            # runs + tables (~5 h on the 2-core CPU, JOBS=2)
#   bash experiments/synthetic.sh tables     # only the tables, from finished runs
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
PAR="launcher=joblib hydra.launcher.n_jobs=$JOBS"
. experiments/queue_lib.sh
if [ "${1:-}" != tables ]; then
  # What is still unmeasured first; then the runs measured before records were kept (docs/results/synthetic.md
  # shows them), so that their records land too.
  # The two switches best on validation of seeds 0-1 (hard_pair_gamma=2: 97.96; stratify_bins=4: 94.90; the
  # default 93.88), together.
  sweep schedule=ser seed=0,1 ser.stratify_bins=4 rm.loss.hard_pair_gamma=2
  # hard_pair_gamma=2 on the rest of seeds 0-4, the seeds the settings are chosen on
  sweep schedule=ser seed=2,3,4 rm.loss.hard_pair_gamma=2
  # Why subtle pairs stay put: the training switches of the loop on seeds 0 and 1 (chosen on validation only).
  sweep schedule=ser seed=0,1 ser.seed_weight=3
  sweep schedule=ser seed=0,1 rm.loss.margin=1.0
  sweep schedule=ser seed=0,1 ser.retrain_from=last
  sweep schedule=ser seed=0,1 ser.loop_epochs=4
  sweep schedule=ser seed=0,1 'ser.phases=[1,2,2],[1,1,2,2]'
  sweep schedule=ser seed=0,1 phases=adaptive   # status 1 while it keeps min_pairs: with top_gap, every loop
  # Fresh seeds 5-9: no setting was chosen on their splits. The paper's three columns with the defaults
  # (ser=top_gap, phases=paper), the switch best on validation, and the ceiling of any self-labeling: every pool
  # label revealed except the swapped-step pairs the seed RM cannot tell apart (data.synthetic.withhold_from_pool;
  # the generator is unchanged).
  sweep schedule=seed_only,full_data,ser seed=5,6,7,8,9
  sweep schedule=ser seed=5,6,7,8,9 rm.loss.hard_pair_gamma=2
  sweep schedule=full_data 'data.synthetic.withhold_from_pool=[swapped_steps]' seed=5,6,7,8,9
  # Seeds 0-4: the main table and its ceiling.
  sweep schedule=seed_only,full_data,ser seed=0,1,2,3,4
  sweep schedule=full_data 'data.synthetic.withhold_from_pool=[swapped_steps]' seed=0,1,2,3,4
  # the cap shared across response-length bins: the default keeps 774 short profile wrong-detail pairs for 88 of the
  # procedures, where every remaining wrong-detail test error is (seeds 0 and 2, docs/results/README.md)
  sweep schedule=ser seed=0,1 ser.stratify_bins=4
  # measured on the page already
  sweep schedule=ser seed=0,1 ser.rule.status2_kind=gap   # status 2 as the paper writes it
  sweep schedule=ser seed=0,1 ser.final_model=best_val ser.patience=2   # the final RM by validation accuracy
  sweep schedule=ser seed=0,1 rm.loss.hard_pair_gamma=2
fi
$PY experiments/synthetic_report.py "$S" --out docs/results/synthetic
