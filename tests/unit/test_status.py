"""Status predicates and phase schedules on hand-computed scores; confidence kinds by hand."""

import pytest
import torch

from ser.core import ConfigError
from ser.data.schema import PreferencePair
from ser.evolve.confidence import Calibrated, Pairwise, Pointwise, fit_temperature
from ser.evolve.phases import Adaptive, Fixed, Status1Only, Union
from ser.evolve.rules import PoolScores, Thresholds
from ser.evolve.state import LoopState
from ser.evolve.step import StepSettings, evolve_step

T = Thresholds(0.55, 0.45, 0.3, status2_kind="gap")
#              pair:  0     1     2     3     4
P1 = torch.tensor([0.90, 0.60, 0.50, 0.70, 0.20])
P2 = torch.tensor([0.10, 0.50, 0.40, 0.35, 0.56])
# status 1: 0 (0.9>0.55, 0.1<0.45) yes; 1 (low 0.5 not <0.45) no; 2 (high 0.5 not >0.55) no;
#           3 (0.7, 0.35) yes; 4 (high 0.56 > 0.55, low 0.2 < 0.45) yes.
# status 2 (gap): |diff| = 0.8, 0.1, 0.1, 0.35, 0.36 -> 0, 3, 4.


def scores(p1: torch.Tensor, p2: torch.Tensor) -> PoolScores:
    return PoolScores(p1, p2, p1, p2)  # rewards = confidences: the gap ranks like |p1 - p2|


def test_status_predicates_on_hand_computed_scores():
    assert T.status1(scores(P1, P2)).tolist() == [True, False, False, True, True]
    assert T.status2(scores(P1, P2)).tolist() == [True, False, False, True, True]
    # status 2 only: 0.52 vs 0.10: status 1 no (0.52 < 0.55), status 2 yes (0.42 > 0.3)
    s = scores(torch.tensor([0.52]), torch.tensor([0.10]))
    assert T.status1(s).tolist() == [False] and T.status2(s).tolist() == [True]


def test_band_status2_keeps_clear_gaps_whose_worse_answer_is_not_clearly_bad():
    band = Thresholds(0.55, 0.45, 0.3, status2_kind="band")  # floor = tau_low = 0.45
    # gaps: 0.8 (worse 0.10: clearly bad -> no), 0.35 (worse 0.50 -> yes), 0.4 (worse 0.45 -> yes, >= floor),
    #       0.1 (no clear gap)
    p1, p2 = torch.tensor([0.90, 0.85, 0.85, 0.70]), torch.tensor([0.10, 0.50, 0.45, 0.60])
    assert band.status2(scores(p1, p2)).tolist() == [False, True, True, False]
    # an explicit floor below tau_low admits the worse answer at 0.3, not at 0.1
    low = Thresholds(0.55, 0.45, 0.3, status2_kind="band", floor=0.2)
    p1, p2 = torch.tensor([0.90, 0.90]), torch.tensor([0.10, 0.30])
    assert low.status2(scores(p1, p2)).tolist() == [False, True]
    assert band.describe() == "0.55/0.45/0.3,s2=band>=0.45"


def test_rule_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"ser\.rule\.tau_low"):
        Thresholds(0.5, 0.6).check(True)
    with pytest.raises(ConfigError, match=r"ser\.rule\.floor"):
        Thresholds(0.6, 0.4, floor=1.5).check(True)
    Thresholds(0.5, -0.5, 1.0, floor=-2.0).check(False)  # standard deviations: negative thresholds are fine
    with pytest.raises(ConfigError, match=r"ser\.rule\.status2_kind"):
        Thresholds(status2_kind="wide").check(True)


COUNTS = {"status1": 3, "status2": 3, "union": 3}


def test_adaptive_uses_status1_while_enough_then_switches_and_stays():
    a = Adaptive()
    assert a.choose(1, None, COUNTS, 3).status == "1"
    switched = a.choose(2, "1", {"status1": 1, "status2": 3, "union": 3}, 2)
    assert switched.status == "2" and switched.shortfall == "status 1 kept 1 < min_pairs 2: switching to status 2"
    stay = a.choose(3, "2", COUNTS, 1)  # once in status 2, stays there even if status 1 would yield enough
    assert stay.status == "2" and stay.shortfall == ""
    stop = a.choose(1, None, COUNTS, 4)
    assert stop.stop and "min_pairs 4" in stop.reason and stop.shortfall == stop.reason
    assert a.max_loops(5) == 5


def test_fixed_schedules_run_their_list_and_stop_loudly_when_a_status_falls_short():
    paper = Fixed(statuses=[1, 1, 2], label="paper")
    assert [paper.choose(k, None, COUNTS, 1).status for k in (1, 2, 3)] == ["1", "1", "2"]
    assert paper.max_loops(10) == 3 and paper.describe() == "paper[1,1,2]"
    assert paper.choose(4, "2", COUNTS, 1).stop  # past the end of the list
    short = paper.choose(3, "1", {"status1": 9, "status2": 2, "union": 9}, 5)
    assert short.stop and short.shortfall == "loop 3 of ['1', '1', '2']: status 2 kept 2 < min_pairs 5"
    longer = Fixed(statuses=[1, 2, 2, 2])
    assert [longer.choose(k, None, COUNTS, 1).status for k in range(1, 5)] == ["1", "2", "2", "2"]


@pytest.mark.parametrize("statuses,message", [([], "at least one status"), ([1, 3], "must be 1 or 2"),
                                              (["x"], "must be 1 or 2")])
def test_invalid_fixed_schedules_are_refused(statuses, message):
    with pytest.raises(ConfigError, match=message):
        Fixed(statuses=statuses).check("ser.phases")


def test_union_and_status1_only():
    assert Union().choose(1, None, {"status1": 1, "status2": 1, "union": 2}, 2).status == "union"
    assert Union().choose(1, None, {"status1": 1, "status2": 1, "union": 1}, 2).stop
    assert Status1Only().choose(2, "1", {"status1": 1, "status2": 9, "union": 9}, 1).status == "1"
    assert Status1Only().choose(2, "1", {"status1": 1, "status2": 9, "union": 9}, 2).stop


def test_confidence_kinds():
    r1, r2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    p1, p2 = Pointwise()(r1, r2)
    assert torch.allclose(p1, torch.sigmoid(r1)) and torch.allclose(p2, torch.tensor([0.5, 0.5]))
    q1, q2 = Pairwise()(r1, r2)
    assert torch.allclose(q1, torch.tensor([torch.sigmoid(torch.tensor(2.0)).item(), 0.5]))
    assert torch.allclose(q1 + q2, torch.ones(2))
    c1, c2 = Calibrated(temperature=2.0, reference=torch.tensor([0.0, 2.0]))(r1, r2)
    s = torch.sigmoid
    # r=2 vs references 0 and 2: (s(1) + s(0)) / 2; r=0: (s(0) + s(-1)) / 2
    at_zero = (0.5 + s(torch.tensor(-1.0))) / 2
    assert torch.allclose(c1, torch.tensor([(s(torch.tensor(1.0)) + 0.5) / 2, at_zero]))
    assert torch.allclose(c2, torch.tensor([at_zero, at_zero]))


def test_calibrated_confidence_does_not_saturate_when_rewards_spread_far_beyond_t():
    # Rewards spread over +-50 with T = 0.1: sigmoid((r - median) / T) would be 0 or 1 for every answer,
    # so no pair could pass status 2; beating-the-reference probabilities stay spread like ranks.
    conf = Calibrated(temperature=0.1, reference=torch.linspace(-50, 50, 101))
    p1, p2 = conf(torch.tensor([40.0, 5.0]), torch.tensor([30.0, -5.0]))
    assert torch.allclose(p1 - p2, torch.tensor([0.1, 0.1]), atol=0.01)


def test_temperature_fit_recovers_a_known_temperature():
    # Margins drawn so that sigmoid(m / 2) is calibrated: the NLL minimiser is near T = 2.
    gen = torch.Generator().manual_seed(0)
    true_logit = torch.randn(20000, generator=gen) * 3
    label = torch.bernoulli(torch.sigmoid(true_logit), generator=gen)
    margins = torch.where(label.bool(), 2 * true_logit, -2 * true_logit)
    assert abs(fit_temperature(margins) - 2.0) < 0.15


def test_step_picks_the_higher_scored_answer_and_records_provenance():
    pool = [PreferencePair(f"p{i}", "q", f"good{i}", f"bad{i}") for i in range(3)]
    reward_a = torch.tensor([3.0, -3.0, 0.1])  # answer a = the hidden true chosen
    reward_b = torch.tensor([-3.0, 3.0, 0.0])
    settings = StepSettings(Pointwise(), T, Adaptive(), min_pairs=1)
    state = LoopState(config_hash="h")
    step = evolve_step(state, pool, (reward_a, reward_b), (torch.zeros(1), torch.zeros(1)), settings, loop=2)
    rows = step.rows
    assert step.status == "1" and [r["id"] for r in rows] == ["p0", "p1"]
    assert rows[0]["chosen"] == "good0" and rows[0]["correct"] is True
    assert rows[1]["chosen"] == "bad1" and rows[1]["rejected"] == "good1" and rows[1]["correct"] is False
    assert rows[1]["loop"] == 2 and rows[1]["status"] == "1"
    assert rows[1]["score_chosen"] == 3.0 and rows[1]["score_rejected"] == -3.0
    assert abs(rows[0]["confidence"] - (torch.sigmoid(torch.tensor(3.0)) - torch.sigmoid(torch.tensor(-3.0))).item()) < 1e-6
    # pure: the input state is untouched; the new one holds the labels and the pool removals
    assert state.selected == {} and state.removed_from_pool == [] and state.status is None
    assert set(step.state.selected) == {"p0", "p1"} and step.state.removed_from_pool == ["p0", "p1"]
    assert step.state.status == "1"


def test_quantile_strata_and_the_cap_shared_across_them():
    from ser.evolve.rules import quantile_strata, stratified_cap_mask

    assert quantile_strata(torch.tensor([5, 1, 9, 3, 7, 2]), 2).tolist() == [1, 0, 1, 0, 1, 0]
    assert quantile_strata(torch.tensor([4, 4, 4, 4]), 2).tolist() == [0, 0, 1, 1]  # ties split by position
    mask = torch.tensor([True, True, True, True, True, True, True, False])
    ranking = torch.tensor([9.0, 8.0, 7.0, 6.0, 3.0, 2.0, 1.0, 5.0])
    strata = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # a plain cap of 4 takes stratum 0's four; shared, each stratum keeps floor(4 * 4 / 8) = 2: 0, 1 and 4, 5
    assert torch.equal(stratified_cap_mask(mask, ranking, 4, strata), torch.tensor([1, 1, 0, 0, 1, 1, 0, 0]).bool())
    # stratum 1 has one candidate: it keeps it, the slot left over goes to the best-ranked anywhere (pair 2)
    only_one = mask & torch.tensor([1, 1, 1, 1, 1, 0, 0, 0]).bool()
    assert torch.equal(stratified_cap_mask(only_one, ranking, 4, strata), torch.tensor([1, 1, 1, 0, 1, 0, 0, 0]).bool())
    assert torch.equal(stratified_cap_mask(mask, ranking, None, strata), mask)


def test_step_with_length_strata_keeps_the_clearest_short_and_long_pairs():
    long, short = "x" * 200, "y"
    pool = [PreferencePair(f"p{i}", "q", long if i < 4 else short, long if i < 4 else short) for i in range(8)]
    # the long answers' gaps are all larger than the short ones': a plain top-4 cap keeps only long pairs
    reward_a = torch.tensor([4.0, 3.5, 3.0, 2.5, 1.0, 0.9, 0.8, 0.7])
    reward_b = torch.full((8,), -1.0)
    rule = T.__class__(0.5, 0.5, 0.0, status2_kind="gap")  # every pair a status-1 candidate (p_a > 0.5 > p_b)
    plain = StepSettings(Pointwise(), rule, Fixed(statuses=("1",)), min_pairs=1, top_k=4)
    shared = StepSettings(Pointwise(), rule, Fixed(statuses=("1",)), min_pairs=1, top_k=4, stratify_bins=2)
    run = lambda s: evolve_step(LoopState(config_hash="h"), pool, (reward_a, reward_b), (torch.zeros(1), torch.zeros(1)),
                                s, loop=1)
    assert [r["id"] for r in run(plain).rows] == ["p0", "p1", "p2", "p3"]
    step = run(shared)
    assert [r["id"] for r in step.rows] == ["p0", "p1", "p4", "p5"]
    assert "in 2 response-length bins" in step.reason


def test_stratify_bins_needs_a_cap_and_two_bins():
    from ser.config.schema import SERSchema

    node = {"_target_": "x"}
    with pytest.raises(ConfigError, match="ser.stratify_bins"):
        SERSchema(confidence=node, rule=node, stratify_bins=1, top_fraction=0.25)
    with pytest.raises(ConfigError, match="ser.stratify_bins"):
        SERSchema(confidence=node, rule=node, stratify_bins=4)
    assert SERSchema(confidence=node, rule=node, stratify_bins=4, top_fraction=0.25).stratify_bins == 4
