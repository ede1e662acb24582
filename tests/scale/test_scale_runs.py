"""Scale-out runs: mid-loop resume, distributed scoring, 2-rank DDP, submitit and optuna sweeps (CPU, gloo)."""

from __future__ import annotations

import copy
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import compose
from tests.robustness.fault_hook import overrides as fault_overrides
from tests.scale.conftest import RUNS, SMOKE, _cli, _env, _summary, free_port

# ---- the training order: the plain loader's, per epoch, split across ranks, resumable ----------------


def test_epoch_batches_are_the_plain_shuffled_loaders_batches():
    from torch.utils.data import DataLoader

    from ser.reward.train import EpochBatches

    for n, batch_size, seed in ((37, 8, 5), (32, 8, 0), (5, 16, 3)):
        plain = DataLoader(list(range(n)), batch_size=batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(seed))
        expected = [[b.tolist() for b in plain] for _ in range(3)]
        batches = EpochBatches(n, batch_size, seed)
        for epoch in (2, 0, 1):  # any epoch, in any order: what a resumed run needs
            batches.set_epoch(epoch)
            assert [list(b) for b in batches] == expected[epoch]
        assert expected[0] != expected[1]


def test_epoch_batches_split_each_global_batch_across_ranks(monkeypatch):
    from ser.reward import train

    batches = train.EpochBatches(21, 8, 1)
    whole = [list(b) for b in batches]
    parts = []
    for rank in range(2):
        monkeypatch.setattr(train, "_rank_and_world", lambda rank=rank: (rank, 2))
        parts.append([list(b) for b in batches])
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3  # every rank takes the same number of steps
    for w, a, b in zip(whole, *parts):
        assert sorted(a + b) == sorted(w) and abs(len(a) - len(b)) <= 1
    batches.skip = 2  # resumed after 2 finished batches
    monkeypatch.setattr(train, "_rank_and_world", lambda: (0, 1))
    assert [list(b) for b in batches] == whole[2:]


@pytest.fixture(scope="module")
def smoke_experiment(tmp_path_factory):
    from ser.tasks.rm import build_loop

    out = tmp_path_factory.mktemp("scale") / "run"
    out.mkdir()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_loop(compose(SMOKE, out), out)
    torch.set_num_threads(before)


def test_fit_killed_after_a_mid_epoch_checkpoint_resumes_to_the_same_weights(smoke_experiment, tmp_path):
    import pytorch_lightning as pl

    from ser.reward.train import LAST_CKPT, fit_reward_model

    exp = smoke_experiment
    init = copy.deepcopy(exp.rm.model.state_dict())

    class Interrupt(pl.Callback):  # after the checkpoint at step 7 (mid epoch 1 of 5-batch epochs)
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 9:
                raise RuntimeError("killed")

    def fit(checkpoint_dir=None, callbacks=()):
        exp.rm.model.load_state_dict(init)
        pl.seed_everything(1, verbose=False)
        return fit_reward_model(exp.rm.module, exp.data.features["seed"], exp.data.features["val"], trainer_cfg=exp.cfg.trainer,
                                epochs=3, batch_size=16, pad_id=exp.rm.tokenizer.pad_token_id, seed=1,
                                callbacks=list(callbacks), checkpoint_dir=checkpoint_dir, checkpoint_every_n_steps=7)

    steps = fit().global_step
    uninterrupted = copy.deepcopy(exp.rm.model.state_dict())
    assert steps == 3 * -(-len(exp.data.features["seed"]) // 16) and 7 % (steps // 3) != 0  # the checkpoint is mid-epoch
    with pytest.raises(RuntimeError, match="killed"):  # what a kill leaves: last.ckpt of step 7
        fit(tmp_path, [Interrupt()])
    ckpt = torch.load(tmp_path / LAST_CKPT, weights_only=True)
    assert ckpt["global_step"] == 7 and ckpt["callbacks"]["BatchPosition"]["batches"] == 7 - steps // 3
    resumed = fit(tmp_path)
    assert resumed.global_step == steps
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, exp.rm.model.state_dict()[name]), name


# ---- distributed scoring: every pair once, gathered by index, == single process -----------------------


def _scores(exp, trainer_overrides, work_dir):
    from ser.reward.distributed import distributed_pair_rewards

    cfg = compose(SMOKE + trainer_overrides, work_dir)
    return distributed_pair_rewards(exp.rm.module, exp.data.features["pool"], pad_id=exp.rm.tokenizer.pad_token_id,
                                    pooling=exp.rm.module.pooling, trainer_cfg=cfg.trainer, work_dir=work_dir / "parts",
                                    batch_size=24)


def _single(exp):
    from ser.reward.train import pair_rewards

    return pair_rewards(exp.rm.module, exp.data.features["pool"], pad_id=exp.rm.tokenizer.pad_token_id, batch_size=32)


def test_distributed_scoring_on_one_device_equals_single_process_scoring(smoke_experiment, tmp_path):
    chosen, rejected = _scores(smoke_experiment, [], tmp_path)
    want_c, want_r = _single(smoke_experiment)
    assert len(chosen) == len(smoke_experiment.data.features["pool"]) > 100
    torch.testing.assert_close(chosen, want_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected, want_r, atol=1e-5, rtol=0)
    assert not (tmp_path / "parts").exists()


def test_gather_refuses_a_missing_or_doubly_scored_item(tmp_path):
    from safetensors.torch import save_file

    from ser.reward.distributed import gather_by_index

    save_file({"index": torch.tensor([0, 2]), "reward": torch.tensor([1.0, 3.0])}, str(tmp_path / "rank_0.safetensors"))
    save_file({"index": torch.tensor([1]), "reward": torch.tensor([2.0])}, str(tmp_path / "rank_1.safetensors"))
    assert gather_by_index(tmp_path, 3, 2).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(RuntimeError, match="1 of 4 items were not scored"):
        gather_by_index(tmp_path, 4, 2)
    save_file({"index": torch.tensor([1, 2]), "reward": torch.tensor([2.0, 3.0])}, str(tmp_path / "rank_1.safetensors"))
    with pytest.raises(RuntimeError, match="1 were scored more than once"):
        gather_by_index(tmp_path, 3, 2)
    with pytest.raises(RuntimeError, match="rank_2.safetensors is missing"):
        gather_by_index(tmp_path, 3, 3)


@pytest.mark.slow
def test_distributed_scoring_on_two_spawned_ranks_equals_single_process_scoring(smoke_experiment, tmp_path):
    chosen, rejected = _scores(smoke_experiment, ["trainer=ddp_spawn", "trainer.devices=2"], tmp_path)
    want_c, want_r = _single(smoke_experiment)
    torch.testing.assert_close(chosen, want_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected, want_r, atol=1e-5, rtol=0)


# ---- whole runs through the CLI (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_killed_inside_a_loop_relaunch_resumes_from_its_checkpoint_and_ends_the_same(uninterrupted, tmp_path):
    args = SMOKE + ["ckpt_every_n_steps=7"]  # not part of the run dir or the config hash
    killed = _cli(args + fault_overrides("midloop:1"), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / RUNS / "experiment=smoke"
    assert (run / "checkpoints" / "loop_1" / "last.ckpt").exists() and not (run / "summary.json").exists()
    assert [e["loop"] for e in json.loads((run / "state.json").read_text())["loops"]] == [0]

    again = _cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming training from the mid-loop checkpoint" in again.stdout + again.stderr
    assert _summary(run) == _summary(uninterrupted)
    assert not any(p.is_dir() for p in (run / "checkpoints").iterdir())  # recorded loops drop their last.ckpt


@pytest.mark.slow
def test_two_rank_ddp_spawn_run_matches_the_single_process_run(uninterrupted, tmp_path):
    """Each global batch is split across the 2 ranks and DDP averages their gradients: the single-process
    gradient up to float rounding (gloo sums in another order). Tolerance: the seed RM (loop 0, same data)
    within one pair on validation and test; later loops compound thresholded self-label decisions, so the
    final test accuracy is held within 5 points and the number of loops must match."""
    result = _cli(SMOKE + ["trainer=ddp_spawn", "trainer.devices=2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scoring the pool across 2 ranks" in result.stdout + result.stderr  # self-labeling is distributed too
    ddp = _summary(tmp_path / RUNS / "experiment=smoke,trainer.devices=2,trainer=ddp_spawn")
    single = _summary(uninterrupted)
    n_val, n_test = single["splits"]["val"], single["splits"]["test"]
    seed_ddp, seed_single = ddp["loops"][0], single["loops"][0]
    assert abs(seed_ddp["val_accuracy"] - seed_single["val_accuracy"]) <= 1 / n_val + 1e-6
    assert abs(seed_ddp["test_accuracy"] - seed_single["test_accuracy"]) <= 1 / n_test + 1e-6
    assert len(ddp["loops"]) == len(single["loops"])
    assert abs(ddp["final"]["test_accuracy"] - single["final"]["test_accuracy"]) <= 0.05


@pytest.mark.slow
def test_torchrun_scores_an_exported_rm_across_two_ranks(uninterrupted, tmp_path):
    from ser.reward.export import score_pairs

    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}." if i % 3 else "No idea."}
            for i in range(23)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun is installed with torch"
    port = free_port()
    result = subprocess.run([torchrun, "--nproc_per_node=2", f"--master_port={port}", "-m", "ser.reward.distributed",
                             str(uninterrupted / "final_rm"), "rows.jsonl", "scores.jsonl", "--accelerator=cpu",
                             "--batch-size=4"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in scored] == [r["prompt"] for r in rows]
    want = score_pairs(uninterrupted / "final_rm", [(r["prompt"], r["response"]) for r in rows])
    assert [r["reward"] for r in scored] == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    result = _cli(["-m", "launcher=submitit_local", *SMOKE, "seed=0,1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "outputs" / "ser" / "sweeps"
    summaries = {json.loads(p.read_text())["seed"] for p in sweep.glob("*/summary.json")}
    assert summaries == {0, 1}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "experiment=smoke,seed=0", "experiment=smoke,seed=1"]  # the launcher is not part of the run dir
    assert list((sweep / ".submitit").rglob("*_log.out"))  # submitit ran them as its own jobs


@pytest.mark.slow
def test_optuna_sweep_records_a_failed_trial_and_resumes_its_study(tmp_path):
    sweep_dir = tmp_path / "optuna"
    args = ["-m", "hparams_search=optuna", *SMOKE, "hydra/sweeper/sampler=random", "hydra.sweeper.params=null",
            f"hydra.sweep.dir={sweep_dir}", "ser.phases=[1]"]
    # tau_low=0.7 >= tau_high=0.55 is refused by validate_config: that trial fails, the sweep goes on.
    # Seed 0 draws 0.7 then 0.45 (checked against optuna's RandomSampler): both trials, failure first.
    # (The grid sampler picks its order with the unseeded global `random`, and hydra-optuna-sweeper 1.3
    # crashes when the grid's last point fails: with it this test failed one run in two.)
    first = _cli(args + ["ser.rule.tau_low=choice(0.45,0.7)", "hydra.sweeper.n_trials=2",
                         "hydra.sweeper.sampler.seed=0"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    def trials():
        with sqlite3.connect(sweep_dir / "optuna.db") as db:
            return db.execute("SELECT t.state, v.value FROM trials t LEFT JOIN trial_values v "
                              "ON t.trial_id = v.trial_id ORDER BY t.number").fetchall()

    done = trials()
    assert sorted(state for state, _ in done) == ["COMPLETE", "FAIL"]
    value = next(v for state, v in done if state == "COMPLETE")
    trial_dir = sweep_dir / "experiment=smoke,ser.phases=_1_,ser.rule.tau_low=0.45"
    best = json.loads((trial_dir / "summary.json").read_text())["final"]["val_accuracy"]
    assert value == pytest.approx(best)  # the objective is the run's validation accuracy
    assert "best_value" in (sweep_dir / "optimization_results.yaml").read_text()

    again = _cli(args + ["ser.rule.tau_low=choice(0.45,0.7)", "hydra.sweeper.n_trials=1"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = trials()  # the same study, one trial more; the first two untouched
    assert resumed[:2] == done and len(resumed) == 3 and resumed[2][0] in ("COMPLETE", "FAIL")
