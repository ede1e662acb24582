"""Every config file composes and validates; bad settings fail before any model loads."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from ser.config import ConfigError, validate_config
from tests.conftest import ROOT, compose

GROUPS = ["data", "rm", "ser", "phases", "schedule", "trainer", "logger"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))  # _: partials


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "data" and option != "synthetic":
        overrides.append("data.source.path=" + str(tmp_path / "x.jsonl"))
        overrides.append("data.source.hub=null")
        (tmp_path / "x.jsonl").write_text("")
    if group == "rm" and option == "hub":  # a local model dir: the hub itself is off here (hub_offline)
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        overrides.append(f"rm.source.name_or_path={tmp_path / 'model'}")
    cfg = compose(overrides, tmp_path)
    validate_config(cfg)
    if group == "trainer" and option == "cpu":
        assert type(instantiate(cfg.trainer, logger=False)).__name__ == "Trainer"
    if group == "logger":
        for node in cfg.logger.values():
            assert node._target_.startswith(("pytorch_lightning.loggers.", "ser.loggers."))


@pytest.mark.parametrize("experiment", sorted(str(p.relative_to(ROOT / "conf" / "experiment").with_suffix(""))
                                              for p in (ROOT / "conf" / "experiment").rglob("*.yaml")))
def test_every_experiment_composes(experiment, tmp_path, monkeypatch):
    # the paper's 7-13B models are on the hub, which this machine cannot reach: check names, not downloads
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    validate_config(compose([f"experiment={experiment}", "hub_offline=false"], tmp_path))


@pytest.mark.parametrize("override,needle", [
    ("splits.seed_fraction=0", "splits.seed_fraction"),
    ("splits.seed_fraction=1.5", "splits.seed_fraction"),
    ("ser.rule.tau_low=0.6", "ser.rule.tau_low"),
    ("ser.rule=majority", "ser.rule"),
    ("ser.confidence=vibes", "ser.confidence"),
    ("ser.rule._target_=ser.evolve.rules.Nope", "ser.rule"),
    ("ser.rule.status2_kind=wide", "ser.rule.status2_kind"),
    ("ser.phases=[] phases=paper", "ser.phases"),
    ("ser.phases=[1,0]", "ser.phases"),
    ("ser.phases=[1,2] phases=union", "ser.phases"),
    ("phases.statuses=[]", "phases"),
    ("ser.min_pairs=0", "ser.min_pairs"),
    ("ser.retrain_from=yesterday", "ser.retrain_from"),
    ("ser.labels=gold", "ser.labels"),
    ("ser.labels=oracle ser.relabel=drop", "ser.relabel"),
    ("data.overlong=ignore", "data.overlong"),
    ("rm.optimizer._target_=os.system", "rm.optimizer._target_"),
    ("rm.freeze_layers=2 rm.padding_free=true", "rm.padding_free"),
    ("rm.padding_free=sometimes", "rm.padding_free"),
])
def test_invalid_values_are_refused_naming_the_key(override, needle, tmp_path):
    cfg = compose(override.split(), tmp_path)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        validate_config(cfg)


def test_unknown_key_in_a_config_file_is_refused(tmp_path):
    from omegaconf import open_dict
    cfg = compose([], tmp_path)
    with open_dict(cfg):
        cfg.ser.tau_hgh = 0.6  # a typo in a user's own ser/*.yaml
    with pytest.raises(ConfigError, match="tau_hgh"):
        validate_config(cfg)


def test_missing_dataset_file_is_refused_naming_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    cfg = compose(["data=generic", f"data.source.path={missing}"], tmp_path)
    with pytest.raises(ConfigError, match="nope.jsonl"):
        validate_config(cfg)


def _cli(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(cwd)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args,needle", [
    (["splits.seed_fraction=1.5"], "splits.seed_fraction"),
    (["ser.rule.tau_low=0.7"], "tau_low"),
    (["ser.phases=[1,3]"], "ser.phases"),
    (["ser.tau_hgh=0.6"], "tau_hgh"),  # Hydra refuses an unknown key at compose time
    (["data=generic", "data.source.path=/no/such/file.jsonl"], "/no/such/file.jsonl"),
])
def test_cli_fails_fast_before_any_model_loads(args, needle, tmp_path):
    result = _cli(args + ["logger=csv"], tmp_path)
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert not list(tmp_path.rglob("*.safetensors")) and not list(tmp_path.rglob("data_report.json"))


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"),
                                                               (False, False, "32-true")])
def test_cpu_precision_is_bf16_only_where_the_cpu_has_bf16_units(amx, avx512_bf16, expected, tmp_path, monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from ser.config.resolvers import pin_precision

    monkeypatch.delenv("SER_PRECISION", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    cfg = compose([], tmp_path)
    assert cfg.trainer.precision == expected
    # the run records what was chosen, not the rule: its config.yaml reads the same on any machine
    assert pin_precision(cfg) == expected
    assert not OmegaConf.is_interpolation(cfg.trainer, "precision") and cfg.trainer.precision == expected
    assert "auto_precision" not in OmegaConf.to_yaml(cfg)
    assert pin_precision(cfg) is None  # pinned once
    # an explicit choice wins and stays as given; the smoke run (the tests' tiny model) is always fp32
    assert pin_precision(compose(["trainer.precision=bf16-mixed"], tmp_path)) is None
    assert compose(["experiment=smoke"], tmp_path).trainer.precision == "32-true"
    # a script pins one precision on every machine through the environment (run dirs unchanged)
    monkeypatch.setenv("SER_PRECISION", "bf16-mixed" if expected == "32-true" else "32-true")
    pinned = compose([], tmp_path)
    assert pinned.trainer.precision != expected and pin_precision(pinned) == pinned.trainer.precision
