"""Source-format adapters: each maps one raw row to PreferencePair(s), or says why it cannot.

An adapter is `fn(row, ctx, **options) -> PreferencePair | list[PreferencePair]` and raises
`RowError` for a row it cannot use. `adapt_rows` runs one over a whole source, applies the
checks common to every format, and records each skipped row in the `LoadReport`, so a bad
row is counted with its position and reason instead of crashing a long run.

Reasons: missing_field, wrong_type, empty_text, identical_pair, duplicate_id, no_pairs,
bad_transcript, tie_scores, low_confidence (and malformed_json, set by the file readers).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from numbers import Real
from typing import Any, NamedTuple

from ser.data.schema import LoadReport, PreferencePair, flatten

SCHEMA_FIELDS = ("id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected")
HH_MARKER = "\n\nAssistant:"


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


def _excerpt(row: Any, width: int = 160) -> str:
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


Adapter = Callable[..., PreferencePair | list[PreferencePair]]


# ---- field access: every bad value becomes a RowError naming the field ----


def _value(row: Mapping, key: str, where: str | None = None) -> Any:
    # A null is as good as absent: hub datasets fill missing columns with None.
    value = row.get(key)
    if value is None:
        raise RowError("missing_field", where or key)
    return value


def _wrong_type(where: str, expected: str, value: Any) -> RowError:
    return RowError("wrong_type", where, f"expected {expected}, got {type(value).__name__}")


def _text(row: Mapping, key: str, where: str | None = None) -> str:
    value = _value(row, key, where)
    if not isinstance(value, str):
        raise _wrong_type(where or key, "text", value)
    return value


def _mapping(row: Mapping, key: str, where: str | None = None) -> Mapping:
    value = _value(row, key, where)
    if not isinstance(value, Mapping):
        raise _wrong_type(where or key, "an object", value)
    return value


def _list(row: Mapping, key: str, where: str | None = None) -> Sequence:
    value = _value(row, key, where)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _wrong_type(where or key, "a list", value)
    return value


def _number(row: Mapping, key: str, where: str | None = None) -> float | None:
    """A score: None when absent or blank (csv), a float otherwise; numeric strings accepted."""
    value = row.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (Real, str)):
        raise _wrong_type(where or key, "a number", value)
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float (JSON allows it)
        raise _wrong_type(where or key, "a number", value) from None
    return None if math.isnan(number) else number  # parquet/pandas write missing scores as NaN


def _id_text(row: Mapping, key: str, where: str | None = None) -> str:
    value = _value(row, key, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _wrong_type(where or key, "a string or integer id", value)
    try:
        return str(value)
    except ValueError:  # an integer past Python's int->str digit limit
        raise _wrong_type(where or key, "a string or integer id", value) from None


def _row_id(row: Mapping, ctx: RowContext, key: str = "id") -> str:
    return _id_text(row, key) if row.get(key) is not None else ctx.default_id()


def _flat_pair(row: Mapping, ctx: RowContext, field_map: Mapping[str, str] | None = None) -> PreferencePair:
    """A row already in schema form; `field_map` renames schema fields to source columns."""
    column = {name: name for name in SCHEMA_FIELDS} | dict(field_map or {})
    return PreferencePair(
        id=_row_id(row, ctx, column["id"]),
        prompt=_text(row, column["prompt"]),
        chosen=_text(row, column["chosen"]),
        rejected=_text(row, column["rejected"]),
        score_chosen=_number(row, column["score_chosen"]),
        score_rejected=_number(row, column["score_rejected"]),
    )


# ---- the adapters ----


def hh_rlhf(row: Mapping, ctx: RowContext) -> PreferencePair:
    """Anthropic HH: two full transcripts that share everything up to the final assistant turn."""
    if "prompt" in row:
        return _flat_pair(row, ctx)
    chosen_full, rejected_full = _text(row, "chosen"), _text(row, "rejected")
    # Cutting the common prefix back to its last marker also handles the few HH rows whose
    # responses contain extra turns: the prompt ends at the last marker both really share.
    common = os.path.commonprefix([chosen_full, rejected_full])
    end = common.rfind(HH_MARKER)
    if end < 0:
        raise RowError("bad_transcript", "chosen", "no shared '\\n\\nAssistant:' turn")
    end += len(HH_MARKER)
    return PreferencePair(
        id=_row_id(row, ctx),
        prompt=chosen_full[:end].lstrip("\n"),
        chosen=chosen_full[end:].strip(),
        rejected=rejected_full[end:].strip(),
    )


def _messages(row: Mapping, key: str) -> list[dict[str, str]]:
    messages = _list(row, key)
    if not messages:
        raise RowError("bad_transcript", key, "empty message list")
    out = []
    for i, message in enumerate(messages):
        where = f"{key}[{i}]"
        if not isinstance(message, Mapping):
            raise _wrong_type(where, "a {role, content} message", message)
        out.append({"role": _text(message, "role", f"{where}.role"), "content": _text(message, "content", f"{where}.content")})
    return out


PREFERENCE_FORMATS = ("auto", "standard", "conversational")


def _completion(messages: list[dict[str, str]], key: str) -> str:
    """A conversational completion: one assistant message (what the RM scores)."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise RowError("bad_transcript", key, f"the completion after the shared prompt must be one assistant message, got {roles}")
    return messages[0]["content"]


def trl_pair(row: Mapping, ctx: RowContext, preference_format: str = "auto",
             columns: Mapping[str, str] | None = None) -> PreferencePair:
    """A row in any of TRL's preference formats: standard (text) or conversational ({role, content} lists),
    with an explicit `prompt` or an implicit one (the shared start of `chosen` and `rejected`).

    Conversations keep every message (system and earlier turns) for a chat template; the prompt is
    found with TRL's own `maybe_extract_prompt`, so what TRL accepts, this accepts.
    """
    from trl.data_utils import extract_prompt, maybe_extract_prompt

    col = {name: name for name in SCHEMA_FIELDS} | dict(columns or {})
    values = {k: row.get(col[k]) for k in ("prompt", "chosen", "rejected")}
    if values["prompt"] is not None and not isinstance(values["prompt"], (str, list)):
        raise _wrong_type(col["prompt"], "text or a list of messages", values["prompt"])
    for key in ("chosen", "rejected"):
        if values[key] is None:
            raise RowError("missing_field", col[key])
    conversational = isinstance(values["chosen"], list) or isinstance(values["rejected"], list)
    if preference_format != "auto" and preference_format != ("conversational" if conversational else "standard"):
        raise RowError("wrong_format", col["chosen"], f"a {'conversational' if conversational else 'standard'} row "
                                                      f"in a source named format={preference_format}")
    scores = {"score_chosen": _number(row, col["score_chosen"]), "score_rejected": _number(row, col["score_rejected"])}
    if not conversational:
        chosen, rejected = _text(row, col["chosen"]), _text(row, col["rejected"])
        if values["prompt"] is None:  # implicit prompt: the shared start of both texts
            if not chosen.strip() or not rejected.strip():
                raise RowError("empty_text", col["chosen"] if not chosen.strip() else col["rejected"])
            parts = extract_prompt({"chosen": chosen, "rejected": rejected})
            return PreferencePair(_row_id(row, ctx, col["id"]), parts["prompt"].strip(), parts["chosen"].strip(),
                                  parts["rejected"].strip(), **scores)
        return PreferencePair(_row_id(row, ctx, col["id"]), _text(row, col["prompt"]), chosen, rejected, **scores)
    example = {"chosen": _messages(row, col["chosen"]), "rejected": _messages(row, col["rejected"])}
    if values["prompt"] is not None:
        example["prompt"] = values["prompt"] if isinstance(values["prompt"], str) else _messages(row, col["prompt"])
    parts = maybe_extract_prompt(example)
    prompt = parts["prompt"]
    if isinstance(prompt, str):  # a text prompt beside conversational completions
        prompt = [{"role": "user", "content": prompt}]
    if not prompt:
        raise RowError("bad_transcript", col["chosen"], "chosen and rejected share no prompt messages")
    conversation = {"prompt": list(prompt), "chosen": list(parts["chosen"]), "rejected": list(parts["rejected"])}
    return PreferencePair(_row_id(row, ctx, col["id"]), flatten(conversation["prompt"]),
                          _completion(conversation["chosen"], col["chosen"]),
                          _completion(conversation["rejected"], col["rejected"]), **scores, conversation=conversation)


def ultrafeedback(row: Mapping, ctx: RowContext) -> PreferencePair:
    """UltraFeedback binarized: H4 (prompt + chats), trl-lib (chats only) or plain strings; every message kept."""
    return trl_pair(row, ctx)


class _Answer(NamedTuple):
    id: str
    text: str
    score: float


def _se_answers(row: Mapping) -> list[_Answer]:
    answers = []
    for i, answer in enumerate(_list(row, "answers")):
        where = f"answers[{i}]"
        if not isinstance(answer, Mapping):
            raise _wrong_type(where, "an answer object", answer)
        score = _number(answer, "pm_score", f"{where}.pm_score")
        if score is None:
            raise RowError("missing_field", f"{where}.pm_score")
        answers.append(
            _Answer(
                _id_text(answer, "answer_id", f"{where}.answer_id"),
                _text(answer, "text", f"{where}.text"),
                score,
            )
        )
    return answers


def stack_exchange(
    row: Mapping, ctx: RowContext, max_pairs_per_question: int = 10, seed: int = 0
) -> PreferencePair | list[PreferencePair]:
    """H4 stack-exchange-preferences: every answer pair with different pm_score, capped per question."""
    cap = max_pairs_per_question
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"max_pairs_per_question must be a positive integer, got {cap!r}")
    if "answers" not in row:
        return _flat_pair(row, ctx)
    qid, question = _id_text(row, "qid"), _text(row, "question")
    ranked = [
        (a, b) if a.score > b.score else (b, a)
        for a, b in combinations(_se_answers(row), 2)
        if a.score != b.score
    ]
    if len(ranked) > cap:
        # Seeded per question, so a question's sample does not depend on which rows came before.
        keep = random.Random(f"{seed}-{qid}").sample(range(len(ranked)), cap)
        ranked = [ranked[i] for i in sorted(keep)]
    return [
        PreferencePair(f"se-{qid}-{good.id}-{bad.id}", question, good.text, bad.text, good.score, bad.score)
        for good, bad in ranked
    ]


def _tldr_comparison(row: Mapping, ctx: RowContext) -> PreferencePair:
    info = _mapping(row, "info")
    subreddit = _text(info, "subreddit", "info.subreddit")
    title = _text(info, "title", "info.title")
    post = _text(info, "post", "info.post")
    summaries = _list(row, "summaries")
    if len(summaries) != 2:
        raise RowError("wrong_type", "summaries", f"expected 2 summaries, got {len(summaries)}")
    texts = []
    for i, summary in enumerate(summaries):
        if not isinstance(summary, Mapping):
            raise _wrong_type(f"summaries[{i}]", "a summary object", summary)
        texts.append(_text(summary, "text", f"summaries[{i}].text").strip())
    choice = _value(row, "choice")
    if isinstance(choice, bool) or not isinstance(choice, int) or choice not in (0, 1):  # 1.0 cannot index
        shown = repr(choice) if isinstance(choice, int) and abs(choice) < 10**40 else type(choice).__name__
        raise RowError("wrong_type", "choice", f"expected 0 or 1, got {shown}")
    batch = row.get("batch")
    return PreferencePair(
        id=f"tldr-{batch}-{ctx.index}" if isinstance(batch, str) else ctx.default_id(),
        prompt=f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:",
        chosen=texts[choice],
        rejected=texts[1 - choice],
    )


def summarize(row: Mapping, ctx: RowContext, min_confidence: float | None = None) -> PreferencePair:
    """OpenAI summarize-from-feedback comparisons (raw, or already converted)."""
    if "prompt" in row:
        pair, confidence = _flat_pair(row, ctx), _number(row, "confidence")
    else:
        pair = _tldr_comparison(row, ctx)
        extra = row.get("extra")
        confidence = _number(extra, "confidence", "extra.confidence") if isinstance(extra, Mapping) else None
    if min_confidence is not None and (confidence is None or confidence < min_confidence):
        raise RowError("low_confidence", "confidence", f"{confidence} < {min_confidence}")
    return pair


def generic(row: Mapping, ctx: RowContext, field_map: Mapping[str, str] | None = None,
            preference_format: str = "auto") -> PreferencePair:
    """Any row in a TRL preference format (standard or conversational, explicit or implicit prompt);
    `field_map` maps schema names to source columns (unmapped: same name)."""
    unknown = set(field_map or {}) - set(SCHEMA_FIELDS)
    if unknown:
        raise ValueError(f"field_map keys must be among {SCHEMA_FIELDS}, got {sorted(unknown)}")
    if preference_format not in PREFERENCE_FORMATS:
        raise ValueError(f"data.source.format must be one of {PREFERENCE_FORMATS}, got {preference_format!r}")
    return trl_pair(row, ctx, preference_format, field_map)


ADAPTERS: dict[str, Adapter] = {
    "hh_rlhf": hh_rlhf,
    "ultrafeedback": ultrafeedback,
    "stack_exchange": stack_exchange,
    "summarize": summarize,
    "generic": generic,
}


# ---- running an adapter over a source ----


def _adapter(name: str, options: Mapping[str, Any]) -> Adapter:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {', '.join(sorted(ADAPTERS))}")
    adapter = ADAPTERS[name]
    try:  # a misspelt option fails here, before any row is read
        inspect.signature(adapter).bind(None, None, **options)
    except TypeError as err:
        raise ValueError(f"adapter {name!r} does not accept options {sorted(options)}: {err}") from None
    return adapter


def _pairs_of(
    adapter: Adapter, row: Any, ctx: RowContext, options: Mapping[str, Any]
) -> list[PreferencePair]:
    if isinstance(row, RowError):  # a reader could not parse this row but kept its place
        raise row
    if not isinstance(row, Mapping):
        raise _wrong_type("row", "an object", row)
    result = adapter(row, ctx, **options)
    pairs = [result] if isinstance(result, PreferencePair) else list(result)
    if not pairs:
        raise RowError("no_pairs", None, "the row yields no comparison")
    return pairs


def _check(pair: PreferencePair, seen_ids: set[str], drop_ties: bool) -> None:
    for name in ("prompt", "chosen", "rejected"):
        if not getattr(pair, name).strip():
            raise RowError("empty_text", name)
    if pair.chosen.strip() == pair.rejected.strip():
        raise RowError("identical_pair", "rejected", "chosen and rejected are the same text")
    if pair.id in seen_ids:
        raise RowError("duplicate_id", "id", pair.id)
    if drop_ties and _is_tie(pair):
        raise RowError("tie_scores", "score_chosen", f"both scored {pair.score_chosen}")


def _is_tie(pair: PreferencePair) -> bool:
    return pair.score_chosen is not None and pair.score_chosen == pair.score_rejected


def adapt_rows(
    rows: Iterable[Mapping],
    adapter: str,
    report: LoadReport,
    *,
    drop_ties: bool = False,
    id_prefix: str | None = None,
    seen_ids: set[str] | None = None,
    limit: int | None = None,
    **options: Any,
) -> list[PreferencePair]:
    """Adapt every row of one source, validating each pair; bad rows go to `report`, never raise.

    Row indices are positions in `rows`; a `RowError` in place of a row is recorded as is.
    Ties are kept and counted in `report.notes["tie_scores"]` unless `drop_ties`.
    `id_prefix` names the source in derived ids (default `report.source`); `seen_ids`
    carries id uniqueness across sources; reading stops once `limit` pairs are kept.
    """
    run = _adapter(adapter, options)
    seen = set() if seen_ids is None else seen_ids
    prefix = report.source if id_prefix is None else id_prefix
    kept: list[PreferencePair] = []
    for index, item in enumerate(rows):
        if limit is not None and len(kept) >= limit:
            break
        line, row = (item.line, item.row) if isinstance(item, Located) else (None, item)
        report.rows_read += 1

        def skip(err: RowError) -> None:
            keep = len(report.issues) < EXCERPTS and not isinstance(row, RowError)
            report.skip(index, err.reason, err.field, err.detail, line, _excerpt(row) if keep else "")

        try:
            pairs = _pairs_of(run, row, RowContext(index, prefix), options)
        except RowError as err:
            skip(err)
            continue
        for pair in pairs:
            if limit is not None and len(kept) >= limit:
                break
            try:
                _check(pair, seen, drop_ties)
            except RowError as err:
                skip(err)
                continue
            seen.add(pair.id)
            if _is_tie(pair):
                report.notes["tie_scores"] += 1
            kept.append(pair)
    report.pairs_kept += len(kept)
    return kept
