"""The machine's matmul peak: GFLOP/s of torch.matmul on square matrices, fp32 and bf16.

    python -m experiments.bench.matmul_peak [--sizes 512 1024 2048 4096] [--seconds 1]

The reference for "share of peak" in score_vs_pipeline; run with the process's default threads
(all cores), as scoring runs.
"""

from __future__ import annotations

import argparse

import torch

from experiments.bench.common import load, machine, matmul_peak, print_machine, save


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    info = machine()
    print_machine(info)
    rows = {}
    print(f"{'n':>6}{'fp32 GFLOP/s':>14}{'bf16 GFLOP/s':>14}{'load':>7}")
    for n in args.sizes:
        fp32 = matmul_peak(torch.float32, [n], args.seconds)
        bf16 = matmul_peak(torch.bfloat16, [n], args.seconds)
        rows[n] = {"fp32": fp32, "bf16": bf16, "load": load()}
        print(f"{n:>6}{fp32:>14.1f}{bf16:>14.1f}{rows[n]['load']:>7}")
    best = {k: max(r[k] for r in rows.values()) for k in ("fp32", "bf16")}
    print(f"peak: fp32 {best['fp32']:.0f} GFLOP/s, bf16 {best['bf16']:.0f} GFLOP/s")
    payload = {"machine": info, "sizes": rows, "peak": best}
    save("matmul_peak", payload)
    return payload


if __name__ == "__main__":
    main()
