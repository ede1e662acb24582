"""Status rules and filters on hand-computed scores."""

import torch

from ser.evolve.confidence import Confidence, fit_temperature
from ser.evolve.selection import self_label
from ser.evolve.status import Thresholds, decide, status1_mask, status2_mask
from ser.data.schema import PreferencePair

T = Thresholds(0.55, 0.45, 0.3)
#              pair:  0     1     2     3     4
P1 = torch.tensor([0.90, 0.60, 0.50, 0.70, 0.20])
P2 = torch.tensor([0.10, 0.50, 0.40, 0.35, 0.56])
# status 1: 0 (0.9>0.55, 0.1<0.45) yes; 1 (low 0.5 not <0.45) no; 2 (high 0.5 not >0.55) no;
#           3 (0.7, 0.35) yes; 4 (high 0.56 > 0.55, low 0.2 < 0.45) yes.
# status 2: |diff| = 0.8, 0.1, 0.1, 0.35, 0.36 -> 0, 3, 4.


def test_status_predicates_on_hand_computed_scores():
    assert status1_mask(P1, P2, T).tolist() == [True, False, False, True, True]
    assert status2_mask(P1, P2, T).tolist() == [True, False, False, True, True]
    p1, p2 = torch.tensor([0.60, 0.52]), torch.tensor([0.20, 0.10])
    # status 2 only: both below tau_high? 0.52 vs 0.10: status 1 no (0.52 < 0.55), status 2 yes (0.42 > 0.3)
    assert status1_mask(p1[1:], p2[1:], T).tolist() == [False]
    assert status2_mask(p1[1:], p2[1:], T).tolist() == [True]


def test_paper_rule_uses_status1_while_enough_then_switches_and_stays():
    d = decide(P1, P2, rule="paper", thresholds=T, min_pairs=3)
    assert d.status == "1" and d.mask.tolist() == [True, False, False, True, True]
    assert d.candidates == {"status1": 3, "status2": 3, "union": 3}
    # status 1 too few -> status 2
    p1, p2 = torch.tensor([0.53, 0.52, 0.9]), torch.tensor([0.2, 0.1, 0.1])
    d2 = decide(p1, p2, rule="paper", thresholds=T, min_pairs=2)
    assert d2.status == "2" and d2.mask.tolist() == [True, True, True]
    # once in status 2, stays there even if status 1 would yield enough
    d3 = decide(P1, P2, rule="paper", thresholds=T, min_pairs=1, previous_status="2")
    assert d3.status == "2"
    # neither yields enough -> stop, nothing kept
    d4 = decide(P1, P2, rule="paper", thresholds=T, min_pairs=4)
    assert d4.stop and not d4.mask.any() and "min_pairs 4" in d4.reason


def test_union_and_status1_only():
    p1, p2 = torch.tensor([0.53, 0.9, 0.5]), torch.tensor([0.2, 0.1, 0.5])
    d = decide(p1, p2, rule="union", thresholds=T, min_pairs=2)
    assert d.status == "union" and d.mask.tolist() == [True, True, False]
    d1 = decide(p1, p2, rule="status1_only", thresholds=T, min_pairs=1)
    assert d1.status == "1" and d1.mask.tolist() == [False, True, False]
    assert decide(p1, p2, rule="status1_only", thresholds=T, min_pairs=2).stop


def test_confidence_modes():
    r1, r2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    p1, p2 = Confidence("pointwise").probabilities(r1, r2)
    assert torch.allclose(p1, torch.sigmoid(r1)) and torch.allclose(p2, torch.tensor([0.5, 0.5]))
    q1, q2 = Confidence("pairwise").probabilities(r1, r2)
    assert torch.allclose(q1, torch.tensor([torch.sigmoid(torch.tensor(2.0)).item(), 0.5]))
    assert torch.allclose(q1 + q2, torch.ones(2))
    reference = torch.tensor([0.0, 2.0])
    c1, c2 = Confidence("calibrated", temperature=2.0, reference=reference).probabilities(r1, r2)
    s = torch.sigmoid
    # r=2 vs references 0 and 2: (s(1) + s(0)) / 2; r=0: (s(0) + s(-1)) / 2
    at_zero = (0.5 + s(torch.tensor(-1.0))) / 2
    assert torch.allclose(c1, torch.tensor([(s(torch.tensor(1.0)) + 0.5) / 2, at_zero]))
    assert torch.allclose(c2, torch.tensor([at_zero, at_zero]))


def test_calibrated_confidence_does_not_saturate_when_rewards_spread_far_beyond_t():
    # Rewards spread over +-50 with T = 0.1: sigmoid((r - median) / T) would be 0 or 1 for every answer,
    # so no pair could pass status 2; beating-the-reference probabilities stay spread like ranks.
    reference = torch.linspace(-50, 50, 101)
    conf = Confidence("calibrated", temperature=0.1, reference=reference)
    p1, p2 = conf.probabilities(torch.tensor([40.0, 5.0]), torch.tensor([30.0, -5.0]))
    assert torch.allclose(p1 - p2, torch.tensor([0.1, 0.1]), atol=0.01)


def test_temperature_fit_recovers_a_known_temperature():
    # Margins drawn so that sigmoid(m / 2) is calibrated: the NLL minimiser is near T = 2.
    gen = torch.Generator().manual_seed(0)
    true_logit = torch.randn(20000, generator=gen) * 3
    label = torch.bernoulli(torch.sigmoid(true_logit), generator=gen)
    margins = torch.where(label.bool(), 2 * true_logit, -2 * true_logit)
    assert abs(fit_temperature(margins) - 2.0) < 0.15


def test_self_label_picks_the_higher_scored_answer_and_records_provenance():
    pool = [PreferencePair(f"p{i}", "q", f"good{i}", f"bad{i}") for i in range(3)]
    reward_a = torch.tensor([3.0, -3.0, 0.1])  # answer a = the hidden true chosen
    reward_b = torch.tensor([-3.0, 3.0, 0.0])
    decision, rows = self_label(pool, reward_a, reward_b, confidence=Confidence("pointwise"), rule="paper",
                                thresholds=T, min_pairs=1, previous_status=None, loop=2)
    assert decision.status == "1" and [r["id"] for r in rows] == ["p0", "p1"]
    assert rows[0]["chosen"] == "good0" and rows[0]["correct"] is True
    assert rows[1]["chosen"] == "bad1" and rows[1]["rejected"] == "good1" and rows[1]["correct"] is False
    assert rows[1]["loop"] == 2 and rows[1]["status"] == "1"
    assert rows[1]["score_chosen"] == 3.0 and rows[1]["score_rejected"] == -3.0
    assert abs(rows[0]["confidence"] - (torch.sigmoid(torch.tensor(3.0)) - torch.sigmoid(torch.tensor(-3.0))).item()) < 1e-6
