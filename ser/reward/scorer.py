"""One scorer interface for the loop: (chosen, rejected) rewards of featurised pairs, in input order.

`make_scorer` picks the implementation once per run. `LocalScorer` scores in this process on the
trainer's accelerator (ser/reward/scoring.py: each distinct text once, length-sorted batches, optional
bf16 or compilation). `SpreadScorer` scores each pair once on one of the ranks and gathers the rewards
back by index (ser/reward/distributed.py): every rank, or the ddp_spawn driver, holds all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ser.reward.module import RewardModule
from ser.reward.scoring import scoring_device
from ser.reward.train import pair_rewards

Rewards = tuple[torch.Tensor, torch.Tensor]


class Scorer:
    ranks = 1  # how many processes share each scoring call

    def pair_rewards(self, features: Sequence[dict[str, Any]], desc: str = "scoring") -> Rewards:
        raise NotImplementedError

    @property
    def local(self) -> "LocalScorer":
        """The in-process scorer: what scorings that patch the model in place (MC dropout) need."""
        raise NotImplementedError


class LocalScorer(Scorer):
    def __init__(self, module: RewardModule, *, pad_id: int, batch_size: int, precision: str, compile: bool,
                 device: torch.device, progress: bool = True) -> None:
        self.module, self.device = module, device
        self.options = {"pad_id": pad_id, "batch_size": batch_size, "precision": precision, "compile": compile,
                        "progress": progress}

    def pair_rewards(self, features, desc="scoring"):
        if not features:
            return torch.empty(0), torch.empty(0)
        return pair_rewards(self.module, list(features), desc=desc, device=self.device, **self.options)

    @property
    def local(self) -> "LocalScorer":
        return self


class SpreadScorer(Scorer):
    def __init__(self, local: LocalScorer, trainer_cfg: DictConfig, work_dir: Path, ranks: int) -> None:
        self._local, self.trainer_cfg, self.work_dir, self.ranks = local, trainer_cfg, Path(work_dir), ranks
        self.calls = 0

    def pair_rewards(self, features, desc="scoring"):
        from ser.reward.distributed import distributed_pair_rewards

        if not features:
            return torch.empty(0), torch.empty(0)
        self.calls += 1  # each call its own work dir: the ranks never read a previous call's files
        module = self._local.module
        return distributed_pair_rewards(module, list(features), pad_id=self._local.options["pad_id"],
                                        pooling=module.pooling, trainer_cfg=self.trainer_cfg,
                                        work_dir=self.work_dir / f"call_{self.calls}",
                                        batch_size=self._local.options["batch_size"])

    @property
    def local(self) -> LocalScorer:
        return self._local


def make_scorer(cfg: DictConfig, module: RewardModule, pad_id: int, work_dir: Path, world: int) -> Scorer:
    """Spread across ranks when several run (torchrun/SLURM) or the trainer spans devices (ddp_spawn)."""
    rm, trainer = cfg.rm, cfg.trainer
    local = LocalScorer(module, pad_id=pad_id, batch_size=int(rm.eval_batch_size),
                        precision=str(rm.get("score_precision") or trainer.precision),
                        compile=bool(rm.get("score_compile", False)), device=scoring_device(trainer.get("accelerator")),
                        progress=True)
    devices = trainer.get("devices", 1)
    ranks = max(world, devices if isinstance(devices, int) else 1)
    return SpreadScorer(local, trainer, work_dir, ranks) if ranks > 1 else local
