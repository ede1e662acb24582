"""Export a trained RM with `save_pretrained`, and score (prompt, response) pairs with it.

The exported directory loads in any transformers or TRL code as
`AutoModelForSequenceClassification.from_pretrained(dir)`; `ser_reward.json` beside the weights
records how texts were formatted and pooled, and the reward mean/std on the training data
(used to normalise rewards in RL).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from ser.io import atomic_write_json
from ser.data.render import Renderer, jinja_template
from ser.data.tokens import DEFAULT_TEMPLATE, TokenCache
from ser.reward.module import resolve_pooling
from ser.reward.scoring import score_texts

META_FILE = "ser_reward.json"


def portable_tokenizer(tokenizer: PreTrainedTokenizerBase, meta: Mapping[str, Any]) -> PreTrainedTokenizerBase:
    """A copy of the RM tokenizer that carries how training tokenised: max length, truncation side, and a chat
    template (its own, or data.template written as one), so plain transformers / TRL code scores as ser does."""
    portable = copy.deepcopy(tokenizer)
    portable.model_max_length = int(meta["max_length"])
    portable.truncation_side = str(meta.get("truncation_side", tokenizer.truncation_side))
    if not meta.get("chat_template"):
        portable.chat_template = jinja_template(str(meta.get("template", DEFAULT_TEMPLATE)))
    return portable


def export_reward_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
                        meta: Mapping[str, Any]) -> Path:
    """Write weights (safetensors) + tokenizer + ser_reward.json; LoRA adapters are merged first."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a killed export
    plain = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    plain.save_pretrained(tmp, safe_serialization=True)
    portable_tokenizer(tokenizer, meta).save_pretrained(tmp)
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
                 max_length: int = 512, pooling: str = "auto", batch_size: int = 64, device: str = "cpu",
                 chat_template: bool = False) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.template = template
        self.pooling = resolve_pooling(model, pooling)
        self.renderer = Renderer(tokenizer, template, chat_template)
        self.cache = TokenCache(tokenizer, max_length, add_special_tokens=self.renderer.adds_special_tokens)
        self.batch_size = batch_size
        self.device = device
        self.meta: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", use_defaults: bool = False,
                        **overrides: Any) -> "RewardScorer":
        """An exported RM; `use_defaults` accepts a directory without ser_reward.json (any reward model),
        scoring with the default template, max length and pooling."""
        path = Path(path)
        if not (path / META_FILE).exists() and not use_defaults:
            raise FileNotFoundError(f"{path}: no {META_FILE}, so how texts were formatted, truncated and pooled in "
                                    "training is unknown; pass use_defaults=True to score with the defaults anyway")
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
        model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        options = {k: meta[k] for k in ("template", "max_length", "pooling", "chat_template") if k in meta}
        options.update(overrides)
        scorer = cls(model, tokenizer, device=device, **options)
        scorer.meta = meta
        return scorer

    def score(self, pairs: Sequence[tuple[str, str]], normalize: bool = False) -> torch.Tensor:
        """One reward per (prompt, response); `normalize` uses the training reward mean/std."""
        texts = [self.renderer.text(prompt, response) for prompt, response in pairs]
        rewards = score_texts(self.model, self.cache, texts, pooling=self.pooling,
                              batch_size=self.batch_size, device=self.device)
        if normalize and "reward_std" in self.meta:
            rewards = (rewards - self.meta["reward_mean"]) / max(self.meta["reward_std"], 1e-8)
        return rewards


def score_pairs(model_dir: str | Path, pairs: Sequence[tuple[str, str]], **kwargs: Any) -> list[float]:
    """Score (prompt, response) pairs with the RM exported at `model_dir`. Higher is better."""
    return RewardScorer.from_pretrained(model_dir, **kwargs).score(pairs).tolist()
