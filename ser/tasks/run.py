"""What run.py calls: the RM task or the policy task, by `schedule.name`."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from ser.core import COEVOLVE, POLICY_SCHEDULES
from ser.tasks.coevolve import train_coevolve
from ser.tasks.policy import train_policy
from ser.tasks.rm import train_rm


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    if cfg.schedule.name in POLICY_SCHEDULES:  # an RM schedule, then the policy stage on its RM
        return train_policy(cfg)
    if cfg.schedule.name == COEVOLVE:  # the RM and the policy together, on the policy's own samples
        return train_coevolve(cfg)
    return train_rm(cfg)
