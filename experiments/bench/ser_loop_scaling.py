"""Time and peak memory of one SER loop as the unlabeled pool grows (1k, 4k, 16k pairs).

    python -m experiments.bench.ser_loop_scaling [--pools 1000 4000 16000] [--rm tiny|minilm]

Each size is a fresh `python run.py` process (synthetic data sized so the pool has about that many
pairs, the seed RM, then exactly one self-labeling loop: score the pool, judge, select, retrain one
epoch, evaluate). Printed per size: the loop's seconds (from summary.json), seconds per pool pair,
and the process's peak resident memory (os.wait4). Linear growth shows as a flat seconds-per-pair
column and memory rising by a constant per pair. `--rm tiny` (default) is a tiny random BERT, so
the framework's own per-pair costs (tokenising, dedup, selection, bookkeeping) are not hidden
behind the model; `--rm minilm` times the real backbone. `--threads` (default 1) sets the run's
OMP_NUM_THREADS: on a shared machine, torch's default of one thread per core makes a tiny model's
many small ops wait on each other (measured 20 steps: 1.2 s with 1 thread, 13.7 s with 2 at load 8),
which would swamp the per-pair costs this benchmark is about.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.bench.common import ROOT, load, machine, print_machine, save

POOL_SHARE = 0.8 * 0.85  # the pool's share of the data: 1 - test_fraction, times 1 - seed_fraction


def one_run(pool: int, rm: str, workdir: Path, threads: int | None = 1) -> dict:
    n_pairs = round(pool / POOL_SHARE)
    args = ["experiment=smoke", f"rm={rm}", f"data.synthetic.n_pairs={n_pairs}", "splits.seed_fraction=0.15",
            "ser.phases=[1]", "ser.patience=5", "rm.epochs=1", "ser=paper", "ser.min_pairs=1",
            "ser.confidence._target_=ser.evolve.confidence.Pairwise", "ser.rule.tau_high=0.5", "ser.rule.tau_low=0.5",
            "ser.top_fraction=0.5"]  # keep half the pool
    if rm != "tiny":
        args += ["rm.optimizer.lr=5e-5", "data.max_length=128"]
    env = {**os.environ, "PROJECT_ROOT": str(workdir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = load()
    with open(workdir / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"run.py {' '.join(args)} failed; see {workdir / 'log.txt'}")
    summary_path = next(workdir.glob("outputs/ser/runs/*/summary.json"))
    summary = json.loads(summary_path.read_text())
    loops = {e["loop"]: e for e in summary["loops"]}
    if 1 not in loops:
        raise RuntimeError(f"no loop 1 ran: {summary['stop_reason']}")
    pool_size = summary["splits"]["pool"]
    return {"pool": pool_size, "n_pairs": n_pairs, "loop1_seconds": loops[1]["seconds"],
            "loop0_seconds": loops[0]["seconds"], "selected": loops[1]["selected"],
            "train_pairs": loops[1]["train_pairs"], "peak_rss_mb": usage.ru_maxrss / 1024, "load": before}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--rm", default="tiny")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (0: torch's default)")
    args = parser.parse_args(argv)
    info = machine()
    print_machine(info)
    rows = []
    for pool in args.pools:
        with tempfile.TemporaryDirectory(prefix="ser_scaling_") as tmp:
            row = one_run(pool, args.rm, Path(tmp), args.threads)
        rows.append(row)
        print(f"  pool {row['pool']:>6}: loop 1 {row['loop1_seconds']:8.1f} s, selected {row['selected']:>6}, "
              f"trained on {row['train_pairs']:>6}, peak RSS {row['peak_rss_mb']:7.0f} MB (load avg {row['load']})",
              flush=True)
    print(f"\n{'pool':>8}{'loop s':>10}{'ms/pair':>10}{'peak MB':>10}{'MB/1k pairs over smallest':>28}")
    first = rows[0]
    for row in rows:
        grow = (row["peak_rss_mb"] - first["peak_rss_mb"]) / max(row["pool"] - first["pool"], 1) * 1000
        print(f"{row['pool']:>8}{row['loop1_seconds']:>10.1f}{1000 * row['loop1_seconds'] / row['pool']:>10.2f}"
              f"{row['peak_rss_mb']:>10.0f}{grow if row is not first else float('nan'):>28.2f}")
    payload = {"machine": info, "rm": args.rm, "threads": args.threads, "rows": rows}
    save(f"ser_loop_scaling_{args.rm}", payload)
    return payload


if __name__ == "__main__":
    main()
