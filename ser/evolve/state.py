"""The loop's resumable state: what finished, what was selected, and where its weights are.

Written atomically after every finished loop, so a killed run restarted with the same command
continues after its last finished loop, with the same selections and the same weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ser.core import REFERENCE_SCHEDULES, RM_SCHEDULES

POLICY_GROUPS = ("policy", "evaluate", "coevolve")
from ser.io import atomic_write_json, read_json

STATE_FILE = "state.json"


@dataclass
class LoopState:
    config_hash: str
    loops: list[dict[str, Any]] = field(default_factory=list)  # one summary record per finished loop
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)  # pair id -> self-labeled row
    removed_from_pool: list[str] = field(default_factory=list)
    status: str | None = None  # the last loop's status
    stopped: bool = False
    stop_reason: str = ""
    checkpoint: str | None = None  # weights of the last finished loop, relative to the run dir
    warnings: list[str] = field(default_factory=list)  # selection shortfalls, repeated in summary.json

    @property
    def next_loop(self) -> int:
        return len(self.loops)

    def save(self, out_dir: Path) -> None:
        atomic_write_json(out_dir / STATE_FILE, asdict(self))

    def copy(self) -> "LoopState":
        return copy.deepcopy(self)

    @classmethod
    def load(cls, out_dir: Path) -> "LoopState | None":
        """The saved state, or None; a damaged file is an error naming it and the way to start over."""
        path = out_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls(**read_json(path))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise RuntimeError(f"{path}: the saved loop state is damaged ({type(err).__name__}: {err}); "
                               "start this run over with resume=false, or use another run dir") from None


# Settings that cannot change results: a resumed run may differ in these, and in nothing else.
PRESENTATION_KEYS = ("resume", "paths", "logger", "ckpt_every_n_steps", "verbose", "hub_offline")
# Settings added after runs were recorded, with the value that reproduces those runs: at that value
# they are left out of the hash, so the older run dirs still resume (and are still skipped when done).
NEUTRAL_SETTINGS = {("ser", "labels"): "self", ("rm", "score_compile"): False}
# Speed paths equal to float rounding (tests/unit/test_speed_equivalence.py): never in the hash, so a run
# resumes whichever way they are set and switching the default orphans no run dir
SPEED_SETTINGS = (("rm", "padding_free"),)
TRAINER_PRESENTATION_KEYS = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps", "default_root_dir")


def config_hash(resolved: dict[str, Any]) -> str:
    """Hash of the settings that decide results; a resumed run must match it exactly."""
    kept = {k: v for k, v in resolved.items() if k not in PRESENTATION_KEYS}
    if (kept.get("schedule") or {}).get("name") in RM_SCHEDULES:  # (coevolve reads them: they stay)
        for group in POLICY_GROUPS:  # composed for every run, read only by the policy stages
            kept.pop(group, None)
    if (kept.get("schedule") or {}).get("name") in REFERENCE_SCHEDULES:
        for group in ("ser", "phases"):  # never read by a reference run: retuning SER must not orphan its columns
            kept.pop(group, None)
    for (group, key), neutral in NEUTRAL_SETTINGS.items():
        if isinstance(kept.get(group), dict) and kept[group].get(key) == neutral:
            kept[group] = {k: v for k, v in kept[group].items() if k != key}
    for group, key in SPEED_SETTINGS:
        if isinstance(kept.get(group), dict):
            kept[group] = {k: v for k, v in kept[group].items() if k != key}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in TRAINER_PRESENTATION_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]
