"""The scale-free rules and noise-robust options, end to end on the tiny smoke run."""

from __future__ import annotations

import json

import pytest

from ser.tasks.run import run_experiment
from tests.conftest import compose

# min_pairs 10: loop 1's status 1 keeps ~50 straddling pairs, loop 2's only ~6 of the rest: a switch
ROBUST = ["experiment=smoke", "ser=top_gap", "phases=adaptive", "ser.min_pairs=10", "ser.weighting=confidence", "ser.relabel=drop",
          "ser.agreement.kind=dropout", "ser.agreement.min_fraction=0.75", "logger=csv"]


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    summary = run_experiment(compose(ROBUST, out))
    return out, summary


def test_top_gap_caps_every_loop_and_switches_status_loudly(robust_run):
    out, summary = robust_run
    loops = summary["loops"]
    assert len(loops) == 3 and all(e["selected"] > 0 for e in loops[1:])
    pool = summary["splits"]["pool"]
    # each loop keeps at most 25% of the pool that remains
    remaining = pool
    for e in loops[1:]:
        assert e["selected"] <= -(-remaining // 4)
        remaining -= e["selected"]
    # the status 1 -> 2 switch of loop 2 is a shortfall, said in the loop record and in summary.json
    assert loops[2]["status"] == "2" and "switching to status 2" in loops[2]["shortfall"]
    assert any("switching to status 2" in w for w in summary["warnings"])
    assert json.loads((out / "summary.json").read_text())["warnings"] == summary["warnings"]


def test_robust_options_leave_their_trace(robust_run):
    out, summary = robust_run
    loop2 = summary["loops"][2]["candidates"]
    assert loop2["relabel_checked"] == summary["loops"][1]["selected"]  # every loop-1 label re-scored
    assert 0 < loop2["agreeing"] <= summary["splits"]["pool"]
    rows = [json.loads(line) for line in (out / "selflabels" / "loop_1.jsonl").read_text().splitlines()]
    assert rows and all(0.0 <= r["weight"] <= 1.0 for r in rows)
    assert summary["variant"] == ("top_gap: adaptive percentile(0.5/0.5/0,s2=band>=0.25) top25% weighting=confidence "
                                  "relabel=drop agree=dropoutx4@0.75")
    assert len({round(r["weight"], 6) for r in rows}) > 1  # weights follow each pair's gap, not a constant


def test_a_rule_that_selects_nothing_says_so(tmp_path):
    # min_pairs above the pool: loop 1 stops at once, loudly, and the summary carries why
    summary = run_experiment(compose(["experiment=smoke", "ser.min_pairs=100000", "ser.phases=[1]",
                                      "logger=csv"], tmp_path))
    assert len(summary["loops"]) == 1
    assert summary["warnings"] and "< min_pairs 100000" in summary["warnings"][0]
    assert "< min_pairs 100000" in summary["stop_reason"]


def test_oracle_labels_train_on_human_labels_and_report_what_the_rm_thought(tmp_path):
    summary = run_experiment(compose(["experiment=smoke", "ser=top_gap", "ser.labels=oracle", "ser.phases=[1]",
                                      "logger=csv"], tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "selflabels" / "loop_1.jsonl").read_text().splitlines()]
    assert rows and all(r["label_source"] == "human" for r in rows)
    assert summary["variant"].endswith("labels=oracle")
    # the human label stays even where the RM scored it the other way round: the RM's scores then run
    # against the label, and self_label_accuracy still reports the RM's own judgement
    assert all((r["score_chosen"] > r["score_rejected"]) == r["correct"] for r in rows)
    assert summary["loops"][1]["self_label_accuracy"] == sum(r["correct"] for r in rows) / len(rows)
