"""Self-labeling: score the pool, let the RM judge its status, keep and label the pairs it may use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ser.data.schema import PreferencePair
from ser.evolve.confidence import Confidence
from ser.evolve.status import Decision, Thresholds, decide


def self_label(pool: Sequence[PreferencePair], reward_a: torch.Tensor, reward_b: torch.Tensor, *,
               confidence: Confidence, rule: str, thresholds: Thresholds, min_pairs: int,
               previous_status: str | None, loop: int, cap: int | None = None,
               keep: torch.Tensor | None = None, weight_temperature: float | None = None,
               oracle: bool = False) -> tuple[Decision, list[dict[str, Any]]]:
    """Decide this loop's status and return the kept pairs, labeled by the RM, with provenance.

    Answer a is the source's chosen answer, b its rejected one; the RM scores each on its own, so
    the order leaks nothing. The higher-scored answer becomes "chosen"; `correct` records whether
    that agrees with the hidden human label (used only to report self-label accuracy).
    `cap`: keep at most this many pairs, largest |r_a - r_b| first. `keep`: pairs allowed at all
    (e.g. where several scorers agree). `weight_temperature` T: each row gets the training weight
    2 * sigmoid(|r_a - r_b| / T) - 1, the calibrated P(label right) - P(label wrong); else 1.
    `oracle` (a diagnostic): the kept pairs carry their human labels instead; `correct` still says
    whether the RM agreed, so the run reports the self-label accuracy it did not train on.
    """
    p_a, p_b = confidence.probabilities(reward_a, reward_b)
    gap = (reward_a - reward_b).abs()
    decision = decide(p_a, p_b, rule=rule, thresholds=thresholds, min_pairs=min_pairs,
                      previous_status=previous_status, keep=keep, gap=gap, cap=cap)
    rows = []
    for i in torch.nonzero(decision.mask).flatten().tolist():
        pair = pool[i]
        a_wins = bool(reward_a[i] > reward_b[i])
        a_labeled = a_wins or oracle
        rows.append({
            "id": pair.id,
            "prompt": pair.prompt,
            "chosen": pair.chosen if a_labeled else pair.rejected,
            "rejected": pair.rejected if a_labeled else pair.chosen,
            "loop": loop,
            "status": decision.status,
            "score_chosen": float(reward_a[i] if a_labeled else reward_b[i]),
            "score_rejected": float(reward_b[i] if a_labeled else reward_a[i]),
            "confidence": float(abs(p_a[i] - p_b[i])),  # |p_chosen - p_rejected| under the confidence mode
            "p_chosen": float(p_a[i] if a_labeled else p_b[i]),
            "p_rejected": float(p_b[i] if a_labeled else p_a[i]),
            "weight": label_weight(float(gap[i]), weight_temperature),
            "correct": a_wins,
            "label_source": "human" if oracle else "rm",
        })
    return decision, rows


def label_weight(gap: float, temperature: float | None) -> float:
    """2 * sigmoid(gap / T) - 1: 0 for a coin flip, -> 1 for a sure label; 1 without a temperature."""
    if temperature is None:
        return 1.0
    return float(2 * torch.sigmoid(torch.tensor(gap / temperature)) - 1)


def self_label_accuracy(rows: Sequence[dict[str, Any]]) -> float | None:
    return sum(r["correct"] for r in rows) / len(rows) if rows else None


def as_pairs(rows: Sequence[dict[str, Any]]) -> list[PreferencePair]:
    return [PreferencePair(id=r["id"], prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"]) for r in rows]
