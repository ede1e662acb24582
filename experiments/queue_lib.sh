# Sourced by the queue's scripts (synthetic.sh, coevolve.sh, real_largest.sh) from the repository root, after
# `set -euo pipefail`; each sets PAR (its launcher overrides) before its first sweep.
#   sweep OVERRIDES...   one `run.py -m` sweep, then every finished run's record into experiments/records/ (commit them)
# SER_QUEUE_DRY_RUN=1 runs nothing: each sweep prints its overrides on one line, shell-quoted, and the records and
# reports are left alone (tests/configs/test_queue_sweeps.py composes and validates every run a script would start).
PY=${PY:-.venv/bin/python}
S=outputs/ser/sweeps
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# fp32 on every machine (trainer.precision's default is bf16 where the CPU has bf16 units): one precision for a
# whole table whichever machine a session runs on, and the config hash that lets a restored record be skipped.
# An environment setting, not an override, so the run dirs stay those the finished runs are in.
export SER_PRECISION=${SER_PRECISION:-32-true}
if [ -n "${SER_QUEUE_DRY_RUN:-}" ]; then
  # one write a line: coevolve.sh's two lanes print at once, and two writes a line let them interleave mid-line
  sweep() { local line; line=$(printf '%q ' "$@"); printf '%s\n' "$line"; }
  PY=true
else
  # shellcheck disable=SC2086  # PAR is a list of overrides
  sweep() { $PY run.py -m "$@" $PAR; $PY experiments/records.py save $S; }
fi
# the finished runs kept in experiments/records/ (a fresh checkout has no outputs/): restored, then skipped
$PY experiments/records.py restore $S
