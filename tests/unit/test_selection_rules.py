"""Scale-free selection rules and noise-robust options, on hand-computed scores."""

import math

import pytest
import torch

from ser.data.schema import PreferencePair
from ser.evolve.agreement import agreement_mask, mc_dropout
from ser.evolve.confidence import Pairwise, Percentile, ZScore
from ser.evolve.phases import Adaptive, Status1Only, Union
from ser.evolve.rules import Thresholds
from ser.evolve.state import LoopState
from ser.evolve.step import StepSettings, evolve_step, label_weight

NO_VAL = (torch.zeros(1), torch.zeros(1))


class Given(Pairwise):
    """A confidence kind that returns preset scores, for rules tested on hand-made confidences."""

    def __init__(self, p_a, p_b):
        object.__setattr__(self, "preset", (p_a, p_b))

    def __call__(self, r1, r2):
        return self.preset


def decide(p_a, p_b, *, phases=None, thresholds, min_pairs, previous_status=None, keep=None, gap=None, cap=None):
    """One step on hand-made confidences (rewards = the gap when given), as the loop takes it."""
    gap = gap if gap is not None else (p_a - p_b).abs()
    pool = [PreferencePair(id=f"p{i}", prompt="q", chosen=f"c{i}", rejected=f"r{i}") for i in range(len(p_a))]
    settings = StepSettings(Given(p_a, p_b), thresholds, phases or Adaptive(), min_pairs=min_pairs, top_k=cap)
    state = LoopState(config_hash="h", status=previous_status)
    return evolve_step(state, pool, (gap, torch.zeros_like(gap)), NO_VAL, settings, loop=1, keep=keep)

# Pool answers' rewards: pair i = (A[i], B[i]).
A = torch.tensor([3.0, 1.0, 0.0, 2.0])
B = torch.tensor([-1.0, 0.5, 2.5, 1.0])
# all 8 answers: mean = (3+1+0+2-1+0.5+2.5+1)/8 = 9/8 = 1.125
# deviations: 1.875, -0.125, -1.125, 0.875, -2.125, -0.625, 1.375, -0.125; squares sum = 12.375
# sample std = sqrt(12.375 / 7) = 1.32961...


def test_zscore_standardises_over_every_pool_answer():
    conf = ZScore().fit(*NO_VAL, torch.cat([A, B]))
    z_a, z_b = conf(A, B)
    std = math.sqrt(12.375 / 7)
    assert z_a.tolist() == pytest.approx([1.875 / std, -0.125 / std, -1.125 / std, 0.875 / std], abs=1e-6)
    assert z_b.tolist() == pytest.approx([-2.125 / std, -0.625 / std, 1.375 / std, -0.125 / std], abs=1e-6)
    # scale-free: the same pool on another scale and offset gives the same z
    conf10 = ZScore().fit(*NO_VAL, torch.cat([A, B]) * 10 + 7)
    assert conf10(A * 10 + 7, B * 10 + 7)[0].tolist() == pytest.approx(z_a.tolist(), abs=1e-5)


def test_percentile_is_the_mid_rank_among_pool_answers():
    conf = Percentile().fit(*NO_VAL, torch.cat([A, B]))
    # sorted: -1, 0, 0.5, 1, 1, 2, 2.5, 3. r=3: 7 below -> (7+8)/16; r=1: 3 below, 5 not above -> 8/16
    p_a, p_b = conf(A, B)
    assert p_a.tolist() == pytest.approx([15 / 16, 8 / 16, 3 / 16, 11 / 16])
    assert p_b.tolist() == pytest.approx([1 / 16, 5 / 16, 13 / 16, 8 / 16])


def test_pool_modes_need_pool_rewards():
    with pytest.raises(ValueError, match="zscore needs the rewards"):
        ZScore().fit(*NO_VAL, torch.zeros(1))


T_MEDIAN = Thresholds(0.5, 0.5, 0.0, status2_kind="gap")


def test_top_gap_status1_keeps_straddling_pairs_with_the_largest_gap():
    p_a, p_b = Percentile().fit(*NO_VAL, torch.cat([A, B]))(A, B)
    gap = (A - B).abs()  # 4.0, 0.5, 2.5, 1.0
    # straddle the median (0.5): pair 0 (15/16, 1/16) yes; 1 (8/16, 5/16) no: 0.5 is not > 0.5;
    # 2 (3/16, 13/16) yes; 3 (11/16, 8/16) no. Cap 1 keeps the larger gap: pair 0.
    d = decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=1, gap=gap, cap=1)
    assert d.status == "1" and d.mask.tolist() == [True, False, False, False]
    assert d.candidates["status1"] == 2 and "top 1 by Thresholds.ranking" in d.reason
    # no cap, or a cap above the candidates: both straddling pairs
    assert decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=1).mask.tolist() == [True, False, True, False]
    assert decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=1, gap=gap, cap=3).mask.sum() == 2


def test_status2_under_a_cap_ranks_every_pair_and_the_switch_is_a_shortfall():
    p_a, p_b = torch.tensor([0.6, 0.51, 0.7, 0.9]), torch.tensor([0.55, 0.1, 0.65, 0.8])
    gap = torch.tensor([0.1, 2.0, 0.3, 1.0])
    # status 1 (max > 0.5, min < 0.5): only pair 1 -> 1 < min_pairs 2 -> status 2 (all pairs differ), top 2 by gap
    d = decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=2, gap=gap, cap=2)
    assert d.status == "2" and d.mask.tolist() == [False, True, False, True]
    assert "status 1 kept 1 < min_pairs 2: switching to status 2" == d.shortfall
    # already in status 2: a switch is no shortfall
    assert decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=2, previous_status="2",
                  gap=gap, cap=2).shortfall == ""


def test_a_cap_below_min_pairs_stops_loudly():
    p_a, p_b = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2, 0.3])
    d = decide(p_a, p_b, thresholds=T_MEDIAN, min_pairs=3, gap=torch.ones(3), cap=2)
    assert d.stop and not d.mask.any()
    assert d.shortfall == "status 1: the cap keeps 2 < min_pairs 3"


def test_every_stop_carries_a_shortfall():
    p = torch.tensor([0.5, 0.5])
    for phases in (Adaptive(), Union(), Status1Only()):
        d = decide(p, p, phases=phases, thresholds=Thresholds(status2_kind="gap"), min_pairs=1)
        assert d.stop and d.shortfall == d.reason and "< min_pairs 1" in d.reason


def test_keep_mask_removes_disagreeing_pairs_before_counting():
    p_a, p_b = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2, 0.3])
    d = decide(p_a, p_b, thresholds=Thresholds(), min_pairs=2, keep=torch.tensor([True, False, True]))
    assert d.mask.tolist() == [True, False, True] and d.candidates["status1"] == 2
    assert decide(p_a, p_b, thresholds=Thresholds(), min_pairs=3,
                  keep=torch.tensor([True, False, True])).stop


def test_agreement_mask_counts_the_share_of_scorers_that_agree():
    main_a, main_b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])  # prefers a, a, b
    others = [(torch.tensor([2.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])),   # a, b, b
              (torch.tensor([2.0, 3.0, 2.0]), torch.tensor([1.0, 1.0, 1.0]))]   # a, a, a
    assert agreement_mask(main_a, main_b, others, 1.0).tolist() == [True, False, False]
    assert agreement_mask(main_a, main_b, others, 0.5).tolist() == [True, True, True]
    assert agreement_mask(main_a, main_b, [], 1.0).tolist() == [True, True, True]


def test_mc_dropout_samples_in_eval_mode_and_restores_the_layers():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Dropout(0.0), torch.nn.Linear(8, 1)).eval()
    x = torch.randn(4, 8)
    before = net(x)
    with mc_dropout(net, 0.5):
        samples = [net(x) for _ in range(3)]
    assert not torch.equal(samples[0], samples[1])  # masks differ
    assert torch.equal(net(x), before)  # back to the deterministic layer
    with pytest.raises(ValueError, match="no dropout layers"):
        with mc_dropout(torch.nn.Linear(2, 2), 0.1):
            pass


def test_label_weight_is_zero_for_a_coin_flip_and_grows_with_the_gap():
    assert label_weight(0.0, 1.0) == pytest.approx(0.0)
    assert label_weight(2.0, 1.0) == pytest.approx(2 / (1 + math.exp(-2.0)) - 1)
    assert label_weight(2.0, None) == 1.0


def test_step_rows_carry_weights_and_respect_the_cap():
    pool = [PreferencePair(id=f"p{i}", prompt="q", chosen=f"c{i}", rejected=f"r{i}") for i in range(4)]
    ra, rb = torch.tensor([3.0, 0.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, 0.9, -2.0])
    settings = StepSettings(Pairwise(), Thresholds(0.5, 0.5, 0.0), Adaptive(), min_pairs=1, top_k=2, weight_temperature=1.0)
    rows = evolve_step(LoopState(config_hash="h"), pool, (ra, rb), NO_VAL, settings, loop=1).rows
    # gaps 3, 1, 0.1, 4: top 2 = pairs 3 and 0
    assert sorted(r["id"] for r in rows) == ["p0", "p3"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["p3"]["weight"] == pytest.approx(2 / (1 + math.exp(-4.0)) - 1)
    assert by_id["p0"]["correct"] and by_id["p0"]["chosen"] == "c0"


@pytest.mark.parametrize("oracle", [False, True])
def test_oracle_labels_keep_the_human_label_and_still_report_the_rm_agreement(oracle):
    pool = [PreferencePair(id=f"p{i}", prompt="q", chosen=f"c{i}", rejected=f"r{i}") for i in range(2)]
    ra, rb = torch.tensor([3.0, -2.0]), torch.tensor([0.0, 1.0])  # the RM gets p0 right, p1 wrong
    settings = StepSettings(Pairwise(), Thresholds(0.5, 0.5, 0.0), Adaptive(), min_pairs=1, oracle=oracle)
    rows = evolve_step(LoopState(config_hash="h"), pool, (ra, rb), NO_VAL, settings, loop=1).rows
    p1 = {r["id"]: r for r in rows}["p1"]
    assert p1["correct"] is False  # what the RM thought, in both modes
    assert (p1["chosen"], p1["rejected"]) == (("c1", "r1") if oracle else ("r1", "c1"))
    assert (p1["score_chosen"], p1["score_rejected"]) == ((-2.0, 1.0) if oracle else (1.0, -2.0))
    assert p1["label_source"] == ("human" if oracle else "rm")
