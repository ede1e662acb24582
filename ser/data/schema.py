"""The one preference schema every adapter produces, and the record of rows it could not use."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PreferencePair:
    """One labeled comparison: `chosen` is preferred over `rejected` for `prompt`.

    Responses never repeat the prompt. Scores are the source's own ratings, when it has any.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    score_chosen: float | None = None
    score_rejected: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RowIssue:
    """Why one source row produced no pair: where it was, which field, and the reason."""

    source: str  # file path or hub name (+ split)
    row: int  # 0-based index in that source
    reason: str  # short machine-readable reason, e.g. "missing_field", "empty_text"
    field: str | None = None
    detail: str = ""

    def describe(self) -> str:
        where = f"{self.source}, row {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class LoadReport:
    """What loading saw: rows read, pairs kept, and every skipped row with its reason.

    Nothing is dropped silently: `issues` holds each skipped row, `counts` sums them per reason.
    """

    source: str
    rows_read: int = 0
    pairs_kept: int = 0
    issues: list[RowIssue] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)  # counted but kept (e.g. "tie_scores")

    def skip(self, row: int, reason: str, field_name: str | None = None, detail: str = "") -> None:
        self.issues.append(RowIssue(self.source, row, reason, field_name, detail))

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(issue.reason for issue in self.issues))

    def to_dict(self, max_examples: int = 20) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "pairs_kept": self.pairs_kept,
            "skipped": len(self.issues),
            "skipped_by_reason": self.counts,
            "notes": dict(self.notes),
            "examples": [issue.describe() for issue in self.issues[:max_examples]],
        }
