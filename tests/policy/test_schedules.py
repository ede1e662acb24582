"""Policy schedules end to end on tiny models: RM schedule -> gold judge -> PPO / DPO -> evaluation."""

from __future__ import annotations

import csv
import json

import pytest

from ser.config import ConfigError, validate_config

TINY = ["experiment=smoke", "policy/model=tiny", "data.synthetic.n_pairs=120", "rm.epochs=1", "ser.phases=[1]",
        "ser.min_pairs=2", "policy.steps=2", "policy.batch_size=4", "policy.ppo.minibatch_size=2",
        "policy.generation.max_new_tokens=6", "evaluate.n_prompts=6", "logger=csv"]


def _run(compose_cfg, tmp_path, schedule, extra=()):
    from ser.tasks.run import run_experiment

    tiny = [o for o in TINY if not (schedule.endswith("dpo") and o.startswith("policy.ppo"))]
    cfg = compose_cfg([f"schedule={schedule}", *tiny, f"evaluate.gold.dir={tmp_path / 'gold'}",
                       f"schedule.rm_dir={tmp_path / 'rm'}", *extra])
    return cfg, run_experiment(cfg)


@pytest.mark.slow
def test_ser_ppo_then_ser_dpo_share_the_rm_and_report_gold_reward_and_kl(compose_cfg, tmp_path, caplog):
    _, summary = _run(compose_cfg, tmp_path, "ser_ppo")
    out = tmp_path / "run"
    assert summary["algo"] == "ppo" and summary["rm_schedule"] == "ser"
    assert set(summary["eval"]) == {"start", "ppo"}
    assert summary["eval"]["start"]["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # the start is the reference
    wtl = summary["comparisons"]["ppo_vs_start"]
    assert wtl["win"] + wtl["tie"] + wtl["loss"] == pytest.approx(1.0)
    assert len(summary["history"]) == 2 and "objective/kl" in summary["history"][0]
    with open(out / "samples.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and {"start_response", "ppo_gold", "ppo_kl"} <= set(rows[0])
    assert (out / "policy" / "adapter_model.safetensors").exists() and (out / "policy" / "value_head.safetensors").exists()
    assert (tmp_path / "rm" / "final_rm" / "config.json").exists() and (tmp_path / "gold" / "final_rm").exists()
    # the gold judge never saw the policy's RM data: another generator seed
    gold_cfg = json.loads((tmp_path / "gold" / "data_report.json").read_text())["sources"][0]["source"]
    assert "seed=4321" in gold_cfg
    metrics = (out / "csv").glob("version_*/metrics.csv")
    assert any("policy/clipfrac_avg" in m.read_text().splitlines()[0] for m in metrics)

    # DPO on the same SER RM run: the finished RM and gold runs are reused, not retrained
    caplog.clear()
    import logging
    with caplog.at_level(logging.INFO, logger="ser.tasks.policy"):
        _, dpo = _run(compose_cfg, tmp_path / "dpo", "ser_dpo", [f"schedule.rm_dir={tmp_path / 'rm'}",
                                                                 f"evaluate.gold.dir={tmp_path / 'gold'}"])
    assert "reusing the finished ser run" in caplog.text and "reusing the finished full_data run" in caplog.text
    assert dpo["algo"] == "dpo" and set(dpo["eval"]) == {"start", "dpo"} and len(dpo["history"]) == 2


def test_a_policy_schedule_refuses_a_mismatched_algorithm_or_missing_gold(compose_cfg):
    with pytest.raises(ConfigError, match=r"policy\.algo"):
        validate_config(compose_cfg(["schedule=ser_ppo", "policy=dpo"]))
    with pytest.raises(ConfigError, match=r"policy\.ppo\.kl\.estimator"):
        validate_config(compose_cfg(["schedule=full_ppo", "policy.ppo.kl.estimator=k9"]))
    with pytest.raises(ConfigError, match=r"evaluate\.gold\.rm_dir"):
        validate_config(compose_cfg(["schedule=seed_ppo", "evaluate.gold.rm_dir=/nonexistent/rm"]))


def test_the_rm_stage_resumes_the_plain_rm_command_s_run_dir(compose_cfg, tmp_path):
    """`run.py schedule=ser_ppo seed=1 policy.steps=9` trains against the RM of `run.py seed=1`: Hydra composes
    that command and resolves its run dir (exclude_keys such as logger left out of it, as Hydra does)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ser.evolve.state import config_hash
    from ser.tasks.policy import rm_run_dir, rm_stage_config
    from tests.conftest import ROOT

    overrides = ["seed=1", "schedule=ser_ppo", "policy.steps=9", "logger=csv", "evaluate.n_prompts=4", "rm.epochs=3"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        job = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(job)  # as inside the running job
        try:
            assert rm_run_dir(tmp_path, "ser").name == "rm.epochs=3,seed=1"
            assert rm_run_dir(tmp_path, "full_data").name == "rm.epochs=3,schedule=full_data,seed=1"
            assert HydraConfig.get().job.override_dirname == job.hydra.job.override_dirname  # the job's own is back
            # an experiment that sets another schedule: the RM command names schedule=ser itself
            other = compose("config", overrides=["experiment=coevolve/cpu", "schedule=ser_dpo", "seed=1"],
                            return_hydra_config=True)
            HydraConfig.instance().set_config(other)
            assert rm_run_dir(tmp_path, "ser").name == "experiment=coevolve_cpu,schedule=ser,seed=1"
        finally:
            HydraConfig.instance().cfg = None
    assert rm_run_dir(tmp_path, "ser") == tmp_path / "rm"  # outside a Hydra run
    # and the RM stage's config hashes exactly as the plain command's, so its run dir is resumed
    cfg = compose_cfg(["schedule=ser_ppo", "seed=1"])
    plain = compose_cfg(["seed=1"])
    rm_cfg = rm_stage_config(cfg, "ser", tmp_path / "x")
    assert config_hash(OmegaConf.to_container(rm_cfg, resolve=True)) == config_hash(
        OmegaConf.to_container(plain, resolve=True))


def test_every_policy_schedule_composes_with_its_algorithm(compose_cfg, tmp_path):
    for schedule in ("ser_ppo", "seed_ppo", "full_ppo", "ser_dpo"):  # default policy model: smollm2
        cfg = compose_cfg([f"schedule={schedule}"])
        validate_config(cfg)
        assert cfg.policy.algo == schedule.split("_")[1] and cfg.policy.model.name == "smollm2"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = compose_cfg(["schedule=ser_ppo", "policy/model=hub", f"policy.model.source.name_or_path={model}"])
    validate_config(cfg)
    with pytest.raises(ConfigError, match=r"policy\.model\.source\.name_or_path.*not in the local Hugging Face cache"):
        validate_config(compose_cfg(["schedule=ser_ppo", "policy/model=hub", "policy.model.source.name_or_path=some/model"]))
    assert cfg.policy.model.source.kind == "hub"
