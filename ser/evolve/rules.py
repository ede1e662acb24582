"""Selection rules: which pool pairs each learning status may self-label, from their confidences.

A rule is a class named by `_target_` in `conf/ser/*.yaml` (`ser.rule`); `status1` and `status2`
return boolean masks over the remaining pool, `ranking` orders candidates when a cap (`ser.top_fraction`,
`ser.top_k`) keeps only the first ones. Add a rule by subclassing `SelectionRule` in any module and naming
it in a YAML file (its package must be in `allow_targets`, see conf/config.yaml).

`Thresholds` is the paper's pair of predicates on the confidences p1, p2 of a pair's two answers:
- status 1 ("tell good from bad"): one answer clearly good, the other clearly bad:
  max(p) > tau_high and min(p) < tau_low;
- status 2 ("finer differences"). The paper writes |p1 - p2| > delta (`status2: gap`). Taken alone,
  that predicate ranks the stark pairs first again: a pair with a refusal has the largest gap of all.
  The paper's intent is a clear difference between two answers neither of which is clearly bad, so the
  default (`status2: band`) also asks the worse answer to reach `floor` (tau_low when unset): the pair is
  then not a good-versus-bad contrast, and what tells its answers apart is a finer point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ser.core import check


@dataclass(frozen=True)
class PoolScores:
    """The remaining pool's rewards (answer a = the source's chosen, b = its rejected; the RM scores each
    on its own, so the order leaks nothing) and their confidences under the loop's confidence kind."""

    reward_a: torch.Tensor
    reward_b: torch.Tensor
    p_a: torch.Tensor
    p_b: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        return (self.reward_a - self.reward_b).abs()

    @property
    def high(self) -> torch.Tensor:
        return torch.maximum(self.p_a, self.p_b)

    @property
    def low(self) -> torch.Tensor:
        return torch.minimum(self.p_a, self.p_b)


class SelectionRule:
    """Base class of selection rules."""

    name = "rule"

    def status1(self, scores: PoolScores) -> torch.Tensor:
        raise NotImplementedError

    def status2(self, scores: PoolScores) -> torch.Tensor:
        raise NotImplementedError

    def ranking(self, scores: PoolScores) -> torch.Tensor:
        """Larger first when a cap keeps only some candidates: the reward gap by default."""
        return scores.gap

    def check(self, probability: bool, key: str = "ser.rule") -> None:
        """Refuse settings the confidence kind cannot meet (`probability`: scores lie in [0, 1])."""

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Thresholds(SelectionRule):
    tau_high: float = 0.55
    tau_low: float = 0.45
    delta: float = 0.3
    status2_kind: str = "band"  # band | gap (see the module doc)
    floor: float | None = None  # band: the worse answer's least confidence; None: tau_low

    name = "thresholds"

    def status1(self, scores: PoolScores) -> torch.Tensor:
        return (scores.high > self.tau_high) & (scores.low < self.tau_low)

    def status2(self, scores: PoolScores) -> torch.Tensor:
        clear = (scores.p_a - scores.p_b).abs() > self.delta
        if self.status2_kind == "gap":
            return clear
        return clear & (scores.low >= self.band_floor)

    @property
    def band_floor(self) -> float:
        return self.tau_low if self.floor is None else self.floor

    def check(self, probability: bool, key: str = "ser.rule") -> None:
        check(self.status2_kind in ("band", "gap"), f"{key}.status2_kind",
              f"must be band or gap, got {self.status2_kind!r}")
        check(self.tau_low <= self.tau_high, f"{key}.tau_low",
              f"must not exceed tau_high ({self.tau_low} > {self.tau_high})")
        check(self.delta >= 0, f"{key}.delta", f"must be >= 0, got {self.delta}")
        if probability:
            for name in ("tau_high", "tau_low", "delta", "floor"):
                value = getattr(self, name)
                check(value is None or 0.0 <= value <= 1.0, f"{key}.{name}",
                      f"must be in [0, 1] for a probability-scale confidence, got {value}")

    def describe(self) -> str:
        status2 = "gap" if self.status2_kind == "gap" else f"band>={self.band_floor:g}"
        return f"{self.tau_high:g}/{self.tau_low:g}/{self.delta:g},s2={status2}"


def cap_mask(mask: torch.Tensor, ranking: torch.Tensor, cap: int | None) -> torch.Tensor:
    """Keep at most `cap` of the True entries, highest `ranking` first (ties: topk's fixed order)."""
    if cap is None or int(mask.sum()) <= cap:
        return mask
    ranked = torch.where(mask, ranking.float(), torch.tensor(float("-inf")))
    kept = torch.zeros_like(mask)
    kept[torch.topk(ranked, cap, sorted=False).indices] = True
    return kept


def quantile_strata(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Stratum ids 0..bins-1 of each value: equal-count bins by rank (ties split by position)."""
    order = torch.argsort(values.float(), stable=True)
    strata = torch.empty(len(values), dtype=torch.long)
    strata[order] = torch.arange(len(values)) * bins // max(len(values), 1)
    return strata


def stratified_cap_mask(mask: torch.Tensor, ranking: torch.Tensor, cap: int | None, strata: torch.Tensor) -> torch.Tensor:
    """`cap_mask` with the cap shared across strata: each stratum keeps its best-ranked candidates up to its
    share of the pool (floor(cap * size / pool)), then what is left of the cap goes to the best-ranked
    candidates anywhere. So a stratum where every score gap is small still contributes its clearest pairs
    instead of losing every slot to the stratum with the largest gaps."""
    if cap is None or int(mask.sum()) <= cap:
        return mask
    kept = torch.zeros_like(mask)
    for s in torch.unique(strata):
        members = strata == s
        kept |= cap_mask(mask & members, ranking, cap * int(members.sum()) // len(mask))
    return kept | cap_mask(mask & ~kept, ranking, cap - int(kept.sum()))
