"""The RM of one run: backbone, tokenizer and LightningModule, and how one loop trains it.

`RMTrainer.build` loads the backbone (LoRA and frozen blocks by config) and keeps the trainable tensors
of the base model, so `ser.retrain_from=base` restarts each loop from them. `train` fits one loop on
featurised pairs with streams derived from (seed, loop) (ser/seeding.py): a resumed run draws the
same batches and dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from safetensors.torch import load_model, save_model

from ser.events import emit
from ser.ranks import rank_zero_first
from ser.reward.backbone import apply_lora, load_backbone
from ser.reward.frozen import FrozenPrefix
from ser.reward.module import RewardModule
from ser.reward.train import AnnounceSteps, fit_reward_model
from ser.seeding import derive_seed

log = logging.getLogger(__name__)


class RMTrainer:
    def __init__(self, cfg: DictConfig, model: torch.nn.Module, tokenizer: Any, prefix: FrozenPrefix | None) -> None:
        self.cfg, self.model, self.tokenizer, self.prefix = cfg, model, tokenizer, prefix
        # Only trainable tensors can drift from the base (with LoRA: adapters + head, a few MB), so only
        # they are kept for ser.retrain_from=base.
        self.base_state = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
        self.module = RewardModule(model, instantiate(cfg.rm.optimizer), cfg.rm.scheduler, cfg.rm.pooling,
                                   loss=cfg.rm.get("loss"), padding_free=cfg.rm.get("padding_free", False))

    @classmethod
    def build(cls, cfg: DictConfig, vocab_texts: Sequence[str]) -> "RMTrainer":
        with rank_zero_first():  # the backbone's conversion cache: filled by rank 0 alone
            pl.seed_everything(cfg.seed, workers=True, verbose=False)  # before the score head is created
            model, tokenizer = load_backbone(cfg.rm, vocab_texts=list(vocab_texts))
        tokenizer.truncation_side = cfg.data.truncation_side
        if cfg.rm.lora:
            model = apply_lora(model, cfg.rm.lora)
        # rm.freeze_layers: the embeddings and the bottom blocks stop training; their output is cached
        prefix = (FrozenPrefix(model, int(cfg.rm.freeze_layers), tokenizer.pad_token_id).attach()
                  if cfg.rm.get("freeze_layers") else None)
        return cls(cfg, model, tokenizer, prefix)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def cache_frozen_prefix(self, features: Sequence[dict[str, Any]]) -> None:
        """rm.freeze_layers: the frozen blocks' output for every text of the run, once, in a fixed order."""
        if self.prefix is None:
            return
        started = time.time()
        log.info("rm.freeze_layers=%d: computing the frozen blocks' output of %d pairs (once per text)",
                 self.prefix.k, len(features))
        how = self.prefix.build_with_disk_cache([ids for f in features for ids in (f["chosen_ids"], f["rejected_ids"])],
                                                self.cfg.paths.get("frozen_cache_dir"))
        log.info("rm.freeze_layers=%d: %d texts (%.0f MB), %s in %.1f s", self.prefix.k, len(self.prefix.cache),
                 sum(t.numel() * t.element_size() for t in self.prefix.cache.values()) / 2**20, how, time.time() - started)

    def train(self, features: list[dict[str, Any]], val_features: list[dict[str, Any]], loop: int, *,
              loggers: list, checkpoint_dir: Path | None, checkpoint_tag: str | None) -> None:
        cfg = self.cfg
        emit("train_start", loop=loop)
        if loop > 0 and str(cfg.ser.retrain_from) == "base":
            self.reset_to_base()
        pl.seed_everything(derive_seed(cfg.seed, loop, "torch"), workers=True, verbose=False)
        self.module.loop = loop
        epochs = int(cfg.rm.epochs if loop == 0 or cfg.ser.get("loop_epochs") is None else cfg.ser.loop_epochs)
        log.debug("loop %d: training the RM on %d pairs for %d epochs", loop, len(features), epochs)
        fit_reward_model(self.module, features, val_features, trainer_cfg=cfg.trainer, epochs=epochs,
                         batch_size=int(cfg.rm.batch_size), pad_id=self.pad_id, seed=derive_seed(cfg.seed, loop, "shuffle"),
                         loggers=loggers, callbacks=[AnnounceSteps(loop)], checkpoint_dir=checkpoint_dir,
                         checkpoint_every_n_steps=int(cfg.get("ckpt_every_n_steps", 0) or 0),
                         checkpoint_tag=checkpoint_tag, group_by_length=bool(cfg.rm.get("group_by_length", False)))

    def reset_to_base(self) -> None:
        missing = set(self.base_state) - set(dict(self.model.named_parameters()))
        assert not missing, f"base state keys not in the model: {sorted(missing)[:5]}"
        self.model.load_state_dict(self.base_state, strict=False)

    def save(self, path: Path) -> None:
        """The weights, atomically (a temp file renamed when complete)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_model(self.model, str(tmp))
        tmp.replace(path)

    def load(self, path: Path) -> None:
        load_model(self.model, str(path))
