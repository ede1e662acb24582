"""Fit and evaluate the reward model with a Lightning Trainer built from config."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from ser.events import emit
from ser.reward.collator import PairCollator
from ser.reward.metrics import PairwiseMetrics
from ser.reward.module import RewardModule
from ser.reward.scoring import score_token_ids

log = logging.getLogger(__name__)
LAST_CKPT = "last.ckpt"


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_global_zero() -> bool:
    """Rank 0 of a data-parallel job (or a plain process): the one that writes shared files.
    Before the process group exists the rank comes from the launcher's env (RANK, SLURM_PROCID, ...)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return getattr(rank_zero_only, "rank", 0) == 0


class EpochBatches:
    """Shuffled batches of a fixed global size, split across ranks, resumable mid-epoch.

    Epoch e's order is the one `DataLoader(shuffle=True, generator=Generator().manual_seed(seed))`
    gives in its epoch e (so single-process results are those of that plain loader), but
    computable for any epoch, so a run resumed at epoch e draws the same order as an uninterrupted
    one. With N ranks (read at iteration time, so spawned workers see their own) every global batch
    is cut into N slices, one per rank: the ranks' micro-batches together are the single-process
    batch, and DDP's averaged gradient is the single-process gradient.
    """

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths: {len(lengths)} values for {n} training pairs")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths = list(lengths) if lengths is not None else None  # set: length-grouped batches
        self.epoch, self.skip = 0, 0
        self.sampler = self  # Lightning calls set_epoch on `batch_sampler.sampler`

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        # Per epoch, DataLoader(shuffle=True, generator=g) draws from g: the iterator's base seed, the
        # permutation, and (once exhausted) a trailing randperm that RandomSampler slices to nothing.
        generator = torch.Generator().manual_seed(self.seed)
        for e in range(epoch + 1):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
            perm = torch.randperm(self.n, generator=generator)
            if e < epoch:
                torch.randperm(self.n, generator=generator)
        return perm.tolist() if self.lengths is None else self._grouped(perm.tolist(), epoch)

    def _grouped(self, perm: list[int], epoch: int) -> list[int]:
        """The epoch's order regrouped so a batch holds pairs of similar length (little padding).

        As transformers' LengthGroupedSampler: the shuffled order is cut into mega-batches, each
        sorted by length and cut into batches; a mega-batch spans a quarter of the epoch, kept within
        8 to 50 batches (fewer than 8 would leave little to group on small data). The full batches
        are then shuffled (seeded per epoch) so long and short batches interleave; a short last
        batch stays last so batch boundaries hold. Deterministic for (seed, epoch): resumable.
        """
        size = self.batch_size * min(50, max(8, self.n // (self.batch_size * 4)))
        batches = []
        for start in range(0, self.n, size):
            mega = sorted(perm[start:start + size], key=lambda i: self.lengths[i], reverse=True)
            batches += [mega[k:k + self.batch_size] for k in range(0, len(mega), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        tail = [b for b in batches if len(b) < self.batch_size]
        shuffle = torch.randperm(len(full), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch + 1))
        return [i for b in [*(full[k] for k in shuffle.tolist()), *tail] for i in b]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _rank_and_world()
        order, skip, self.skip = self.order(self.epoch), self.skip, 0
        for start in range(skip * self.batch_size, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            batch = batch * -(-world // len(batch)) if len(batch) < world else batch  # no rank left empty
            yield batch[rank::world]


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable (no "not resumable" warning on a mid-epoch
    resume). Its position is kept by `BatchPosition`, not here: Lightning restores loader states only
    if the loader is first built after the restore, and `estimated_stepping_batches` (the LR
    schedule's length) builds it before."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class BatchPosition(pl.Callback):
    """Saves (epoch, batches finished in it) in the checkpoint; on resume, points the batch sampler
    there before the first batch is drawn (callbacks are restored before the loader is built)."""

    def __init__(self, batches: EpochBatches) -> None:
        self.batches, self.trainer = batches, None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, int]:
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed if self.trainer else 0
        return {"epoch": self.batches.epoch, "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = int(state["epoch"]), int(state["batches"])
        if done >= len(self.batches):  # saved on the epoch's last batch: the next epoch starts afresh
            epoch, done = epoch + 1, 0
        self.batches.epoch, self.batches.skip = epoch, done


def fit_reward_model(module: RewardModule, train: list[dict], val: list[dict], *, trainer_cfg: DictConfig,
                     epochs: int, batch_size: int, pad_id: int, seed: int, loggers: list | None = None,
                     callbacks: list | None = None, num_workers: int = 0, checkpoint_dir: str | Path | None = None,
                     checkpoint_every_n_steps: int = 0, checkpoint_tag: str | None = None,
                     group_by_length: bool = False) -> pl.Trainer:
    """Train `module` in place for `epochs` epochs on `train`, validating on `val` each epoch.

    `batch_size` is the global batch: with N data-parallel ranks each takes 1/N of every batch.
    With `checkpoint_dir` and `checkpoint_every_n_steps`, `last.ckpt` there is rewritten every that
    many steps; if one is already there (a killed job relaunched), training resumes from it: weights,
    optimizer, scheduler, epoch and position in the epoch. The caller deletes the folder once the
    trained weights are safely recorded. `group_by_length` batches pairs of similar length together
    (seeded, see `EpochBatches._grouped`): far less padding on data of mixed lengths.
    """
    collate = PairCollator(pad_id)
    lengths = [max(len(f["chosen_ids"]), len(f["rejected_ids"])) for f in train] if group_by_length else None
    batches = EpochBatches(len(train), batch_size, seed, lengths)  # the shuffle order is part of the run's seed
    train_loader = ResumableLoader(train, batch_sampler=batches, collate_fn=collate, num_workers=num_workers)
    val_loader = DataLoader(val, batch_size=batch_size * 2, collate_fn=collate) if val else None
    callbacks = [*(callbacks or []), BatchPosition(batches)]
    resume_from = None
    if checkpoint_dir is not None and checkpoint_every_n_steps > 0:
        checkpoint_dir = Path(checkpoint_dir)
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=0,
                                         every_n_train_steps=checkpoint_every_n_steps))
        if checkpoint_tag is not None:
            callbacks.append(CheckpointTag(checkpoint_dir / "config_hash", checkpoint_tag))
        if (checkpoint_dir / LAST_CKPT).exists():
            resume_from = str(checkpoint_dir / LAST_CKPT)
            log.info("resuming training from the mid-loop checkpoint %s", resume_from)
    # Our sampler splits batches across ranks itself; validation runs whole on every rank (small, and
    # every rank then logs the same validation metrics).
    trainer: pl.Trainer = instantiate(trainer_cfg, max_epochs=epochs, logger=loggers or False,
                                      callbacks=callbacks, enable_checkpointing=resume_from is not None
                                      or any(isinstance(c, ModelCheckpoint) for c in callbacks),
                                      num_sanity_val_steps=0, use_distributed_sampler=False)
    if trainer.world_size > 1 and getattr(trainer.strategy, "_start_method", "popen") != "popen" and loggers:
        # Spawned ranks log through pickled copies of the driver's loggers, whose state never comes back
        # (the CSV writer then rewrites its file with a stale header and fails in the next loop): per-step
        # curves are off under ddp_spawn; the driver still logs every loop's metrics.
        log.info("ddp_spawn: per-step training curves are not logged; per-loop metrics are")
        trainer = instantiate(trainer_cfg, max_epochs=epochs, logger=False, callbacks=callbacks,
                              enable_checkpointing=trainer.checkpoint_callback is not None, num_sanity_val_steps=0,
                              use_distributed_sampler=False)
    # weights_only: a checkpoint holds tensors and plain containers; nothing in it may run code.
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=resume_from,
                weights_only=True)
    return trainer


class CheckpointTag(pl.Callback):
    """Writes `tag` (the run's config hash) beside the first checkpoint, so a later run can tell its
    own mid-loop checkpoints from stale ones; nothing is written for a fit that saved none."""

    def __init__(self, path: Path, tag: str) -> None:
        self.path, self.tag = path, tag

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if trainer.is_global_zero and not self.path.exists():
            from ser.io import atomic_write_text

            atomic_write_text(self.path, self.tag + "\n")


class AnnounceSteps(pl.Callback):
    """Emits `train_step` before each training step and `checkpoint_saved` after each mid-loop
    checkpoint (ser/events.py), so observers (a test's fault hook, a profiler) can act at exact points."""

    def __init__(self, loop: int) -> None:
        self.loop = loop

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        emit("checkpoint_saved", loop=self.loop, step=trainer.global_step)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        emit("train_step", loop=self.loop, step=trainer.global_step)


def remove_checkpoint_dir(checkpoint_dir: str | Path) -> None:
    """Drop a loop's mid-loop checkpoints once its weights are recorded (rank 0 only writes them)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def pair_rewards(module: RewardModule, features: list[dict], *, pad_id: int, batch_size: int,
                 precision: str = "32", progress: bool = False, desc: str = "scoring", compile: bool = False,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) for featurised pairs, in input order (`compile`: see scoring.py).

    `device`: moves the module there first (see `scoring_device`); None scores where the module is.
    """
    if device is not None and module.device != torch.device(device):
        module.to(device)
    ids = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
    rewards = score_token_ids(module.model, ids, pad_id=pad_id, pooling=module.pooling, batch_size=batch_size,
                              device=module.device, precision=precision, progress=progress, desc=desc,
                              compile=compile)
    return rewards[: len(features)], rewards[len(features):]


def evaluate_pairs(module: RewardModule, features: list[dict], groups: Sequence[str] | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """Pairwise metrics (accuracy, margin, reward mean/std, ECE) of the RM on labeled pairs.

    With `groups` (one label per pair, e.g. the synthetic fault family), also the accuracy per group.
    """
    if not features:
        return {}
    chosen, rejected = pair_rewards(module, features, **kwargs)
    return pair_metrics(chosen, rejected, groups)


def pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor, groups: Sequence[str] | None = None) -> dict[str, Any]:
    """`evaluate_pairs` from rewards already computed (e.g. across ranks)."""
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
