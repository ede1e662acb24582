"""The resolvers the config tree uses: run dirs and wandb ids derived from the command."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

from ser.ranks import on_rank_zero


def run_id(override_dirname: str) -> str:
    """A run dir name derived from the command's overrides: a relaunched job finds its own dir."""
    if not override_dirname:
        return "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+-]", "_", override_dirname)
    if len(safe) <= 120:
        return safe
    return safe[:100] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:10]


def run_group(override_dirname: str) -> str:
    """The run's overrides without `seed=`: the wandb group of every seed of one setting."""
    kept = [item for item in override_dirname.split(",") if item and not item.startswith("seed=")]
    return run_id(",".join(kept))


def wandb_id(output_dir: str) -> str:
    """A stable wandb run id per run dir: a resumed run logs to the same wandb run."""
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:12]


def register_resolvers() -> None:
    for name, fn in (("run_id", run_id), ("run_group", run_group), ("wandb_id", wandb_id), ("on_rank_zero", on_rank_zero)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
