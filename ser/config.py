"""Config checks that run before any data or model loads, and the resolvers the config tree uses.

Typed schemas (OmegaConf structured configs) catch unknown keys and wrong types in the knobs
that decide results; range checks catch values the types allow but the method does not.
Every error names the key (and the file or path where one is involved).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ser.evolve.agreement import AGREEMENTS
from ser.evolve.confidence import CONFIDENCES, PROBABILITY_CONFIDENCES
from ser.evolve.status import RULES

SCHEDULES = ("seed_only", "ser", "full_data")
# Policy schedules: an RM schedule above, then the policy stage on its final RM (ser/policy/stage.py).
POLICY_SCHEDULES = {"ser_ppo": "ser", "seed_ppo": "seed_only", "full_ppo": "full_data", "ser_dpo": "ser"}
TARGET_ALLOWLIST = ("ser.", "torch.", "pytorch_lightning.", "transformers.", "peft.", "torchmetrics.")


class ConfigError(ValueError):
    """A config value the framework refuses, named by its key."""


@dataclass
class ThresholdsSchema:
    tau_high: float = 0.55
    tau_low: float = 0.45
    delta: float = 0.3


@dataclass
class AgreementSchema:
    kind: str = "none"         # none | dropout | checkpoints
    samples: int = 4           # dropout samples, or earlier loops' RMs
    dropout: float = 0.1       # MC dropout rate (kind=dropout)
    min_fraction: float = 1.0  # share of the extra scorers that must agree with the current RM


@dataclass
class SERSchema:
    rule: str = "paper"
    confidence: str = "pointwise"
    thresholds: ThresholdsSchema = field(default_factory=ThresholdsSchema)
    min_pairs: int = 50
    max_loops: int = 3
    patience: int = 2
    retrain_from: str = "last"
    mix_seed: bool = True
    remove_selected: bool = True
    final_model: str = "best_val"
    keep_checkpoints: str = "best_last"
    top_fraction: Optional[float] = None
    top_k: Optional[int] = None
    weighting: str = "none"
    relabel: str = "none"
    labels: str = "self"
    agreement: AgreementSchema = field(default_factory=AgreementSchema)


@dataclass
class SplitsSchema:
    seed_fraction: float = 0.15
    val_fraction: float = 0.2
    test_fraction: float = 0.2


@dataclass
class ScheduleSchema:
    name: str = "ser"
    rm_schedule: Optional[str] = None  # policy schedules: the RM schedule they train against
    sft: bool = False
    rm_dir: Optional[str] = None


def _typed(node: DictConfig, schema: type, key: str) -> Any:
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config '{key}': {err.msg if hasattr(err, 'msg') else err}") from None


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config '{key}': {message}")


def _check_targets(node: Any, path: str = "") -> None:
    """Every `_target_` must resolve inside the allowlist before anything is instantiated."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and not str(value).startswith(TARGET_ALLOWLIST):
                raise ConfigError(f"config '{where}': {value!r} is outside the allowed packages {TARGET_ALLOWLIST}")
            _check_targets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, f"{path}[{i}]")


def _check_source_path(source: Any, key: str) -> None:
    if not source or source.get("path") is None:
        return
    paths = [source["path"]] if isinstance(source["path"], (str, os.PathLike)) else list(source["path"])
    for raw in paths:
        path = os.path.expandvars(os.path.expanduser(str(raw)))
        if any(ch in path for ch in "*?["):
            import glob
            _check(bool(glob.glob(path)), f"{key}.path", f"no file matches {path}")
        else:
            _check(Path(path).exists(), f"{key}.path", f"dataset file {path} does not exist")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for any invalid setting. Cheap: loads no data or model."""
    ser = _typed(cfg.ser, SERSchema, "ser")
    splits = _typed(cfg.splits, SplitsSchema, "splits")
    schedule = _typed(cfg.schedule, ScheduleSchema, "schedule")
    t = ser.thresholds
    _check(schedule.name in SCHEDULES + tuple(POLICY_SCHEDULES), "schedule.name",
           f"must be one of {SCHEDULES + tuple(POLICY_SCHEDULES)}, got {schedule.name!r}")
    if schedule.name in POLICY_SCHEDULES:
        from ser.policy.config import validate_policy_config
        validate_policy_config(cfg)
    _check(ser.rule in RULES, "ser.rule", f"must be one of {RULES}, got {ser.rule!r}")
    _check(ser.confidence in CONFIDENCES, "ser.confidence", f"must be one of {CONFIDENCES}, got {ser.confidence!r}")
    if ser.confidence in PROBABILITY_CONFIDENCES:
        for name in ("tau_high", "tau_low", "delta"):
            value = getattr(t, name)
            _check(0.0 <= value <= 1.0, f"ser.thresholds.{name}",
                   f"must be in [0, 1] for ser.confidence={ser.confidence}, got {value}")
    else:  # zscore: thresholds in standard deviations of the pool's scores
        _check(t.delta >= 0.0, "ser.thresholds.delta", f"must be >= 0, got {t.delta}")
    _check(t.tau_low <= t.tau_high, "ser.thresholds.tau_low",
           f"must not exceed tau_high ({t.tau_low} > {t.tau_high})")
    if ser.top_fraction is not None:
        _check(0.0 < ser.top_fraction <= 1.0, "ser.top_fraction", f"must be in (0, 1], got {ser.top_fraction}")
    if ser.top_k is not None:
        _check(ser.top_k >= ser.min_pairs, "ser.top_k", f"must be >= ser.min_pairs ({ser.min_pairs}), got {ser.top_k}")
    _check(ser.weighting in ("none", "confidence"), "ser.weighting", f"must be none or confidence, got {ser.weighting!r}")
    _check(ser.relabel in ("none", "drop", "flip"), "ser.relabel", f"must be none, drop or flip, got {ser.relabel!r}")
    _check(ser.labels in ("self", "oracle"), "ser.labels", f"must be self or oracle, got {ser.labels!r}")
    _check(ser.labels == "self" or ser.relabel == "none", "ser.relabel",
           "must be none with ser.labels=oracle (human labels never flip)")
    a = ser.agreement
    _check(a.kind in AGREEMENTS, "ser.agreement.kind", f"must be one of {AGREEMENTS}, got {a.kind!r}")
    _check(a.samples >= 1, "ser.agreement.samples", f"must be >= 1, got {a.samples}")
    _check(0.0 < a.dropout < 1.0, "ser.agreement.dropout", f"must be in (0, 1), got {a.dropout}")
    _check(0.0 < a.min_fraction <= 1.0, "ser.agreement.min_fraction", f"must be in (0, 1], got {a.min_fraction}")
    _check(ser.min_pairs >= 1, "ser.min_pairs", f"must be >= 1, got {ser.min_pairs}")
    _check(ser.max_loops >= 0, "ser.max_loops", f"must be >= 0, got {ser.max_loops}")
    _check(ser.patience >= 1, "ser.patience", f"must be >= 1, got {ser.patience}")
    _check(ser.retrain_from in ("last", "base"), "ser.retrain_from", f"must be last or base, got {ser.retrain_from!r}")
    _check(ser.final_model in ("best_val", "last", "soup"), "ser.final_model",
           f"must be best_val, last or soup, got {ser.final_model!r}")
    _check(ser.keep_checkpoints in ("all", "best_last"), "ser.keep_checkpoints",
           f"must be all or best_last, got {ser.keep_checkpoints!r}")
    _check(0.0 < splits.seed_fraction <= 1.0, "splits.seed_fraction", f"must be in (0, 1], got {splits.seed_fraction}")
    _check(0.0 <= splits.val_fraction < 1.0, "splits.val_fraction", f"must be in [0, 1), got {splits.val_fraction}")
    _check(0.0 <= splits.test_fraction < 1.0, "splits.test_fraction", f"must be in [0, 1), got {splits.test_fraction}")
    if schedule.name == "ser":
        _check(splits.seed_fraction < 1.0, "splits.seed_fraction", "must be < 1 for schedule=ser: the pool is empty")
        _check(splits.val_fraction > 0.0, "splits.val_fraction", "must be > 0 for schedule=ser: stopping needs validation data")
    data = cfg.data
    _check(data.kind in ("synthetic", "source"), "data.kind", f"must be synthetic or source, got {data.kind!r}")
    _check(data.overlong in ("truncate", "drop"), "data.overlong", f"must be truncate or drop, got {data.overlong!r}")
    _check(data.truncation_side in ("left", "right"), "data.truncation_side", "must be left or right")
    _check(int(data.max_length) > 0, "data.max_length", f"must be > 0, got {data.max_length}")
    if data.kind == "source":
        _check(data.get("source") is not None, "data.source", "must be set when data.kind=source")
        _check_source_path(data.source, "data.source")
        _check_source_path(data.get("test_source"), "data.test_source")
    _check(cfg.rm.get("trust_remote_code", False) in (False, True), "rm.trust_remote_code", "must be a boolean")
    devices = cfg.trainer.get("devices", 1)
    _check(not (cfg.rm.get("freeze_layers") and isinstance(devices, int) and devices > 1), "rm.freeze_layers",
           "replays per-process cached states, which spawned ranks cannot share: use it with one device")
    _check(not (cfg.rm.get("freeze_layers") and cfg.rm.get("score_compile")), "rm.score_compile",
           "cannot trace rm.freeze_layers' cached-state replay: set one of them off")
    _check_targets(OmegaConf.to_container(cfg, resolve=False))


def _relaunches_command(strategy: Any) -> bool:
    """Lightning strategies whose extra ranks re-run the command line (its subprocess launcher)."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return strategy.startswith(("ddp", "fsdp", "deepspeed")) and not any(k in strategy for k in ("spawn", "fork", "notebook"))
    target = str(strategy.get("_target_", ""))
    distributed = target.rsplit(".", 1)[-1] in ("DDPStrategy", "FSDPStrategy", "DeepSpeedStrategy", "fsdp_strategy")
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


def check_launch(cfg: DictConfig) -> None:
    """Refuse a multi-process set-up the pipeline cannot host, before anything runs.

    Two set-ups work. One driver process with trainer=ddp_spawn: Lightning spawns the ranks for each
    fit and for pool scoring; the driver keeps everything else (any launcher). Or ranks started outside
    the pipeline (torchrun, SLURM tasks: launcher=submitit_slurm_tasks) with trainer=ddp: every rank runs
    the loop, only rank 0 writes (ser/ranks.py). Refused: trainer=ddp/fsdp/deepspeed with several
    devices when nothing started the ranks (Lightning would re-run the command line, and every rank
    would run the pipeline), the same inside `python run.py -m ...` off SLURM tasks (each rank would
    re-run the sweep: a known Lightning + Hydra fault), and started ranks that the trainer does not
    train over.
    """
    from ser.ranks import launched_rank, launched_world_size, torchrun_world_size

    trainer = cfg.get("trainer") or {}
    strategy = trainer.get("strategy")
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
            f"(trainer=ddp/fsdp/deepspeed, devices={devices}) is refused under a Hydra multirun (-m) with "
            f"{launcher}: Lightning would re-run the whole sweep in every rank (a known Lightning + Hydra "
            "fault). Use trainer=ddp_spawn (any launcher, submitit_slurm included), or launcher=submitit_slurm_tasks "
            "with trainer=ddp (SLURM starts each job's ranks) (docs/cluster.md)")
    raise ConfigError(
        f"config 'trainer.strategy': trainer=ddp/fsdp/deepspeed with devices={devices}, but nothing started the "
        "ranks: Lightning would re-run the command line for each. Start them outside: "
        f"`torchrun --nproc_per_node={devices} run.py trainer=ddp ...` or as SLURM tasks (srun, "
        "launcher=submitit_slurm_tasks); or train across devices from one process with trainer=ddp_spawn "
        "(docs/cluster.md)")


def apply_thread_limit() -> None:
    """Honour OMP_NUM_THREADS even when torch was imported before it was set (a joblib worker is
    reused across jobs; Hydra sets the variable per job with hydra.job.env_set)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))


def run_id(override_dirname: str) -> str:
    """A run dir name derived from the command's overrides: a relaunched job finds its own dir."""
    if not override_dirname:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname)
    if len(safe) <= 120:
        return safe
    return safe[:100] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:10]


def wandb_id(output_dir: str) -> str:
    """A stable wandb run id per run dir: a resumed run logs to the same wandb run."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]


def register_resolvers() -> None:
    from ser.ranks import on_rank_zero

    for name, fn in (("run_id", run_id), ("wandb_id", wandb_id), ("on_rank_zero", on_rank_zero)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
