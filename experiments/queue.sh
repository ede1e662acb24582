#!/usr/bin/env bash
# Every long experiment in one resumable queue, in the order the open questions need them: the coevolve
# table (docs/results/coevolve.md), the synthetic switches and fresh seeds (docs/results/synthetic.md),
# then the real-data table (docs/results/real_largest.md). Each script skips finished runs and resumes
# unfinished ones, so after a stop (a kill, a reboot, the end of a working day) the same command continues:
#   setsid nohup nice -n 10 bash experiments/queue.sh > queue.log 2>&1 &
# Pause it for a timing (the benchmarks want a quiet machine) and go on afterwards:
#   bash experiments/queue.sh pause      bash experiments/queue.sh resume
# Keep what finished across machines: `bash experiments/queue.sh save` packs every finished run's records into
# experiments/records/ (commit them); each script restores those records first and so skips their runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PGID_FILE=outputs/queue.pgid
case "${1:-}" in
  save) exec "${PY:-.venv/bin/python}" experiments/records.py save outputs/ser/sweeps ;;
  pause|resume)
    # the queue's whole process group: the scripts, their run.py sweeps and the joblib workers
    [ -s "$PGID_FILE" ] || { echo "no queue running from $(pwd) ($PGID_FILE missing)" >&2; exit 1; }
    kill -s "$([ "$1" = resume ] && echo CONT || echo STOP)" -- "-$(cat "$PGID_FILE")"
    exit 0 ;;
esac
# its own process group, so that pause and resume reach every job and nothing else (not the calling shell)
[ "$(ps -o pgid= $$ | tr -d ' ')" = "$$" ] || exec setsid bash "$0" "$@"
mkdir -p outputs && ps -o pgid= $$ | tr -d ' ' > "$PGID_FILE"
trap 'rm -f "$PGID_FILE"' EXIT
bash experiments/coevolve.sh
bash experiments/synthetic.sh
bash experiments/real_largest.sh
