"""PPO against a reward model, as a LightningModule with manual optimisation.

Each training step is one PPO iteration (TRL's `PPOTrainer` layout): sample one response per
prompt in the batch, score it with the RM, compute per-token KL to the reference, per-token
rewards, GAE advantages; then `ppo_epochs` passes of clipped policy + value updates over
minibatches. Metrics are logged per step with TRL's names (objective/kl, policy/clipfrac_avg, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedTokenizerBase

from ser.policy import math as rl
from ser.policy.model import PolicyWithValue
from ser.policy.rollout import Rollout, generate

log = logging.getLogger(__name__)


def response_logits(logits: torch.Tensor, response_length: int, temperature: float) -> torch.Tensor:
    """The logits that predict the response tokens (positions Q-1 .. end-1), divided by the sampling temperature.

    Works on full logits and on the last `response_length + 1` positions (forward with logits_to_keep).
    """
    return logits[:, -response_length - 1:-1] / (temperature + 1e-7)


class PPOModule(pl.LightningModule):
    def __init__(self, model: PolicyWithValue, tokenizer: PreTrainedTokenizerBase,
                 reward_fn: Callable[[Sequence[str], Sequence[str]], torch.Tensor], ppo: Mapping[str, Any],
                 generation: Mapping[str, Any], optimizer: Callable[..., torch.optim.Optimizer]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.cfg = dict(ppo)
        self.generation = dict(generation)
        self.optimizer_factory = optimizer
        kl = self.cfg["kl"]
        self.kl_ctl = rl.kl_controller(kl["controller"], kl["coef"], kl.get("target"), kl.get("horizon"))
        self.history: list[dict[str, float]] = []  # every step's metrics, for the run summary

    def on_fit_start(self) -> None:
        self.model.train()

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.model.trainable_parameters())

    # ---- rollout phase ------------------------------------------------------------------------
    @torch.no_grad()
    def score_rollout(self, rollout: Rollout, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        cfg, temperature = self.cfg, float(self.generation.get("temperature", 1.0))
        q, r = rollout.query.shape[1], rollout.response.shape[1]
        mask = rollout.response_mask.float()
        logits, values = self.model(rollout.input_ids, rollout.attention_mask, logits_to_keep=r + 1)
        logits = response_logits(logits, r, temperature)
        logprobs = rl.logprobs_from_logits(logits, rollout.response)
        entropy = rl.entropy_from_logits(logits)
        ref_logits = response_logits(self.model.reference_logits(rollout.input_ids, rollout.attention_mask, r + 1), r,
                                     temperature)
        ref_logprobs = rl.logprobs_from_logits(ref_logits, rollout.response)
        values = values[:, q - 1:-1]
        raw_scores = self.reward_fn(prompts, rollout.texts).to(logprobs)  # the RM returns CPU rewards
        scores = rl.apply_eos_penalty(raw_scores, rollout.has_eos, cfg.get("missing_eos_penalty"))
        kl = rl.kl_per_token(logprobs, ref_logprobs, cfg["kl"]["estimator"])
        rewards = rl.token_rewards(scores, kl, mask, self.kl_ctl.value)
        if cfg.get("whiten_rewards", False):
            rewards = rl.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = rl.compute_gae(rewards, values, mask, cfg["gamma"], cfg["lam"])
        advantages = rl.masked_whiten(advantages, mask)
        return {"logprobs": logprobs, "values": values * mask, "advantages": advantages, "returns": returns,
                "mask": mask, "scores": scores, "raw_scores": raw_scores, "kl": kl * mask, "entropy": entropy * mask}

    # ---- one PPO iteration --------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        cfg = self.cfg
        rollout = generate(self.model, self.tokenizer, batch["prompt_ids"], self.generation)
        data = self.score_rollout(rollout, batch["prompt"])
        optimizer = self.optimizers()
        n = rollout.query.shape[0]
        q, r = rollout.query.shape[1], rollout.response.shape[1]
        temperature = float(self.generation.get("temperature", 1.0))
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac",
                                                                   "approxkl", "ratio", "entropy")}
        generator = torch.Generator().manual_seed(int(cfg.get("seed", 0)) * 100003 + self.global_step)
        for _ in range(int(cfg["ppo_epochs"])):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, int(cfg["minibatch_size"])):
                idx = order[start:start + int(cfg["minibatch_size"])]
                mask = data["mask"][idx]
                logits, values = self.model(rollout.input_ids[idx], rollout.attention_mask[idx], logits_to_keep=r + 1)
                logits = response_logits(logits, r, temperature)
                logprobs = rl.logprobs_from_logits(logits, rollout.response[idx])
                pg_loss, pg = rl.clipped_policy_loss(logprobs, data["logprobs"][idx], data["advantages"][idx], mask,
                                                     cfg["cliprange"])
                vf_loss, vf = rl.clipped_value_loss(values[:, q - 1:-1], data["values"][idx], data["returns"][idx], mask,
                                                    cfg["cliprange_value"])
                loss = pg_loss + cfg["vf_coef"] * vf_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite PPO loss {loss.item()} at step {self.global_step} "
                                             f"(policy {pg_loss.item()}, value {vf_loss.item()}): lower policy.optimizer.lr")
                optimizer.zero_grad()
                self.manual_backward(loss)
                if cfg.get("max_grad_norm"):
                    self.clip_gradients(optimizer, gradient_clip_val=cfg["max_grad_norm"], gradient_clip_algorithm="norm")
                optimizer.step()
                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.detach())
                    stats["vf_loss"].append(vf_loss.detach())
                    stats["pg_clipfrac"].append(pg["clipfrac"].detach())
                    stats["vf_clipfrac"].append(vf["clipfrac"].detach())
                    stats["approxkl"].append(pg["approxkl"].detach())
                    stats["ratio"].append(pg["ratio"].detach())
                    stats["entropy"].append(rl.masked_mean(rl.entropy_from_logits(logits.detach()), mask))
        seq_kl = data["kl"].sum(1)
        non_score = (-self.kl_ctl.value * data["kl"]).sum(1)
        metrics = {
            "objective/kl": seq_kl.mean(), "objective/entropy": data["entropy"].sum(1).mean(),
            "objective/non_score_reward": non_score.mean(), "objective/rlhf_reward": (data["scores"] + non_score).mean(),
            "objective/scores": data["scores"].mean(), "objective/scores_raw": data["raw_scores"].mean(),
            "policy/approxkl_avg": torch.stack(stats["approxkl"]).mean(),
            "policy/clipfrac_avg": torch.stack(stats["pg_clipfrac"]).mean(),
            "loss/policy_avg": torch.stack(stats["pg_loss"]).mean(), "loss/value_avg": torch.stack(stats["vf_loss"]).mean(),
            "val/clipfrac_avg": torch.stack(stats["vf_clipfrac"]).mean(),
            "policy/entropy_avg": torch.stack(stats["entropy"]).mean(), "val/ratio": torch.stack(stats["ratio"]).mean(),
            "val/num_eos_tokens": rollout.has_eos.float().sum(), "val/response_length": rollout.lengths.float().mean(),
            "kl_coef": torch.tensor(self.kl_ctl.value), "episode": torch.tensor(float((batch_idx + 1) * n)),
        }
        self.kl_ctl.update(float(seq_kl.mean()), n)
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append({"step": batch_idx, **metrics})
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=n)
        self.log("reward", metrics["objective/scores"], prog_bar=True, on_step=True, batch_size=n)
        self.log("kl", metrics["objective/kl"], prog_bar=True, on_step=True, batch_size=n)
        log.info("ppo step %d: score %.3f (raw %.3f), kl %.3f, rlhf reward %.3f, clipfrac %.3f, value loss %.4f, "
                 "length %.1f, eos %d/%d", batch_idx + 1, metrics["objective/scores"], metrics["objective/scores_raw"],
                 metrics["objective/kl"], metrics["objective/rlhf_reward"], metrics["policy/clipfrac_avg"],
                 metrics["loss/value_avg"], metrics["val/response_length"], int(metrics["val/num_eos_tokens"]), n)
