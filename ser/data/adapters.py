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
import os
import random
from collections.abc import Callable, Iterable, Mapping
from itertools import combinations
from typing import Any, NamedTuple

from ser.data.fields import (  # noqa: F401  (RowError, Located, SCHEMA_FIELDS: what readers and callers import from here)
    EXCERPTS, SCHEMA_FIELDS, Located, RowContext, RowError, excerpt, field_value, flat_pair, id_field, list_field,
    mapping_field, number_field, row_id, text_field, wrong_type)
from ser.data.formats import PREFERENCE_FORMATS, trl_pair
from ser.data.schema import LoadReport, PreferencePair

HH_MARKER = "\n\nAssistant:"
Adapter = Callable[..., PreferencePair | list[PreferencePair]]

# ---- the adapters ----


def hh_rlhf(row: Mapping, ctx: RowContext) -> PreferencePair:
    """Anthropic HH: two full transcripts that share everything up to the final assistant turn."""
    if "prompt" in row:
        return flat_pair(row, ctx)
    chosen_full, rejected_full = text_field(row, "chosen"), text_field(row, "rejected")
    # Cutting the common prefix back to its last marker also handles the few HH rows whose
    # responses contain extra turns: the prompt ends at the last marker both really share.
    common = os.path.commonprefix([chosen_full, rejected_full])
    end = common.rfind(HH_MARKER)
    if end < 0:
        raise RowError("bad_transcript", "chosen", "no shared '\\n\\nAssistant:' turn")
    end += len(HH_MARKER)
    return PreferencePair(
        id=row_id(row, ctx),
        prompt=chosen_full[:end].lstrip("\n"),
        chosen=chosen_full[end:].strip(),
        rejected=rejected_full[end:].strip(),
    )


def ultrafeedback(row: Mapping, ctx: RowContext) -> PreferencePair:
    """UltraFeedback binarized: H4 (prompt + chats), trl-lib (chats only) or plain strings; every message kept."""
    return trl_pair(row, ctx)


class _Answer(NamedTuple):
    id: str
    text: str
    score: float


def _se_answers(row: Mapping) -> list[_Answer]:
    answers = []
    for i, answer in enumerate(list_field(row, "answers")):
        where = f"answers[{i}]"
        if not isinstance(answer, Mapping):
            raise wrong_type(where, "an answer object", answer)
        score = number_field(answer, "pm_score", f"{where}.pm_score")
        if score is None:
            raise RowError("missing_field", f"{where}.pm_score")
        answers.append(
            _Answer(
                id_field(answer, "answer_id", f"{where}.answer_id"),
                text_field(answer, "text", f"{where}.text"),
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
        return flat_pair(row, ctx)
    qid, question = id_field(row, "qid"), text_field(row, "question")
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
    info = mapping_field(row, "info")
    subreddit = text_field(info, "subreddit", "info.subreddit")
    title = text_field(info, "title", "info.title")
    post = text_field(info, "post", "info.post")
    summaries = list_field(row, "summaries")
    if len(summaries) != 2:
        raise RowError("wrong_type", "summaries", f"expected 2 summaries, got {len(summaries)}")
    texts = []
    for i, summary in enumerate(summaries):
        if not isinstance(summary, Mapping):
            raise wrong_type(f"summaries[{i}]", "a summary object", summary)
        texts.append(text_field(summary, "text", f"summaries[{i}].text").strip())
    choice = field_value(row, "choice")
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
        pair, confidence = flat_pair(row, ctx), number_field(row, "confidence")
    else:
        pair = _tldr_comparison(row, ctx)
        extra = row.get("extra")
        confidence = number_field(extra, "confidence", "extra.confidence") if isinstance(extra, Mapping) else None
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
        raise wrong_type("row", "an object", row)
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
            report.skip(index, err.reason, err.field, err.detail, line, excerpt(row) if keep else "")

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
