"""Fit and evaluate the reward model with a Lightning Trainer built from config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ser.data.schema import PreferencePair
from ser.reward.collator import PairCollator, TokenCache, render
from ser.reward.metrics import PairwiseMetrics
from ser.reward.module import RewardModule
from ser.reward.scoring import score_token_ids


def pair_features(pairs: Sequence[PreferencePair], cache: TokenCache, template: str,
                  weights: Sequence[float] | None = None) -> list[dict[str, Any]]:
    chosen = cache.encode([render(template, p.prompt, p.chosen) for p in pairs])
    rejected = cache.encode([render(template, p.prompt, p.rejected) for p in pairs])
    weights = weights if weights is not None else [1.0] * len(pairs)
    return [{"chosen_ids": c, "rejected_ids": r, "weight": w} for c, r, w in zip(chosen, rejected, weights)]


def fit_reward_model(module: RewardModule, train: list[dict], val: list[dict], *, trainer_cfg: DictConfig,
                     epochs: int, batch_size: int, pad_id: int, seed: int, loggers: list | None = None,
                     callbacks: list | None = None, num_workers: int = 0) -> pl.Trainer:
    """Train `module` in place for `epochs` epochs on `train`, validating on `val` each epoch."""
    collate = PairCollator(pad_id)
    generator = torch.Generator().manual_seed(seed)  # the shuffle order is part of the run's seed
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=collate,
                              generator=generator, num_workers=num_workers)
    val_loader = DataLoader(val, batch_size=batch_size * 2, collate_fn=collate) if val else None
    trainer: pl.Trainer = instantiate(trainer_cfg, max_epochs=epochs, logger=loggers or False,
                                      callbacks=callbacks or [], enable_checkpointing=False,
                                      num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    return trainer


def pair_rewards(module: RewardModule, features: list[dict], *, pad_id: int, batch_size: int,
                 precision: str = "32", progress: bool = False, desc: str = "scoring"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) for featurised pairs, in input order."""
    ids = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
    rewards = score_token_ids(module.model, ids, pad_id=pad_id, pooling=module.pooling, batch_size=batch_size,
                              device=module.device, precision=precision, progress=progress, desc=desc)
    return rewards[: len(features)], rewards[len(features):]


def evaluate_pairs(module: RewardModule, features: list[dict], groups: Sequence[str] | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """Pairwise metrics (accuracy, margin, reward mean/std, ECE) of the RM on labeled pairs.

    With `groups` (one label per pair, e.g. the synthetic fault family), also the accuracy per group.
    """
    if not features:
        return {}
    chosen, rejected = pair_rewards(module, features, **kwargs)
    metrics = PairwiseMetrics()
    metrics.update(chosen, rejected)
    out: dict[str, Any] = metrics.compute()
    if groups is not None:
        correct = (chosen > rejected).tolist()
        by_group: dict[str, list[bool]] = {}
        for group, ok in zip(groups, correct):
            by_group.setdefault(group, []).append(ok)
        out["accuracy_by_group"] = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
    return out
