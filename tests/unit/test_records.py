"""experiments/records.py: a finished run's records (no weights) packed reproducibly, restored where missing,
and a restored run skipped by the same command."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from experiments.records import MARKER, pack, record_files, restore, save
from tests.conftest import compose

RECORD = {
    ".hydra/config.yaml": "seed: 0\n",
    "state.json": "{}",
    "summary.json": '{"seed": 0}',
    "loops.csv": "loop\n0\n",
    "data_report.json": "{}",
    "selflabels/loop_1.jsonl": '{"pair_id": "p1"}\n',
    "generated/loop_1_samples.jsonl": '{"text": "a"}\n',
    "policy/test_loop_1.json": '{"gold": [1.0]}',
    "csv/version_0/metrics.csv": "step\n0\n",
}
WEIGHTS_AND_WORK = {
    "checkpoints/loop_0.safetensors": "w",
    "checkpoints/loop_1/last.ckpt": "w",
    "final_rm/config.json": "{}",
    "final_rm/model.safetensors": "w",
    "policy/loop_1/adapter_config.json": "{}",
    "policy/loop_1/adapter_model.safetensors": "w",
    "rm/final_rm/tokenizer.json": "{}",
    "rm/final_rm/model.safetensors": "w",
    "scores/part_0.json": "{}",
    "accuracy_per_loop.png": "png",
    "run.log": "log",
}


def make_run(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_record_keeps_the_metrics_and_labels_and_drops_weights_and_work_files(tmp_path):
    run = make_run(tmp_path / "run", {**RECORD, **WEIGHTS_AND_WORK, "rm/summary.json": "{}"})
    assert [p.as_posix() for p in record_files(run)] == sorted([*RECORD, "rm/summary.json"])


def test_packing_is_reproducible_whatever_the_files_times(tmp_path):
    run = make_run(tmp_path / "run", RECORD)
    first = pack(run)
    for path in run.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    assert pack(run) == first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == sorted(RECORD)
        assert tar.extractfile("summary.json").read() == b'{"seed": 0}'


def test_a_file_too_large_for_a_record_is_refused_by_name(tmp_path, monkeypatch):
    import experiments.records as records

    run = make_run(tmp_path / "run", {**RECORD, "samples.csv": "x" * 100})
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 50)
    with pytest.raises(ValueError, match="samples.csv"):
        record_files(run)


def test_save_then_restore_gives_back_every_record_and_leaves_existing_run_dirs_alone(tmp_path):
    sweeps, records = tmp_path / "sweeps", tmp_path / "records"
    make_run(sweeps / "schedule=ser,seed=0", {**RECORD, **WEIGHTS_AND_WORK})
    make_run(sweeps / "schedule=ser,seed=1", {"state.json": "{}"})  # unfinished: not a record yet
    assert save(sweeps, records) == {"schedule=ser,seed=0": "new"}
    assert save(sweeps, records) == {"schedule=ser,seed=0": "unchanged"}

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    make_run(fresh / "schedule=ser,seed=2", {"state.json": "{}"})
    shutil.copytree(fresh / "schedule=ser,seed=2", tmp_path / "kept")
    (records / "schedule=ser,seed=2.tar.gz").write_bytes(pack(make_run(tmp_path / "other", RECORD)))
    assert restore(fresh, records) == {"schedule=ser,seed=0": "restored", "schedule=ser,seed=2": "present"}
    restored = fresh / "schedule=ser,seed=0"
    assert {p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file()} == {*RECORD, MARKER}
    assert all((restored / rel).read_text() == text for rel, text in RECORD.items())
    assert json.loads((restored / MARKER).read_text())["record"].endswith("schedule=ser,seed=0.tar.gz")
    assert [p.name for p in (fresh / "schedule=ser,seed=2").iterdir()] == ["state.json"]  # not overwritten
    assert save(fresh, records)["schedule=ser,seed=0"] == "unchanged"  # the marker is not part of the record


def test_a_restored_run_is_skipped_by_the_same_command(tmp_path, monkeypatch):
    """A real finished run: saved, its run dir removed, restored without weights; the same config returns
    the same summary and loads nothing."""
    import ser.tasks.rm as rm_task
    from ser.tasks.run import run_experiment

    sweeps, records = tmp_path / "sweeps", tmp_path / "records"
    overrides = ["experiment=smoke", "ser.phases=[1]"]
    summary = run_experiment(compose(overrides, sweeps / "run"))
    save(sweeps, records)
    shutil.rmtree(sweeps / "run")
    assert restore(sweeps, records) == {"run": "restored"}
    assert not (sweeps / "run" / "final_rm").exists() and not (sweeps / "run" / "checkpoints").exists()

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run must not load data or models again")

    monkeypatch.setattr(rm_task, "build_loop", no_loading)
    assert run_experiment(compose(overrides, sweeps / "run")) == json.loads(json.dumps(summary))
    from ser.tasks.policy import ensure_rm

    with pytest.raises(RuntimeError, match="exported RM .final_rm/. is missing"):  # a policy needs the weights
        ensure_rm(compose(overrides, sweeps / "run"), sweeps / "run", "RM (ser)")
    with pytest.raises(AssertionError, match="must not load"):  # resume=false trains it again
        run_experiment(compose([*overrides, "resume=false"], sweeps / "run"))
