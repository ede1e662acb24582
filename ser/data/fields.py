"""Reading one field of a raw row: every bad value becomes a RowError naming the field (and the row's place)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any, NamedTuple

from ser.data.schema import PreferencePair

SCHEMA_FIELDS = ("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected")


class RowError(Exception):
    """A row that yields no pair: the reason, the offending field and a short detail."""

    def __init__(self, reason: str, field: str | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}: {field or '-'} {detail}".rstrip())
        self.reason = reason
        self.field = field
        self.detail = detail


class Located(NamedTuple):
    """A row as a file reader yields it: with its 1-based line, so a bad row is reported as file:line."""

    line: int
    row: Any


EXCERPTS = 20  # issues per source that keep the start of their raw row


def excerpt(row: Any, width: int = 160) -> str:
    try:
        text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(row)
        except (ValueError, RecursionError):  # an integer past the digit limit, nesting too deep
            text = f"<a {type(row).__name__} that cannot be printed>"
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class RowContext:
    """Where a row sits, so adapters can give id-less rows a stable id."""

    index: int  # 0-based position in its source
    id_prefix: str  # names the source (file stem, hub name + split)

    def default_id(self) -> str:
        return f"{self.id_prefix}-{self.index}"




# ---- field access: every bad value becomes a RowError naming the field ----


def field_value(row: Mapping, key: str, where: str | None = None) -> Any:
    # A null is as good as absent: hub datasets fill missing columns with None.
    value = row.get(key)
    if value is None:
        raise RowError("missing_field", where or key)
    return value


def wrong_type(where: str, expected: str, value: Any) -> RowError:
    return RowError("wrong_type", where, f"expected {expected}, got {type(value).__name__}")


def text_field(row: Mapping, key: str, where: str | None = None) -> str:
    value = field_value(row, key, where)
    if not isinstance(value, str):
        raise wrong_type(where or key, "text", value)
    return value


def mapping_field(row: Mapping, key: str, where: str | None = None) -> Mapping:
    value = field_value(row, key, where)
    if not isinstance(value, Mapping):
        raise wrong_type(where or key, "an object", value)
    return value


def list_field(row: Mapping, key: str, where: str | None = None) -> Sequence:
    value = field_value(row, key, where)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise wrong_type(where or key, "a list", value)
    return value


def number_field(row: Mapping, key: str, where: str | None = None) -> float | None:
    """A score: None when absent or blank (csv), a float otherwise; numeric strings accepted."""
    value = row.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (Real, str)):
        raise wrong_type(where or key, "a number", value)
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float (JSON allows it)
        raise wrong_type(where or key, "a number", value) from None
    return None if math.isnan(number) else number  # parquet/pandas write missing scores as NaN


def id_field(row: Mapping, key: str, where: str | None = None) -> str:
    value = field_value(row, key, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise wrong_type(where or key, "a string or integer id", value)
    try:
        return str(value)
    except ValueError:  # an integer past Python's int->str digit limit
        raise wrong_type(where or key, "a string or integer id", value) from None


def row_id(row: Mapping, ctx: RowContext, key: str = "id") -> str:
    return id_field(row, key) if row.get(key) is not None else ctx.default_id()


def flat_pair(row: Mapping, ctx: RowContext, field_map: Mapping[str, str] | None = None) -> PreferencePair:
    """A row already in schema form; `field_map` renames schema fields to source columns."""
    column = {name: name for name in SCHEMA_FIELDS} | dict(field_map or {})
    return PreferencePair(
        id=row_id(row, ctx, column["id"]),
        prompt=text_field(row, column["prompt"]),
        chosen=text_field(row, column["chosen"]),
        rejected=text_field(row, column["rejected"]),
        score_chosen=number_field(row, column["score_chosen"]),
        score_rejected=number_field(row, column["score_rejected"]),
    )
