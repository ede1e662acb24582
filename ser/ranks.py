"""The processes of one run, when torchrun or SLURM started several (trainer=ddp).

A plain run (and trainer=ddp_spawn) has one pipeline process. When the ranks are started outside
the pipeline (`torchrun --nproc_per_node=N run.py trainer=ddp`, or N SLURM tasks), every rank runs
the same loop on the same data: each fit is Lightning DDP over these processes, scoring is split
across them and gathered back by index, so all ranks hold the same scores and take the same
self-label decisions. Only global rank 0 writes the run dir; the others wait for it at `barrier()`
wherever they read what it wrote.

The launcher functions read only the environment (no torch import): config checks and Hydra
resolvers use them before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

SLURM_INTERACTIVE_NAMES = ("bash", "interactive")  # Lightning's SLURMEnvironment ignores these jobs too


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def torchrun_world_size() -> int:
    """WORLD_SIZE when torchrun (or any launcher setting WORLD_SIZE + LOCAL_RANK) started this process."""
    if "LOCAL_RANK" in os.environ:
        return _env_int("WORLD_SIZE") or 1
    return 1


def slurm_world_size() -> int:
    """SLURM_NTASKS of a non-interactive SLURM job step (what Lightning's SLURMEnvironment reads)."""
    if os.environ.get("SLURM_JOB_NAME") in SLURM_INTERACTIVE_NAMES:
        return 1
    return _env_int("SLURM_NTASKS") or 1


def launched_world_size() -> int:
    """How many processes torchrun or SLURM started for this run (1 for a plain process)."""
    return torchrun_world_size() if torchrun_world_size() > 1 else slurm_world_size()


def launched_rank() -> int:
    """This process's global rank as its launcher set it: RANK (torchrun), else SLURM_PROCID; else 0."""
    if torchrun_world_size() > 1:
        rank = _env_int("RANK")
        return rank if rank is not None else _env_int("LOCAL_RANK") or 0
    if slurm_world_size() > 1:
        return _env_int("SLURM_PROCID") or 0
    return 0


def on_rank_zero(value: Any, other: Any = None) -> Any:
    """Resolver `${on_rank_zero:value,other}`: `value` in rank 0 (and in a plain process), `other` elsewhere.
    conf/hydra/default.yaml uses it so that only rank 0 writes Hydra's `.hydra/` files."""
    return value if launched_rank() == 0 else other


# ---- inside the pipeline: the process group ---------------------------------------------------------


def start_process_group(trainer_cfg: Any) -> str:
    """Join the ranks' process group before the pipeline starts, so barriers work from the first file on.

    Lightning's DDP strategy sets the group up exactly as a fit would (its cluster environment gives the
    ranks: TorchElastic under torchrun, SLURM for SLURM tasks); later fits find it and reuse it.
    Returns the cluster environment's name (logged, so a run shows where its ranks came from).
    """
    from hydra.utils import instantiate

    trainer = instantiate(trainer_cfg, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False)
    trainer.strategy.setup_environment()
    return type(trainer.strategy.cluster_environment).__name__


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if _distributed():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank_zero() -> bool:
    """The process that writes the run dir: rank 0 of the group, or the only process."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Every rank waits here (a no-op in a single process): put one after rank 0 writes what others read."""
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (it fills download and conversion caches alone), then the others."""
    if not is_rank_zero():
        barrier()
    yield
    if is_rank_zero():
        barrier()


def check_same_on_every_rank(value: Any, what: str) -> None:
    """Raise if the ranks hold different `value`s (JSON-able): they would train on different data."""
    if not _distributed():
        return
    import torch.distributed as dist

    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks disagree on {what} (digests {digests}): their scores differ, so would "
                           "their training data")
