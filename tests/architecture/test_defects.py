"""Defects found by reading the code, each pinned by a test that fails without its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from ser.core import ConfigError
from tests.conftest import ROOT, compose, without_timing

SMOKE = ["experiment=smoke"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_data_counts_every_pair_it_trains_on(tmp_path, one_thread):
    from ser.tasks.run import run_experiment

    summary = run_experiment(compose(SMOKE + ["schedule=full_data"], tmp_path / "run"))
    sizes = summary["splits"]
    assert summary["loops"][0]["train_pairs"] == sizes["seed"] + sizes["pool"]


def test_a_soup_run_killed_after_pruning_finishes_on_the_same_command(tmp_path, one_thread):
    from ser import events
    from ser.tasks.run import run_experiment

    overrides = SMOKE + ["ser.final_model=soup", "ser.phases=[1,2]"]
    whole = run_experiment(compose(overrides, tmp_path / "whole"))

    def die_before_summary(event, info):
        if event == "finishing":  # the loop checkpoints are pruned, summary.json is not written yet
            raise KeyboardInterrupt("killed after pruning")

    out = tmp_path / "killed"
    unsubscribe = events.subscribe(die_before_summary)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(compose(overrides, out))
    finally:
        unsubscribe()
    kept = sorted(p.name for p in (out / "checkpoints").glob("loop_*.safetensors"))
    assert len(kept) < len(whole["loops"]) and not (out / "summary.json").exists()  # pruned: the soup's inputs are gone
    again = run_experiment(compose(overrides, out))
    strip = without_timing
    assert strip(again) == strip(whole)


def test_every_seed_and_loop_draws_its_own_random_streams():
    from ser.seeding import STREAMS, derive_seed

    drawn = [derive_seed(seed, loop, purpose) for seed in range(50) for loop in range(20) for purpose in STREAMS]
    assert len(set(drawn)) == len(drawn)  # seed s, loop 1 no longer replays seed s+1, loop 0
    assert derive_seed(3, 1, "shuffle") == derive_seed(3, 1, "shuffle")  # and each is reproducible
    with pytest.raises(ValueError, match="unknown random stream"):
        derive_seed(0, 0, "nope")


def test_the_trainer_shuffles_each_loop_with_its_derived_stream(tmp_path, monkeypatch, one_thread):
    import ser.reward.trainer as trainer
    from ser.seeding import derive_seed
    from ser.tasks.run import run_experiment

    seen = []
    real_fit = trainer.fit_reward_model
    monkeypatch.setattr(trainer, "fit_reward_model", lambda *a, **k: (seen.append(k["seed"]), real_fit(*a, **k))[1])
    run_experiment(compose(SMOKE + ["seed=3", "ser.phases=[1]"], tmp_path / "run"))
    assert seen == [derive_seed(3, 0, "shuffle"), derive_seed(3, 1, "shuffle")]


FILL = """
import sys, time
from pathlib import Path
from ser.locks import fill_once
target = Path(sys.argv[1])
def fill():
    with open(target.parent / "fills.log", "a") as log:
        log.write("fill\\n")
    time.sleep(1.0)                        # long enough that the other process arrives meanwhile
    tmp = target.with_suffix(".tmp"); tmp.write_text("complete"); tmp.replace(target)
fill_once(target, target.exists, fill)
print(target.read_text())
"""


def test_two_processes_on_an_empty_cache_fill_it_once_and_both_read_it_whole(tmp_path):
    target = tmp_path / "cache" / "entry.bin"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", FILL, str(target)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outputs == ["complete", "complete"]
    assert (target.parent / "fills.log").read_text() == "fill\n"


@pytest.mark.slow
def test_two_sweep_jobs_convert_the_same_gguf_once(tmp_path):
    """Two processes load rm=smollm2 on an empty GGUF cache at once: one converts, the other waits for it."""
    code = ("import sys; from omegaconf import OmegaConf; from ser.reward.backbone import convert_gguf_to_safetensors;"
            "src = OmegaConf.load(sys.argv[1]).source; src.cache_dir = sys.argv[2];"
            "print(convert_gguf_to_safetensors(src))")
    cache = tmp_path / "smollm2"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ROOT / "conf" / "rm" / "smollm2.yaml"), str(cache)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert sum("Converting" in err for _, err in results) == 1
    assert (cache / "config.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_a_second_launch_on_a_held_run_dir_is_refused_at_once_naming_the_holder(tmp_path):
    from ser.locks import hold_run_dir

    run = tmp_path / "outputs" / "ser" / "runs" / "experiment=smoke"
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    with hold_run_dir(run):  # this test process is the first launch
        started = time.time()
        second = subprocess.run([sys.executable, str(ROOT / "run.py"), "experiment=smoke"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert time.time() - started < 60
    output = second.stdout + second.stderr
    assert second.returncode != 0 and "is in use by process" in output and str(os.getpid()) in output
    assert str(run) in output and not (run / "state.json").exists() and not (run / "data_report.json").exists()


def test_a_damaged_state_file_names_itself_and_how_to_start_over(tmp_path):
    from ser.evolve.state import LoopState

    (tmp_path / "state.json").write_text('{"config_hash": "ab", "loops": [')
    with pytest.raises(RuntimeError, match=r"state\.json: the saved loop state is damaged.*resume=false"):
        LoopState.load(tmp_path)


@pytest.mark.parametrize("overrides", [["schedule=seed_only", "splits.val_fraction=0"],
                                       ["schedule=ser", "splits.test_fraction=0", "ser.phases=[1]"]],
                         ids=["no_validation", "no_test"])
def test_runs_without_a_validation_or_test_split_finish(tmp_path, overrides, one_thread):
    from ser.tasks.run import run_experiment

    summary = run_experiment(compose(SMOKE + overrides, tmp_path / "run"))
    meta = json.loads((tmp_path / "run" / "final_rm" / "ser_reward.json").read_text())
    if "splits.val_fraction=0" in overrides:
        assert summary["splits"]["val"] == 0 and summary["final"]["val_accuracy"] is None
        assert meta["reward_stats_split"] == "seed"
    else:
        assert summary["splits"]["test"] == 0 and summary["final"]["test_accuracy"] is None
        assert meta["reward_stats_split"] == "validation"
    assert (tmp_path / "run" / "accuracy_per_loop.png").exists()


@pytest.mark.parametrize("target", ["torch.load", "torch.hub.load", "ser.reward.backbone.load_backbone",
                                    "pytorch_lightning.utilities.cloud_io._load", "os.system", "builtins.eval"])
def test_the_target_allowlist_refuses_loaders_and_anything_outside_named_packages(target, tmp_path):
    from ser.config import validate_config

    with pytest.raises(ConfigError, match=r"rm\.optimizer\._target_.*outside the allowed packages"):
        validate_config(compose([f"rm.optimizer._target_={target}"], tmp_path))


def test_allow_targets_admits_a_users_module_and_nothing_more():
    from ser.config.targets import allowed

    assert allowed("my_rules.Rule", ["my_rules"]) and allowed("my_rules.sub.Rule", ["my_rules."])
    assert not allowed("my_rules_evil.Rule", ["my_rules"]) and not allowed("my_rules.Rule")
    assert allowed("torch.optim.AdamW") and allowed("pytorch_lightning.Trainer")
    assert not allowed("pytorch_lightning.Trainerx") and not allowed("ser.tasks.rm.train_rm")
