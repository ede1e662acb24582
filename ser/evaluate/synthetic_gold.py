"""An exact gold judge for the embedded synthetic data: the generator knows each prompt's truth.

A profile prompt asks one attribute of one person whose profile it states: an answer scores +1 when it
names the right value (a whole word) and no other value of that attribute, -1 when it names only wrong
ones, 0 when it names none (a refusal, an off-topic answer). A procedure prompt asks the steps of one of the
library's tasks: an answer scores the share of the task's steps it states in the right order (the longest
run of steps found in order, over the number of steps), from 0 to 1.

No model is trained against it: a policy's gold reward is what it really got right.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from ser.data.synthetic import ATTRIBUTES, NAMES, PROCEDURE_QUESTIONS, PROCEDURES, QUESTIONS, STATEMENTS


@dataclass(frozen=True)
class Truth:
    kind: str  # profile | procedure
    attribute: str = ""
    value: str = ""
    steps: tuple[str, ...] = ()


@lru_cache(maxsize=65536)
def truth(prompt: str) -> Truth | None:
    """What a synthetic prompt asks for, or None for a prompt the generator did not write."""
    for task, steps in PROCEDURES.items():
        if any(prompt.endswith(q.format(task=task)) for q in PROCEDURE_QUESTIONS):
            return Truth("procedure", steps=tuple(steps))
    for attribute, questions in QUESTIONS.items():
        for name in NAMES:
            if any(prompt.endswith(q.format(name=name)) for q in questions):
                for value in ATTRIBUTES[attribute]:
                    if STATEMENTS[attribute].format(name=name, value=value) in prompt:
                        return Truth("profile", attribute, value)
    return None


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z]){re.escape(word.lower())}(?![A-Za-z])", text) is not None


def _steps_in_order(text: str, steps: Sequence[str]) -> int:
    """The longest run of steps that appear in `text` in their order (each as a case-blind substring)."""
    positions = [text.find(step.lower()) for step in steps]
    found = [(i, p) for i, p in enumerate(positions) if p >= 0]
    best: list[int] = []  # longest increasing subsequence of positions, O(n^2) on at most 6 steps
    for k, (_, p) in enumerate(found):
        best.append(1 + max((best[j] for j in range(k) if found[j][1] < p), default=0))
    return max(best, default=0)


def gold_score(prompt: str, response: str) -> float | None:
    """The gold score of `response` to `prompt`; None when the prompt is not a synthetic one."""
    t = truth(prompt)
    if t is None:
        return None
    text = response.lower()
    if t.kind == "procedure":
        return _steps_in_order(text, t.steps) / len(t.steps)
    right = _mentions(text, t.value)
    wrong = any(_mentions(text, v) for v in ATTRIBUTES[t.attribute] if v != t.value)
    return 1.0 if right and not wrong else (-1.0 if wrong and not right else 0.0)


class SyntheticGoldJudge:
    """The judge interface of the policy stage: (prompts, responses) -> tensor of gold scores."""

    name = "synthetic gold (exact)"

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        scores = [gold_score(p, r) for p, r in zip(prompts, responses)]
        missing = [p for p, s in zip(prompts, scores) if s is None]
        if missing:
            raise ValueError(f"the synthetic gold judge knows no truth for prompt {missing[0][:80]!r}: it judges "
                             "data=synthetic prompts only")
        return torch.tensor(scores, dtype=torch.float32)
