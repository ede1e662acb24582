"""Launch checks: refuse a multi-process set-up the pipeline cannot host, before anything runs.

Two set-ups work. One driver process with trainer=ddp_spawn: Lightning spawns the ranks for each fit
and for pool scoring; the driver keeps everything else (any launcher). Or ranks started outside the
pipeline (torchrun, SLURM tasks: launcher=submitit_slurm_tasks) with trainer=ddp: every rank runs the
loop, only rank 0 writes (ser/ranks.py). See docs/cluster.md.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ser.core import POLICY_SCHEDULES, ConfigError


def _relaunches_command(strategy: Any) -> bool:
    """Lightning strategies whose extra ranks re-run the command line (its subprocess launcher)."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return strategy.startswith(("ddp", "fsdp", "deepspeed")) and not any(k in strategy for k in ("spawn", "fork", "notebook"))
    target = str(strategy.get("_target_", ""))
    distributed = target.rsplit(".", 1)[-1] in ("DDPStrategy", "FSDPStrategy", "DeepSpeedStrategy")
    return distributed and strategy.get("start_method", "popen") == "popen"


def is_plain_ddp(strategy: Any) -> bool:
    """Plain DDP over processes started outside the pipeline: the one relaunching strategy it runs on."""
    if not _relaunches_command(strategy):
        return False
    if isinstance(strategy, str):
        return strategy.startswith("ddp")
    return str(strategy.get("_target_", "")).rsplit(".", 1)[-1] == "DDPStrategy"


def _trainer_world(trainer: Any) -> int | None:
    """trainer.devices x trainer.num_nodes, when both are plain numbers (Lightning checks the rest)."""
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if not isinstance(devices, int) or devices < 1 or not isinstance(nodes, int):
        return None
    return devices * nodes


def _pinned_environment(trainer: Any) -> str | None:
    """The class name of a cluster environment pinned in trainer.plugins, if any."""
    for plugin in trainer.get("plugins") or []:
        name = str(plugin.get("_target_", "")).rsplit(".", 1)[-1] if hasattr(plugin, "get") else str(plugin)
        if name.endswith("Environment"):
            return name
    return None


def _multirun_launcher() -> str | None:
    """The Hydra launcher's class name inside a multirun job; None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return str(HydraConfig.get().launcher.get("_target_", "")).rsplit(".", 1)[-1]
    return None


def _check_started_ranks(cfg: DictConfig, trainer: Any, started: int) -> None:
    """This process is one of `started` ranks that torchrun or SLURM started: every rank runs the pipeline,
    which needs plain DDP over exactly these processes (ser/ranks.py)."""
    from ser.ranks import torchrun_world_size

    how = "torchrun" if torchrun_world_size() > 1 else "SLURM"
    if not is_plain_ddp(trainer.get("strategy")):
        raise ConfigError(
            f"config 'trainer.strategy': {how} started {started} processes, and the pipeline runs over started "
            f"ranks only with plain DDP: use trainer=ddp with trainer.devices x trainer.num_nodes = {started}, or "
            "start one process and train with trainer=ddp_spawn (launcher=submitit_slurm) (docs/cluster.md)")
    world = _trainer_world(trainer)
    if world is not None and world != started:
        raise ConfigError(f"config 'trainer.devices': trainer.devices x trainer.num_nodes = {world}, but {how} "
                          f"started {started} processes: make them equal (docs/cluster.md)")
    if cfg.schedule.name in POLICY_SCHEDULES:
        raise ConfigError(f"config 'schedule.name': the policy schedule {cfg.schedule.name} runs in one process: "
                          "use trainer=ddp_spawn for its RM stage (docs/cluster.md)")
    launcher = _multirun_launcher()
    if launcher is not None and launcher != "SlurmLauncher":
        raise ConfigError(
            f"config 'trainer.strategy': {how} ranks under a Hydra multirun (-m) with {launcher} would each run "
            "the whole sweep; on SLURM use launcher=submitit_slurm_tasks (each job starts its own ranks), "
            "elsewhere trainer=ddp_spawn (docs/cluster.md)")
    if torchrun_world_size() <= 1 and _pinned_environment(trainer) == "LightningEnvironment":
        raise ConfigError(
            "config 'trainer.plugins': LightningEnvironment cannot see the ranks of SLURM tasks: use "
            "launcher=submitit_slurm_tasks (SLURMEnvironment, auto_requeue=false) (docs/cluster.md)")


SHARDED = ("fsdp", "deepspeed", "FSDPStrategy", "DeepSpeedStrategy")


def _sharded(strategy: Any) -> bool:
    name = strategy if isinstance(strategy, str) else str((strategy or {}).get("_target_", ""))
    return any(s in name for s in SHARDED)


def check_launch(cfg: DictConfig) -> None:
    """Refuse a multi-process set-up the pipeline cannot host, before anything runs.

    Two set-ups work. One driver process with trainer=ddp_spawn: Lightning spawns the ranks for each
    fit and for pool scoring; the driver keeps everything else (any launcher). Or ranks started outside
    the pipeline (torchrun, SLURM tasks: launcher=submitit_slurm_tasks) with trainer=ddp: every rank runs
    the loop, only rank 0 writes (ser/ranks.py). Refused: trainer=ddp with several
    devices when nothing started the ranks (Lightning would re-run the command line, and every rank
    would run the pipeline), the same inside `python run.py -m ...` off SLURM tasks (each rank would
    re-run the sweep: a known Lightning + Hydra fault), and started ranks that the trainer does not
    train over.
    """
    from ser.ranks import launched_rank, launched_world_size, torchrun_world_size

    trainer = cfg.get("trainer") or {}
    strategy = trainer.get("strategy")
    if _sharded(strategy):
        raise ConfigError(
            f"config 'trainer.strategy': {strategy if isinstance(strategy, str) else strategy.get('_target_')} is not "
            "supported: the loop scores the pool, saves each loop's weights and averages them (soup) on whole, "
            "unsharded models. Train large RMs with LoRA on trainer=ddp or ddp_spawn (docs/cluster.md)")
    started = launched_world_size()
    # SLURM_NTASKS alone can describe the allocation of a plain batch script: only a relaunching trainer
    # or a task other than the first marks this process as one of several ranks.
    if started > 1 and (torchrun_world_size() > 1 or _relaunches_command(strategy) or launched_rank() > 0):
        _check_started_ranks(cfg, trainer, started)
        return
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    several = not (isinstance(devices, int) and devices in (0, 1)) or (isinstance(nodes, int) and nodes > 1)
    if not (several and _relaunches_command(strategy)):
        return
    launcher = _multirun_launcher()
    if launcher is not None:
        raise ConfigError(
            f"config 'trainer.strategy': a multi-process trainer that re-runs the command for each rank "
            f"(trainer=ddp, devices={devices}) is refused under a Hydra multirun (-m) with "
            f"{launcher}: Lightning would re-run the whole sweep in every rank (a known Lightning + Hydra "
            "fault). Use trainer=ddp_spawn (any launcher, submitit_slurm included), or launcher=submitit_slurm_tasks "
            "with trainer=ddp (SLURM starts each job's ranks) (docs/cluster.md)")
    raise ConfigError(
        f"config 'trainer.strategy': trainer=ddp with devices={devices}, but nothing started the "
        "ranks: Lightning would re-run the command line for each. Start them outside: "
        f"`torchrun --nproc_per_node={devices} run.py trainer=ddp ...` or as SLURM tasks (srun, "
        "launcher=submitit_slurm_tasks); or train across devices from one process with trainer=ddp_spawn "
        "(docs/cluster.md)")
