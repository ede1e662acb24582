"""Render (prompt, response) as the RM's text and tokenise every distinct text once per run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATE = "Question: {prompt}\n\nAnswer: {response}"  # the official SER scripts' format


def render(template: str, prompt: str, response: str) -> str:
    return template.format(prompt=prompt, response=response)


@dataclass
class TokenCache:
    """Token ids per distinct text, computed once per run and reused by every loop."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    add_special_tokens: bool = True  # False for chat-templated text: the template wrote them
    _ids: dict[str, list[int]] = None  # type: ignore[assignment]
    _full_length: dict[str, int] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._ids, self._full_length = {}, {}

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        if missing:
            full = self.tokenizer(missing, truncation=False, add_special_tokens=self.add_special_tokens)["input_ids"]
            # A text that fits tokenises the same with or without truncation: only overlong ones go again.
            over = [i for i, f in enumerate(full) if len(f) > self.max_length]
            cut = self.tokenizer([missing[i] for i in over], truncation=True, max_length=self.max_length,
                                 add_special_tokens=self.add_special_tokens)["input_ids"] if over else []
            for text, f in zip(missing, full):
                self._full_length[text] = len(f)
                self._ids[text] = f
            for i, c in zip(over, cut):
                self._ids[missing[i]] = c
        return [self._ids[t] for t in texts]

    def is_truncated(self, text: str) -> bool:
        self.encode([text])
        return self._full_length[text] > self.max_length
