"""Malformed rows and overlong pairs are counted and reported through a real run, never silently lost."""

from __future__ import annotations

import json

import pytest

from ser.data.synthetic import synthetic_pairs
from tests.conftest import compose


def _write_jsonl_with_bad_rows(path):
    good = [p.to_dict() for p in synthetic_pairs(300, seed=5)]
    bad = [
        {"id": "bad-missing", "prompt": "q", "chosen": "a"},                      # missing_field rejected
        {"id": "bad-type", "prompt": "q", "chosen": 42, "rejected": "b"},         # wrong_type
        {"id": "bad-empty", "prompt": "q", "chosen": "  ", "rejected": "b"},      # empty_text
        {"id": "bad-same", "prompt": "q", "chosen": "same", "rejected": "same"},  # identical_pair
        dict(good[0]),                                                            # duplicate_id
    ]
    lines = [json.dumps(r) for r in good[:100]] + [json.dumps(r) for r in bad] + ["{not json"] + \
            [json.dumps(r) for r in good[100:]]
    path.write_text("\n".join(lines) + "\n")


def test_bad_rows_are_counted_per_reason_with_file_and_row(tmp_path):
    from ser.tasks.run import run_experiment

    data = tmp_path / "prefs.jsonl"
    _write_jsonl_with_bad_rows(data)
    cfg = compose(["experiment=smoke", "schedule=seed_only", "data=generic", f"data.source.path={data}",
                   "data.max_length=56", "data.overlong=drop"], tmp_path / "run")
    run_experiment(cfg)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    source = report["sources"][0]
    assert source["rows_read"] == 306 and source["pairs_kept"] == 300
    assert source["skipped_by_reason"] == {"missing_field": 1, "wrong_type": 1, "empty_text": 1,
                                           "identical_pair": 1, "duplicate_id": 1, "malformed_json": 1}
    assert any(e.startswith(f"{data}:101: missing_field") for e in source["examples"])  # file:line, 1-based
    overlong = report["overlong"]
    assert overlong["policy"] == "drop" and overlong["overlong_pairs"] > 0
    assert sum(report["splits_loaded"].values()) == 300  # split by prompt first, then overlong pairs dropped
    assert sum(report["splits"].values()) == 300 - overlong["overlong_pairs"] - overlong["test_overlong_pairs"]


def test_a_file_without_valid_pairs_is_an_error_naming_it(tmp_path):
    from ser.tasks.run import run_experiment

    data = tmp_path / "empty_text.jsonl"
    data.write_text(json.dumps({"id": "1", "prompt": "q", "chosen": "", "rejected": "b"}) + "\n")
    cfg = compose(["experiment=smoke", "schedule=seed_only", "data=generic", f"data.source.path={data}"],
                  tmp_path / "run")
    with pytest.raises(ValueError, match="empty_text.jsonl"):
        run_experiment(cfg)
