"""Safe loading: no remote code unless a config asks, safetensors weights, no pickle, allowed `_target_`s
only, and no secret from the environment in any log or saved file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ser.config import ConfigError, validate_config
from ser.config.targets import allowed
from tests.conftest import ROOT, compose


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def _cli(args: list[str], project_root: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT),
           "PROJECT_ROOT": str(project_root), "OMP_NUM_THREADS": "1", **extra_env}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=600)


# ---- trust_remote_code and safetensors ----


@pytest.mark.parametrize("rm", _options("rm"))
def test_every_rm_config_keeps_remote_code_off_and_safetensors_on(rm, tmp_path):
    cfg = compose([f"rm={rm}"], tmp_path)
    assert cfg.rm.get("trust_remote_code", False) is False
    assert cfg.rm.get("use_safetensors", True) is True


@pytest.mark.parametrize("data", _options("data"))
def test_every_data_config_keeps_remote_code_off(data, tmp_path):
    cfg = compose([f"data={data}"], tmp_path)
    for key in ("source", "test_source"):
        if cfg.data.get(key) is not None:
            assert cfg.data[key].get("trust_remote_code", False) is False, key


class _Called(Exception):
    pass


def _recorder(calls: list[dict], result: Any = None):
    def from_pretrained(*args, **kwargs):
        calls.append({"args": args, **kwargs})
        if result is None:
            raise _Called
        return result
    return from_pretrained


@pytest.mark.parametrize("rm,trust", [("bare", False), ("minilm", False), ("hub", False), ("hub_trusting", True)])
def test_load_backbone_passes_trust_remote_code_and_use_safetensors(rm, trust, monkeypatch, tmp_path):
    from ser.reward import backbone

    if rm == "bare":  # a config that does not mention the keys at all
        rm_cfg = {"source": {"kind": "hub", "name_or_path": "org/model"}}
    else:
        overrides = {"minilm": ["rm=minilm"], "hub": ["rm=hub", "rm.source.name_or_path=org/model"],
                     "hub_trusting": ["rm=hub", "rm.source.name_or_path=org/model", "rm.trust_remote_code=true"]}[rm]
        rm_cfg = OmegaConf.to_container(compose(overrides, tmp_path).rm, resolve=True)
    tokenizer_calls: list[dict] = []
    model_calls: list[dict] = []
    monkeypatch.setattr(backbone.AutoTokenizer, "from_pretrained",
                        _recorder(tokenizer_calls, backbone.build_tiny_tokenizer(["a b"])))
    monkeypatch.setattr(backbone.AutoModelForSequenceClassification, "from_pretrained", _recorder(model_calls))
    with pytest.raises(_Called):
        backbone.load_backbone(rm_cfg)
    assert tokenizer_calls[0]["trust_remote_code"] is trust
    assert model_calls[0]["trust_remote_code"] is trust
    assert model_calls[0]["use_safetensors"] is True


def test_gguf_conversion_and_exported_rm_load_without_remote_code(monkeypatch, tmp_path):
    from ser.reward import backbone, export

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[dict] = []
    monkeypatch.setattr(backbone.AutoModelForCausalLM, "from_pretrained", _recorder(calls))
    with pytest.raises(_Called):
        backbone.convert_gguf_to_safetensors({"gguf_file": str(gguf), "cache_dir": str(tmp_path / "cache")})
    assert calls[0].get("trust_remote_code", False) is False
    calls.clear()
    monkeypatch.setattr(export.AutoModelForSequenceClassification, "from_pretrained", _recorder(calls))
    with pytest.raises(_Called):
        export.RewardScorer.from_pretrained(tmp_path, use_defaults=True)
    assert calls[0].get("trust_remote_code", False) is False and calls[0]["use_safetensors"] is True


def test_hub_datasets_load_without_remote_code_unless_asked(monkeypatch):
    import datasets

    from ser.data.loading import load_pairs

    calls: list[dict] = []
    monkeypatch.setattr(datasets, "load_dataset", _recorder(calls))
    for trust in (None, False, True):
        source = {"adapter": "generic", "hub": "org/prefs", "split": "train"}
        if trust is not None:
            source["trust_remote_code"] = trust
        with pytest.raises(_Called):
            load_pairs(source)
        assert calls[-1].get("trust_remote_code", False) is bool(trust)


# ---- no pickle ----


def _python_files() -> list[Path]:
    return sorted([*(ROOT / "ser").rglob("*.py"), ROOT / "run.py", *(ROOT / "experiments").rglob("*.py")])


def test_no_torch_load_without_weights_only_and_no_pickle():
    offenders = []
    for path in _python_files():
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start():text.find(")", match.start()) + 1]
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(ROOT)}: {call}")
        for match in re.finditer(r"\b(pickle|dill|cloudpickle|joblib)\.loads?\(|trust_remote_code\s*=\s*True", text):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert offenders == []


# ---- _target_ allowlist ----


def _targets(node: Any, path: str = "") -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                found.append((where, str(value)))
            found += _targets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _targets(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("rm", "logger", "trainer", "data") for o in _options(g)]
                         + [f"experiment={o}" for o in _options("experiment")])
def test_every_composed_target_is_in_the_allowlist(override, tmp_path):
    cfg = compose([override], tmp_path)
    targets = _targets(OmegaConf.to_container(cfg, resolve=False))
    assert targets, "every config instantiates at least the trainer"
    assert [t for t in targets if not allowed(t[1])] == []


@pytest.mark.parametrize("override,key", [
    ("rm.optimizer._target_=os.system", "rm.optimizer._target_"),
    ("trainer._target_=builtins.eval", "trainer._target_"),
    ("+logger.evil._target_=subprocess.Popen", "logger.evil._target_"),
    ("rm.optimizer._target_=torchvision_evil.X", "rm.optimizer._target_"),
    ("rm.optimizer._target_=serious.pkg.X", "rm.optimizer._target_"),  # "ser" is not a prefix of "serious."
])
def test_validate_config_refuses_targets_outside_the_allowlist(override, key, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(key) + ".*outside the allowed packages"):
        validate_config(compose(["experiment=smoke", override], tmp_path))


def test_cli_refuses_a_target_outside_the_allowlist_before_anything_loads(tmp_path):
    result = _cli(["experiment=smoke", "rm.optimizer._target_=os.system"], tmp_path)
    assert result.returncode != 0
    assert "rm.optimizer._target_" in result.stdout + result.stderr
    assert "outside the allowed packages" in result.stdout + result.stderr
    assert not list(tmp_path.rglob("data_report.json")) and not list(tmp_path.rglob("*.safetensors"))


# ---- secrets ----

SECRETS = {"WANDB_API_KEY": "secret-xyz", "HF_TOKEN": "hf_secret", "HUGGING_FACE_HUB_TOKEN": "hf_secret_too"}


@pytest.mark.slow
def test_secrets_in_the_environment_never_reach_logs_or_saved_files(tmp_path):
    # logger=default: CSV + wandb offline, the loggers most likely to copy the environment somewhere
    result = _cli(["experiment=smoke", "logger=default", "ser.phases=[1]"], tmp_path, **SECRETS)
    assert result.returncode == 0, result.stderr[-3000:]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in written)
    assert any("wandb" in p.parts for p in written), "the wandb logger did not run: the test would mean little"
    for secret in SECRETS.values():
        assert secret not in result.stdout and secret not in result.stderr, secret
        leaked = [str(p.relative_to(tmp_path)) for p in written if secret.encode() in p.read_bytes()]
        assert leaked == [], (secret, leaked)
