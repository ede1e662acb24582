"""The one preference schema every adapter produces, and the record of rows it could not use."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def flatten(messages: Sequence[Mapping[str, str]]) -> str:
    """A prompt conversation as text: a lone user message as is, else "Role: content" turns."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


class DataError(ValueError):
    """A source that yields no usable pair; `reports` say what loading saw, row by row."""

    def __init__(self, message: str, reports: "list[LoadReport]") -> None:
        super().__init__(message)
        self.reports = reports


@dataclass(frozen=True)
class PreferencePair:
    """One labeled comparison: `chosen` is preferred over `rejected` for `prompt`.

    Responses never repeat the prompt. Scores are the source's own ratings, when it has any.
    Conversational data keeps its messages in `conversation` ({"prompt": [...], "chosen": [...],
    "rejected": [...]}, each a list of {role, content}: system and earlier turns included), so a chat
    template renders them whole; `prompt`, `chosen` and `rejected` are then their flattened text.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    score_chosen: float | None = None
    score_rejected: float | None = None
    conversation: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["conversation"] is None:
            del out["conversation"]
        return out

    def swapped(self) -> "PreferencePair":
        """The same comparison with the labels the other way round."""
        conv = self.conversation
        return PreferencePair(self.id, self.prompt, self.rejected, self.chosen, self.score_rejected, self.score_chosen,
                              None if conv is None else {**conv, "chosen": conv["rejected"], "rejected": conv["chosen"]})


@dataclass(frozen=True)
class RowIssue:
    """Why one source row produced no pair: where it was, which field, and the reason."""

    source: str  # file path or hub name (+ split)
    row: int  # 0-based index in that source
    reason: str  # short machine-readable reason, e.g. "missing_field", "empty_text"
    field: str | None = None
    detail: str = ""
    line: int | None = None  # 1-based line in a text file (jsonl, csv, json lines), as editors count
    excerpt: str = ""  # the start of the raw row, for the first few issues of a source

    def describe(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else f"{self.source}, row {self.row + 1}"
        what = f"{self.reason}" + (f" in field '{self.field}'" if self.field else "") + (f" ({self.detail})" if self.detail else "")
        return f"{where}: {what}" + (f": {self.excerpt}" if self.excerpt else "")


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

    def skip(self, row: int, reason: str, field_name: str | None = None, detail: str = "", line: int | None = None,
             excerpt: str = "") -> None:
        self.issues.append(RowIssue(self.source, row, reason, field_name, detail, line, excerpt))

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
