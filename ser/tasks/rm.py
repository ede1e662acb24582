"""The RM task: one RM schedule end to end, data -> seed RM -> self-evolving loops -> exported RM.

Each stage has one job: `load_and_split` and `prepare` (ser/data/prepare.py) the data, `RMTrainer` the
model, `make_scorer` the scoring, `SERLoop` the loop, `RunStore` the run dir, `Reporter` what a person sees.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from collections.abc import Callable
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ser.config import validate_config
from ser.core import COEVOLVE
from ser.config.launch import is_plain_ddp
from ser.data.prepare import load_and_split, prepare
from ser.data.schema import DataError
from ser.evolve.loop import SERLoop
from ser.evolve.state import config_hash
from ser.locks import hold_run_dir
from ser.ranks import launched_world_size, rank_and_world, start_process_group
from ser.report import Reporter
from ser.reward.scorer import make_scorer
from ser.reward.trainer import RMTrainer
from ser.store import RunStore

log = logging.getLogger(__name__)


def train_rm(cfg: DictConfig, out: str | Path | None = None, *, shared: bool = False) -> dict[str, Any]:
    """Run (or resume) the RM schedule of `cfg` in `out` (default: paths.output_dir); returns its summary.

    `shared`: the run dir is shared by other jobs (the RM of several policy runs, a gold judge): wait for
    a job that holds it instead of refusing, then resume or reuse what it left.
    """
    validate_config(cfg)  # library callers get the same checks as run.py, before anything loads
    out = Path(out or cfg.paths.output_dir)
    join_started_ranks(cfg)
    rank, _ = rank_and_world()
    with hold_run_dir(out, wait=shared) if rank == 0 else nullcontext():
        return finished_already(cfg, out) or build_loop(cfg, out).run()


def finished_already(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """The summary of this config's finished run in `out` (nothing is loaded then), else None."""
    summary = RunStore(out, config_hash(OmegaConf.to_container(cfg, resolve=True)),
                       resume=bool(cfg.resume)).finished_summary()
    if summary is not None:
        log.info("%s: finished already (summary.json); resume=false to run again", out)
    return summary


def build_loop(cfg: DictConfig, out: str | Path, make_loop: Callable[..., SERLoop] | None = None) -> SERLoop:
    """Every stage of the run in `out`, ready to run: data loaded and tokenised, the RM built, the run dir
    accepted (a run dir of another config is refused before anything is written there). `make_loop(*stages,
    loaded=...)` builds another loop on the same stages (schedule=coevolve)."""
    out = Path(out)
    rank, world = rank_and_world()
    store = RunStore(out, config_hash(OmegaConf.to_container(cfg, resolve=True)), writer=rank == 0,
                     resume=bool(cfg.resume))
    store.open()
    store.write_run_config(cfg)
    store.record_machine()
    try:
        loaded = load_and_split(cfg.data, cfg.splits, int(cfg.seed))
    except DataError as err:  # nothing to train on: the report of what was read still goes to the run dir
        store.write_json("data_report.json", {"sources": [r.to_dict() for r in err.reports], "error": str(err)})
        raise
    rm = RMTrainer.build(cfg, loaded.training_texts(pool_answers=cfg.schedule.name != COEVOLVE))
    data = prepare(loaded, rm.tokenizer, cfg.data)
    store.write_json("data_report.json", data.report())
    rm.cache_frozen_prefix([f for fs in data.features.values() for f in fs])
    loggers = [instantiate(c) for c in (cfg.logger or {}).values() if c is not None]
    scorer = make_scorer(cfg, rm.module, rm.pad_id, out / "scores", world)
    title = f"{cfg.schedule.name} · {cfg.data.name} · {cfg.rm.name} · seed {cfg.seed}"
    reporter = Reporter(loggers, title, out / "accuracy_per_loop.png", enabled=rank == 0,
                        config=OmegaConf.to_container(cfg, resolve=True))
    stages = (cfg, data, rm, scorer, store, reporter, world)
    return make_loop(*stages, loaded=loaded) if make_loop is not None else SERLoop(*stages)


def join_started_ranks(cfg: DictConfig) -> None:
    """Under torchrun or SLURM tasks with trainer=ddp, join the ranks' process group up front: the
    loop's barriers (rank 0 writes, the others read) need it before the first fit creates it."""
    if launched_world_size() > 1 and is_plain_ddp(cfg.trainer.get("strategy")):
        environment = start_process_group(cfg.trainer)
        rank, world = rank_and_world()
        log.info("rank %d of %d (ranks from %s): every rank runs the loop, rank 0 writes %s", rank, world,
                 environment, cfg.paths.output_dir)
