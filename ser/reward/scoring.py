"""Score many texts fast: each distinct sequence once, length-sorted batches, inference mode.

Measured in docs/performance.md (`python -m experiments.bench.score_vs_pipeline`): sorting by
length removes most padding, `inference_mode` skips autograd bookkeeping, and bf16 autocast
(`precision="bf16-mixed"`) runs the matmuls on the CPU's bf16 units. `compile=True` adds
`torch.compile` (dynamic shapes) with Inductor's weight freezing: the weights become constants of
the compiled graph, which lets it pre-pack them for oneDNN and fuse the ops between the matmuls
(docs/performance.md has the measured speed-up; rewards equal the eager path's). Frozen weights go stale when the
model trains, so a compiled graph is kept only while every parameter is the same tensor at the same
version; it costs ~10-20 s to compile and pays back on pools of a few hundred pairs.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from ser.data.tokens import TokenCache
from ser.reward.collator import pad_batch
from ser.reward.frozen import frozen_prefix
from ser.reward.module import compute_rewards

_COMPILED: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, Callable]] = weakref.WeakKeyDictionary()


def weights_fingerprint(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or updated in place (optimizer steps,
    load_state_dict): identity and version counter of every tensor."""
    return tuple((id(t), t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


def _forward(model: torch.nn.Module, compile: bool) -> Callable[..., torch.Tensor]:
    """compute_rewards, or its torch.compile'd version with frozen weights (recompiled when they change)."""
    if not compile:
        return lambda ids, mask, pooling: compute_rewards(model, ids, mask, pooling)
    if frozen_prefix(model) is not None:
        raise ValueError("compile=True cannot trace rm.freeze_layers' cached-state replay; score without compiling")
    fingerprint = weights_fingerprint(model)
    cached = _COMPILED.get(model)
    if cached is None or cached[0] != fingerprint:
        torch._dynamo.reset()  # drop graphs whose frozen constants hold the old weights
        compiled = torch.compile(compute_rewards, dynamic=True)

        def forward(ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
            # freezing is read when Inductor compiles, which happens inside a call (and again for a new shape)
            with torch._inductor.config.patch(freezing=True):
                return compiled(model, ids, mask, pooling)

        cached = _COMPILED[model] = (fingerprint, forward)
    return cached[1]


def distinct_sequences(ids: Sequence[Sequence[int]]) -> tuple[list[Sequence[int]], torch.Tensor]:
    """(the distinct sequences in first-seen order, for each input the index of its distinct one)."""
    position: dict[tuple[int, ...], int] = {}
    distinct: list[Sequence[int]] = []
    where = []
    for seq in ids:
        key = tuple(seq)
        k = position.setdefault(key, len(distinct))
        if k == len(distinct):
            distinct.append(seq)
        where.append(k)
    return distinct, torch.as_tensor(where, dtype=torch.long)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices cut into batches of similar length (shortest first): little padding per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def scoring_device(accelerator: str | None) -> torch.device:
    """The device a single-process run scores on: the trainer's accelerator.

    Lightning moves the module back to the CPU when `fit` ends, so scoring on the module's own device
    would score a GPU run's pool, validation and test splits on the CPU.
    """
    name = str(accelerator or "cpu").lower()
    if name in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if name in ("gpu", "mps", "auto") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def score_token_ids(model: torch.nn.Module, ids: Sequence[Sequence[int]], *, pad_id: int, pooling: str,
                    batch_size: int = 64, device: torch.device | str = "cpu", precision: str = "32",
                    progress: bool = False, desc: str = "scoring", compile: bool = False) -> torch.Tensor:
    """Rewards for token-id sequences, returned in input order (float32, on CPU).

    A sequence that occurs several times is scored once (a pool often repeats a response under one
    prompt); `precision` starting with "bf16" runs under bf16 autocast; `compile` as in the module doc.
    """
    if len(ids) == 0:
        return torch.empty(0, dtype=torch.float32)
    distinct, where = distinct_sequences(ids)
    out = torch.empty(len(distinct), dtype=torch.float32)
    was_training = model.training
    model.eval()
    forward = _forward(model, compile)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=precision.startswith("bf16"))
    batches = length_sorted_batches([len(s) for s in distinct], batch_size)
    try:
        with torch.inference_mode(), autocast:
            # disable=None: bars on a terminal, none in log files and CI
            for index in tqdm(batches, desc=desc, disable=None if progress else True, leave=False):
                batch = pad_batch([distinct[i] for i in index], pad_id)
                rewards = forward(batch["input_ids"].to(device), batch["attention_mask"].to(device), pooling)
                out[torch.as_tensor(index)] = rewards.float().cpu()
    finally:
        model.train(was_training)
    return out[where]


def score_texts(model: torch.nn.Module, cache: TokenCache, texts: Sequence[str], **kwargs) -> torch.Tensor:
    """Rewards for `texts`; a text that occurs several times is scored once."""
    distinct = list(dict.fromkeys(texts))
    rewards = score_token_ids(model, cache.encode(distinct), pad_id=cache.tokenizer.pad_token_id, **kwargs)
    by_text = dict(zip(distinct, rewards.tolist()))
    return torch.tensor([by_text[t] for t in texts], dtype=torch.float32)
