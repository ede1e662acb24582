"""Bad input, generated: every row is kept or counted with a reason; a bad file is an error naming it.

`adapt_rows` gets random rows (valid rows of each format, mutated: fields dropped, added, replaced by
random JSON of any type; random unicode, empty, blank and huge strings; huge integers; duplicates)
and must never raise. `load_pairs` gets such rows written as files (jsonl, gzip, json array, csv) and
damaged files (truncated gzip, junk bytes, 0 rows); it must return a consistent report or raise a
ValueError / FileNotFoundError whose message names the file, and nothing else.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ser.data.adapters import ADAPTERS, adapt_rows
from ser.data.loading import load_pairs
from ser.data.schema import LoadReport, PreferencePair

SETTINGS = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
REASONS = {"missing_field", "wrong_type", "empty_text", "identical_pair", "duplicate_id", "no_pairs",
           "bad_transcript", "tie_scores", "low_confidence", "malformed_json"}
SINGLE_PAIR = sorted(set(ADAPTERS) - {"stack_exchange"})  # stack_exchange turns one row into several pairs

# ---- values ----

FIELDS = ["id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "answers", "qid", "question",
          "pm_score", "answer_id", "text", "info", "subreddit", "title", "post", "summaries", "choice", "batch",
          "extra", "confidence", "role", "content", "messages"]
huge_text = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(10_000, 300_000))
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\n\t ", "\x00", "\u200b", "\ud800", "𝔘𝔫𝔦"]),
                  huge_text)
# 10**4000 overflows float() but still prints (Python refuses int->str past 4300 digits: see the test at the end)
numbers = st.one_of(st.integers(), st.floats(), st.sampled_from([10**400, -(10**4000), 0, 1, 1.0, 0.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
# Values that confuse types: numbers where text goes, floats where integers go, blanks, containers.
TRICKY = [None, True, False, 0, 1, 2, -1, 0.0, 1.0, 0.5, float("nan"), float("inf"), -float("inf"), 10**400,
          -(10**4000), "", " ", "\n", "0", "1", "nan", "1e999", "\ud800", "x" * 100_000, [], [None], [""], {},
          {"role": "user"}, {"text": None}, [{"role": "assistant", "content": ""}]]
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                           max_leaves=8)


def _chat(user: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


# One valid row per input format each adapter accepts; mutations start from these.
VALID = {
    "generic": [{"id": "g1", "prompt": "P", "chosen": "good", "rejected": "bad", "score_chosen": 2, "score_rejected": 1}],
    "hh_rlhf": [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."},
                {"id": "h2", "prompt": "P", "chosen": "good", "rejected": "bad"}],
    "ultrafeedback": [{"prompt": "P", "chosen": _chat("P", "good"), "rejected": _chat("P", "bad"),
                       "score_chosen": 8.0, "score_rejected": 3.0},
                      {"chosen": _chat("P", "good"), "rejected": _chat("P", "bad")},
                      {"id": "u3", "prompt": "P", "chosen": "good", "rejected": "bad"}],
    "stack_exchange": [{"qid": 7, "question": "Q", "answers": [{"answer_id": 1, "text": "best", "pm_score": 3},
                                                             {"answer_id": 2, "text": "ok", "pm_score": 1},
                                                             {"answer_id": 3, "text": "worst", "pm_score": 0}]},
                       {"id": "s2", "prompt": "P", "chosen": "good", "rejected": "bad"}],
    "summarize": [{"info": {"subreddit": "cats", "title": "T", "post": "My cat."}, "batch": "b1",
                   "summaries": [{"text": "Cat."}, {"text": "Dog."}], "choice": 0, "extra": {"confidence": 7}},
                  {"id": "t2", "prompt": "P", "chosen": "good", "rejected": "bad", "confidence": 5}],
}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a row (dict keys, list positions) a mutation can hit."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, prefix + (i,))
    return found


@st.composite
def rows_for(draw, adapter: str) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)  # anything at all, rows that are not objects included
    row = copy.deepcopy(draw(st.sampled_from(VALID[adapter])))
    for _ in range(draw(st.integers(0, 3))):
        places = _paths(row)
        op = draw(st.sampled_from(["drop", "replace", "extra"]))
        if op == "extra" or not places:
            row[draw(keys)] = copy.deepcopy(draw(json_values))
            continue
        *parent_path, last = draw(st.sampled_from(places))
        parent = row
        for step in parent_path:
            parent = parent[step]
        if op == "drop":
            del parent[last]
        else:
            # a copy: later ops may edit inside it, and the TRICKY constants must stay as they are
            parent[last] = copy.deepcopy(draw(st.one_of(st.sampled_from(TRICKY), json_values, texts)))
    return row


@st.composite
def row_lists(draw, adapter: str) -> list[Any]:
    rows = draw(st.lists(rows_for(adapter), max_size=6))
    if rows and draw(st.booleans()):  # a duplicated row: duplicate_id, or the same derived ids
        rows.insert(draw(st.integers(0, len(rows))), copy.deepcopy(draw(st.sampled_from(rows))))
    return rows


# ---- the invariants ----


def check_report(report: LoadReport, pairs: list[PreferencePair], n_rows: int | None, adapter: str) -> None:
    if n_rows is not None:
        assert report.rows_read == n_rows
    assert report.pairs_kept == len(pairs)
    rows_with_issue = {issue.row for issue in report.issues}
    if adapter in SINGLE_PAIR:  # every row read is kept or skipped, exactly once
        assert report.rows_read == report.pairs_kept + len(report.issues)
        assert len(rows_with_issue) == len(report.issues)
    else:  # one row may give several pairs and several issues, but no row vanishes
        assert report.rows_read <= report.pairs_kept + len(report.issues)
        assert report.rows_read - len(rows_with_issue) <= report.pairs_kept
    for issue in report.issues:
        assert issue.reason in REASONS, issue
        assert 0 <= issue.row < report.rows_read or issue.source != report.source
        assert isinstance(issue.describe(), str)
    json.dumps(report.to_dict())  # data_report.json can always be written
    assert sum(report.counts.values()) == len(report.issues)
    ids = [p.id for p in pairs]
    assert len(ids) == len(set(ids))
    for pair in pairs:
        assert all(isinstance(getattr(pair, f), str) for f in ("id", "prompt", "chosen", "rejected"))
        assert pair.prompt.strip() and pair.chosen.strip() and pair.rejected.strip()
        assert pair.chosen.strip() != pair.rejected.strip()
        assert all(s is None or isinstance(s, float) for s in (pair.score_chosen, pair.score_rejected))


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@SETTINGS
@given(data=st.data())
def test_adapt_rows_keeps_or_counts_every_row_and_never_raises(adapter, data):
    rows = data.draw(row_lists(adapter))
    report = LoadReport(source="src")
    pairs = adapt_rows(rows, adapter, report)  # any exception fails the test
    check_report(report, pairs, len(rows), adapter)


def _replaced(row: Any, place: tuple, value: Any) -> Any:
    row = copy.deepcopy(row)
    *parent_path, last = place
    parent = row
    for step in parent_path:
        parent = parent[step]
    parent[last] = value
    return row


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_every_field_of_every_format_replaced_by_every_tricky_value(adapter):
    """Exhaustive, not sampled: each place in each valid row, set to each tricky value (or removed)."""
    rows = []
    for valid in VALID[adapter]:
        for place in _paths(valid):
            rows += [_replaced(valid, place, value) for value in TRICKY]
            parent = _replaced(valid, place, None)
            rows.append(parent)
    for row in rows:  # one at a time: a failure names the row
        report = LoadReport(source="src")
        try:
            pairs = adapt_rows([row], adapter, report)
        except Exception as err:  # noqa: BLE001 - any exception is the failure being tested for
            raise AssertionError(f"{adapter} raised {type(err).__name__}: {err} on row {str(row)[:300]}") from err
        check_report(report, pairs, 1, adapter)


@SETTINGS
@given(rows=row_lists("generic"), drop_ties=st.booleans(), limit=st.one_of(st.none(), st.integers(1, 4)))
def test_adapt_rows_with_limit_and_drop_ties(rows, drop_ties, limit):
    report = LoadReport(source="src")
    pairs = adapt_rows(rows, "generic", report, drop_ties=drop_ties, limit=limit)
    check_report(report, pairs, None if limit else len(rows), "generic")
    assert limit is None or len(pairs) <= limit
    assert report.rows_read <= len(rows)


# ---- files ----

safe_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # encodable as UTF-8


def _dump(row: Any) -> str:
    try:
        return json.dumps(row)
    except ValueError:  # an integer past Python's int->str digit limit: write its digits as they would be
        return '{"prompt": "P", "chosen": "a", "rejected": "b", "score_chosen": ' + "9" * 5000 + "}"


def _write(path: Path, rows: list[Any], fmt: str, junk: list[bytes]) -> None:
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["id", "prompt", "chosen", "rejected", "extra"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if isinstance(v, str)} for r in rows if isinstance(r, dict))
        data = buffer.getvalue().encode("utf-8", "surrogatepass")  # a lone surrogate makes invalid UTF-8
    elif fmt == "json":
        data = ("[" + ",\n".join(_dump(r) for r in rows) + "]").encode()
    else:  # jsonl, with junk lines (bytes that need not be JSON or even UTF-8) and blank lines among the rows
        lines = [_dump(r).encode() for r in rows] + junk
        data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "property_files"
    folder.mkdir(exist_ok=True)
    return folder


def _load_or_named_error(path: Path, adapter: str) -> tuple[list[PreferencePair], LoadReport] | None:
    try:
        return load_pairs({"adapter": adapter, "path": str(path)})
    except (ValueError, FileNotFoundError) as err:
        assert path.name in str(err), f"the error does not name the file: {err}"
        return None


@pytest.mark.parametrize("adapter", ["generic", "stack_exchange", "ultrafeedback"])
@SETTINGS
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "jsonl.gz", "json", "csv"]),
       junk=st.lists(st.one_of(st.binary(max_size=20), safe_texts.map(str.encode), st.just(b""),
                               st.just(b"1" * 5000), st.just(b"[" * 5000)), max_size=3))
def test_load_pairs_reports_every_row_or_names_the_file(adapter, data, fmt, junk, tmp_path_factory):
    rows = data.draw(row_lists(adapter))
    path = _scratch(tmp_path_factory) / f"data.{fmt}"  # overwritten by each example
    _write(path, rows, fmt, junk if fmt.startswith("jsonl") else [])
    loaded = _load_or_named_error(path, adapter)
    if loaded is not None:
        pairs, report = loaded
        assert pairs and report.source == str(path)
        check_report(report, pairs, None, adapter)


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"prompt": safe_texts, "chosen": safe_texts, "rejected": safe_texts}),
                     min_size=1, max_size=40), cut=st.floats(0.0, 1.0))
def test_truncated_gzip_is_an_error_naming_the_file_or_loads_whole(rows, cut, tmp_path_factory):
    full = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    keep = int(len(full) * cut)
    path = _scratch(tmp_path_factory) / "cut.jsonl.gz"
    path.write_bytes(full[:keep])
    loaded = _load_or_named_error(path, "generic")
    if loaded is not None:  # only a file cut at its very end (nothing lost) may load
        assert keep == len(full)
        check_report(loaded[1], loaded[0], len(rows), "generic")


@pytest.mark.parametrize("name,content", [
    ("empty.jsonl", b""),
    ("blank.jsonl", b"\n\n  \n"),
    ("empty.jsonl.gz", gzip.compress(b"")),
    ("array.json", b"[]"),
    ("header_only.csv", b"id,prompt,chosen,rejected\n"),
    ("empty.csv", b""),
    ("not_gzip.jsonl.gz", b'{"prompt": "P", "chosen": "a", "rejected": "b"}\n'),
    ("random.jsonl.gz", bytes(range(256)) * 4),
    ("latin1.jsonl", '{"prompt": "café", "chosen": "a", "rejected": "b"}\n'.encode("latin-1")),
    ("bad_array.json", b'[{"prompt": "P", "chosen": "a", "rejected": "b"},'),
    ("deep_array.json", b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]"),
    ("huge_int_array.json", b"[" + b"1" * 5000 + b"]"),
    ("junk.parquet", b"PAR1 not really"),
    ("only_junk.jsonl", b"{not json\n" + b"1" * 5000 + b"\n" + b"[" * 100_000 + b"\n"),
])
def test_damaged_or_empty_files_are_errors_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_pairs({"adapter": "generic", "path": str(path)})
    assert name in str(err.value)


def test_junk_lines_among_good_rows_are_counted_not_fatal(tmp_path):
    good = [json.dumps({"prompt": f"P{i}", "chosen": "a", "rejected": "b"}).encode() for i in range(3)]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([good[0], b"1" * 5000, good[1], b"[" * 100_000, good[2], b"{x"]) + b"\n")
    pairs, report = load_pairs({"adapter": "generic", "path": str(path)})
    assert len(pairs) == 3 and report.rows_read == 6
    assert report.counts == {"malformed_json": 3}


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_integers_too_long_to_print_are_counted_as_wrong_type(adapter):
    huge = 10**5000  # past Python's int->str limit: str() and repr() raise ValueError
    rows = [{"id": huge, "prompt": "P", "chosen": "a", "rejected": "b", "score_chosen": huge, "qid": huge,
             "question": "Q", "answers": [{"answer_id": huge, "text": "x", "pm_score": huge}],
             "info": {"subreddit": "s", "title": "t", "post": "p"}, "summaries": [{"text": "a"}, {"text": "b"}],
             "choice": huge}]
    report = LoadReport(source="src")
    pairs = adapt_rows(rows, adapter, report)
    check_report(report, pairs, 1, adapter)
    assert pairs == [] and report.counts == {"wrong_type": 1}
