"""Turn raw RM scores of a pair's two answers into the probabilities the status rules threshold.

- pointwise: p_i = sigmoid(r_i), the paper. Depends on the RM's arbitrary offset and scale.
- pairwise: p_1 = sigmoid(r_1 - r_2), p_2 = 1 - p_1: each answer's chance of beating the other.
- calibrated: p_i = mean_j sigmoid((r_i - v_j) / T) over the validation answers' rewards v_j,
  with T fitted on the validation pairs so that sigmoid(margin / T) is calibrated: each answer's
  calibrated chance of beating a typical answer. Scale-free, and it cannot saturate the way
  sigmoid((r_i - median) / T) does when rewards vary across prompts far more than T.
- zscore: z_i = (r_i - mean) / std over every pool answer this loop; thresholds are in standard
  deviations (e.g. tau_high 0.5, tau_low -0.5, delta 1.0). Scale-free.
- percentile: p_i = the fraction of pool answers scored below r_i (ties count half): the answer's
  rank in the pool. Scale-free; tau 0.5/0.5 means "one answer above the pool median, one below".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CONFIDENCES = ("pointwise", "pairwise", "calibrated", "zscore", "percentile")
# Modes whose values are probabilities in [0, 1] (thresholds too); zscore is in standard deviations.
PROBABILITY_CONFIDENCES = ("pointwise", "pairwise", "calibrated", "percentile")


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


@dataclass(frozen=True)
class Confidence:
    mode: str = "pointwise"
    temperature: float = 1.0
    reference: torch.Tensor | None = None  # calibrated: validation answers' rewards; zscore/percentile: pool answers'

    def __post_init__(self) -> None:
        if self.mode not in CONFIDENCES:
            raise ValueError(f"ser.confidence must be one of {CONFIDENCES}, got {self.mode!r}")

    @classmethod
    def fit(cls, mode: str, val_chosen: torch.Tensor, val_rejected: torch.Tensor,
            pool_rewards: torch.Tensor | None = None) -> "Confidence":
        """Fit what the mode needs: T on validation pairs (calibrated), or the pool's answers (zscore, percentile)."""
        if mode == "calibrated":
            temperature = fit_temperature(val_chosen - val_rejected)
            return cls(mode, temperature, torch.cat([val_chosen, val_rejected]).float())
        if mode in ("zscore", "percentile"):
            if pool_rewards is None or len(pool_rewards) < 2:
                raise ValueError(f"ser.confidence={mode} needs the rewards of at least 2 pool answers")
            return cls(mode, reference=pool_rewards.float())
        return cls(mode)

    def probabilities(self, r1: torch.Tensor, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "pointwise":
            return torch.sigmoid(r1), torch.sigmoid(r2)
        if self.mode == "pairwise":
            p1 = torch.sigmoid(r1 - r2)
            return p1, 1 - p1
        if self.mode == "zscore":
            mean, std = self.reference.mean(), self.reference.std().clamp_min(1e-12)
            return (r1 - mean) / std, (r2 - mean) / std
        if self.mode == "percentile":
            return self._percentile(r1), self._percentile(r2)
        return self._beats_reference(r1), self._beats_reference(r2)

    def _percentile(self, rewards: torch.Tensor) -> torch.Tensor:
        ref = self.reference.sort().values
        below = torch.searchsorted(ref, rewards.float(), right=False)
        not_above = torch.searchsorted(ref, rewards.float(), right=True)
        return (below + not_above).float() / (2 * len(ref))  # mid-rank: ties count half

    def _beats_reference(self, rewards: torch.Tensor) -> torch.Tensor:
        if self.reference is None or not len(self.reference):
            raise ValueError("calibrated confidence needs validation rewards: splits.val_fraction must be > 0")
        # chunked: pool x validation answers would otherwise be one large matrix
        return torch.cat([torch.sigmoid((chunk[:, None] - self.reference[None, :]) / self.temperature).mean(1)
                          for chunk in rewards.float().split(4096)])
