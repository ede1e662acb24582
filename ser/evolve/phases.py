"""Phase schedules: which learning status each SER loop uses, and when the loop stops.

A schedule is a class named by `_target_` in `conf/phases/*.yaml` (`phases=<name>`), or an explicit
list of statuses on the command line (`ser.phases=[1,1,2,2]`, a `Fixed` schedule; its length sets the
number of loops). `choose` sees how many pool pairs each status's predicate keeps this loop and returns
the status to use, or None to stop, with the reason and, when a status fell short of `min_pairs`, a
shortfall the loop reports loudly (console, loops.csv, summary.json).

- Adaptive: status 1 while it keeps >= min_pairs, then status 2 (and stays there); stop when neither does.
  The paper's rule as it describes it ("enough" pairs, about 600 on HH-RLHF).
- Fixed(statuses): the statuses in order, e.g. [1, 1, 2], the schedule of every run the paper reports.
- Union: both predicates in one pass, every loop: the official scripts.
- Status1Only: status 1 while it keeps >= min_pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ser.core import check

STATUSES = ("1", "2")


@dataclass(frozen=True)
class Choice:
    status: str | None  # "1", "2", "union", or None: stop
    reason: str
    shortfall: str = ""

    @property
    def stop(self) -> bool:
        return self.status is None


class PhaseSchedule:
    """Base class of phase schedules."""

    name = "phases"

    def max_loops(self, configured: int) -> int:
        """How many SER loops at most (`ser.max_loops` unless the schedule fixes it)."""
        return configured

    def choose(self, loop: int, previous: str | None, counts: Mapping[str, int], min_pairs: int) -> Choice:
        raise NotImplementedError

    def check(self, key: str = "phases") -> None:
        """Refuse an invalid schedule before anything loads."""

    def describe(self) -> str:
        return self.name


def _kept(status: str, counts: Mapping[str, int]) -> int:
    return counts["union"] if status == "union" else counts[f"status{status}"]


@dataclass(frozen=True)
class Adaptive(PhaseSchedule):
    name = "adaptive"

    def choose(self, loop, previous, counts, min_pairs):
        n1, n2 = counts["status1"], counts["status2"]
        short1 = f"status 1 kept {n1} < min_pairs {min_pairs}"
        if previous != "2" and n1 >= min_pairs:
            return Choice("1", f"status 1 kept {n1} >= min_pairs {min_pairs}")
        if n2 >= min_pairs:
            if previous == "2":
                return Choice("2", f"already in status 2; status 2 kept {n2}")
            return Choice("2", f"{short1}; status 2 kept {n2}", shortfall=f"{short1}: switching to status 2")
        why = f"status 1 kept {n1} and status 2 kept {n2} < min_pairs {min_pairs}"
        return Choice(None, why, shortfall=why)


class _OnePredicate(PhaseSchedule):
    """The same predicate every loop, while it keeps >= min_pairs: `status` as choices name it, `count_key`
    as counts do, `label` as reasons say it."""
    status = count_key = label = ""

    def choose(self, loop, previous, counts, min_pairs):
        n = counts[self.count_key]
        if n >= min_pairs:
            return Choice(self.status, f"{self.label} kept {n} >= min_pairs {min_pairs}")
        why = f"{self.label} kept {n} < min_pairs {min_pairs}"
        return Choice(None, why, shortfall=why)


@dataclass(frozen=True)
class Status1Only(_OnePredicate):
    name = "status1_only"
    status, count_key, label = "1", "status1", "status 1"


@dataclass(frozen=True)
class Union(_OnePredicate):
    name = "union"
    status, count_key, label = "union", "union", "union"


@dataclass(frozen=True)
class Fixed(PhaseSchedule):
    statuses: Sequence[int | str] = field(default_factory=lambda: (1, 1, 2))
    label: str = "fixed"  # the name summaries and tables show (conf/phases/paper.yaml: paper)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label

    @property
    def sequence(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self.statuses)

    def max_loops(self, configured: int) -> int:
        return len(self.sequence)

    def choose(self, loop, previous, counts, min_pairs):
        if not 1 <= loop <= len(self.sequence):
            return Choice(None, f"the phase schedule {list(self.sequence)} has no loop {loop}")
        status = self.sequence[loop - 1]
        n = _kept(status, counts)
        if n >= min_pairs:
            return Choice(status, f"loop {loop} of {list(self.sequence)}: status {status} kept {n} >= min_pairs {min_pairs}")
        why = f"loop {loop} of {list(self.sequence)}: status {status} kept {n} < min_pairs {min_pairs}"
        return Choice(None, why, shortfall=why)

    def check(self, key: str = "phases") -> None:
        check(isinstance(self.statuses, Sequence) and not isinstance(self.statuses, str), key,
              f"must be a list of statuses (1 or 2), got {self.statuses!r}")
        check(len(self.statuses) > 0, key, "must list at least one status (1 or 2), got an empty list")
        bad = [s for s in self.sequence if s not in STATUSES]
        check(not bad, key, f"statuses must be 1 or 2, got {bad} in {list(self.statuses)}")

    def describe(self) -> str:
        return f"{self.label}[{','.join(self.sequence)}]"
