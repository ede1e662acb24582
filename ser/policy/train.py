"""The policy's training phases: SFT on the labeled seed, PPO against an RM, DPO on labeled pairs.

Each builds its Lightning module and loader from the `policy` config and trains in place; the policy
task (ser/tasks/policy.py) chains them and evaluates before and after.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from ser.data.schema import PreferencePair
from ser.data.splits import Splits
from ser.evolve.step import as_pairs
from ser.io import read_jsonl
from ser.policy.dpo import DPOCollator, DPOModule, dpo_features
from ser.policy.model import PolicyWithValue
from ser.policy.ppo import PPOModule
from ser.policy.rollout import RewardFunction, encode_prompts
from ser.policy.sft import SFTModule, collate_sequences, sft_features

log = logging.getLogger(__name__)


def _trainer(cfg: DictConfig, out: Path, loggers: list, callbacks: list | None = None, **kwargs: Any) -> pl.Trainer:
    # manual optimisation (PPO) clips its own gradients: Lightning refuses gradient_clip_val there
    # a policy step is seconds long: log every one of them
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=list(callbacks or []), enable_checkpointing=False,
                       num_sanity_val_steps=0, default_root_dir=str(out), log_every_n_steps=1, **kwargs)


def _optimizer(policy_cfg: DictConfig, lr: float | None = None):
    factory = instantiate(policy_cfg.optimizer)
    return (lambda params: factory(params=params, lr=lr)) if lr is not None else factory


def run_sft(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, pairs: Sequence[PreferencePair],
            loggers: list) -> PolicyWithValue:
    policy_cfg = cfg.policy
    pairs = list(pairs)[: int(policy_cfg.sft.max_pairs)]
    features = sft_features(pairs, tokenizer, policy_cfg)
    loader = DataLoader(features, batch_size=int(policy_cfg.batch_size), shuffle=True,
                        generator=torch.Generator().manual_seed(int(policy_cfg.seed)),
                        collate_fn=lambda items: collate_sequences(items, tokenizer.pad_token_id))
    log.info("SFT on %d labeled seed pairs (prompt + chosen), %d epoch(s)", len(features), policy_cfg.sft.epochs)
    _trainer(cfg, out, loggers, max_epochs=int(policy_cfg.sft.epochs)).fit(
        SFTModule(model, _optimizer(policy_cfg, float(policy_cfg.sft.lr))), loader)
    # The SFT model becomes the new starting point and reference: merge the adapter, put a fresh one on.
    inner = model.policy
    if model.uses_lora:
        from peft import get_peft_model

        peft_config = inner.peft_config["default"]
        merged = inner.merge_and_unload()
        inner = get_peft_model(merged, peft_config)
    return PolicyWithValue(inner, with_value=model.value_head is not None)


def run_ppo(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, prompts: Sequence[str],
            reward_fn: RewardFunction, loggers: list) -> PPOModule:
    policy_cfg = cfg.policy
    steps, batch = int(policy_cfg.steps), int(policy_cfg.batch_size)
    ids = encode_prompts(tokenizer, prompts, int(policy_cfg.max_prompt_tokens),
                         policy_cfg.model.get("chat_template", True))
    rng = random.Random(int(policy_cfg.seed))
    order = [rng.randrange(len(prompts)) for _ in range(steps * batch)]  # each step draws its own prompts
    items = [{"prompt": prompts[i], "prompt_ids": ids[i]} for i in order]
    loader = DataLoader(items, batch_size=batch, shuffle=False,
                        collate_fn=lambda b: {"prompt": [x["prompt"] for x in b], "prompt_ids": [x["prompt_ids"] for x in b]})
    ppo_cfg = {**OmegaConf.to_container(policy_cfg.ppo, resolve=True), "seed": int(policy_cfg.seed)}
    module = PPOModule(model, tokenizer, reward_fn, ppo_cfg, OmegaConf.to_container(policy_cfg.generation, resolve=True),
                       _optimizer(policy_cfg))
    log.info("PPO: %d iterations x %d prompts (of %d training prompts), %d new tokens at most", steps, batch,
             len(prompts), policy_cfg.generation.max_new_tokens)
    _trainer(cfg, out, loggers, max_epochs=1, gradient_clip_val=None).fit(module, loader)
    return module


def run_dpo(cfg: DictConfig, out: Path, model: PolicyWithValue, tokenizer, pairs: Sequence[PreferencePair],
            loggers: list, seed: int | None = None, callbacks: list | None = None) -> DPOModule:
    """DPO on `pairs`; `seed` (default policy.seed) draws their order, so each coevolve loop has its own."""
    policy_cfg = cfg.policy
    seed = int(policy_cfg.seed) if seed is None else int(seed)
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
    pairs = pairs[: int(policy_cfg.dpo.max_pairs)]
    features = dpo_features(pairs, tokenizer, policy_cfg)
    batch, steps = int(policy_cfg.batch_size), int(policy_cfg.steps)
    loader = DataLoader(features, batch_size=batch, shuffle=True, drop_last=len(features) >= batch,
                        generator=torch.Generator().manual_seed(seed),
                        collate_fn=DPOCollator(tokenizer.pad_token_id))
    module = DPOModule(model, _optimizer(policy_cfg), float(policy_cfg.dpo.beta), float(policy_cfg.dpo.label_smoothing))
    log.info("DPO on %d pairs: %d steps of %d pairs", len(features), steps, batch)
    _trainer(cfg, out, loggers, callbacks, max_steps=steps,
             max_epochs=math.ceil(steps / max(len(loader), 1))).fit(module, loader)
    return module


def dpo_pairs(cfg: DictConfig, rm_dir: Path, splits: Splits) -> list[PreferencePair]:
    """The self-labeled pairs of the RM run (higher-scored answer as chosen) and, by config, the labeled seed."""
    path = rm_dir / "selflabels" / "all.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    pairs = as_pairs(rows) + (list(splits.seed) if cfg.policy.dpo.include_seed else [])
    if not pairs:
        raise ValueError(f"DPO has no pairs: {path} holds no self-labels and policy.dpo.include_seed=false")
    log.info("DPO data: %d self-labeled pairs from %s + %d seed pairs", len(rows), path,
             len(splits.seed) if cfg.policy.dpo.include_seed else 0)
    return pairs


def save_policy(model: PolicyWithValue, tokenizer, path: Path) -> None:
    """The trained policy (LoRA: the adapter only) + tokenizer, safetensors; the value head beside it.

    Written to a temp dir renamed when complete: a killed run never leaves a half-written policy.
    """
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.policy.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if model.value_head is not None:
        head = {k: v.detach().contiguous() for k, v in model.value_head.state_dict().items()}
        save_file(head, str(tmp / "value_head.safetensors"))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
