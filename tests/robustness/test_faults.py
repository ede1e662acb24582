"""Faults: kill -9 at each phase of a real run, then the same command; and atomic file writes.

The kill points come from the test-only hook tests/robustness/fault_hook.py, installed as a Hydra callback
on the command line: it listens to the run's events (ser/events.py) and kills at the start of training a
loop, after scoring the pool, right before a loop's state is saved, and between the final self-labels and
summary.json. No wall-clock races, and no production code that knows about faults.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ser import io as ser_io
from tests.conftest import ROOT, without_timing
from tests.robustness.fault_hook import overrides as fault_overrides

SMOKE = ["experiment=smoke"]
RUN = Path("outputs") / "ser" / "runs" / "experiment=smoke"


def _cli(args: list[str], project_root: Path, **extra_env: str) -> subprocess.CompletedProcess:
    # One thread: on a busy 2-core machine, 2 OpenMP threads make the smoke run ~5x slower (9 s -> 48 s).
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(project_root), "OMP_NUM_THREADS": "1", **extra_env}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    result = _cli(SMOKE, root)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((root / RUN / "summary.json").read_text())
    assert len(summary["loops"]) >= 3, "smoke must run two SER loops for these kills to mean anything"
    return summary


# (SER_FAULT_AT, what the run was doing, whether a finished loop was on disk when it died)
FAULTS = [
    ("train:0", "seed training", False),
    ("score:1", "pool scoring", True),
    ("train:1", "a loop's retraining", True),
    ("record:2", "writing a loop's outputs: checkpoint written, state not yet", True),
    ("finish", "writing the final outputs: selflabels/all.jsonl written, summary.json not yet", True),
]


@pytest.mark.slow
@pytest.mark.parametrize("at,doing,resumes", FAULTS, ids=[f[0] for f in FAULTS])
def test_kill_9_then_same_command_ends_as_an_uninterrupted_run(at, doing, resumes, uninterrupted, tmp_path):
    killed = _cli(SMOKE + fault_overrides(at), tmp_path)
    assert killed.returncode == -signal.SIGKILL, (
        f"the fault hook at {at} did not kill the run during {doing} (rc {killed.returncode}): "
        f"is that event emitted?\n{killed.stderr[-2000:]}")
    run = tmp_path / RUN
    assert not (run / "summary.json").exists()
    state = run / "state.json"
    assert state.exists() == resumes
    if at == "record:2":  # the half-recorded loop is not in the state: it is redone
        assert (run / "checkpoints" / "loop_2.safetensors").exists()
        assert [e["loop"] for e in json.loads(state.read_text())["loops"]] == [0, 1]
    if at == "finish":
        assert (run / "selflabels" / "all.jsonl").exists() and json.loads(state.read_text())["stopped"]

    again = _cli(SMOKE, tmp_path)  # the same command, no fault
    assert again.returncode == 0, again.stderr[-3000:]
    assert ("resuming" in again.stdout + again.stderr) == resumes
    summary = json.loads((run / "summary.json").read_text())
    assert without_timing(summary) == without_timing(uninterrupted)
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_fault_hook_kills_only_at_the_named_phase_and_loop():
    code = ("from ser import events; from tests.robustness.fault_hook import killer; import sys; "
            "events.subscribe(killer(sys.argv[1])); "
            "events.emit('train_start', loop=1); events.emit('pool_scored', loop=2); "
            "events.emit('train_step', loop=3, step=0); events.emit('checkpoint_saved', loop=3, step=1); print('alive', flush=True); "
            "events.emit('train_step', loop=3, step=2); print('after')")

    def run(at: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-c", code, at], env=env, capture_output=True, text=True, timeout=60)

    for at in ("train:0", "score:1", "record", "finish:2", "midloop:1"):
        result = run(at)
        assert result.returncode == 0 and result.stdout.split() == ["alive", "after"], at
    for at in ("train:1", "train", "score:2", "score"):
        result = run(at)
        assert result.returncode == -signal.SIGKILL and "alive" not in result.stdout, at
    for at in ("midloop:3", "midloop"):  # the first step after the loop's first checkpoint, not before
        result = run(at)
        assert result.returncode == -signal.SIGKILL and result.stdout.split() == ["alive"], at


def test_no_production_code_knows_about_faults():
    """Faults are injected from tests only: nothing in ser/ or run.py kills its own process."""
    offenders = [str(p.relative_to(ROOT)) for p in [*(ROOT / "ser").rglob("*.py"), ROOT / "run.py"]
                 if any(word in p.read_text() for word in ("SIGKILL", "SER_FAULT_AT", "maybe_die", "fault_hook"))]
    assert offenders == []


# ---- a non-finite loss stops the run; the last finished loop stays on disk, loadable ----


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_nan_loss_stops_naming_loop_and_step_and_keeps_the_last_good_loop(tmp_path, monkeypatch, one_thread):
    import torch
    from safetensors.torch import load_file

    from ser.evolve.state import LoopState
    from ser.tasks.run import run_experiment
    from ser.reward.module import RewardModule
    from tests.conftest import compose

    real_forward = RewardModule.forward

    def nan_from_loop_1_step_3(self, input_ids, attention_mask):
        rewards = real_forward(self, input_ids, attention_mask)
        if self.loop == 1 and self.global_step >= 3:
            return rewards * float("nan")
        return rewards

    monkeypatch.setattr(RewardModule, "forward", nan_from_loop_1_step_3)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"non-finite RM loss nan in loop 1 at step 3\b"):
        run_experiment(compose(SMOKE, out))
    monkeypatch.setattr(RewardModule, "forward", real_forward)

    assert not (out / "summary.json").exists()
    state = LoopState.load(out)
    assert [e["loop"] for e in state.loops] == [0] and not state.stopped
    assert out / state.checkpoint == out / "checkpoints" / "loop_0.safetensors"  # relative: a moved dir resumes
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["loop_0.safetensors"]
    weights = load_file(out / state.checkpoint)
    assert weights and all(torch.isfinite(w).all() for w in weights.values())
    # loadable by the pipeline itself: the same command resumes from it (strict load) and finishes
    summary = run_experiment(compose(SMOKE, out))
    assert [e["loop"] for e in summary["loops"]] == [0, 1, 2, 3]
    assert summary["loops"][0] == {k: state.loops[0].get(k) for k in summary["loops"][0]}


# ---- atomic writes: an interrupted write leaves the previous file intact and no temp file ----


def _dir_after(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


class _DiesMidWrite:
    """A file handle that writes the first half of what it is given, then fails (disk full, kill)."""

    def __init__(self, handle, exc: BaseException) -> None:
        self.handle, self.exc = handle, exc

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()
        return False

    def write(self, text: str) -> int:
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise self.exc

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "interrupt"])
def test_atomic_write_interrupted_midway_keeps_the_previous_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "state.json"
    ser_io.atomic_write_json(path, {"loops": [0]})
    before = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(ser_io.os, "fdopen", lambda *a, **k: _DiesMidWrite(real_fdopen(*a, **k), exc))
    with pytest.raises(type(exc)):
        ser_io.atomic_write_json(path, {"loops": [0, 1], "selected": {"x" * 100: "y" * 10_000}})
    assert path.read_bytes() == before
    assert _dir_after(path) == ["state.json"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_atomic_write_failing_at_fsync_or_rename_keeps_the_previous_file(tmp_path, monkeypatch, where):
    path = tmp_path / "loops.csv"
    ser_io.atomic_write_csv(path, [{"loop": 0, "val_accuracy": 0.5}])
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(5, f"simulated {where} failure")

    monkeypatch.setattr(ser_io.os, where, fail)
    with pytest.raises(OSError, match=where):
        ser_io.atomic_write_csv(path, [{"loop": 0, "val_accuracy": 0.5}, {"loop": 1, "val_accuracy": 0.6}])
    assert path.read_bytes() == before
    assert _dir_after(path) == ["loops.csv"]


def test_atomic_write_json_failing_serialisation_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    ser_io.atomic_write_json(path, {"ok": 1})
    before = path.read_bytes()
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular"):
        ser_io.atomic_write_json(path, circular)

    def dumps_fails(*args, **kwargs):
        raise RuntimeError("simulated failure inside json.dumps")

    monkeypatch.setattr(ser_io.json, "dumps", dumps_fails)
    with pytest.raises(RuntimeError):
        ser_io.atomic_write_json(path, {"ok": 2})
    assert path.read_bytes() == before
    assert _dir_after(path) == ["summary.json"]


def test_atomic_write_jsonl_rows_failing_midway_keep_the_previous_file(tmp_path):
    path = tmp_path / "selflabels" / "all.jsonl"
    ser_io.atomic_write_jsonl(path, [{"id": "a"}])
    before = path.read_bytes()

    def rows():
        yield {"id": "b"}
        yield {"id": "c"}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ser_io.atomic_write_jsonl(path, rows())
    assert path.read_bytes() == before
    assert _dir_after(path) == ["all.jsonl"]


def test_interrupted_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    path = tmp_path / "new.json"
    real_fdopen = os.fdopen
    monkeypatch.setattr(ser_io.os, "fdopen", lambda *a, **k: _DiesMidWrite(real_fdopen(*a, **k), OSError("boom")))
    with pytest.raises(OSError):
        ser_io.atomic_write_json(path, {"x": "y" * 1000})
    assert list(tmp_path.iterdir()) == []


# Everything the framework writes goes through ser/io.py, or writes a temp path and renames it.
_DIRECT_WRITE = re.compile(r"\.write_text\(|\.write_bytes\(|json\.dump\(|open\([^)]*[\"'][wax]b?\+?[\"']")
_LIBRARY_SAVE = re.compile(r"\b(savefig|save_model|save_pretrained|save_file|torch\.save)\(([^)]*)")


def test_no_file_is_written_in_place_outside_ser_io():
    offenders = []
    for path in sorted([*(ROOT / "ser").rglob("*.py"), ROOT / "run.py"]):
        if path.name == "io.py" and path.parent.name == "ser":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _DIRECT_WRITE.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            for match in _LIBRARY_SAVE.finditer(code):
                if "tmp" not in match.group(2):  # the target must be a temp path, renamed after it is complete
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "write through ser.io.atomic_write_* or to a temp path + rename:\n" + "\n".join(offenders)
