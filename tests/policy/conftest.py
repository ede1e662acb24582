"""Tiny policies and RMs built from configs, with locally built tokenizers (no download)."""

from __future__ import annotations

import pytest
import torch

from ser.data.synthetic import synthetic_pairs


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(60, seed=3)


@pytest.fixture
def tiny_policy(pairs, compose_cfg):
    from ser.policy.model import PolicyWithValue, load_policy_model

    cfg = compose_cfg(["schedule=ser_ppo", "policy/model=tiny"])
    torch.manual_seed(0)
    vocab = [t for p in pairs for t in (p.prompt, p.chosen, p.rejected)] + ["Question", "Answer", ":"]
    model, tokenizer = load_policy_model(cfg.policy.model, vocab_texts=vocab)
    return cfg, PolicyWithValue(model), tokenizer


@pytest.fixture(scope="module")
def tiny_rm_dir(pairs, tmp_path_factory):
    """An exported tiny random BERT RM whose word-level vocabulary differs from the policy's."""
    from ser.reward.backbone import load_backbone
    from ser.reward.export import export_reward_model
    from tests.conftest import compose

    out = tmp_path_factory.mktemp("rm")
    cfg = compose(["rm=tiny"], out / "cfg")
    torch.manual_seed(0)
    # lower-cased, prompts only: another vocabulary (and another tokenizer) than the policy's
    model, tokenizer = load_backbone(cfg.rm, vocab_texts=[p.prompt.lower() for p in pairs])
    return export_reward_model(model, tokenizer, out / "final_rm", {
        "template": cfg.data.template, "max_length": 128, "pooling": "auto", "reward_mean": 0.0, "reward_std": 1.0})
