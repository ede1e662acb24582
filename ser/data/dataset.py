"""Build the run's preference pairs from the `data` config: the synthetic default or a source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ser.data.schema import DataError, LoadReport, PreferencePair
from ser.data.synthetic import synthetic_pairs


def build_pairs(data: Mapping[str, Any]) -> tuple[list[PreferencePair], list[PreferencePair] | None, list[LoadReport]]:
    """(pairs, the dataset's own test split or None, one load report per source)."""
    if data["kind"] == "synthetic":
        syn = data["synthetic"]
        pairs = synthetic_pairs(syn["n_pairs"], syn["seed"], syn["subtle_fraction"], syn["pairs_per_prompt"])
        report = LoadReport(source=f"synthetic(n_pairs={syn['n_pairs']}, seed={syn['seed']})",
                            rows_read=len(pairs), pairs_kept=len(pairs))
        return pairs, None, [report]
    from ser.data.loading import load_pairs

    pairs, report = load_pairs(dict(data["source"]))
    reports = [report]
    test = None
    if data.get("test_source"):
        try:
            test, test_report = load_pairs(dict(data["test_source"]))
        except DataError as err:  # the training source's report still belongs in data_report.json
            raise DataError(str(err), reports + err.reports) from None
        reports.append(test_report)
    return pairs, test, reports
