"""Noise-robust self-labeling: several scorers must agree on a pair's label before it is kept.

Scorers are either dropout samples of the current RM (MC dropout: the same weights, different
dropout masks) or the RMs of earlier loops (their checkpoints). A pair is kept when at least
`min_fraction` of the extra scorers prefer the same answer as the current RM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model

AGREEMENTS = ("none", "dropout", "checkpoints")
PairScorer = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # -> (rewards of answers a, of answers b)


@contextmanager
def mc_dropout(model: torch.nn.Module, p: float) -> Iterator[None]:
    """Every dropout layer drops with probability p, even in eval mode; restored on exit.

    The RM is loaded with dropout off (rm.disable_dropout) and scored in eval mode, so MC dropout
    needs both the rate and the training flag overridden per layer, not model.train().
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    if not layers:
        raise ValueError("ser.agreement.kind=dropout: the RM has no dropout layers to sample")
    for layer in layers:
        layer.forward = (lambda x, _p=p: F.dropout(x, _p, training=True))  # instance attribute wins
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def agreement_mask(main_a: torch.Tensor, main_b: torch.Tensor,
                   others: Sequence[tuple[torch.Tensor, torch.Tensor]], min_fraction: float) -> torch.Tensor:
    """True where at least min_fraction of the other scorers prefer the answer the main scorer prefers."""
    if not others:
        return torch.ones_like(main_a, dtype=torch.bool)
    main = main_a > main_b
    agree = torch.stack([(a > b) == main for a, b in others]).float().mean(0)
    return agree >= min_fraction - 1e-9


def dropout_scores(model: torch.nn.Module, score: PairScorer, samples: int, p: float, seed: int
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`samples` scorings of the pool under independent dropout masks (seeded: resumable runs agree)."""
    out = []
    with mc_dropout(model, p):
        for k in range(samples):
            torch.manual_seed(seed * 7919 + k)
            out.append(score())
    return out


def checkpoint_scores(model: torch.nn.Module, score: PairScorer, checkpoints: Sequence[Path], current: Path
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Scorings by earlier loops' RMs; the model is back at `current` afterwards."""
    out = []
    try:
        for path in checkpoints:
            load_model(model, str(path))
            out.append(score())
    finally:
        if checkpoints:
            load_model(model, str(current))
    return out
