"""schedule=coevolve: the policy's own samples are the unlabeled pool; the SER step selects among them."""

from __future__ import annotations

import csv
import json
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose, without_timing
from tests.robustness.fault_hook import overrides as fault_overrides

COEVOLVE = ["schedule=coevolve", "experiment=smoke"]


@pytest.fixture(scope="module")
def coevolve_run(tmp_path_factory):
    from ser.tasks.run import run_experiment

    out = tmp_path_factory.mktemp("coevolve") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    summary = run_experiment(compose(COEVOLVE, out))
    torch.set_num_threads(before)
    return out, summary


def test_coevolve_smoke_runs_the_phase_schedule_on_generated_pairs(coevolve_run):
    out, summary = coevolve_run
    assert summary["schedule"] == "coevolve" and summary["phases"] == "paper[1,1,2]"
    assert summary["statuses"] == ["1", "1", "2"] and len(summary["loops"]) == 4  # >= 2 self-labeling loops
    assert all(e["selected"] >= 5 for e in summary["loops"][1:])
    rows = [json.loads(line) for line in (out / "selflabels" / "loop_1.jsonl").read_text().splitlines()]
    assert rows and all(r["id"].startswith("gen1-") and r["correct"] in (True, False, None) for r in rows)
    generated = [json.loads(line) for line in (out / "generated" / "loop_1.jsonl").read_text().splitlines()]
    assert {"rm_a", "rm_b", "gold_a", "gold_b", "sampling", "policy"} <= set(generated[0])
    assert generated[0]["policy"] == "start" and generated[0]["sampling"]["samples_per_prompt"] == 2
    policy = summary["policy"]
    assert policy["final_loop"] in (0, 1, 2, 3) and len(policy["per_loop"]) == 4
    assert all(e["policy_gold"] is not None for e in policy["per_loop"])
    assert (out / "policy" / "loop_3" / "adapter_model.safetensors").exists()
    parts = ("sample", "score", "train_rm", "train_policy", "evaluate_policy", "evaluate", "write")  # a loop's time
    for e, p in zip(summary["loops"][1:], policy["per_loop"][1:]):
        split = [p[f"seconds_{part}"] for part in parts]
        assert all(t >= 0 for t in split) and sum(split) <= e["seconds"] + 0.5
        assert p["seconds_train_policy"] > 0 and p["seconds_sample"] > 0 and p["seconds_train_rm"] > 0
    assert "seconds_sample" in (out / "loops.csv").read_text().splitlines()[0]


def test_the_coevolve_report_reads_a_run(coevolve_run, tmp_path):
    from experiments import coevolve_report
    from ser.evolve.coevolve import TIME_SPLIT

    out, summary = coevolve_run
    import shutil

    shutil.copytree(out, tmp_path / "sweeps" / "experiment=coevolve_cpu,seed=0")  # as experiments/coevolve.sh names it
    assert coevolve_report.main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "coevolve")]) == 0
    text = (tmp_path / "coevolve.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| coevolve rm=self | 0 |"))
    start = summary["policy"]["gold_start"]
    assert f"| {start:.3f} → " in row and "—" in row  # no fixed-RM or ser_dpo run to compare with
    loop_rows = [line for line in text.splitlines() if line.startswith("| rm=self | 0 | ")]
    assert len(loop_rows) == len(summary["loops"]) and loop_rows[1].count(" / ") == len(TIME_SPLIT) - 1  # the split
    assert "seconds: sample / score / train rm / train policy / evaluate policy / evaluate / write |" in text
    assert "Still running" not in text
    # right of judged: pairs the gold judge cannot tell apart (correct None) are not counted
    (tmp_path / "selflabels").mkdir()
    (tmp_path / "selflabels" / "loop_2.jsonl").write_text(
        '{"correct": true}\n{"correct": false}\n{"correct": null}\n{"correct": true}\n')
    assert coevolve_report.judged_labels(tmp_path, 2) == (2, 3) and coevolve_report.judged_labels(tmp_path, 3) is None
    (tmp_path / "sweeps" / "coevolve.rm=frozen,experiment=coevolve_cpu,seed=1").mkdir()
    (tmp_path / "sweeps" / "coevolve.rm=frozen,experiment=coevolve_cpu,seed=1" / "state.json").write_text("{}")
    assert coevolve_report.main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "coevolve")]) == 0
    assert ("Still running or queued (resumable; not in the tables): `coevolve.rm=frozen,experiment=coevolve_cpu,seed=1`"
            in (tmp_path / "coevolve.md").read_text())
    assert "Every run: trainer.precision=32-true." in text
    # an offline ser_dpo run, as the policy stage writes it: a summary without a seed, per-prompt gold in samples.csv
    offline = tmp_path / "sweeps" / "evaluate.gold.judge=synthetic,experiment=coevolve_cpu,schedule=ser_dpo,seed=0"
    (offline / ".hydra").mkdir(parents=True)
    shutil.copy(out / ".hydra" / "config.yaml", offline / ".hydra" / "config.yaml")
    (offline / "summary.json").write_text(json.dumps({"schedule": "ser_dpo", "final": {}}))
    final = json.loads((out / "policy" / f"test_loop_{summary['policy']['final_loop']}.json").read_text())
    dpo_gold = [1.0 - g for g in final["gold"]]  # loses every prompt the co-evolved policy wins, and wins its losses
    with (offline / "samples.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["prompt", "start_gold", "dpo_gold"])
        writer.writeheader()
        writer.writerows({"prompt": p, "start_gold": 0.0, "dpo_gold": g} for p, g in zip(final["prompts"], dpo_gold))
    assert coevolve_report.main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "coevolve")]) == 0
    rows = (tmp_path / "coevolve.md").read_text().splitlines()
    wins = sum(a > b for a, b in zip(final["gold"], dpo_gold)) / len(dpo_gold)
    losses = sum(a < b for a, b in zip(final["gold"], dpo_gold)) / len(dpo_gold)
    row = next(line for line in rows if line.startswith("| coevolve rm=self | 0 |"))
    assert row.endswith(f"| {wins:.2f} / {1 - wins - losses:.2f} / {losses:.2f}; win − loss {wins - losses:+.3f} |")
    assert any(line.startswith(f"| ser_dpo (offline) | 0 | 0.000 → {statistics.fmean(dpo_gold):.3f} |") for line in rows)
    shutil.rmtree(offline)
    other = tmp_path / "sweeps" / "coevolve.rm=frozen,experiment=coevolve_cpu,seed=0"
    shutil.copytree(out, other)
    (other / ".hydra" / "config.yaml").write_text(
        (other / ".hydra" / "config.yaml").read_text().replace("precision: 32-true", "precision: bf16-mixed"))
    frozen = json.loads((other / "summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**frozen, "coevolve": {**frozen["coevolve"], "rm": "frozen"}}))
    with pytest.raises(SystemExit, match="different precisions.*bf16-mixed: coevolve.rm=frozen"):
        coevolve_report.main([str(tmp_path / "sweeps"), "--out", str(tmp_path / "coevolve")])


def test_a_run_restored_from_its_record_gives_the_same_page_and_is_skipped(coevolve_run, tmp_path, monkeypatch):
    """The record (experiments/records.py) holds all the report reads; the same command skips the restored run."""
    import shutil

    import ser.tasks.coevolve as coevolve_task
    from experiments import coevolve_report, records
    from ser.tasks.run import run_experiment

    out, summary = coevolve_run
    name = "experiment=coevolve_cpu,seed=0"
    shutil.copytree(out, tmp_path / "sweeps" / name)
    records.save(tmp_path / "sweeps", tmp_path / "records")
    records.restore(tmp_path / "fresh", tmp_path / "records")
    assert not any((tmp_path / "fresh" / name).rglob("*.safetensors"))
    pages = []
    for sweeps in ("sweeps", "fresh"):
        assert coevolve_report.main([str(tmp_path / sweeps), "--out", str(tmp_path / sweeps / "page")]) == 0
        pages.append((tmp_path / sweeps / "page.md").read_text())
    assert pages[0] == pages[1]

    def no_loading(*args, **kwargs):
        raise AssertionError("a finished run must not load data or models again")

    monkeypatch.setattr(coevolve_task, "build_loop", no_loading)
    assert run_experiment(compose(COEVOLVE, tmp_path / "fresh" / name)) == json.loads(json.dumps(summary))


def test_no_human_label_of_the_pool_is_read(coevolve_run, tmp_path, monkeypatch):
    """The same run with every pool answer replaced: the same summary, and no replaced text anywhere."""
    import ser.data.dataset as dataset
    from ser.data.prepare import load_and_split
    from ser.data.schema import PreferencePair
    from ser.tasks.run import run_experiment

    _, reference = coevolve_run
    cfg = compose(COEVOLVE, tmp_path / "probe")
    pool_ids = {p.id for p in load_and_split(cfg.data, cfg.splits, int(cfg.seed)).splits.pool}
    real = dataset.synthetic_pairs

    def poisoned(*args, **kwargs):
        return [PreferencePair(p.id, p.prompt, f"POISON chosen {p.id}", f"POISON rejected {p.id}")
                if p.id in pool_ids else p for p in real(*args, **kwargs)]

    monkeypatch.setattr(dataset, "synthetic_pairs", poisoned)
    out = tmp_path / "poisoned"
    torch.set_num_threads(1)
    summary = run_experiment(compose(COEVOLVE, out))
    strip = lambda s: without_timing(s)["loops"]
    assert strip(summary) == strip(reference)
    for file in [*(out / "generated").iterdir(), *(out / "selflabels").iterdir(), *(out / "final_rm").iterdir()]:
        if file.suffix in (".jsonl", ".json"):
            assert "POISON" not in file.read_text(), file


@pytest.mark.slow
@pytest.mark.parametrize("at", ["sampling:2", "policy:2"])
def test_kill_9_during_sampling_or_policy_training_then_the_same_command(at, coevolve_run, tmp_path):
    _, reference = coevolve_run
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}

    def cli(extra: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "run.py"), *COEVOLVE, *extra], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    killed = cli(fault_overrides(at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "outputs" / "ser" / "runs" / "experiment=smoke,schedule=coevolve"
    assert not (run / "summary.json").exists()
    again = cli([])
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    strip = lambda s: without_timing(s)["loops"]
    assert strip(summary) == strip(reference) and summary["policy"]["final_loop"] == reference["policy"]["final_loop"]


def test_a_coevolve_config_is_checked_before_anything_loads(tmp_path):
    from ser.config import validate_config
    from ser.core import ConfigError

    for override, key in (("coevolve.samples_per_prompt=1", "coevolve.samples_per_prompt"),
                          ("coevolve.pairing=random", "coevolve.pairing"), ("policy.model.lora=null", "policy.model.lora"),
                          ("data=hh_rlhf_shared", "evaluate.gold.rm_dir")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            validate_config(compose(COEVOLVE + [override], tmp_path / "x"))
    assert Path(ROOT / "conf" / "schedule" / "coevolve.yaml").exists()
