"""Do the speed options change results? Test accuracy with each option on and off, over seeds.

    python -m experiments.bench.accuracy_check [--seeds 0 1 2] [--extra experiment=smoke]

Runs `python run.py <extra> seed=S <variant>` for: the baseline, `rm.group_by_length=true`
(length-grouped training batches) and `rm.score_precision=bf16-mixed` (bf16 autocast in pool
scoring and evaluation), and prints final test accuracy per seed, mean ± std per variant, and the
paired difference to the baseline. "Unchanged within noise": the mean paired difference is
within the seed-to-seed spread of the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from experiments.bench.common import ROOT, load, machine, print_machine, save

VARIANTS = {"baseline": [], "group_by_length": ["rm.group_by_length=true"],
            "bf16 scoring": ["rm.score_precision=bf16-mixed"]}


def run(extra: list[str], seed: int, variant: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="ser_acc_") as tmp:
        env = {**os.environ, "PROJECT_ROOT": tmp, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
               "PYTHONPATH": str(ROOT)}
        args = [sys.executable, str(ROOT / "run.py"), *extra, f"seed={seed}", *variant]
        done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
        summary = json.loads(next(Path(tmp).glob("outputs/ser/runs/*/summary.json")).read_text())
    return {"test_accuracy": summary["final"]["test_accuracy"], "loops": len(summary["loops"]),
            "seconds": sum(e["seconds"] for e in summary["loops"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra", nargs="*", default=["experiment=smoke"])
    args = parser.parse_args(argv)
    info = machine()
    print_machine(info)
    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name, variant in VARIANTS.items():
            before = load()
            row = run(args.extra, seed, variant)
            results[name].append(row)
            print(f"  seed {seed} {name:<16} test acc {row['test_accuracy']:.4f}  loops {row['loops']}  "
                  f"{row['seconds']:.0f} s (load avg {before})", flush=True)
    base = [r["test_accuracy"] for r in results["baseline"]]
    spread = statistics.stdev(base) if len(base) > 1 else float("nan")
    print(f"\n{'variant':<18}{'mean acc':>10}{'std':>8}{'mean diff':>11}   (baseline seed std {spread:.4f})")
    table = {}
    for name, rows in results.items():
        acc = [r["test_accuracy"] for r in rows]
        diff = statistics.mean(a - b for a, b in zip(acc, base))
        table[name] = {"accuracy": acc, "mean": statistics.mean(acc), "mean_diff": diff,
                       "std": statistics.stdev(acc) if len(acc) > 1 else float("nan"),
                       "seconds": [r["seconds"] for r in rows]}
        print(f"{name:<18}{table[name]['mean']:>10.4f}{table[name]['std']:>8.4f}{diff:>+11.4f}")
    payload = {"machine": info, "extra": args.extra, "seeds": args.seeds, "results": table}
    save("accuracy_check", payload)
    return payload


if __name__ == "__main__":
    main()
