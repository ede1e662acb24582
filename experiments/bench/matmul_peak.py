"""The machine's matmul peak: GFLOP/s on square matrices, fp32 and bf16, per GEMM backend.

    python -m experiments.bench.matmul_peak [--sizes 512 1024 2048 4096] [--seconds 1]

Two backends: torch.matmul (MKL on x86 CPUs) and oneDNN's linear (what compiled scoring runs on).
The peak is the best of both: on this AMD CPU MKL runs its AVX2 kernels and reaches about half of
what oneDNN's AVX-512 kernels reach in fp32, so torch.matmul alone would overstate every "share of
peak". The reference for "share of peak" in score_vs_pipeline; run with the process's default
threads (all cores), as scoring runs.
"""

from __future__ import annotations

import argparse

import torch

from experiments.bench.common import load, machine, matmul_peaks, print_machine, save


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    info = machine()
    print_machine(info)
    rows = {}
    print(f"{'n':>6}{'backend':>9}{'fp32 GFLOP/s':>14}{'bf16 GFLOP/s':>14}{'load':>7}")
    for n in args.sizes:
        fp32 = matmul_peaks(torch.float32, [n], args.seconds)
        bf16 = matmul_peaks(torch.bfloat16, [n], args.seconds)
        rows[n] = {"fp32": fp32, "bf16": bf16, "load": load()}
        for backend in fp32:
            print(f"{n:>6}{backend:>9}{fp32[backend]:>14.1f}{bf16[backend]:>14.1f}{rows[n]['load']:>7}")
    best = {k: max(v for r in rows.values() for v in r[k].values()) for k in ("fp32", "bf16")}
    print(f"peak (best backend): fp32 {best['fp32']:.0f} GFLOP/s, bf16 {best['bf16']:.0f} GFLOP/s")
    payload = {"machine": info, "sizes": rows, "peak": best}
    save("matmul_peak", payload)
    return payload


if __name__ == "__main__":
    main()
