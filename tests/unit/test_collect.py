"""experiments/collect.py on fabricated summary.json files with hand-computed statistics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.collect import (CollectError, collect, extended_variant, latex_table, main, markdown_table,
                                 write_outputs)

ROOT = Path(__file__).resolve().parents[2]

# final test accuracy per schedule and seed: ser closes exactly half of the seed_only -> full_data gap
ACC = {"seed_only": [0.60, 0.62, 0.64], "ser": [0.70, 0.72, 0.74], "full_data": [0.80, 0.82, 0.84]}
ECE = {"seed_only": [0.10, 0.20, 0.30], "ser": [0.05, 0.05, 0.05], "full_data": [0.02, 0.04, 0.06]}


def summary(schedule: str, seed: int, test_acc: float, test_ece: float, n_loops: int = 1,
            data: str = "synthetic", rm: str = "minilm") -> dict:
    loops = [{"loop": i, "status": None if i == 0 else "1", "selected": 0 if i == 0 else 100,
              "selected_total": 100 * i, "self_label_accuracy": None if i == 0 else 0.9,
              "val_accuracy": 0.5, "test_accuracy": test_acc - 0.01 * (n_loops - 1 - i), "test_ece": test_ece,
              "seconds": 1.0, "candidates": {}, "note": ""} for i in range(n_loops)]
    return {"schedule": schedule, "data": data, "rm": rm, "seed": seed,
            "splits": {"seed": 196, "val": 66, "pool": 1338, "test": 400}, "stop_reason": "done", "loops": loops,
            "final": {"loop": n_loops - 1, "selected_by": "best_val", "val_accuracy": 0.5,
                      "test_accuracy": test_acc, "test_ece": test_ece}}


def write(run_dir: Path, content: dict | str) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "state.json").write_text("{}")
    path = run_dir / "summary.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun layout: sweeps/schedule=X,seed=Y/summary.json; ser runs 3 loops (2 SER loops)."""
    root = tmp_path / "sweeps"
    for schedule, accs in ACC.items():
        for seed, acc in enumerate(accs):
            loops = 3 if schedule == "ser" else 1
            write(root / f"schedule={schedule},seed={seed}", summary(schedule, seed, acc, ECE[schedule][seed], loops))
    return root


def group(c, **key):
    rows = c.table
    for k, v in key.items():
        rows = rows[rows[k] == v]
    assert len(rows) == 1, key
    return rows.iloc[0]


def test_groups_means_stds_and_gap_closed(sweep: Path) -> None:
    c = collect([sweep])
    assert list(c.table["schedule"]) == ["seed_only", "ser", "full_data"]
    seed_only, ser, full = (group(c, schedule=s) for s in ("seed_only", "ser", "full_data"))
    assert ser["n"] == 3 and ser["seeds"] == "0, 1, 2"
    assert ser["test_accuracy_mean"] == pytest.approx(0.72) and ser["test_accuracy_std"] == pytest.approx(0.02)
    assert seed_only["test_ece_mean"] == pytest.approx(0.2) and seed_only["test_ece_std"] == pytest.approx(0.1)
    assert ser["test_ece_std"] == pytest.approx(0.0)
    assert ser["loops_run"] == 2 and ser["selected_total"] == 200  # the run's total: every self-label it made
    assert ser["gap_closed"] == pytest.approx(50.0)
    table = markdown_table(c)
    assert "| synthetic | minilm | ser | 0, 1, 2 | 72.00 ± 2.00 | 0.050 ± 0.000 | 200 | 50.0% |" in table
    assert "| synthetic | minilm | seed_only | 0, 1, 2 | 62.00 ± 2.00 | 0.200 ± 0.100 | 0 |  |  |" in table


def test_the_gap_is_closed_on_the_seeds_all_three_schedules_share(sweep: Path) -> None:
    # a queue part way: seed 3's seed_only run finished (far below the rest), its SER and full_data runs not yet
    write(sweep / "schedule=seed_only,seed=3", summary("seed_only", 3, 0.20, 0.1))
    c = collect([sweep])
    ser = group(c, schedule="ser")
    assert group(c, schedule="seed_only")["test_accuracy_mean"] == pytest.approx(0.515)
    assert ser["gap_closed"] == pytest.approx(50.0) and ser["gap_seeds"] == "0, 1, 2"
    assert "| 50.0% |" in markdown_table(c)
    # and a SER run the references lack is named: the gap is over fewer seeds than the row's mean
    write(sweep / "schedule=ser,seed=4", summary("ser", 4, 0.99, 0.1))
    assert "| 50.0% (seeds 0, 1, 2) |" in markdown_table(collect([sweep]))


def test_no_shared_seed_is_noted(tmp_path: Path) -> None:
    write(tmp_path / "a", summary("seed_only", 0, 0.6, 0.1))
    write(tmp_path / "b", summary("ser", 1, 0.7, 0.1))
    write(tmp_path / "c", summary("full_data", 0, 0.8, 0.1))
    assert "¹ no seed with seed_only and full_data runs too" in markdown_table(collect([tmp_path]))


def test_single_run_std_is_a_dash_and_full_below_seed_is_noted(tmp_path: Path) -> None:
    write(tmp_path / "a", summary("seed_only", 0, 0.70, 0.1))
    write(tmp_path / "b", summary("ser", 0, 0.72, 0.1))
    write(tmp_path / "c", summary("full_data", 0, 0.65, 0.1))
    c = collect([tmp_path])
    table = markdown_table(c)
    assert "72.00 ± —" in table and "| —¹ |" in table and "¹ full data not above seed-only" in table


def test_a_gap_needs_both_references_of_the_same_data_and_rm_and_says_so(tmp_path: Path) -> None:
    write(tmp_path / "a", summary("seed_only", 0, 0.6, 0.1))
    write(tmp_path / "b", summary("ser", 0, 0.7, 0.1))
    write(tmp_path / "c", summary("full_data", 0, 0.8, 0.1, rm="other"))
    write(tmp_path / "d", summary("ablation_x", 0, 0.7, 0.1, rm="other"))
    c = collect([tmp_path])
    assert c.table["gap_closed"].isna().all() if "gap_closed" in c.table else True
    # the other rm sorts after minilm; unknown schedules follow the three known ones
    assert list(zip(c.table["rm"], c.table["schedule"])) == [
        ("minilm", "seed_only"), ("minilm", "ser"), ("other", "full_data"), ("other", "ablation_x")]
    assert "¹ needs seed_only and full_data runs of the same data and rm" in markdown_table(c)


def test_dotted_group_by_key(sweep: Path) -> None:
    c = collect([sweep], group_by=["schedule", "splits.seed"])
    assert list(zip(c.table["schedule"], c.table["splits.seed"], c.table["n"])) == [
        ("seed_only", 196, 3), ("ser", 196, 3), ("full_data", 196, 3)]


def test_duplicate_seed_names_both_files(sweep: Path, tmp_path: Path) -> None:
    again = write(tmp_path / "rerun" / "ser_seed1", summary("ser", 1, 0.9, 0.1))
    with pytest.raises(CollectError, match="duplicate") as err:
        collect([sweep, tmp_path / "rerun"])
    assert str(again) in str(err.value) and str(sweep / "schedule=ser,seed=1" / "summary.json") in str(err.value)


def test_overlapping_dirs_do_not_count_a_run_twice(sweep: Path) -> None:
    assert len(collect([sweep, sweep / "schedule=ser,seed=0"]).runs) == 9


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schedule": "ser", "loops": []}), "[]",
                                     json.dumps({**summary("ser", 7, 0.7, 0.1), "loops": [1]})])
def test_malformed_summary_names_the_file(sweep: Path, content: str) -> None:
    bad = write(sweep / "schedule=ser,seed=7", content)
    with pytest.raises(CollectError, match="malformed") as err:
        collect([sweep])
    assert str(bad) in str(err.value)


def test_unfinished_runs_are_counted_and_printed(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("schedule=ser,seed=3", "schedule=ser,seed=4"):
        (sweep / name).mkdir()
        (sweep / name / "state.json").write_text("{}")
    c = collect([sweep])
    assert len(c.runs) == 9
    assert sorted(p.name for p in c.unfinished) == ["schedule=ser,seed=3", "schedule=ser,seed=4"]
    assert main([str(sweep)]) == 0
    captured = capsys.readouterr()
    assert "2 runs without summary.json:" in captured.err and "schedule=ser,seed=4" in captured.err
    assert "| ser |" in captured.out


def test_no_summary_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no summary.json found" in capsys.readouterr().err


def test_the_long_format_has_one_row_per_run_and_loop(sweep: Path) -> None:
    c = collect([sweep])
    assert len(c.runs) == 9 and len(c.loops) == 3 * 1 + 3 * 3 + 3 * 1
    ser0 = c.loops[(c.loops["schedule"] == "ser") & (c.loops["seed"] == 0)]
    assert list(ser0["loop"]) == [0, 1, 2] and list(ser0["selected_total"]) == [0, 100, 200]
    assert list(ser0["final"]) == [False, False, True]


def test_write_outputs(sweep: Path, tmp_path: Path) -> None:
    c = collect([sweep])
    md, tex, table_csv, runs_csv, png = write_outputs(c, tmp_path / "results" / "demo", command="python experiments/collect.py x")
    assert md.read_text().count("50.0%") == 1 and "python experiments/collect.py x" in md.read_text()
    with table_csv.open() as handle:
        assert [r["schedule"] for r in csv.DictReader(handle)] == ["seed_only", "ser", "full_data"]
    with runs_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 15 and {"loop", "seed", "self_label_accuracy", "path"} <= set(rows[0])
    assert tex.read_text().startswith("\\begin{tabular}") and "72.00 ± 2.00" in tex.read_text()
    assert png.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in png.parent.iterdir()) == ["demo.csv", "demo.md", "demo.png", "demo.tex", "demo_runs.csv"]
    md, *_ = write_outputs(c, tmp_path / "results" / "demo", command="python experiments/collect.py x y z",
                           regenerate="bash make_tables.sh")
    assert "bash make_tables.sh" in md.read_text() and "x y z" not in md.read_text()
    assert "9 runs (their dirs: the `path` column of demo_runs.csv)" in md.read_text()


def test_cli_writes_outputs(sweep: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "docs" / "results" / "cli"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "experiments/collect.py", str(sweep), "--out", str(prefix)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| synthetic | minilm | ser | 0, 1, 2 | 72.00 ± 2.00 |" in proc.stdout
    md = prefix.with_suffix(".md").read_text()
    assert "50.0%" in md and f"collected from `{sweep}`" in md and f"--out {prefix}" in md
    assert len(prefix.with_suffix(".csv").read_text().strip().splitlines()) == 4
    assert prefix.with_suffix(".tex").exists() and prefix.with_name("cli_runs.csv").exists()


def test_cli_without_summaries_exits_1(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "experiments/collect.py", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no summary.json found" in proc.stderr


def test_variants_share_one_seed_only_and_full_data_reference(sweep: Path) -> None:
    # two SER variants beside the references: each gets its own gap against the same seed_only / full_data
    for path in sweep.glob("*/summary.json"):
        s = json.loads(path.read_text())
        s["variant"] = "calibrated: paper[1,1,2]" if s["schedule"] == "ser" else "-"
        path.write_text(json.dumps(s))
    for seed, acc in enumerate([0.65, 0.67, 0.69]):  # a variant closing a quarter of the gap
        s = summary("ser", seed, acc, 0.05, 2)
        s["variant"] = "top_gap: paper[1,1,2]"
        write(sweep / f"schedule=ser,ser=top_gap,seed={seed}", s)
    c = collect([sweep], group_by=("data", "rm", "schedule", "variant"))
    ser = c.table[c.table["schedule"] == "ser"]
    assert dict(zip(ser["variant"], ser["gap_closed"])) == {"calibrated: paper[1,1,2]": pytest.approx(50.0),
                                                            "top_gap: paper[1,1,2]": pytest.approx(25.0)}


def test_per_loop_table_averages_the_runs_that_reached_each_loop(tmp_path: Path) -> None:
    short, long = summary("ser", 0, 0.70, 0.05, n_loops=2), summary("ser", 1, 0.72, 0.05, n_loops=3)
    long["loops"][1]["self_label_accuracy"] = 0.7  # loop 1: (0.9 + 0.7) / 2 = 0.8
    long["loops"][2]["selected"] = 40
    write(tmp_path / "a", short)
    write(tmp_path / "b", long)
    c = collect([tmp_path])
    from experiments.collect import loop_means, loop_table

    rows = loop_means(c).set_index("loop")
    assert list(rows["runs"]) == [2, 2, 1]
    assert rows.loc[1, "self_label_accuracy"] == pytest.approx(0.8)
    assert rows.loc[2, "selected"] == 40 and pd.isna(rows.loc[0, "self_label_accuracy"])
    assert rows.loc[1, "final_here"] == 1 and rows.loc[2, "final_here"] == 1
    assert "| synthetic | minilm | ser | 1 | 2 | 100.0 | 80.00 |" in loop_table(c)


def test_paired_delta_vs_seed_only_mean_t_interval_and_wins(tmp_path: Path) -> None:
    # per seed ser - seed_only = +0.02, -0.01, +0.05 (seed 3 has no seed_only run and is not paired):
    # mean 0.02, std 0.03, half width t(0.975, 2) * 0.03 / sqrt(3) = 4.302653 * 0.017321 = 0.074524
    for seed, (s, t) in enumerate([(0.60, 0.62), (0.62, 0.61), (0.64, 0.69)]):
        write(tmp_path / f"seed_only{seed}", summary("seed_only", seed, s, 0.1))
        write(tmp_path / f"ser{seed}", summary("ser", seed, t, 0.1))
    write(tmp_path / "ser3", summary("ser", 3, 0.9, 0.1))
    c = collect([tmp_path])
    ser = group(c, schedule="ser")
    assert ser["delta"] == pytest.approx(0.02)
    assert (ser["delta_low"], ser["delta_high"]) == pytest.approx((0.02 - 0.074524, 0.02 + 0.074524), abs=1e-6)
    assert (ser["wins"], ser["ties"], ser["losses"]) == (2, 0, 1) and ser["delta_seeds"] == "0, 1, 2"
    assert "| +2.00 [-5.45, +9.45] 2/0/1 (seeds 0, 1, 2) | 0/4 |" in markdown_table(c)


def test_paired_delta_counts_ties_and_needs_no_full_data(tmp_path: Path) -> None:
    write(tmp_path / "a", summary("seed_only", 0, 0.60, 0.1))
    write(tmp_path / "b", summary("ser", 0, 0.60, 0.1))
    c = collect([tmp_path])
    ser = group(c, schedule="ser")
    assert pd.isna(ser["delta_low"])
    assert (ser["delta"], ser["wins"], ser["ties"], ser["losses"]) == (0.0, 0, 1, 0)
    assert markdown_table(c).splitlines()[3].endswith("| —¹ | +0.00 0/1/0 | 0/1 |")


def test_seed_rm_above_chance_is_a_one_sided_binomial_test_on_validation(tmp_path: Path) -> None:
    # 66 validation pairs: 40 right (60.6%) gives P(X >= 40 | n=66, p=0.5) = 0.0543 -> not above chance;
    # 41 right (62.1%) gives 0.0320 -> above. A run without splits.val is not counted.
    for seed, right in enumerate([40, 41]):
        s = summary("ser", seed, 0.7, 0.1)
        s["loops"][0]["val_accuracy"] = right / 66
        write(tmp_path / f"ser{seed}", s)
    unknown = summary("ser", 2, 0.7, 0.1)
    del unknown["splits"]["val"]
    write(tmp_path / "ser2", unknown)
    c = collect([tmp_path])
    assert list(c.runs["seed_rm_above_chance"]) == [False, True, None]
    assert group(c, schedule="ser")["seed_rm_above_chance"] == "1/2"
    assert markdown_table(c).splitlines()[2].endswith("| 1/2 |")


def test_latex_table_escapes_and_carries_the_notes(tmp_path: Path) -> None:
    write(tmp_path / "a", summary("seed_only", 0, 0.6, 0.1, data="hh_rlhf"))
    write(tmp_path / "b", summary("ser", 0, 0.7, 0.1, data="hh_rlhf"))
    tex = latex_table(collect([tmp_path]))
    assert "hh\\_rlhf" in tex and "seed\\_only" in tex and "% ¹ needs seed_only" in tex


def test_a_switch_is_paired_with_the_variant_it_extends(tmp_path: Path) -> None:
    # the default SER and a switch of it on seeds 0-2 (seed 2 of the switch missing: paired on 0 and 1):
    # switch - default = +0.03, -0.01: mean +0.01, std 0.028284, half width t(0.975, 1) * 0.028284 / sqrt(2)
    # = 12.706205 * 0.02 = 0.254124
    for seed, (ref, default, switch) in enumerate([(0.60, 0.62, 0.65), (0.61, 0.64, 0.63), (0.62, 0.66, None)]):
        s = summary("seed_only", seed, ref, 0.1)
        s["variant"] = "-"
        write(tmp_path / f"seed_only{seed}", s)
        s = summary("ser", seed, default, 0.1)
        s["variant"] = "top_gap: paper[1,1,2]"
        write(tmp_path / f"ser{seed}", s)
        if switch is not None:
            s = summary("ser", seed, switch, 0.1)
            s["variant"] = "top_gap: paper[1,1,2] retrain_from=last"
            write(tmp_path / f"ser_last{seed}", s)
    c = collect([tmp_path], group_by=("data", "rm", "schedule", "variant"))
    switch = group(c, variant="top_gap: paper[1,1,2] retrain_from=last")
    assert switch["versus"] == "top_gap: paper[1,1,2]" and switch["versus_delta"] == pytest.approx(0.01)
    assert (switch["versus_delta_low"], switch["versus_delta_high"]) == pytest.approx((0.01 - 0.254124, 0.01 + 0.254124),
                                                                                      abs=1e-6)
    assert (switch["versus_wins"], switch["versus_losses"]) == (1, 1)
    assert pd.isna(group(c, variant="top_gap: paper[1,1,2]").get("versus"))  # the default extends nothing
    row = next(line for line in markdown_table(c).splitlines() if "retrain_from=last" in line)
    assert row.endswith("| +1.00 [-24.41, +26.41] 1/0/1 | 0/2 |")
    assert extended_variant("a b c", ["a", "a b", "-", "a b c"]) == "a b" and extended_variant("a", ["b"]) is None
