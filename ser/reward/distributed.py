"""Score many texts across data-parallel ranks: each text once, rewards gathered back by index.

`trainer.predict` shards the inputs with Lightning's unrepeated distributed sampler (no padding
duplicates, so every item is scored exactly once); a `BasePredictionWriter` writes each rank's
(index, reward) pairs to `<work_dir>/rank_<r>.safetensors`; after a barrier every rank (or, under
ddp_spawn, the driver process) reads all the files and puts each reward back at its index. The
result is the single-process result, in input order, on every rank: ranks that go on to take
decisions from it (which pairs to self-label) all take the same ones.

    torchrun --nproc_per_node=2 -m ser.reward.distributed outputs/.../final_rm pairs.jsonl scores.jsonl
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import BasePredictionWriter
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from ser.reward.collator import pad_batch
from ser.reward.module import compute_rewards

log = logging.getLogger(__name__)


class _Indexed(Dataset):
    """Items in length order (similar lengths share a batch), each carrying its input index."""

    def __init__(self, ids: Sequence[Sequence[int]]) -> None:
        self.order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        self.ids = ids

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[int, Sequence[int]]:
        i = self.order[k]
        return i, self.ids[i]


class _Collate:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[int, Sequence[int]]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([ids for _, ids in items], self.pad_id)
        batch["index"] = torch.tensor([i for i, _ in items], dtype=torch.long)
        return batch


class _Scorer(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        rewards = compute_rewards(self.model, batch["input_ids"], batch["attention_mask"], self.pooling)
        return {"index": batch["index"].cpu(), "reward": rewards.float().cpu()}


class RankWriter(BasePredictionWriter):
    """Each rank writes what it scored to `<dir>/rank_<global rank>.safetensors` (temp file + rename)."""

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.out_dir = Path(out_dir)

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any],
                           batch_indices: Sequence[Any]) -> None:
        flat = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        index = torch.cat([p["index"] for p in flat]) if flat else torch.zeros(0, dtype=torch.long)
        reward = torch.cat([p["reward"] for p in flat]) if flat else torch.zeros(0)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank_{trainer.global_rank}.safetensors"
        tmp = path.with_suffix(".tmp")
        tensors = {"index": index.contiguous(), "reward": reward.contiguous()}
        save_file(tensors, str(tmp))
        tmp.replace(path)


def gather_by_index(work_dir: str | Path, n: int, world_size: int, report: bool = False) -> torch.Tensor:
    """Read every rank's file and put each reward at its index; every index exactly once, or an error.
    `report` logs how many items each rank scored."""
    rewards = torch.full((n,), float("nan"))
    seen = torch.zeros(n, dtype=torch.long)
    per_rank = []
    for rank in range(world_size):
        path = Path(work_dir) / f"rank_{rank}.safetensors"
        if not path.exists():
            raise RuntimeError(f"distributed scoring: {path} is missing (rank {rank} of {world_size} wrote nothing)")
        part = load_file(str(path))
        rewards[part["index"]] = part["reward"]
        seen.index_add_(0, part["index"], torch.ones_like(part["index"]))
        per_rank.append(len(part["index"]))
    if not bool((seen == 1).all()):
        missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise RuntimeError(f"distributed scoring: {missing} of {n} items were not scored and {twice} were scored "
                           "more than once across ranks")
    if report:
        log.info("distributed scoring: %d items scored across %d ranks (per rank: %s)", n, world_size, per_rank)
    return rewards


def _predict_trainer(trainer_cfg: DictConfig | dict, writer: RankWriter) -> pl.Trainer:
    cfg = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) else dict(trainer_cfg)
    for key in ("max_epochs", "gradient_clip_val", "accumulate_grad_batches", "log_every_n_steps", "deterministic"):
        cfg.pop(key, None)
    cfg.update(logger=False, callbacks=[writer], enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False)
    return instantiate(cfg)


def distributed_rewards(model: torch.nn.Module, ids: Sequence[Sequence[int]], *, pad_id: int, pooling: str,
                        trainer_cfg: DictConfig | dict, work_dir: str | Path, batch_size: int = 64) -> torch.Tensor:
    """Rewards for token-id sequences, in input order, scored across the trainer's ranks.

    Call it on every rank (ddp, torchrun, SLURM) or once in the driver (ddp_spawn, one device); every
    caller gets the full vector. `work_dir` must be visible to all ranks and the same on each.
    """
    work_dir = Path(work_dir)
    writer = RankWriter(work_dir)
    trainer = _predict_trainer(trainer_cfg, writer)
    if trainer.is_global_zero and work_dir.exists():
        shutil.rmtree(work_dir)  # left by an earlier, killed call
    trainer.strategy.barrier("ser_scores_clean")
    loader = DataLoader(_Indexed(ids), batch_size=batch_size, collate_fn=_Collate(pad_id))
    trainer.predict(_Scorer(model, pooling), dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier("ser_scores_written")  # a no-op in the ddp_spawn driver: its workers have exited
    rewards = gather_by_index(work_dir, len(ids), trainer.world_size, report=trainer.is_global_zero)
    trainer.strategy.barrier("ser_scores_read")
    if trainer.is_global_zero:
        shutil.rmtree(work_dir, ignore_errors=True)
    return rewards


def distributed_pair_rewards(module: torch.nn.Module, features: list[dict], *, pad_id: int, pooling: str,
                             trainer_cfg: DictConfig | dict, work_dir: str | Path, batch_size: int = 64
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) for featurised pairs: `pair_rewards`, across ranks."""
    model = getattr(module, "model", module)
    ids = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
    rewards = distributed_rewards(model, ids, pad_id=pad_id, pooling=pooling, trainer_cfg=trainer_cfg,
                                  work_dir=work_dir, batch_size=batch_size)
    return rewards[: len(features)], rewards[len(features):]


def main(argv: Sequence[str] | None = None) -> None:
    """Score (prompt, response) rows of a jsonl file with an exported RM, across torchrun's ranks."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model_dir", help="an exported RM (final_rm/ of a run)")
    parser.add_argument("pairs", help="jsonl with 'prompt' and 'response' per row")
    parser.add_argument("out", help="jsonl written by rank 0: each input row plus 'reward', in input order")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import os

    from ser.io import atomic_write_jsonl, read_jsonl
    from ser.reward.export import RewardScorer

    rows = read_jsonl(args.pairs)
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise ValueError(f"{args.pairs}: row {number} needs string fields 'prompt' and 'response'")
    scorer = RewardScorer.from_pretrained(args.model_dir)
    ids = scorer.cache.encode([scorer.renderer.text(r["prompt"], r["response"]) for r in rows])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    trainer_cfg = {"_target_": "pytorch_lightning.Trainer", "accelerator": args.accelerator, "devices": world,
                   "strategy": "ddp" if world > 1 else "auto"}
    rewards = distributed_rewards(scorer.model, ids, pad_id=scorer.tokenizer.pad_token_id, pooling=scorer.pooling,
                                  trainer_cfg=trainer_cfg, work_dir=Path(args.out).with_suffix(".parts"),
                                  batch_size=args.batch_size)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_jsonl(args.out, ({**row, "reward": float(r)} for row, r in zip(rows, rewards.tolist())))
        log.info("scored %d rows on %d rank(s) -> %s", len(rows), world, args.out)


if __name__ == "__main__":
    main()
