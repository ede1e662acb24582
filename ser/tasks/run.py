"""What run.py calls: the RM task or the policy task, by `schedule.name`."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from ser.config.resolvers import pin_precision
from ser.core import COEVOLVE, POLICY_SCHEDULES
from ser.tasks.coevolve import train_coevolve
from ser.tasks.policy import train_policy
from ser.tasks.rm import train_rm

log = logging.getLogger(__name__)


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    chosen = pin_precision(cfg)
    if chosen is not None:
        why = ("SER_PRECISION in the environment" if os.environ.get("SER_PRECISION")
               else "auto: this machine has bf16 units" if chosen.startswith("bf16") else "auto: no bf16 units here")
        log.info("trainer.precision: %s (%s)", chosen, why)
    if cfg.schedule.name in POLICY_SCHEDULES:  # an RM schedule, then the policy stage on its RM
        return train_policy(cfg)
    if cfg.schedule.name == COEVOLVE:  # the RM and the policy together, on the policy's own samples
        return train_coevolve(cfg)
    return train_rm(cfg)
