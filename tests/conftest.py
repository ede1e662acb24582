"""Shared fixtures: compose configs offline, force CPU, keep runs tiny."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# fp32 whatever the CPU: tiny models gain nothing from bf16 and the tests' numbers stay machine-independent
# (subprocess runs inherit it; tests of the precision rule itself unset it)
os.environ["SER_PRECISION"] = "32-true"


def compose(overrides: list[str] | None = None, output_dir: Path | None = None):
    """Compose the root config as `run.py` would, with `paths.output_dir` pinned (no Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    import ser.config  # noqa: F401  (registers resolvers)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides or [], return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir or ROOT / "outputs" / "test")
        if "wandb" in (cfg.logger or {}):
            cfg.logger.wandb.name = "test"
            cfg.logger.wandb.id = "test"
            cfg.logger.wandb.group = "test"
    return cfg


def without_timing(summary: dict) -> dict:
    """A summary without its clock readings (`seconds`, `seconds_<part>`): what a resumed run must reproduce."""
    return {**summary, "loops": [{k: v for k, v in e.items() if not k.startswith("seconds")} for e in summary["loops"]]}


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(overrides: list[str] | None = None):
        return compose(overrides, tmp_path / "run")
    return _compose
