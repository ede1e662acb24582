"""Tokenise (prompt, response) texts once and stack chosen then rejected into one padded batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Question: {prompt}\n\nAnswer: {response}"  # the official SER scripts' format


def render(template: str, prompt: str, response: str) -> str:
    return template.format(prompt=prompt, response=response)


@dataclass
class TokenCache:
    """Token ids per distinct text, computed once per run and reused by every loop."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    _ids: dict[str, list[int]] = None  # type: ignore[assignment]
    _full_length: dict[str, int] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._ids, self._full_length = {}, {}

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            full = self.tokenizer(missing, truncation=False, add_special_tokens=True)["input_ids"]
            # A text that fits tokenises the same with or without truncation: only overlong ones go again.
            over = [i for i, f in enumerate(full) if len(f) > self.max_length]
            cut = self.tokenizer([missing[i] for i in over], truncation=True, max_length=self.max_length,
                                 add_special_tokens=True)["input_ids"] if over else []
            for text, f in zip(missing, full):
                self._full_length[text] = len(f)
                self._ids[text] = f
            for i, c in zip(over, cut):
                self._ids[missing[i]] = c
        return [self._ids[t] for t in texts]

    def is_truncated(self, text: str) -> bool:
        self.encode([text])
        return self._full_length[text] > self.max_length


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (dynamic padding) with an explicit attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class PairCollator:
    """Batch of pairs -> one tensor batch: rows [0, B) are chosen, rows [B, 2B) rejected.

    One forward pass scores both sides. Each feature is {"chosen_ids", "rejected_ids", "weight"}.
    """

    pad_id: int
    side: str = "right"

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features],
                          self.pad_id, self.side)
        batch["weight"] = torch.tensor([float(f.get("weight", 1.0)) for f in features])
        return batch
