"""`python run.py experiment=smoke` end to end, and resume after an interrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, compose, without_timing

SMOKE = ["experiment=smoke"]


def _run_cli(args: list[str], project_root: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(project_root), "OMP_NUM_THREADS": "1"}
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=project_root, env=env,
                            capture_output=True, text=True, timeout=300)
    return result, time.time() - start


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    result, seconds = _run_cli(SMOKE, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "outputs" / "ser" / "runs" / "experiment=smoke", result, seconds


def test_smoke_run_writes_a_complete_summary(smoke_run):
    out, result, seconds = smoke_run
    assert seconds < 60, f"experiment=smoke took {seconds:.0f} s"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schedule"] == "ser" and summary["data"] == "synthetic" and summary["rm"] == "tiny"
    assert summary["seed"] == 0
    loops = summary["loops"]
    assert [e["loop"] for e in loops] == list(range(len(loops))) and len(loops) >= 2
    for key in ("loop", "status", "selected", "selected_total", "self_label_accuracy", "val_accuracy",
                "test_accuracy", "test_ece", "seconds"):
        assert all(key in e for e in loops), key
    assert loops[0]["status"] is None and loops[0]["selected"] == 0
    assert all(e["status"] in ("1", "2") and e["selected"] >= 5 for e in loops[1:])
    assert loops[-1]["selected_total"] == sum(e["selected"] for e in loops)
    assert loops[1]["self_label_accuracy"] > 0.8  # status 1 on the seed RM: stark pairs, labeled right
    assert all(e["test_accuracy"] > 0.6 for e in loops)  # every loop's RM well above a coin
    final = summary["final"]
    assert final["test_accuracy"] == next(e["test_accuracy"] for e in loops if e["loop"] == final["loop"])
    # where each loop's time went: loop 0 only trains, evaluates and writes; every part is within the loop's time
    for e in loops:
        split = [e[f"seconds_{part}"] for part in ("score", "select", "train", "evaluate", "write") if e["loop"] or
                 part not in ("score", "select")]
        assert all(t >= 0 for t in split) and sum(split) <= e["seconds"] + 0.5 and e["seconds_train"] > 0
        assert e["seconds_evaluate"] > 0 and (e["loop"] == 0 or e["seconds_score"] > 0)
    assert "seconds_score" in (out / "loops.csv").read_text().splitlines()[0]
    # the per-loop table is on the console
    assert "self-label" in result.stdout and "test acc" in result.stdout


def test_smoke_run_writes_every_artifact(smoke_run):
    out, _, _ = smoke_run
    assert (out / ".hydra" / "config.yaml").exists() and (out / "data_report.json").exists()
    assert [m["torch"] for m in json.loads((out / "machine.json").read_text())] == [torch.__version__]
    assert (out / "accuracy_per_loop.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "csv" / "version_0" / "metrics.csv").exists() and (out / "loops.csv").exists()
    rows = [json.loads(line) for line in (out / "selflabels" / "loop_1.jsonl").read_text().splitlines()]
    assert rows and {"id", "prompt", "chosen", "rejected", "loop", "status", "score_chosen", "score_rejected",
                     "confidence", "correct"} <= set(rows[0])
    assert all(r["score_chosen"] >= r["score_rejected"] and r["loop"] == 1 for r in rows)
    assert list((out / "checkpoints").glob("loop_*.safetensors"))
    report = json.loads((out / "data_report.json").read_text())
    assert report["overlong"]["overlong_pairs"] > 0  # smoke's max_length=64 cuts some: counted


def test_exported_rm_loads_with_plain_transformers_and_scores(smoke_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ser.reward.export import score_pairs

    out, _, _ = smoke_run
    model = AutoModelForSequenceClassification.from_pretrained(out / "final_rm")
    tokenizer = AutoTokenizer.from_pretrained(out / "final_rm")
    assert model.config.num_labels == 1 and tokenizer.pad_token is not None
    assert (out / "final_rm" / "model.safetensors").exists()
    scores = score_pairs(out / "final_rm", [("How do I boil an egg?", "1. Place the egg in a pan of cold water."),
                                            ("How do I boil an egg?", "Sorry, I cannot assist with that.")])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_interrupted_run_resumes_after_its_last_finished_loop(tmp_path, monkeypatch):
    """Kill the run after loop 1 is saved; the same command resumes at loop 2 and ends as an uninterrupted run."""
    from ser.tasks.run import run_experiment

    torch.set_num_threads(2)
    full = run_experiment(compose(SMOKE, tmp_path / "full"))
    assert len(full["loops"]) == 4, "smoke must run three SER loops for this test to mean anything"

    from ser.evolve.loop import SERLoop
    from ser.reward.trainer import RMTrainer

    real_record = SERLoop.record

    def record_then_die(self, state, loop, *args, **kwargs):
        entry = real_record(self, state, loop, *args, **kwargs)
        if loop == 1:
            raise KeyboardInterrupt("simulated kill after loop 1")
        return entry

    monkeypatch.setattr(SERLoop, "record", record_then_die)
    cfg = compose(SMOKE, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    assert not (tmp_path / "resumed" / "summary.json").exists()
    monkeypatch.setattr(SERLoop, "record", real_record)

    trained: list[int] = []
    real_train = RMTrainer.train
    monkeypatch.setattr(RMTrainer, "train", lambda self, features, val, loop, **kw:
                        (trained.append(loop), real_train(self, features, val, loop, **kw))[1])
    resumed = run_experiment(compose(SMOKE, tmp_path / "resumed"))
    assert trained == [2, 3], "finished loops 0 and 1 must not be retrained"
    assert len(json.loads((tmp_path / "resumed" / "machine.json").read_text())) == 2  # the start and the resume
    assert without_timing(resumed) == without_timing(full)


def test_resume_refuses_a_run_dir_with_another_config(tmp_path):
    from ser.tasks.run import run_experiment

    run_experiment(compose(SMOKE + ["ser.phases=[1]"], tmp_path / "run"))
    with pytest.raises(RuntimeError, match="another config"):
        run_experiment(compose(SMOKE + ["ser.phases=[1,2]"], tmp_path / "run"))


@pytest.mark.parametrize("retrain_from", ["base", "last"])
def test_each_loop_starts_from_the_configured_weights(tmp_path, monkeypatch, retrain_from):
    from ser.tasks.run import run_experiment

    seen: list[dict[str, torch.Tensor]] = []
    import ser.reward.trainer as trainer

    real_fit = trainer.fit_reward_model

    def spy(module, *args, **kwargs):
        seen.append({n: p.detach().clone() for n, p in module.model.named_parameters()})
        real_fit(module, *args, **kwargs)
        seen.append({n: p.detach().clone() for n, p in module.model.named_parameters()})

    monkeypatch.setattr(trainer, "fit_reward_model", spy)
    summary = run_experiment(compose(SMOKE + ["ser.phases=[1]", f"ser.retrain_from={retrain_from}"],
                                              tmp_path / "run"))
    assert len(summary["loops"]) == 2
    base_before_loop0, after_loop0, before_loop1 = seen[0], seen[1], seen[2]
    expected = base_before_loop0 if retrain_from == "base" else after_loop0
    assert all(torch.equal(before_loop1[n], expected[n]) for n in expected)
    assert not all(torch.equal(after_loop0[n], base_before_loop0[n]) for n in expected)


def test_reference_runs_hash_without_the_ser_group(tmp_path):
    """Retuning SER must not orphan finished seed-only / full-data run dirs, but must orphan SER ones."""
    from omegaconf import OmegaConf

    from ser.evolve.state import config_hash

    def digest(overrides):
        return config_hash(OmegaConf.to_container(compose(SMOKE + overrides, tmp_path / "h"), resolve=True))

    for reference in ("seed_only", "full_data"):
        assert digest([f"schedule={reference}"]) == digest([f"schedule={reference}", "ser.min_pairs=7", "ser=top_gap"])
        assert digest([f"schedule={reference}"]) != digest([f"schedule={reference}", "rm.epochs=7"])
    assert digest(["schedule=ser"]) != digest(["schedule=ser", "ser.min_pairs=7"])


def test_a_speed_path_equal_to_rounding_never_orphans_a_run_dir(tmp_path):
    from omegaconf import OmegaConf

    from ser.evolve.state import config_hash

    def digest(overrides):
        return config_hash(OmegaConf.to_container(compose(SMOKE + overrides, tmp_path / "h"), resolve=True))

    assert digest([]) == digest(["rm.padding_free=false"]) == digest(["rm.padding_free=true"])
    assert digest([]) != digest(["rm.group_by_length=true"])  # other batches: other results


@pytest.mark.parametrize(("group", "key", "other"), [("ser", "labels", "oracle"), ("rm", "score_compile", True)])
def test_a_setting_added_later_at_its_neutral_value_keeps_older_run_dirs_resumable(tmp_path, group, key, other):
    from omegaconf import OmegaConf

    from ser.evolve.state import NEUTRAL_SETTINGS, config_hash

    resolved = OmegaConf.to_container(compose(SMOKE, tmp_path / "h"), resolve=True)
    assert resolved[group][key] == NEUTRAL_SETTINGS[(group, key)]
    before_the_setting = {**resolved, group: {k: v for k, v in resolved[group].items() if k != key}}
    assert config_hash(resolved) == config_hash(before_the_setting)
    assert config_hash({**resolved, group: {**resolved[group], key: other}}) != config_hash(resolved)


@pytest.mark.slow
def test_compiled_scoring_runs_the_same_experiment(tmp_path):
    """rm.score_compile=true (frozen weights, recompiled after each loop's training) must select and
    score as the eager run does: a stale compiled RM would select loop 2's pairs with loop 0's weights."""
    from ser.tasks.run import run_experiment

    torch.set_num_threads(2)
    eager = run_experiment(compose(SMOKE, tmp_path / "eager"))
    compiled = run_experiment(compose(SMOKE + ["rm.score_compile=true"], tmp_path / "compiled"))
    assert len(eager["loops"]) == len(compiled["loops"]) >= 3
    for e, c in zip(eager["loops"], compiled["loops"]):
        assert c["selected"] == e["selected"]
        assert c["test_accuracy"] == pytest.approx(e["test_accuracy"], abs=0.02)  # one test pair at most


def test_a_failed_multirun_job_says_so_in_its_own_log_before_the_next_job_runs(tmp_path):
    # Hydra re-raises a job's exception only after the whole batch: without our log line the failed
    # job's run.log ends as if it had finished, and the console shows the next job starting.
    sweeps = tmp_path / "outputs" / "ser" / "sweeps"
    failing = sweeps / "experiment=smoke,schedule=seed_only,seed=0"
    failing.mkdir(parents=True)
    (failing / "state.json").write_text(json.dumps({"config_hash": "not-this-config"}))
    result, _ = _run_cli(["-m", "experiment=smoke", "schedule=seed_only", "seed=0,1"], tmp_path)
    assert result.returncode != 0
    log = (failing / "run.log").read_text()
    assert "this job failed" in log and "another config" in log
    assert (sweeps / "experiment=smoke,schedule=seed_only,seed=1" / "summary.json").exists(), "the next job still runs"


def test_a_soup_run_exports_the_average_of_its_loops(tmp_path):
    from safetensors.torch import load_file

    from ser.tasks.run import run_experiment

    torch.set_num_threads(2)
    out = tmp_path / "soup"
    summary = run_experiment(compose(SMOKE + ["ser.final_model=soup", "ser.keep_checkpoints=all"], out))
    loops = [e["loop"] for e in summary["loops"]]
    assert len(loops) >= 2 and summary["final"]["soup_of"] == loops and summary["final"]["selected_by"] == "soup"
    assert summary["variant"].endswith("final_model=soup")
    states = [load_file(out / "checkpoints" / f"loop_{k}.safetensors") for k in loops]
    exported = load_file(out / "final_rm" / "model.safetensors")
    compared = [k for k in exported if k in states[0] and exported[k].is_floating_point()]
    assert len(compared) > 10
    for k in compared:
        torch.testing.assert_close(exported[k], sum(s[k] for s in states) / len(states), rtol=1e-5, atol=1e-6)
    # not simply the last loop's head
    assert not any(torch.equal(exported[k], states[-1][k]) for k in compared if "classifier" in k)
