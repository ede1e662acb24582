"""Hydra callbacks for sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class MakeSweepDir(Callback):
    """Create the sweep dir before the sweeper starts: the Optuna study's sqlite file lives there, and
    the sweeper opens it before any job (which is what creates the dir otherwise) has run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
