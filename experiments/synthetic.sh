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
  # Why subtle pairs stay put: the loop's switches on seeds 0 and 1, the screening seeds (validation decides).
  sweep schedule=ser seed=0,1 rm.loss.hard_pair_gamma=2
  sweep schedule=ser seed=0,1 ser.rule.status2_kind=gap   # status 2 as the paper writes it
  sweep schedule=ser seed=0,1 ser.seed_weight=3
  sweep schedule=ser seed=0,1 rm.loss.margin=1.0
  sweep schedule=ser seed=0,1 ser.retrain_from=last
  sweep schedule=ser seed=0,1 ser.loop_epochs=4
  # more of the pool per loop: at 0.25 the loops label 58% of the pool and ~99.6% of those labels are right
  sweep schedule=ser seed=0,1 ser.top_fraction=0.4,0.5
  sweep schedule=ser seed=0,1 'ser.phases=[1,2,2],[1,1,2,2]'
  sweep schedule=ser seed=0,1 phases=adaptive   # status 1 while it keeps min_pairs: with top_gap, every loop
  # Continuing from the last RM with the switches that label more of the pool or weigh the hard pairs: under
  # retrain_from=last the loops label 786 of 1,359 pool pairs, 99.7% of them right, and test accuracy still
  # rises in loop 3, so more of the same labels should help if anything does.
  sweep schedule=ser seed=0,1 ser.retrain_from=last ser.top_fraction=0.4
  sweep schedule=ser seed=0,1 ser.retrain_from=last 'ser.phases=[1,1,2,2]'
  sweep schedule=ser seed=0,1 ser.retrain_from=last rm.loss.hard_pair_gamma=2
  # The setting of the other seeds: of every SER setting above (and the default, and stratify_bins=4 on seeds 0-1),
  # the best on seeds 0-1's validation (experiments/choose_on_val.py; its overrides, one per line, none for the
  # default). Every candidate runs before this line, so a resumed queue chooses the same.
  chosen=$($PY experiments/choose_on_val.py $S --explain)
  IFS=$'\n' read -r -d '' -a best <<< "$chosen" || true
  sweep schedule=ser seed=2,3,4 "${best[@]}"
  # Second round, on seeds 0-4's validation (245 pairs; seeds 0-1's 98 saturate, four settings tie at 96): the winner
  # alone, with the larger cap (its loops label 58% of the pool, ~99.7% right) and with the seed weighed thrice (the
  # mix of seed and self-labels; every loop retrains on the seed). Every candidate runs before the choice line.
  sweep schedule=ser seed=0,1,2,3,4 "${best[@]}" ser.top_fraction=0.4
  sweep schedule=ser seed=0,1,2,3,4 "${best[@]}" ser.seed_weight=3
  chosen2=$($PY experiments/choose_on_val.py $S --seeds 0,1,2,3,4 --explain)
  IFS=$'\n' read -r -d '' -a best2 <<< "$chosen2" || true
  # Fresh seeds 5-9: no setting was chosen on their splits. The paper's three columns with the defaults
  # (ser=top_gap, phases=paper), the chosen setting, and the ceiling of any self-labeling: every pool label
  # revealed except the swapped-step pairs the seed RM cannot tell apart (data.synthetic.withhold_from_pool;
  # the generator is unchanged).
  # (the chosen setting before the default: the fresh seeds exist to measure the setting validation chose)
  sweep schedule=seed_only,full_data seed=5,6,7,8,9
  sweep schedule=ser seed=5,6,7,8,9 "${best[@]}"
  sweep schedule=ser seed=5,6,7,8,9 "${best2[@]}"   # the second round's winner (skipped when it is the first's)
  sweep schedule=ser seed=5,6,7,8,9
  sweep schedule=full_data 'data.synthetic.withhold_from_pool=[swapped_steps]' seed=5,6,7,8,9
  # The baselines under the chosen setting's RM overrides (a loss weighting trains the seed and full-data RMs too),
  # so that its gap is also measured against baselines trained alike; none when it only changes the loop (ser.*).
  chosen_rm=$($PY experiments/choose_on_val.py $S --rm-only)
  IFS=$'\n' read -r -d '' -a same <<< "$chosen_rm" || true
  [ ${#same[@]} -eq 0 ] || sweep schedule=seed_only,full_data seed=0,1,2,3,4,5,6,7,8,9 "${same[@]}"
  # Seeds 0-4: the main table and its ceiling.
  sweep schedule=seed_only,full_data,ser seed=0,1,2,3,4
  sweep schedule=full_data 'data.synthetic.withhold_from_pool=[swapped_steps]' seed=0,1,2,3,4
  # the switch best on validation before the screen above, on the rest of seeds 0-4 (skipped if it was chosen)
  sweep schedule=ser seed=2,3,4 rm.loss.hard_pair_gamma=2
  # the cap shared across response-length bins: the default keeps 774 short profile wrong-detail pairs for 88 of the
  # procedures, where every remaining wrong-detail test error is (seeds 0 and 2, docs/results/README.md)
  sweep schedule=ser seed=0,1 ser.stratify_bins=4
  # measured on the page already; not a candidate (its validation number is the best of its loops)
  sweep schedule=ser seed=0,1 ser.final_model=best_val ser.patience=2   # the final RM by validation accuracy
fi
$PY experiments/synthetic_report.py "$S" --out docs/results/synthetic
