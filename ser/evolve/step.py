"""One SER step as a pure function: loop state + pool scores + validation scores -> decision, self-labels, new state.

Nothing here trains, scores or writes: `evolve_step` fits the confidence kind on this loop's rewards,
asks the rule which pairs each status may keep and the phase schedule which status to use, caps the
kept pairs, labels them (the higher-scored answer becomes "chosen") and returns the next state. The
loop (ser/evolve/loop.py) does the I/O around it; tests drive it with hand-made tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ser.data.schema import PreferencePair
from ser.evolve.confidence import Confidence
from ser.evolve.phases import PhaseSchedule
from ser.evolve.rules import PoolScores, SelectionRule, cap_mask, quantile_strata, stratified_cap_mask
from ser.evolve.state import LoopState


@dataclass(frozen=True)
class StepSettings:
    confidence: Confidence
    rule: SelectionRule
    phases: PhaseSchedule
    min_pairs: int = 50
    top_fraction: float | None = None
    top_k: int | None = None
    remove_selected: bool = True
    oracle: bool = False  # a diagnostic: kept pairs train with their hidden human labels
    weight_temperature: float | None = None  # ser.weighting=confidence: T of 2 * sigmoid(gap / T) - 1
    stratify_bins: int = 0  # > 1: the cap is shared across this many response-length bins of the pool

    def cap(self, pool_size: int) -> int | None:
        """ser.top_k, or ser.top_fraction of the remaining pool (the smaller when both are set)."""
        caps = [math.ceil(self.top_fraction * pool_size)] if self.top_fraction is not None else []
        if self.top_k is not None:
            caps.append(int(self.top_k))
        return min(caps) if caps else None


@dataclass(frozen=True)
class StepResult:
    status: str | None  # None: the loop stops
    reason: str
    shortfall: str
    candidates: dict[str, int]
    mask: torch.Tensor  # over the remaining pool: the pairs kept
    rows: list[dict[str, Any]]  # the kept pairs, self-labeled, with provenance
    state: LoopState  # the next state (the input state is left as it was)
    scores: PoolScores = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def stop(self) -> bool:
        return self.status is None


def evolve_step(state: LoopState, pool: Sequence[PreferencePair], pool_rewards: tuple[torch.Tensor, torch.Tensor],
                val_rewards: tuple[torch.Tensor, torch.Tensor], settings: StepSettings, *, loop: int,
                keep: torch.Tensor | None = None) -> StepResult:
    """Decide loop `loop` on the remaining `pool` (answer a = its chosen, b = its rejected).

    `keep`: pairs allowed at all (several scorers agree on the label, ser.agreement).
    """
    reward_a, reward_b = (r.float() for r in pool_rewards)
    confidence = settings.confidence.fit(*val_rewards, torch.cat([reward_a, reward_b]))
    scores = PoolScores(reward_a, reward_b, *confidence(reward_a, reward_b))
    masks = {"1": settings.rule.status1(scores), "2": settings.rule.status2(scores)}
    if keep is not None:
        masks = {k: m & keep for k, m in masks.items()}
    masks["union"] = masks["1"] | masks["2"]
    counts = {"status1": int(masks["1"].sum()), "status2": int(masks["2"].sum()), "union": int(masks["union"].sum())}
    if keep is not None:
        counts["agreeing"] = int(keep.sum())
    choice = settings.phases.choose(loop, state.status, counts, settings.min_pairs)
    status, reason, shortfall = choice.status, choice.reason, choice.shortfall
    cap = settings.cap(len(pool))
    if status is not None and cap is not None and cap < settings.min_pairs and counts[_count_key(status)] > cap:
        status = None
        reason = shortfall = f"status {choice.status}: the cap keeps {cap} < min_pairs {settings.min_pairs}"
    nxt = state.copy()
    if shortfall:
        nxt.warnings.append(f"loop {loop}: {shortfall}")
    if status is None:
        nxt.stopped, nxt.stop_reason = True, reason
        return StepResult(None, reason, shortfall, counts, torch.zeros_like(masks["1"]), [], nxt, scores)
    if settings.stratify_bins > 1:
        strata = quantile_strata(torch.tensor([len(p.chosen) + len(p.rejected) for p in pool]), settings.stratify_bins)
        mask = stratified_cap_mask(masks[status], settings.rule.ranking(scores), cap, strata)
    else:
        mask = cap_mask(masks[status], settings.rule.ranking(scores), cap)
    if int(mask.sum()) < int(masks[status].sum()):
        reason = f"{reason}; top {int(mask.sum())} by {type(settings.rule).__name__}.ranking" + (
            f" in {settings.stratify_bins} response-length bins" if settings.stratify_bins > 1 else "")
    rows = label_rows(pool, scores, mask, status=status, loop=loop, weight_temperature=settings.weight_temperature,
                      oracle=settings.oracle)
    for row in rows:  # D_n = D_new + D_(n-1); a pair labeled again keeps its newest label
        nxt.selected[row["id"]] = row
    if settings.remove_selected:
        nxt.removed_from_pool.extend(r["id"] for r in rows)
    nxt.status = status
    return StepResult(status, reason, shortfall, counts, mask, rows, nxt, scores)


def _count_key(status: str) -> str:
    return "union" if status == "union" else f"status{status}"


def label_rows(pool: Sequence[PreferencePair], scores: PoolScores, mask: torch.Tensor, *, status: str, loop: int,
               weight_temperature: float | None = None, oracle: bool = False) -> list[dict[str, Any]]:
    """The kept pairs labeled by the RM (higher reward = chosen), with provenance.

    `correct` records whether the RM's label agrees with the hidden human one (only to report self-label
    accuracy). `oracle`: the pairs carry their human labels instead; `correct` still says whether the RM agreed.
    """
    rows = []
    for i in torch.nonzero(mask).flatten().tolist():
        pair, ra, rb, pa, pb = pool[i], float(scores.reward_a[i]), float(scores.reward_b[i]), float(scores.p_a[i]), float(scores.p_b[i])
        a_wins = ra > rb
        a_chosen = a_wins or oracle
        labeled = pair if a_chosen else pair.swapped()
        rows.append({
            "id": pair.id, "prompt": pair.prompt,
            "chosen": pair.chosen if a_chosen else pair.rejected,
            "rejected": pair.rejected if a_chosen else pair.chosen,
            "loop": loop, "status": status,
            "score_chosen": ra if a_chosen else rb, "score_rejected": rb if a_chosen else ra,
            "confidence": abs(pa - pb),  # |p_chosen - p_rejected| under the confidence kind
            "p_chosen": pa if a_chosen else pb, "p_rejected": pb if a_chosen else pa,
            "weight": label_weight(abs(ra - rb), weight_temperature),
            "correct": a_wins, "label_source": "human" if oracle else "rm",
            **({"conversation": labeled.conversation} if labeled.conversation else {}),
        })
    return rows


def label_weight(gap: float, temperature: float | None) -> float:
    """2 * sigmoid(gap / T) - 1: 0 for a coin flip, -> 1 for a sure label; 1 without a temperature."""
    if temperature is None:
        return 1.0
    return float(2 * torch.sigmoid(torch.tensor(gap / temperature)) - 1)


def self_label_accuracy(rows: Sequence[dict[str, Any]]) -> float | None:
    """The share of self-labels that match the hidden label (rows without one, `correct` None, left out)."""
    known = [r["correct"] for r in rows if r.get("correct") is not None]
    return sum(known) / len(known) if known else None


def as_pairs(rows: Sequence[dict[str, Any]]) -> list[PreferencePair]:
    return [PreferencePair(id=r["id"], prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"],
                           conversation=r.get("conversation")) for r in rows]
