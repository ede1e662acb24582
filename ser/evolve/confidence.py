"""Confidence kinds: turn the RM's rewards of a pair's two answers into the scores a rule thresholds.

Each kind is a class named by `_target_` in `conf/ser/*.yaml` (`ser.confidence`). A kind is fitted
once per loop (`fit`, on the validation pairs' rewards and the pool's) and then maps rewards to
scores (`__call__`). `probability` says whether the scores, and so the thresholds, lie in [0, 1].

- Pointwise: p_i = sigmoid(r_i), the paper. Depends on the RM's arbitrary offset and scale.
- Pairwise: p_1 = sigmoid(r_1 - r_2), p_2 = 1 - p_1: each answer's chance of beating the other.
- Calibrated: p_i = mean_j sigmoid((r_i - v_j) / T) over the validation answers' rewards v_j, with T
  fitted on the validation pairs so that sigmoid(margin / T) is calibrated: each answer's calibrated
  chance of beating a typical answer. Scale-free.
- ZScore: z_i = (r_i - mean) / std over every pool answer this loop; thresholds in standard deviations.
- Percentile: p_i = the fraction of pool answers scored below r_i (ties count half): the answer's rank
  in the pool. Scale-free; 0.25 is "in the pool's bottom quarter".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


def fit_temperature(margins: torch.Tensor, steps: int = 200) -> float:
    """T minimising the NLL of sigmoid(margin / T) on labeled pairs (margin = r_chosen - r_rejected)."""
    margins = margins.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -F.logsigmoid(margins / log_t.exp()).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(1e-3, 1e3))


class Confidence:
    """Base class: a confidence kind that needs no fitting."""

    name = "confidence"
    probability = True  # scores in [0, 1]; False: in standard deviations (thresholds may be negative)

    def fit(self, val_chosen: torch.Tensor, val_rejected: torch.Tensor, pool_rewards: torch.Tensor) -> "Confidence":
        return self

    def __call__(self, r1: torch.Tensor, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Pointwise(Confidence):
    name = "pointwise"

    def __call__(self, r1, r2):
        return torch.sigmoid(r1), torch.sigmoid(r2)


@dataclass(frozen=True)
class Pairwise(Confidence):
    name = "pairwise"

    def __call__(self, r1, r2):
        p1 = torch.sigmoid(r1 - r2)
        return p1, 1 - p1


@dataclass(frozen=True)
class Calibrated(Confidence):
    name = "calibrated"
    temperature: float = 1.0
    reference: torch.Tensor | None = None  # the validation answers' rewards

    def fit(self, val_chosen, val_rejected, pool_rewards):
        if len(val_chosen) == 0:
            raise ValueError("ser.confidence=Calibrated needs validation pairs: splits.val_fraction must be > 0")
        return replace(self, temperature=fit_temperature(val_chosen - val_rejected),
                       reference=torch.cat([val_chosen, val_rejected]).float())

    def __call__(self, r1, r2):
        return self._beats_reference(r1), self._beats_reference(r2)

    def _beats_reference(self, rewards: torch.Tensor) -> torch.Tensor:
        if self.reference is None:
            raise ValueError("Calibrated confidence used before fit()")
        # chunked: pool x validation answers would otherwise be one large matrix
        return torch.cat([torch.sigmoid((chunk[:, None] - self.reference[None, :]) / self.temperature).mean(1)
                          for chunk in rewards.float().split(4096)])


@dataclass(frozen=True)
class _PoolRelative(Confidence):
    reference: torch.Tensor | None = None  # every pool answer's reward this loop

    def fit(self, val_chosen, val_rejected, pool_rewards):
        if pool_rewards is None or len(pool_rewards) < 2:
            raise ValueError(f"ser.confidence={self.name} needs the rewards of at least 2 pool answers")
        return replace(self, reference=pool_rewards.float())

    def _fitted(self) -> torch.Tensor:
        if self.reference is None:
            raise ValueError(f"{self.name} confidence used before fit()")
        return self.reference


@dataclass(frozen=True)
class ZScore(_PoolRelative):
    name = "zscore"
    probability = False

    def __call__(self, r1, r2):
        ref = self._fitted()
        mean, std = ref.mean(), ref.std().clamp_min(1e-12)
        return (r1 - mean) / std, (r2 - mean) / std


@dataclass(frozen=True)
class Percentile(_PoolRelative):
    name = "percentile"

    def __call__(self, r1, r2):
        return self._rank(r1), self._rank(r2)

    def _rank(self, rewards: torch.Tensor) -> torch.Tensor:
        ref = self._fitted().sort().values
        below = torch.searchsorted(ref, rewards.float(), right=False)
        not_above = torch.searchsorted(ref, rewards.float(), right=True)
        return (below + not_above).float() / (2 * len(ref))  # mid-rank: ties count half
