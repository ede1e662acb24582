"""Learning status and filtering: which pool pairs the RM may label itself, and when to stop.

Status 1 ("tell good from bad"): one answer confidently good, the other confidently bad:
    max(p) > tau_high and min(p) < tau_low.
Status 2 ("finer differences"): the two answers differ clearly: |p1 - p2| > delta.

Rules:
- paper: status 1 while it yields >= min_pairs; then status 2 (and stay there); else stop.
- union: the official script: one pass keeping pairs that satisfy either predicate.
- status1_only: status 1 while it yields >= min_pairs; else stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RULES = ("paper", "union", "status1_only")


@dataclass(frozen=True)
class Thresholds:
    tau_high: float = 0.55
    tau_low: float = 0.45
    delta: float = 0.3


def status1_mask(p1: torch.Tensor, p2: torch.Tensor, t: Thresholds) -> torch.Tensor:
    high, low = torch.maximum(p1, p2), torch.minimum(p1, p2)
    return (high > t.tau_high) & (low < t.tau_low)


def status2_mask(p1: torch.Tensor, p2: torch.Tensor, t: Thresholds) -> torch.Tensor:
    return (p1 - p2).abs() > t.delta


@dataclass(frozen=True)
class Decision:
    """What the RM judged about itself this loop."""

    status: str | None  # "1", "2", "union", or None when the loop stops
    mask: torch.Tensor  # pool pairs kept
    candidates: dict[str, int]  # how many pairs each predicate would keep
    reason: str  # why this status, or why stop

    @property
    def stop(self) -> bool:
        return self.status is None


def decide(p1: torch.Tensor, p2: torch.Tensor, *, rule: str, thresholds: Thresholds, min_pairs: int,
           previous_status: str | None = None) -> Decision:
    if rule not in RULES:
        raise ValueError(f"ser.rule must be one of {RULES}, got {rule!r}")
    s1, s2 = status1_mask(p1, p2, thresholds), status2_mask(p1, p2, thresholds)
    counts = {"status1": int(s1.sum()), "status2": int(s2.sum()), "union": int((s1 | s2).sum())}
    none = torch.zeros_like(s1)
    if rule == "union":
        if counts["union"] >= min_pairs:
            return Decision("union", s1 | s2, counts, f"union kept {counts['union']} >= min_pairs {min_pairs}")
        return Decision(None, none, counts, f"union kept {counts['union']} < min_pairs {min_pairs}")
    if previous_status != "2" and counts["status1"] >= min_pairs:
        return Decision("1", s1, counts, f"status 1 kept {counts['status1']} >= min_pairs {min_pairs}")
    if rule == "status1_only":
        return Decision(None, none, counts, f"status 1 kept {counts['status1']} < min_pairs {min_pairs}")
    if counts["status2"] >= min_pairs:
        why = "already in status 2" if previous_status == "2" else f"status 1 kept {counts['status1']} < {min_pairs}"
        return Decision("2", s2, counts, f"{why}; status 2 kept {counts['status2']}")
    return Decision(None, none, counts,
                    f"status 1 kept {counts['status1']} and status 2 kept {counts['status2']} < min_pairs {min_pairs}")
