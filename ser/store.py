"""A run's directory: the one place that reads and writes it (rank 0 writes, every rank may read).

    .hydra/                  the composed config, Hydra's config, the overrides (written once the run is accepted)
    machine.json             one entry a start (resumes too): CPU, GPUs, torch, threads (ser/machine.py)
    data_report.json         rows read / kept / skipped, overlong pairs, split sizes
    state.json               the resumable loop state (ser/evolve/state.py)
    checkpoints/             loop_<k>.safetensors, soup.safetensors; loop_<k>/last.ckpt mid-loop
    selflabels/              loop_<k>.jsonl, all.jsonl: every self-label with provenance
    loops.csv, summary.json  per-loop metrics; the run's summary
    final_rm/                the exported RM (save_pretrained)

Every write is atomic (ser/io.py or a temp path renamed when complete), so a kill leaves either the old
file or the new one. `open` refuses a run dir that holds a run with another config before anything is
written, so a refused run never touches the existing run's files.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ser.evolve.state import LoopState
from ser.io import atomic_write_csv, atomic_write_json, atomic_write_jsonl, atomic_write_text, read_json
from ser.ranks import barrier

log = logging.getLogger(__name__)


class ConfigMismatch(RuntimeError):
    """The run dir holds a run with another config."""


class RunStore:
    def __init__(self, out: Path, digest: str, *, writer: bool = True, resume: bool = True) -> None:
        self.out, self.digest, self.writer, self.resume = Path(out), digest, writer, resume

    # ---- state -------------------------------------------------------------------------------------
    def open(self) -> LoopState:
        """The state to continue from (fresh with resume=false or none saved); refuses another config's run."""
        state = LoopState.load(self.out) if self.resume else None
        barrier()  # every rank has read state.json before rank 0 may rewrite it
        if state is not None and state.config_hash != self.digest:
            raise ConfigMismatch(f"{self.out}: holds a run with another config (hash {state.config_hash} != {self.digest}); "
                                 "use another run dir, or resume=false to start over")
        return state or LoopState(config_hash=self.digest)

    def finished_summary(self) -> dict[str, Any] | None:
        """The summary of a run that finished here with this config, else None. A re-run returns it without
        loading data or models: a sweep re-run skips its finished jobs, and so does a run whose record was
        restored from experiments/records/ without its weights. Another config's run is left to `open`."""
        if not self.resume or not (self.out / "summary.json").exists():
            return None
        state = LoopState.load(self.out)
        if state is None or not state.stopped or state.config_hash != self.digest:
            return None
        return read_json(self.out / "summary.json")

    def save_state(self, state: LoopState) -> None:
        if self.writer:
            state.save(self.out)

    def write_run_config(self, cfg: DictConfig) -> None:
        """`.hydra/`: the composed config, and Hydra's own config and overrides when Hydra runs the job."""
        if not self.writer:
            return
        hydra_dir = self.out / ".hydra"
        atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            atomic_write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})))
            atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(list(hydra_cfg.overrides.task)))

    def record_machine(self) -> None:
        """Append this start's machine to machine.json: a run resumed elsewhere lists both machines."""
        if not self.writer:
            return
        from ser.machine import machine_facts

        path = self.out / "machine.json"
        starts = read_json(path) if path.exists() else []
        atomic_write_json(path, [*starts, machine_facts()])

    # ---- checkpoints -------------------------------------------------------------------------------
    def checkpoint_path(self, loop: int | str) -> Path:
        return self.out / "checkpoints" / f"loop_{loop}.safetensors"

    @property
    def soup_path(self) -> Path:
        return self.out / "checkpoints" / "soup.safetensors"

    def midloop_dir(self, loop: int) -> Path:
        """`last.ckpt` of the loop in training: a killed job resumes from it; dropped once the loop is recorded.
        Kept only for this config (and only with resume=true): anything else there is stale and removed."""
        path = self.out / "checkpoints" / f"loop_{loop}"
        marker = path / "config_hash"  # written beside the first checkpoint (CheckpointTag)
        if self.writer and path.exists() and (not self.resume or not marker.exists()
                                              or marker.read_text().strip() != self.digest):
            shutil.rmtree(path, ignore_errors=True)
        barrier()  # every rank then sees the same last.ckpt (or none) and resumes (or not) alike
        return path

    def drop_midloop(self, loop: int) -> None:
        if self.writer:
            shutil.rmtree(self.out / "checkpoints" / f"loop_{loop}", ignore_errors=True)

    def prune_checkpoints(self, keep: set[int]) -> None:
        for path in (self.out / "checkpoints").glob("loop_*.safetensors"):
            if int(path.stem.split("_")[1]) not in keep:
                path.unlink()

    # ---- records -----------------------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        if self.writer:
            atomic_write_json(self.out / name, data)

    def write_selflabels(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        if self.writer:
            atomic_write_jsonl(self.out / "selflabels" / f"{name}.jsonl", rows)

    def write_loops_csv(self, loops: list[dict[str, Any]]) -> None:
        if self.writer:
            atomic_write_csv(self.out / "loops.csv", [flat(e) for e in loops])

    def clear_work_dirs(self) -> None:
        shutil.rmtree(self.out / "scores", ignore_errors=True)  # emptied work dirs of distributed scoring


def flat(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: nested dicts become prefixed columns (candidates.status1, test_accuracy_by_group.stark)."""
    row: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            row[key] = value
    return row
