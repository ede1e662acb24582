"""Shared pieces of the benchmarks: machine facts, interleaved timing, the data, useful FLOPs.

Timings on a shared machine drift with the load. Every benchmark therefore runs its alternatives
interleaved (ours, theirs, ours, theirs, ...) so the load hits both alike, reports medians, and
prints the load average beside each run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
HH_TEST = ROOT.parent / "shared" / "data" / "hh-rlhf" / "helpful-base_test.jsonl.gz"
OUT_DIR = ROOT / "outputs" / "bench"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import transformers

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        import trl
        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def print_machine(info: Mapping[str, Any]) -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def interleaved(runs: Mapping[str, Callable[[], Any] | tuple[Callable[[], Any], Callable[[Any], Any]]],
                repeats: int, warmup: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Run each alternative `repeats` times, alternating, timing each call with perf_counter.

    An alternative is a callable (timed whole), a (setup, run) pair: setup() builds what run(x)
    needs (a fresh model, a trainer) and only run is timed, or (setup, run, check): check(x, result),
    untimed, turns the result into what is kept (a held-out accuracy). Returns name -> [{"seconds", "load",
    "result"}]. A warm-up round of each (untimed) comes first, so one-off costs (imports,
    allocator, first-call kernel selection) hit neither side's timings.
    """
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for r in range(repeats + int(warmup)):
        for name, alt in runs.items():
            setup, run, *check = alt if isinstance(alt, tuple) else ((lambda: None), (lambda _, f=alt: f()))
            arg = setup()
            before = load()
            start = time.perf_counter()
            result = run(arg)
            seconds = time.perf_counter() - start
            if check and not (warmup and r == 0):
                result = check[0](arg, result)
            if warmup and r == 0:
                print(f"  warm-up {name:<28} {seconds:8.2f} s   (load avg {before})", flush=True)
                continue
            out[name].append({"seconds": seconds, "load": before, "result": result})
            print(f"  run {r + int(not warmup)}/{repeats} {name:<28} {seconds:8.2f} s   (load avg {before})", flush=True)
    return out


def median_seconds(rows: Sequence[Mapping[str, Any]]) -> float:
    return statistics.median(r["seconds"] for r in rows)


def save(name: str, payload: Mapping[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}")
    return path


def bench_pairs(n: int, data: str = "hh", seed: int = 0) -> tuple[list, str]:
    """`n` preference pairs: the real HH-RLHF sample beside the checkout, or the synthetic generator.

    data="hh" falls back to synthetic (and says so) when the sample is absent.
    """
    if data == "hh" and HH_TEST.exists():
        from ser.data.loading import load_pairs

        pairs, _ = load_pairs({"adapter": "hh_rlhf", "path": str(HH_TEST)})
        if len(pairs) < n:
            raise ValueError(f"{HH_TEST} holds {len(pairs)} pairs; asked for {n}")
        return pairs[:n], f"hh-rlhf helpful-base test ({HH_TEST.name}), first {n} pairs"
    from ser.data.synthetic import synthetic_pairs

    note = " (the HH-RLHF sample is absent)" if data == "hh" else ""
    return synthetic_pairs(n, seed, 0.5, 2), f"synthetic, {n} pairs{note}"


def load_minilm(seed: int = 0):
    """all-MiniLM-L6-v2 with a one-output head (seeded), tokenizer truncating from the left."""
    import pytorch_lightning as pl
    import transformers
    from omegaconf import OmegaConf

    from ser.reward.backbone import load_backbone

    transformers.logging.set_verbosity_error()
    pl.seed_everything(seed, verbose=False)
    model, tokenizer = load_backbone(OmegaConf.load(ROOT / "conf" / "rm" / "minilm.yaml"))
    tokenizer.truncation_side = "left"
    return model, tokenizer


def encoder_flops(config: Any, lengths: Sequence[int]) -> int:
    """Matmul FLOPs (2 per multiply-add) of a BERT-style encoder + pooler + 1-output head over
    sequences of these (unpadded) lengths: the useful work, padding excluded."""
    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0
    for n in lengths:
        per_layer = 8 * n * d * d + 4 * n * d * ff + 4 * n * n * d  # QKV+out proj, FFN, QK^T and AV
        total += layers * per_layer + 2 * d * d + 2 * d             # pooler (CLS) and head
    return total


def _gflops(fn: Callable[[torch.Tensor], Any], inputs: Sequence[torch.Tensor], flops: int, seconds: float) -> float:
    """GFLOP/s of fn over inputs taken in turn (several inputs: no backend may reuse work by pointer)."""
    for x in inputs:
        fn(x)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(inputs[reps % len(inputs)])
        reps += 1
    return flops * reps / (time.perf_counter() - start) / 1e9


def matmul_peaks(dtype: torch.dtype, sizes: Sequence[int] = (1024, 2048), seconds: float = 1.0) -> dict[str, float]:
    """Best GFLOP/s on square matrices of these sizes (this process's threads), per GEMM backend:
    torch.matmul (MKL or OpenBLAS on CPU) and oneDNN's linear, which compiled scoring runs on.
    They differ a lot by CPU: on AMD, MKL keeps to its AVX2 kernels while oneDNN uses AVX-512,
    so the matmul alone would understate the peak by half there."""
    best = {"matmul": 0.0}
    onednn = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if onednn is not None and torch.backends.mkldnn.is_available():
        best["onednn"] = 0.0
    with torch.inference_mode():
        for n in sizes:
            xs = [torch.randn(n, n).to(dtype) for _ in range(3)]
            w, bias = torch.randn(n, n).to(dtype), torch.zeros(n).to(dtype)
            best["matmul"] = max(best["matmul"], _gflops(lambda x, w=w: x @ w, xs, 2 * n ** 3, seconds))
            if "onednn" in best:
                best["onednn"] = max(best["onednn"], _gflops(lambda x, w=w, b=bias: onednn(x, w, b, "none", [], ""), xs,
                                                             2 * n ** 3, seconds))
    return best


def matmul_peak(dtype: torch.dtype, sizes: Sequence[int] = (1024, 2048), seconds: float = 1.0) -> float:
    """The machine's measured GEMM peak in this dtype: the best backend of `matmul_peaks`."""
    return max(matmul_peaks(dtype, sizes, seconds).values())


def _op_seconds(fn: Callable[[], Any], min_seconds: float = 0.05) -> float:
    """Median seconds of one call of fn, over at least min_seconds of calls after a warm-up call."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def encoder_op_ceiling(config: Any, lengths: Sequence[int], batch_size: int,
                       dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """The fastest an encoder's forward over these sequences can be if only its matmuls and its
    attention cost time: each op timed alone at the shapes scoring runs it (length-sorted batches,
    padded to each batch's longest), layers x the sum. Everything else (GELU, layer norms, adds,
    the mask, tokenising) is counted as free, so no scoring path can beat this.

    Returns seconds for the linears, the attention and both, and `packed_seconds`: the same with
    no padding at all (linears over real tokens only, attention sequence by sequence)."""
    import torch.nn.functional as F

    d, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    shapes = ((d, d), (d, d), (d, d), (d, d), (d, ff), (ff, d))  # Q, K, V, output; FFN up, down
    weights = {(k, n): (torch.randn(n, k).to(dtype), torch.randn(n).to(dtype)) for k, n in set(shapes)}
    linear_cache: dict[tuple[int, int, int], float] = {}
    attention_cache: dict[tuple[int, int], float] = {}

    def linear(m: int, k: int, n: int) -> float:
        if (m, k, n) not in linear_cache:
            x, (w, b) = torch.randn(m, k).to(dtype), weights[(k, n)]
            linear_cache[(m, k, n)] = _op_seconds(lambda: F.linear(x, w, b))
        return linear_cache[(m, k, n)]

    def attention(batch: int, n: int) -> float:
        if (batch, n) not in attention_cache:
            q = torch.randn(batch, heads, n, d // heads).to(dtype)
            attention_cache[(batch, n)] = _op_seconds(lambda: F.scaled_dot_product_attention(q, q, q))
        return attention_cache[(batch, n)]

    order = sorted(lengths)
    out = {"linear_seconds": 0.0, "attention_seconds": 0.0, "packed_seconds": 0.0}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            longest, tokens = max(batch), sum(batch)
            out["linear_seconds"] += layers * sum(linear(len(batch) * longest, k, n) for k, n in shapes)
            out["attention_seconds"] += layers * attention(len(batch), longest)
            out["packed_seconds"] += layers * (sum(linear(tokens, k, n) for k, n in shapes)
                                               + sum(attention(1, n) for n in batch))
    out["seconds"] = out["linear_seconds"] + out["attention_seconds"]
    return out
