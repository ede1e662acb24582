"""PPO/DPO math on small examples computed by hand (numbers in the comments)."""

import math

import pytest
import torch

from ser.policy import math as rl
from ser.policy.dpo import dpo_loss
from ser.policy.rollout import truncate_at_eos


def test_gae_full_mask():
    # gamma=1, lam=0.5; deltas: t2 = 3 - 1.5 = 1.5; t1 = 2 + 1.5 - 1 = 2.5; t0 = 1 + 1 - 0.5 = 1.5
    # A2 = 1.5, A1 = 2.5 + 0.5 * 1.5 = 3.25, A0 = 1.5 + 0.5 * 3.25 = 3.125
    adv, ret = rl.compute_gae(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, 1.0, 1.5]]),
                              torch.ones(1, 3), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[3.125, 3.25, 1.5]]))
    torch.testing.assert_close(ret, torch.tensor([[3.625, 4.25, 3.0]]))


def test_gae_ignores_padding_and_discounts():
    # the padded step (reward 99, value 7) must not leak: A1 = 2 - 1 = 1, A0 = (1 + 1 - 0.5) + 0.5 * 1 = 2
    adv, ret = rl.compute_gae(torch.tensor([[1.0, 2.0, 99.0]]), torch.tensor([[0.5, 1.0, 7.0]]),
                              torch.tensor([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[2.0, 1.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[2.5, 2.0, 0.0]]))
    # gamma=0.9, lam=1, zero values: A1 = 1, A0 = 0.9 * 1
    adv, _ = rl.compute_gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.9, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.9, 1.0]]))


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    torch.testing.assert_close(rl.kl_per_token(logp, ref, "k1"), torch.tensor([math.log(2.0)]))
    # k3: r = q / p = 0.5 -> (r - 1) - log r = -0.5 + log 2
    torch.testing.assert_close(rl.kl_per_token(logp, ref, "k3"), torch.tensor([-0.5 + math.log(2.0)]))
    assert float(rl.kl_per_token(ref, logp, "k3")) >= 0  # k3 is never negative
    with pytest.raises(ValueError, match="k2"):
        rl.kl_per_token(logp, ref, "k2")


def test_masked_whiten_uses_only_real_tokens():
    # real values 1, 2, 3: mean 2, unbiased variance 1 -> -1, 0, 1; the padded 100 is ignored and zeroed
    out = rl.masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-5, rtol=0)
    kept = rl.masked_whiten(torch.tensor([[1.0, 2.0, 3.0]]), torch.ones(1, 3), shift_mean=False)
    torch.testing.assert_close(kept, torch.tensor([[1.0, 2.0, 3.0]]), atol=1e-5, rtol=0)


def test_clipped_policy_loss():
    # ratio 1.5 on both tokens, cliprange 0.2. adv +1: max(-1.5, -1.2) = -1.2 (clipped);
    # adv -1: max(1.5, 1.2) = 1.5 (not clipped). loss = (-1.2 + 1.5) / 2 = 0.15
    logp = torch.full((1, 2), math.log(1.5))
    loss, stats = rl.clipped_policy_loss(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), 0.2)
    torch.testing.assert_close(loss, torch.tensor(0.15))
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(0.5))
    torch.testing.assert_close(stats["approxkl"], torch.tensor(0.5 * math.log(1.5) ** 2))


def test_clipped_value_loss():
    # V = 2, V_old = 1, R = 3, clip 0.2: clipped V = 1.2; max((2-3)^2, (1.2-3)^2) = 3.24 -> 0.5 * 3.24
    loss, stats = rl.clipped_value_loss(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]),
                                        torch.ones(1, 1), 0.2)
    torch.testing.assert_close(loss, torch.tensor(1.62))
    assert float(stats["clipfrac"]) == 1.0


def test_token_rewards_and_eos_penalty():
    # -0.5 * KL per real token; the score (2) is added at the last real token
    rewards = rl.token_rewards(torch.tensor([2.0]), torch.tensor([[0.1, 0.2, 0.3]]), torch.tensor([[1, 1, 0]]), 0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 1.9, 0.0]]))
    scores = rl.apply_eos_penalty(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), 1.0)
    torch.testing.assert_close(scores, torch.tensor([1.0, 0.0]))


def test_adaptive_kl_controller():
    # error clipped to +-0.2; coef *= 1 + error * n / horizon = 1 +- 0.2 * 100 / 10000
    high = rl.kl_controller("adaptive", 0.1, target=6.0, horizon=10000)
    high.update(12.0, 100)
    assert high.value == pytest.approx(0.1002)
    low = rl.kl_controller("adaptive", 0.1, target=6.0, horizon=10000)
    low.update(3.0, 100)
    assert low.value == pytest.approx(0.0998)
    fixed = rl.kl_controller("fixed", 0.1)
    fixed.update(100.0, 100)
    assert fixed.value == 0.1


def test_dpo_loss():
    # logits = (-1 - -1.5) - (-2 - -1.5) = 1; loss = -log sigmoid(0.1) = log(1 + e^-0.1)
    loss, chosen, rejected = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]),
                                      torch.tensor([-1.5]), beta=0.1)
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-0.1))]))
    torch.testing.assert_close(chosen, torch.tensor([0.05]))
    torch.testing.assert_close(rejected, torch.tensor([-0.05]))


def test_truncate_at_first_eos():
    out, mask, has_eos = truncate_at_eos(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_id=2, pad_id=0)
    assert out.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert has_eos.tolist() == [True, False]


def test_entropy_and_logprobs():
    logits = torch.zeros(1, 1, 4)  # uniform over 4 tokens
    torch.testing.assert_close(rl.entropy_from_logits(logits), torch.tensor([[math.log(4.0)]]))
    torch.testing.assert_close(rl.logprobs_from_logits(logits, torch.tensor([[3]])), torch.tensor([[-math.log(4.0)]]))


def test_truncate_at_eos_stays_on_the_responses_device():
    # A GPU rollout's responses live on the GPU; a mask built on the CPU would stop PPO at the first step.
    # The meta device stands in for a second device on a CPU-only machine.
    out, mask, has_eos = truncate_at_eos(torch.zeros(2, 4, dtype=torch.long, device="meta"), eos_id=2, pad_id=0)
    assert out.device.type == mask.device.type == has_eos.device.type == "meta"
