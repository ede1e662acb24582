"""The reward model as a LightningModule: one forward pass for chosen and rejected."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import get_scheduler

from ser.reward.backbone import unwrapped
from ser.reward.clip import clip_grad_norm
from ser.reward.frozen import frozen_prefix
from ser.reward.head import reward_head
from ser.reward.metrics import PairwiseMetrics, pairwise_loss
from ser.reward.packed import packed_rewards, use_packed

POOLINGS = ("auto", "hf", "last", "mean")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token per row, for left or right padding.

    Derived from the attention mask, never from the pad id: when pad == eos, searching for the
    first pad token would stop at the sequence's own eos and pool the wrong position.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask).argmax(dim=1)


def resolve_pooling(model: torch.nn.Module, pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"rm.pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling != "auto":
        return pooling
    # Decoder classifiers carry a `score` head over every position: pool the last real token.
    return "last" if hasattr(unwrapped(model), "score") else "hf"


def compute_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    pooling: str) -> torch.Tensor:
    """One scalar reward per row."""
    prefix = frozen_prefix(model)
    if prefix is not None and prefix.replay is None:  # rm.freeze_layers: start above the cached frozen blocks
        with prefix.replaying(input_ids, attention_mask):
            return compute_rewards(model, input_ids, attention_mask, pooling)
    inner = unwrapped(model)
    if pooling == "hf" and not hasattr(inner, "bert"):  # another model's own head, as it computes it
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()
    hidden = inner.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if pooling == "hf":
        pooled = hidden[:, 0]
    elif pooling == "last":
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    else:  # mean over attended tokens
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
    return reward_head(inner, pooled, pooling)


class RewardModule(pl.LightningModule):
    """Pairwise reward model. Batches come from `PairCollator`: chosen rows, then rejected rows."""

    def __init__(self, model: torch.nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Mapping[str, Any] | None = None, pooling: str = "auto",
                 loss: Mapping[str, float] | None = None, padding_free: bool | str = False) -> None:
        super().__init__()
        self.loss_options = {k: float(v) for k, v in (loss or {}).items()}  # margin, hard_pair_gamma
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_cfg = dict(scheduler or {"name": "linear", "warmup_ratio": 0.0})
        self.pooling = resolve_pooling(model, pooling)
        # rm.padding_free: training and validation forwards skip the padding (rm.freeze_layers replays its own)
        self.padding_free = frozen_prefix(model) is None and use_packed(model, self.pooling, padding_free)
        self.val_metrics = PairwiseMetrics()
        self.train_metrics = PairwiseMetrics()
        self.loop: int | None = None  # the SER loop in training: logged beside every metric (one column set for all loops)

    def on_fit_start(self) -> None:
        self.model.train()  # from_pretrained leaves the model in eval mode; Lightning keeps modes as found

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.padding_free:
            return packed_rewards(self.model, input_ids, attention_mask, self.pooling)
        return compute_rewards(self.model, input_ids, attention_mask, self.pooling)

    def _pair_rewards(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = self(batch["input_ids"], batch["attention_mask"])
        half = rewards.shape[0] // 2
        return rewards[:half], rewards[half:]

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        chosen, rejected = self._pair_rewards(batch)
        loss = pairwise_loss(chosen, rejected, batch.get("weight"), **self.loss_options)
        if not torch.isfinite(loss):  # before backward: the weights stay those of the last good step
            where = f"loop {self.loop}" if self.loop is not None else "training"
            raise FloatingPointError(
                f"non-finite RM loss {loss.item()} in {where} at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); stopping: the checkpoint and state of the last finished loop are kept")
        self.train_metrics.update(chosen, rejected)
        self.log("train/loss", loss, prog_bar=True, batch_size=chosen.shape[0])
        if self.loop is not None:
            self.log("loop", float(self.loop), batch_size=chosen.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        for name, value in self.train_metrics.compute().items():
            self.log(f"train/{name}", value)
        self.train_metrics.reset()

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        chosen, rejected = self._pair_rewards(batch)
        self.val_metrics.update(chosen, rejected)
        self.log("val/loss", pairwise_loss(chosen, rejected), batch_size=chosen.shape[0])

    def on_validation_epoch_end(self) -> None:
        for name, value in self.val_metrics.compute().items():
            self.log(f"val/{name}", value, prog_bar=name == "accuracy")
        if self.loop is not None:
            self.log("loop", float(self.loop))
        self.val_metrics.reset()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val and str(self.trainer.precision) != "16-mixed":
            # Without a gradient scaler (fp16's) the gradients are final: clip them here. Lightning's AMP
            # plugin refuses to clip for a fused optimizer under bf16 (rm.optimizer.fused; docs/performance.md),
            # and clip_grad_norm skips the no-op multiply torch makes when the norm is under the limit.
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm in (None, "norm"):
                clip_grad_norm(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.scheduler_cfg.get("warmup_ratio", 0.0) * total)
        scheduler = get_scheduler(self.scheduler_cfg.get("name", "linear"), optimizer,
                                  num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
