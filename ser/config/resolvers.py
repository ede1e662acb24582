"""The resolvers the config tree uses: run dirs and wandb ids derived from the command, the trainer's precision."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

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


def native_bf16(accelerator: str = "cpu") -> bool:
    """Whether the accelerator multiplies bf16 in hardware: AMX or AVX512-BF16 on a CPU, bf16 tensor cores on a GPU."""
    if str(accelerator).lower() in ("gpu", "cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def auto_precision(accelerator: str = "cpu") -> str:
    """trainer.precision by default: bf16 autocast where the hardware has bf16 units, fp32 elsewhere.

    On a CPU with AMX, bf16 matmuls run ~3x faster than fp32 ones and an SER run on the embedded default
    takes half the time with its metrics within seed noise of fp32 (docs/performance.md); without bf16
    units autocast would only add casts. The resolved value is what the run dir's config records.
    """
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def pin_precision(cfg: DictConfig) -> str | None:
    """Replace an `auto_precision` rule in trainer.precision by the value it chose here, so the run dir's
    config records the precision the run trained in (and a resume on other hardware sees the change)."""
    trainer = cfg.get("trainer")
    if trainer is None or "precision" not in trainer or not OmegaConf.is_interpolation(trainer, "precision"):
        return None
    value = str(trainer.precision)
    with open_dict(trainer):
        trainer.precision = value
    return value


def register_resolvers() -> None:
    for name, fn in (("run_id", run_id), ("run_group", run_group), ("wandb_id", wandb_id), ("on_rank_zero", on_rank_zero),
                     ("auto_precision", auto_precision)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
