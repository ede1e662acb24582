"""Loading: every file format, the failure modes that must be loud, hub calls, and the shared data."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser.data.loading import load_pairs, resolve_path
from ser.data.schema import PreferencePair

ROWS = [
    {"id": "a", "prompt": "P1", "chosen": "good 1", "rejected": "bad 1", "score_chosen": 2.0, "score_rejected": 1.0},
    {"id": "b", "prompt": "P2", "chosen": "good 2", "rejected": "bad 2", "score_chosen": 4.0, "score_rejected": 4.0},
]
PAIRS = [PreferencePair(**row) for row in ROWS]


def source(path: Any, **extra: Any) -> dict[str, Any]:
    return {"adapter": "generic", "path": str(path) if isinstance(path, Path) else path, **extra}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


# ---- formats ----


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.json", "d.json.gz"])
def test_json_lines_plain_and_gzipped(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, ROWS)
    pairs, report = load_pairs(source(path))
    assert pairs == PAIRS
    assert (report.source, report.rows_read, report.pairs_kept) == (str(path), 2, 2)
    assert report.notes["tie_scores"] == 1


def test_json_array(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2))
    # nulls are what an OmegaConf config gives for keys left unset
    nulls = {"hub": None, "hub_config": None, "split": None, "format": None, "file_format": None, "limit": None,
             "options": None}
    assert load_pairs(source(path, **nulls))[0] == PAIRS


def test_parquet_with_chat_columns(tmp_path: Path) -> None:
    path = tmp_path / "uf.parquet"
    messages = [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": answer}] for answer in "AB"]
    row = {"chosen": messages[0], "rejected": messages[1], "score_chosen": 3, "score_rejected": None}
    pq.write_table(pa.Table.from_pylist([row]), path)
    pairs, _ = load_pairs({"adapter": "ultrafeedback", "path": str(path)})
    assert pairs == [PreferencePair("uf-0", "Q", "A", "B", 3.0, None)]


def test_csv_empty_cell_is_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["q", "yes", "no", "s"])
        writer.writerow(["Hi, there", "Hello\nfriend", "Bye", "1.5"])
        writer.writerow(["Hi", "", "Bye", ""])
    options = {"field_map": {"prompt": "q", "chosen": "yes", "rejected": "no", "score_chosen": "s"}}
    pairs, report = load_pairs(source(path, options=options))
    assert pairs == [PreferencePair("d-0", "Hi, there", "Hello\nfriend", "Bye", 1.5, None)]
    assert [(i.row, i.reason, i.field) for i in report.issues] == [(1, "empty_text", "chosen")]


def test_file_format_option_overrides_extension(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.txt", ROWS)
    with pytest.raises(ValueError, match="cannot tell the file format"):
        load_pairs(source(path))
    assert load_pairs(source(path, file_format="jsonl"))[0] == PAIRS


# ---- bad files ----


def test_malformed_line_is_counted_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + '\n{"id": "x", "prompt": \n\n' + json.dumps(ROWS[1]) + "\n")
    pairs, report = load_pairs(source(path))
    assert pairs == PAIRS
    assert report.rows_read == 3
    [issue] = report.issues
    assert (issue.source, issue.row, issue.line, issue.reason) == (str(path), 1, 2, "malformed_json")
    assert issue.describe().startswith(f"{path}:2: malformed_json (Expecting value")  # file:line, as editors count


def test_truncated_gzip_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS * 50).encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: truncated or corrupt gzip"):
        load_pairs(source(path))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        load_pairs(source(tmp_path / "nothere.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"\*\.parquet"):
        load_pairs(source(str(tmp_path / "*.parquet")))


def test_empty_file_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no rows"):
        load_pairs(source(path))


def test_no_valid_pair_gives_counts_per_reason(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "P", "chosen": "", "rejected": "R"}, {"prompt": "P"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl: no valid .*'empty_text': 1, 'missing_field': 1"):
        load_pairs(source(path))


# ---- several files, limit, config checks ----


def test_glob_of_two_files_in_sorted_order(tmp_path: Path) -> None:
    second = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "P", "chosen": "x", "rejected": "y"}, {"prompt": 1}])
    first = write_jsonl(tmp_path / "a.jsonl.gz", [{"prompt": "P", "chosen": "z", "rejected": ""}, ROWS[0]])
    pairs, report = load_pairs(source(str(tmp_path / "*.jsonl*")))
    assert [p.id for p in pairs] == ["a", "b-0"]  # id-less rows get "<file stem>-<row>"
    assert report.source == f"{first}, {second}"
    assert (report.rows_read, report.pairs_kept) == (4, 2)
    assert [(i.source, i.row, i.reason) for i in report.issues] == [
        (str(first), 0, "empty_text"),
        (str(second), 1, "wrong_type"),
    ]


def test_directory_and_list_of_paths(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "one.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "two.jsonl", ROWS[1:])
    (tmp_path / "notes.txt").write_text("not data")
    assert load_pairs(source(tmp_path))[0] == PAIRS
    paths = [str(tmp_path / "two.jsonl"), str(tmp_path / "one.jsonl")]
    assert load_pairs(source(paths))[0] == PAIRS


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "one.jsonl", ROWS)
    write_jsonl(tmp_path / "two.jsonl", ROWS[:1])
    pairs, report = load_pairs(source(str(tmp_path / "*.jsonl")))
    assert pairs == PAIRS
    assert [(i.source, i.row, i.reason) for i in report.issues] == [(str(tmp_path / "two.jsonl"), 0, "duplicate_id")]


def test_limit_takes_first_valid_pairs_in_file_order(tmp_path: Path) -> None:
    rows = [ROWS[0], {"prompt": "P", "chosen": "", "rejected": "R"}, ROWS[1], {**ROWS[0], "id": "c"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    pairs, report = load_pairs(source(path, limit=2))
    assert pairs == PAIRS
    assert (report.rows_read, report.pairs_kept, report.counts) == (3, 2, {"empty_text": 1})


def test_resolve_path_expands_home_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SER_DATA", "/data/prefs")
    assert resolve_path("~/x.jsonl") == tmp_path / "x.jsonl"
    assert resolve_path("$SER_DATA/hh/*.jsonl.gz") == Path("/data/prefs/hh/*.jsonl.gz")
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert load_pairs(source("~/d.jsonl"))[0] == PAIRS


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"adapter": "generic"}, "exactly one of 'hub' and 'path'"),
        ({"adapter": "generic", "hub": "x/y", "path": "d.jsonl", "split": "train"}, "exactly one of 'hub' and 'path'"),
        ({"adapter": "generic", "hub": "x/y"}, "needs 'split'"),
        ({"adapter": "generic", "path": "d.jsonl", "limt": 3}, "unknown data source keys"),
        ({"adapter": "generic", "path": "d.jsonl", "limit": 0}, "'limit' must be a positive integer"),
        ({"adapter": "generic", "path": "d.jsonl", "file_format": "xml"}, "'file_format' must be one of"),
        ({"adapter": "generic", "path": "d.jsonl", "format": "jsonl"}, "'format' .the preference format. must be one of"),
        ({"adapter": "hh_rlhf", "path": "d.jsonl", "format": "standard"}, "applies to adapter=generic"),
    ],
)
def test_bad_source_configs(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_pairs(bad)


# ---- hub ----


def test_hub_source_calls_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple, dict]] = []

    def fake_load_dataset(*args: Any, **kwargs: Any) -> datasets.Dataset:
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([*ROWS, {**ROWS[0], "id": "c"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = {"adapter": "generic", "hub": "org/prefs", "hub_config": "main", "split": "test", "revision": "abc123"}
    pairs, report = load_pairs({**hub, "limit": 2})
    assert pairs == PAIRS
    assert report.source == "org/prefs/main:test"
    assert calls == [(("org/prefs", "main"), {"split": "test", "revision": "abc123"})]
    load_pairs({**hub, "trust_remote_code": True})
    assert calls[-1][1] == {"split": "test", "revision": "abc123", "trust_remote_code": True}


# ---- the shared real data (outside the repo; skipped where it is absent) ----

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"shared preference data not found at {SHARED}")


@needs_shared
@pytest.mark.parametrize(
    ("path", "adapter", "rows", "skipped"),
    [
        ("hh-rlhf/helpful-base_test.jsonl.gz", "hh_rlhf", 2354, {"empty_text": 4, "identical_pair": 2}),
        ("hh-rlhf/original_helpful-base_test.jsonl.gz", "hh_rlhf", 2354, {"empty_text": 4, "identical_pair": 2}),
        (
            "ultrafeedback/ultrafeedback_binarized_train.jsonl.gz",
            "ultrafeedback",
            1000,
            {"empty_text": 2, "identical_pair": 4},
        ),
        ("stack-exchange/se_beer_pairs.jsonl.gz", "stack_exchange", 1267, {}),
        ("summarize_from_feedback/tldr_comparisons_valid.jsonl.gz", "summarize", 1771, {}),
        ("summarize_from_feedback/original_batch13.json.gz", "summarize", 1097, {}),
    ],
)
def test_shared_datasets_load_with_quirks_counted(path: str, adapter: str, rows: int, skipped: dict) -> None:
    pairs, report = load_pairs({"adapter": adapter, "path": str(SHARED / path)})
    assert report.rows_read == rows
    assert report.counts == skipped
    assert len(pairs) == report.pairs_kept == rows - sum(skipped.values())
    if adapter == "ultrafeedback":
        assert report.notes["tie_scores"] == 110  # README's 111 ties, one of them an identical pair


@needs_shared
def test_shared_hh_original_matches_converted_row_by_row() -> None:
    def load(name: str) -> tuple[list[tuple[str, str, str]], list[int]]:
        pairs, report = load_pairs({"adapter": "hh_rlhf", "path": str(SHARED / "hh-rlhf" / name)})
        return [(p.prompt, p.chosen, p.rejected) for p in pairs], [i.row for i in report.issues]

    converted, converted_skips = load("helpful-base_test.jsonl.gz")
    original, original_skips = load("original_helpful-base_test.jsonl.gz")
    assert original_skips == converted_skips  # the same rows are invalid in both, so kept pairs align
    assert original == converted


@needs_shared
def test_shared_tldr_original_matches_converted() -> None:
    folder = SHARED / "summarize_from_feedback"
    converted, _ = load_pairs({"adapter": "summarize", "path": str(folder / "tldr_comparisons_valid.jsonl.gz")})
    original, _ = load_pairs({"adapter": "summarize", "path": str(folder / "original_batch13.json.gz")})
    assert original == converted[: len(original)]  # batch13 comes first in the converted file


@needs_shared
@pytest.mark.parametrize(("option", "pairs", "test_pairs"), [
    ("hh_rlhf_shared", 2348, None),
    ("ultrafeedback_shared", 994, 199),   # its own eval split is the test split
    ("stack_exchange_shared", 3480, None),  # four sites, pairs already built: the generic adapter
    ("summarize_shared", 1771, None),
])
def test_shared_data_configs_load_through_the_config_tree(option, pairs, test_pairs, tmp_path) -> None:
    # through Hydra's composition, so options inherited from another dataset config would fail here
    from ser.config import validate_config
    from ser.data.dataset import build_pairs
    from tests.conftest import compose

    cfg = compose([f"data={option}", f"paths.shared_data={SHARED}"], tmp_path)
    validate_config(cfg)
    train, test, _ = build_pairs(cfg.data)
    assert len(train) == pairs
    assert (None if test is None else len(test)) == test_pairs


def test_shared_data_configs_name_the_missing_file(tmp_path) -> None:
    from ser.config import ConfigError, validate_config
    from tests.conftest import compose

    cfg = compose(["data=hh_rlhf_shared", f"paths.shared_data={tmp_path}/nowhere"], tmp_path)
    with pytest.raises(ConfigError, match=r"data\.source\.path.*nowhere/hh-rlhf/helpful-base_test\.jsonl\.gz"):
        validate_config(cfg)
