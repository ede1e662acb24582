"""Learning status and filtering: which pool pairs the RM may label itself, and when to stop.

Status 1 ("tell good from bad"): one answer confidently good, the other confidently bad:
    max(p) > tau_high and min(p) < tau_low.
Status 2 ("finer differences"): the two answers differ clearly: |p1 - p2| > delta.

Rules:
- paper: status 1 while it yields >= min_pairs; then status 2 (and stay there); else stop.
- union: the official script: one pass keeping pairs that satisfy either predicate.
- status1_only: status 1 while it yields >= min_pairs; else stop.

A cap (ser.top_fraction of the pool, or ser.top_k pairs) keeps only the status's candidates with
the largest score gap |r1 - r2|: a scale-free rule whatever the thresholds. With a `keep` mask
(e.g. several scorers agree on the label) only those candidates count. Every shortfall is named
in the decision's reason and `shortfall`, so the caller can say it loudly.
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
    shortfall: str = ""  # a status that yielded fewer pairs than it needs (switch or stop), said out loud

    @property
    def stop(self) -> bool:
        return self.status is None


def decide(p1: torch.Tensor, p2: torch.Tensor, *, rule: str, thresholds: Thresholds, min_pairs: int,
           previous_status: str | None = None, keep: torch.Tensor | None = None,
           gap: torch.Tensor | None = None, cap: int | None = None) -> Decision:
    if rule not in RULES:
        raise ValueError(f"ser.rule must be one of {RULES}, got {rule!r}")
    s1, s2 = status1_mask(p1, p2, thresholds), status2_mask(p1, p2, thresholds)
    if keep is not None:
        s1, s2 = s1 & keep, s2 & keep
    counts = {"status1": int(s1.sum()), "status2": int(s2.sum()), "union": int((s1 | s2).sum())}
    none = torch.zeros_like(s1)
    if rule == "union":
        if counts["union"] >= min_pairs:
            return _capped(Decision("union", s1 | s2, counts, f"union kept {counts['union']} >= min_pairs {min_pairs}"),
                           gap, cap, min_pairs)
        why = f"union kept {counts['union']} < min_pairs {min_pairs}"
        return Decision(None, none, counts, why, shortfall=why)
    if previous_status != "2" and counts["status1"] >= min_pairs:
        return _capped(Decision("1", s1, counts, f"status 1 kept {counts['status1']} >= min_pairs {min_pairs}"),
                       gap, cap, min_pairs)
    short1 = f"status 1 kept {counts['status1']} < min_pairs {min_pairs}"
    if rule == "status1_only":
        return Decision(None, none, counts, short1, shortfall=short1)
    if counts["status2"] >= min_pairs:
        why = "already in status 2" if previous_status == "2" else short1
        return _capped(Decision("2", s2, counts, f"{why}; status 2 kept {counts['status2']}",
                                shortfall="" if previous_status == "2" else short1 + ": switching to status 2"),
                       gap, cap, min_pairs)
    why = f"status 1 kept {counts['status1']} and status 2 kept {counts['status2']} < min_pairs {min_pairs}"
    return Decision(None, none, counts, why, shortfall=why)


def _capped(decision: Decision, gap: torch.Tensor | None, cap: int | None, min_pairs: int) -> Decision:
    """Keep the `cap` candidates with the largest gap; a cap below min_pairs stops the loop."""
    if cap is None or int(decision.mask.sum()) <= cap:
        return decision
    if cap < min_pairs:
        why = f"status {decision.status}: the cap keeps {cap} < min_pairs {min_pairs}"
        return Decision(None, torch.zeros_like(decision.mask), decision.candidates, why, shortfall=why)
    if gap is None:
        raise ValueError("a cap (ser.top_fraction / ser.top_k) needs the score gap of every pair")
    ranked = torch.where(decision.mask, gap.float(), torch.tensor(float("-inf")))
    top = torch.topk(ranked, cap, sorted=False).indices  # ties at the boundary: topk's order, deterministic
    mask = torch.zeros_like(decision.mask)
    mask[top] = True
    return Decision(decision.status, mask, decision.candidates,
                    f"{decision.reason}; top {cap} by score gap", decision.shortfall)
