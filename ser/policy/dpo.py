"""Direct preference optimisation (Rafailov et al. 2023) on preference pairs, e.g. SER's self-labels.

loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]),
sequence log-probabilities summed over the response tokens. The reference is the starting policy
(with LoRA: the adapter disabled). Logged with TRL's names (rewards/chosen, rewards/margins, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ser.policy.model import PolicyWithValue
from ser.policy.sft import collate_sequences, encode_responses

log = logging.getLogger(__name__)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen implicit reward, rejected implicit reward); conservative DPO with smoothing > 0."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return loss, beta * (policy_chosen - ref_chosen).detach(), beta * (policy_rejected - ref_rejected).detach()


def dpo_features(pairs: Sequence[Any], tokenizer: PreTrainedTokenizerBase, policy_cfg: Mapping[str, Any]
                 ) -> list[dict[str, Any]]:
    kwargs = {"max_prompt_tokens": policy_cfg["max_prompt_tokens"],
              "max_response_tokens": policy_cfg["max_response_tokens"],
              "chat_template": policy_cfg["model"].get("chat_template", True)}
    prompts = [p.prompt for p in pairs]
    chosen = encode_responses(tokenizer, prompts, [p.chosen for p in pairs], **kwargs)
    rejected = encode_responses(tokenizer, prompts, [p.rejected for p in pairs], **kwargs)
    return [{"chosen": c, "rejected": r} for c, r in zip(chosen, rejected)]


class DPOCollator:
    """Chosen rows then rejected rows in one padded batch: one forward pass for both sides."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_sequences([f["chosen"] for f in features] + [f["rejected"] for f in features], self.pad_id)


class DPOModule(pl.LightningModule):
    def __init__(self, model: PolicyWithValue, optimizer: Callable[..., torch.optim.Optimizer], beta: float = 0.1,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.history: list[dict[str, float]] = []

    def on_fit_start(self) -> None:
        self.model.train()

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs = (batch["input_ids"], batch["attention_mask"], batch["target_mask"])
        logps = self.model.target_logps(*inputs)  # the LM head on response tokens only
        ref_logps = self.model.target_logps(*inputs, reference=True)
        half = logps.shape[0] // 2
        losses, chosen_r, rejected_r = dpo_loss(logps[:half], logps[half:], ref_logps[:half], ref_logps[half:],
                                                self.beta, self.label_smoothing)
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite DPO loss at step {self.global_step}: lower policy.optimizer.lr")
        metrics = {"loss": loss.detach(), "rewards/chosen": chosen_r.mean(), "rewards/rejected": rejected_r.mean(),
                   "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
                   "rewards/margins": (chosen_r - rejected_r).mean(),
                   "logps/chosen": logps[:half].detach().mean(), "logps/rejected": logps[half:].detach().mean()}
        self.history.append({"step": self.global_step, **{k: float(v) for k, v in metrics.items()}})
        log.info("dpo step %d: loss %.4f, reward accuracy %.2f, margin %.3f", self.global_step + 1, float(loss.detach()),
                 float(metrics["rewards/accuracies"]), float(metrics["rewards/margins"]))
        self.log_dict({f"dpo/{k}" if k == "loss" else k: v for k, v in metrics.items()}, on_step=True, batch_size=half)
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory(params=self.model.trainable_parameters())
