"""Export a trained RM with `save_pretrained`, and score (prompt, response) pairs with it.

The exported directory loads in any transformers or TRL code as
`AutoModelForSequenceClassification.from_pretrained(dir)`; `ser_reward.json` beside the weights
records how texts were formatted and pooled, and the reward mean/std on the training data
(used to normalise rewards in RL).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from ser.io import atomic_write_json
from ser.data.tokens import DEFAULT_TEMPLATE, TokenCache, render
from ser.reward.module import resolve_pooling
from ser.reward.scoring import score_texts

META_FILE = "ser_reward.json"


def export_reward_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                        meta: Mapping[str, Any]) -> Path:
    """Write weights (safetensors) + tokenizer + ser_reward.json; LoRA adapters are merged first."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed export
    plain = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / META_FILE, dict(meta))
    # Swap in the new export before deleting the old one: a kill in between leaves one complete copy.
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


class RewardScorer:
    """Scores (prompt, response) pairs with an exported RM.

    >>> scorer = RewardScorer.from_pretrained("outputs/.../final_rm")
    >>> scorer.score([("What is 2+2?", "4"), ("What is 2+2?", "5")])  # tensor of rewards
    """

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *, template: str = DEFAULT_TEMPLATE,
                 max_length: int = 512, pooling: str = "auto", batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.template = template
        self.pooling = resolve_pooling(model, pooling)
        self.cache = TokenCache(tokenizer, max_length)
        self.batch_size = batch_size
        self.device = device
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **overrides: Any) -> "RewardScorer":
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        options = {k: meta[k] for k in ("template", "max_length", "pooling") if k in meta}
        options.update(overrides)
        scorer = cls(model, tokenizer, device=device, **options)
        scorer.meta = meta
        return scorer

    def score(self, pairs: Sequence[tuple[str, str]], normalize: bool = False) -> torch.Tensor:
        """One reward per (prompt, response); `normalize` uses the training reward mean/std."""
        texts = [render(self.template, prompt, response) for prompt, response in pairs]
        rewards = score_texts(self.model, self.cache, texts, pooling=self.pooling,
                              batch_size=self.batch_size, device=self.device)
        if normalize and "reward_std" in self.meta:
            rewards = (rewards - self.meta["reward_mean"]) / max(self.meta["reward_std"], 1e-8)
        return rewards


def score_pairs(model_dir: str | Path, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> list[float]:
    """Score (prompt, response) pairs with the RM exported at `model_dir`. Higher is better."""
    return RewardScorer.from_pretrained(model_dir, **kwargs).score(pairs).tolist()
