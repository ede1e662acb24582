"""Pairwise RM metrics on torchmetrics: accuracy, mean margin, reward mean/std, ECE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryCalibrationError


def pairwise_loss(chosen: torch.Tensor, rejected: torch.Tensor, weight: torch.Tensor | None = None, *,
                  margin: float = 0.0, hard_pair_gamma: float = 0.0) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected - margin), optionally weighted per pair (mean over the batch).

    `margin` > 0 keeps pushing pairs the RM already separates until they are `margin` apart;
    `hard_pair_gamma` > 0 weighs each pair by (1 - sigmoid(r_c - r_r))^gamma (detached, as focal loss):
    pairs the RM gets wrong or barely right dominate, separated ones fade.
    """
    diff = chosen - rejected
    losses = -F.logsigmoid(diff - margin)
    if hard_pair_gamma:
        losses = losses * (1 - torch.sigmoid(diff.detach())) ** hard_pair_gamma
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


class PairwiseMetrics(nn.Module):
    """Accumulates over batches; `compute()` returns plain floats.

    accuracy counts a tie (equal rewards) as wrong. ECE is of p = sigmoid(r_c - r_r), with each pair
    seen in both orders (p with label 1, 1 - p with label 0): with one order only, every label is 1
    and the calibration error would reward an RM that is simply overconfident.
    """

    def __init__(self, n_bins: int = 10) -> None:
        super().__init__()
        self.accuracy = MeanMetric()
        self.loss = MeanMetric()  # the pairwise NLL: finer than accuracy on a small split
        self.margin = MeanMetric()
        self.reward_mean = MeanMetric()
        self.reward_sq = MeanMetric()
        self.ece = BinaryCalibrationError(n_bins=n_bins, norm="l1")

    def update(self, chosen: torch.Tensor, rejected: torch.Tensor) -> None:
        chosen, rejected = chosen.detach().float(), rejected.detach().float()
        margin = chosen - rejected
        self.accuracy.update((margin > 0).float())
        self.loss.update(-F.logsigmoid(margin))
        self.margin.update(margin)
        rewards = torch.cat([chosen, rejected])
        self.reward_mean.update(rewards)
        self.reward_sq.update(rewards.square())
        p = torch.sigmoid(margin)
        self.ece.update(torch.cat([p, 1 - p]), torch.cat([torch.ones_like(p), torch.zeros_like(p)]).long())

    def compute(self) -> dict[str, float]:
        mean = self.reward_mean.compute()
        var = (self.reward_sq.compute() - mean.square()).clamp_min(0.0)
        return {
            "accuracy": float(self.accuracy.compute()),
            "loss": float(self.loss.compute()),
            "margin": float(self.margin.compute()),
            "reward_mean": float(mean),
            "reward_std": float(var.sqrt()),
            "ece": float(self.ece.compute()),
        }

    def reset(self) -> None:
        for metric in (self.accuracy, self.loss, self.margin, self.reward_mean, self.reward_sq, self.ece):
            metric.reset()
