"""Hydra entry point: compose, validate, run the schedule, return the optimised (validation) metric.

    python run.py                                    # SER on the embedded offline data, MiniLM RM
    python run.py experiment=smoke                   # tiny end-to-end run, < 1 minute
    python run.py -m schedule=seed_only,ser,full_data seed=0,1,2
    torchrun --nproc_per_node=2 run.py experiment=smoke trainer=ddp   # every rank runs the loop, rank 0 writes
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from ser.config import apply_thread_limit, check_launch, validate_config  # also registers resolvers
from ser.core import ConfigError
from ser.quiet import quiet_libraries, wants_verbose

log = logging.getLogger("ser")


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _close_wandb() -> None:
    """Finish the wandb run of this job so the next job of a multirun starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _keep_log_file_to_rank_zero() -> None:
    """Ranks started by torchrun or SLURM share the run dir: only rank 0 keeps Hydra's log file (the
    others log to the console, which torchrun/SLURM collect)."""
    from ser.ranks import launched_rank

    if launched_rank() == 0:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    _keep_log_file_to_rank_zero()
    if cfg.get("hub_offline", True):  # before anything imports huggingface_hub, which reads these once
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        validate_config(cfg)  # before any data or model loads
        check_launch(cfg)  # e.g. trainer=ddp inside a multirun: refused before anything runs
    except ConfigError as err:
        log.error("%s", err)
        if not _in_multirun():
            raise SystemExit(2) from None  # one line says it all; a multirun records the failed job and goes on
        raise
    apply_thread_limit()
    quiet_libraries(wants_verbose(cfg))
    from ser.tasks.run import run_experiment  # heavy imports only after the config is known good

    try:
        summary = run_experiment(cfg)
    except Exception as err:
        # Hydra's multirun re-raises a job's exception only after the whole batch: log it now, in this
        # job's run.log and the console, so a failed job never looks like a finished one (one line: Hydra
        # prints the traceback once itself).
        log.error("this job failed: %s: %s", type(err).__name__, err)
        raise
    finally:
        _close_wandb()
    return float(summary["final"]["val_accuracy"])


if __name__ == "__main__":
    main()
