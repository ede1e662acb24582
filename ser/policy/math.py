"""The RL math of PPO for language models, as pure functions on tensors.

Shapes: `(batch, response_length)` per-token tensors with a 0/1 `mask` over real response tokens
(padding after the first EOS is 0). Conventions follow TRL's PPO trainer (and OpenRLHF where TRL
is silent), so the logged numbers mean what TRL users expect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KL_ESTIMATORS = ("k1", "k3")


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp_min(1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:  # Bessel's correction over the real tokens only
        n = mask.sum()
        if n < 2:
            raise ValueError(f"masked_var: need at least 2 unmasked values for the unbiased variance, got {int(n)}")
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the unmasked entries; with shift_mean=False the mean is kept (TRL's rewards)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) per position: logits (B, T, V), tokens (B, T) -> (B, T)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def sequence_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, target_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log p of the targets (B, T-1), their mask): logits at t predict token t+1."""
    logprobs = logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])
    return logprobs, target_mask[:, 1:].to(logprobs.dtype)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution per position: (B, T, V) -> (B, T)."""
    logits = logits.float()
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.

    k1 = log p - log q (unbiased, can be negative per token); k3 = (r - 1) - log r with
    r = q / p (unbiased, always >= 0, lower variance). Schulman, "Approximating KL divergence".
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"KL estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def apply_eos_penalty(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Subtract `penalty` from the score of every response that never emitted EOS (TRL's missing_eos_penalty)."""
    if penalty is None or penalty == 0:
        return scores
    return scores - penalty * (~has_eos.bool()).to(scores.dtype)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: -kl_coef * KL at every real token, plus the sequence score at the last real token."""
    rewards = -kl_coef * kl * mask.to(kl.dtype)
    last = (mask.long().cumsum(1).argmax(1))  # index of the last real token (the first max of the cumsum)
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1}, with V and A zero
    past the last real token. Returns (advantages, returns = advantages + values), both masked.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        # a masked step contributes nothing and does not carry advantage backwards from padding
        last_gae = last_gae * mask[:, t]
        advantages[:, t] = last_gae
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, mean over real tokens; stats: clipfrac, approxkl, ratio."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).float(), mask),
        "approxkl": 0.5 * masked_mean(log_ratio ** 2, mask),
        "ratio": masked_mean(ratio, mask),
    }
    return loss, stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2), mean over real tokens; stats: clipfrac."""
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    return loss, {"clipfrac": masked_mean((loss_clipped > loss_unclipped).float(), mask)}


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        return None


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019: move the KL coefficient so the observed KL tracks `target`.

    error = clip(KL / target - 1, -0.2, 0.2);  coef *= 1 + error * n_steps / horizon
    """

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def kl_controller(kind: str, init: float, target: float | None = None, horizon: int | None = None
                  ) -> FixedKLController | AdaptiveKLController:
    if kind == "fixed":
        return FixedKLController(init)
    if kind == "adaptive":
        if not target or not horizon:
            raise ValueError("an adaptive KL controller needs target > 0 and horizon > 0")
        return AdaptiveKLController(init, target, horizon)
    raise ValueError(f"KL controller must be fixed or adaptive, got {kind!r}")
