"""Helpers of the scale-out runs: run.py (or torchrun) as a subprocess in a throwaway project root."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, without_timing

SMOKE = ["experiment=smoke"]
RUNS = Path("outputs") / "ser" / "runs"


def _env(project_root: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
            "PYTHONPATH": str(ROOT), "PROJECT_ROOT": str(project_root), "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def _cli(args: list[str], project_root: Path, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=project_root,
                          env=_env(project_root, **extra), capture_output=True, text=True, timeout=timeout)


def _summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return without_timing(summary)


def free_port() -> int:
    """A free local port for the ranks' rendezvous (torchrun's --master_port=0 hangs the ranks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory) -> Path:
    """The single-process smoke run every multi-process run is compared with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    result = _cli(SMOKE, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / RUNS / "experiment=smoke"
