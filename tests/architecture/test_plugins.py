"""A user's own selection rule and phase schedule: one class and one YAML file each, outside ser/."""

from __future__ import annotations

import sys
import textwrap

import pytest

from ser.core import ConfigError

RULES = '''
import torch

from ser.evolve.phases import Choice, PhaseSchedule
from ser.evolve.rules import SelectionRule


class ShortAnswersFirst(SelectionRule):
    """Status 1: pairs whose answers differ by at least `min_gap` in reward; status 2: every pair.
    Ranked by shortness of the longer answer, to prove the ranking is the rule's own."""

    name = "short_answers_first"

    def __init__(self, min_gap: float = 0.0):
        self.min_gap = min_gap
        self.calls = []

    def status1(self, scores):
        return scores.gap >= self.min_gap

    def status2(self, scores):
        return torch.ones_like(scores.gap, dtype=torch.bool)


class TwoThenOne(PhaseSchedule):
    """Status 2 first, then status 1: not a schedule ser ships."""

    name = "two_then_one"

    def max_loops(self, configured):
        return 2

    def choose(self, loop, previous, counts, min_pairs):
        status = "2" if loop == 1 else "1"
        return Choice(status, f"loop {loop}: status {status} (user schedule)")
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text(RULES)
    conf = tmp_path / "conf"
    (conf / "ser").mkdir(parents=True)
    (conf / "phases").mkdir()
    (conf / "ser" / "short_first.yaml").write_text(textwrap.dedent("""\
        defaults:
          - _base
          - _self_
        name: short_first
        confidence:
          _target_: ser.evolve.confidence.Pairwise
        rule:
          _target_: my_rules.ShortAnswersFirst
          min_gap: 0.0
        top_fraction: 0.2
        """))
    (conf / "phases" / "two_then_one.yaml").write_text("_target_: my_rules.TwoThenOne\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield conf
    sys.modules.pop("my_rules", None)


def _compose(conf, tmp_path, extra):
    from tests.conftest import compose

    return compose(["experiment=smoke", f"hydra.searchpath=[file://{conf}]", "ser=short_first", "phases=two_then_one",
                    *extra], tmp_path / "run")


def test_a_users_rule_needs_its_module_in_allow_targets(user_package, tmp_path):
    from ser.config import validate_config

    with pytest.raises(ConfigError, match=r"ser\.rule\._target_.*my_rules\.ShortAnswersFirst.*allow_targets"):
        validate_config(_compose(user_package, tmp_path, []))


def test_a_users_rule_and_phase_schedule_run_on_a_tiny_model(user_package, tmp_path):
    from ser.tasks.run import run_experiment

    summary = run_experiment(_compose(user_package, tmp_path, ["allow_targets=[my_rules]"]))
    assert summary["selection"] == "short_first" and summary["phases"] == "two_then_one"
    assert summary["statuses"] == ["2", "1"] and [e["loop"] for e in summary["loops"]] == [0, 1, 2]
    assert "short_first: two_then_one pairwise(short_answers_first) top20%" == summary["variant"]
    assert all(e["selected"] > 0 for e in summary["loops"][1:])
