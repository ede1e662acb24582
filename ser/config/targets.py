"""The `_target_` allowlist: what a config may instantiate, checked before anything is instantiated.

Named classes and packages only: `torch.*` would admit `torch.load` and `torch.hub.load`, `ser.*` the
backbone loader with `trust_remote_code`. A user's own rule, confidence or phase schedule runs by
adding its module to `allow_targets` (conf/config.yaml), e.g. `allow_targets=[my_rules]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ser.core import config_error

# An entry ending in "." admits everything below it; any other entry admits that name exactly.
TARGET_ALLOWLIST = (
    "ser.evolve.confidence.", "ser.evolve.rules.", "ser.evolve.phases.", "ser.sweep.MakeSweepDir", "ser.loggers.",
    "torch.optim.",
    "pytorch_lightning.Trainer", "pytorch_lightning.loggers.", "pytorch_lightning.strategies.",
    "pytorch_lightning.plugins.environments.", "pytorch_lightning.callbacks.", "pytorch_lightning.profilers.",
)


def allowed(target: str, extra: Sequence[str] = ()) -> bool:
    entries = [*TARGET_ALLOWLIST, *(e.rstrip(".") + "." for e in extra)]
    return any(target.startswith(e) if e.endswith(".") else target == e for e in entries)


def check_targets(node: Any, extra: Sequence[str] = (), path: str = "") -> None:
    """Refuse any `_target_` outside the allowlist (+ `extra` modules), naming the key."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and not allowed(str(value), extra):
                raise config_error(where, f"{value!r} is outside the allowed packages {TARGET_ALLOWLIST}; add its "
                                          "module to allow_targets to run your own class")
            check_targets(value, extra, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_targets(value, extra, f"{path}[{i}]")
