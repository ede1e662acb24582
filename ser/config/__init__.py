"""Config checks that run before any data or model loads, and the resolvers the config tree uses.

Every error names the key (and the file or path where one is involved). The `_target_` allowlist is
checked first, before any class is built; typed schemas (ser/config/schema.py) then catch unknown
keys, wrong types, values outside an enum and out-of-range values; the selection objects are built
and checked against each other; launcher checks live in ser/config/launch.py.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ser.config.launch import check_launch
from ser.config.policy import validate_coevolve_config, validate_policy_config
from ser.config.resolvers import register_resolvers, run_id, wandb_id
from ser.config.sources import check_model_source
from ser.config.schema import DataSchema, ScheduleSchema, SERSchema, SplitsSchema, register
from ser.config.targets import TARGET_ALLOWLIST, check_targets
from ser.core import COEVOLVE, POLICY_SCHEDULES, ConfigError, check

__all__ = ["ConfigError", "TARGET_ALLOWLIST", "apply_thread_limit", "check_launch", "run_id", "validate_config",
           "wandb_id"]


def typed(node: Any, schema: type, key: str, keys: tuple[str, ...] | None = None) -> Any:
    """`node` merged onto `schema` and built (its __post_init__ checks ranges); `keys`: check only these."""
    if keys is not None:
        node = OmegaConf.masked_copy(node, [k for k in keys if k in node])
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as err:
        where = getattr(err, "full_key", None)
        message = str(err).split("\n")[0]  # the first line; OmegaConf appends full_key and object_type
        raise ConfigError(f"config '{key}.{where}': {message}" if where else f"config '{key}': {message}") from None


def _check_source_path(source: Any, key: str) -> None:
    if not source or source.get("path") is None:
        return
    paths = [source["path"]] if isinstance(source["path"], (str, os.PathLike)) else list(source["path"])
    for raw in paths:
        path = os.path.expandvars(os.path.expanduser(str(raw)))
        if any(ch in path for ch in "*?["):
            check(bool(glob.glob(path)), f"{key}.path", f"no file matches {path}")
        else:
            check(Path(path).exists(), f"{key}.path", f"dataset file {path} does not exist")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for any invalid setting. Cheap: loads no data or model."""
    extra = list(cfg.get("allow_targets") or [])
    check_targets(OmegaConf.to_container(cfg, resolve=False), extra)
    typed(cfg.ser, SERSchema, "ser")
    splits = typed(cfg.splits, SplitsSchema, "splits")
    schedule = typed(cfg.schedule, ScheduleSchema, "schedule")
    typed(cfg.data, DataSchema, "data", keys=tuple(DataSchema.__dataclass_fields__))
    offline = bool(cfg.get("hub_offline", True)) or os.environ.get("HF_HUB_OFFLINE") == "1"
    check_model_source(cfg.rm.source, "rm.source", offline)
    if schedule.name in POLICY_SCHEDULES:
        validate_policy_config(cfg)
        check_model_source(cfg.policy.model.source, "policy.model.source", offline)
    if schedule.name == COEVOLVE:
        validate_coevolve_config(cfg)
        check_model_source(cfg.policy.model.source, "policy.model.source", offline)
    if schedule.name in ("ser", COEVOLVE) or POLICY_SCHEDULES.get(schedule.name) == "ser":
        from ser.evolve.build import build_selection  # builds the selection objects: only where a loop runs

        build_selection(cfg)
        check(splits.seed_fraction < 1.0, "splits.seed_fraction", "must be < 1 for schedule=ser: the pool is empty")
        check(splits.val_fraction > 0.0, "splits.val_fraction", "must be > 0 for schedule=ser: stopping needs validation data")
    data = cfg.data
    if data.kind == "source":
        check(data.get("source") is not None, "data.source", "must be set when data.kind=source")
        _check_source_path(data.source, "data.source")
        _check_source_path(data.get("test_source"), "data.test_source")
    check(cfg.rm.get("trust_remote_code", False) in (False, True), "rm.trust_remote_code", "must be a boolean")
    devices = cfg.trainer.get("devices", 1)
    check(not (cfg.rm.get("freeze_layers") and isinstance(devices, int) and devices > 1), "rm.freeze_layers",
          "replays per-process cached states, which spawned ranks cannot share: use it with one device")
    check(not (cfg.rm.get("freeze_layers") and cfg.rm.get("score_compile")), "rm.score_compile",
          "cannot trace rm.freeze_layers' cached-state replay: set one of them off")
    check(cfg.rm.get("padding_free", False) in (True, False, "auto"), "rm.padding_free", "must be auto, true or false")
    check(not (cfg.rm.get("freeze_layers") and cfg.rm.get("padding_free") is True), "rm.padding_free",
          "packs the tokens of a batch, which rm.freeze_layers' cached states per text cannot follow: set one of them off")


def apply_thread_limit() -> None:
    """Honour OMP_NUM_THREADS even when torch was imported before it was set (a joblib worker is
    reused across jobs; Hydra sets the variable per job with hydra.job.env_set)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))


register_resolvers()
register()
