"""Two PPO and two DPO steps end to end on a tiny random LM; generation scored by an RM with another tokenizer."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from ser.evaluate.policy_eval import evaluate_policy, win_tie_loss
from ser.policy.rollout import RewardFunction, encode_prompts, generate

TRL_METRICS = ("objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/non_score_reward",
               "objective/scores", "policy/clipfrac_avg", "val/clipfrac_avg", "loss/value_avg", "loss/policy_avg",
               "policy/approxkl_avg", "policy/entropy_avg", "val/ratio", "val/num_eos_tokens")


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_all_changed(before, model):
    after = dict(model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    assert not unchanged, f"parameters not updated: {unchanged}"


def _trainer(tmp_path, **kwargs):
    import pytorch_lightning as pl

    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), **kwargs)


def test_two_ppo_steps_update_every_trainable_parameter(tiny_policy, tiny_rm_dir, pairs, tmp_path):
    from torch.utils.data import DataLoader

    from ser.policy.ppo import PPOModule

    cfg, model, tokenizer = tiny_policy
    assert model.uses_lora
    prompts = sorted({p.prompt for p in pairs})[:8]
    ids = encode_prompts(tokenizer, prompts, 64, chat_template=False)
    items = [{"prompt": p, "prompt_ids": i} for p, i in zip(prompts, ids)]
    loader = DataLoader(items, batch_size=4, collate_fn=lambda b: {"prompt": [x["prompt"] for x in b],
                                                                 "prompt_ids": [x["prompt_ids"] for x in b]})
    ppo = {**OmegaConf.to_container(cfg.policy.ppo, resolve=True), "minibatch_size": 2, "ppo_epochs": 1}
    generation = {**OmegaConf.to_container(cfg.policy.generation), "max_new_tokens": 6, "temperature": 1.0}
    module = PPOModule(model, tokenizer, RewardFunction(tiny_rm_dir, tokenizer), ppo, generation,
                       lambda params: torch.optim.AdamW(params, lr=1e-2))
    before = _trainable(model)
    _trainer(tmp_path, max_epochs=1).fit(module, loader)
    assert len(module.history) == 2  # two PPO iterations
    _assert_all_changed(before, model)  # LoRA A and B of every adapted layer, and the value head
    for step in module.history:
        missing = [m for m in TRL_METRICS if m not in step]
        assert not missing, missing
        assert all(torch.isfinite(torch.tensor(v)) for v in step.values())
    # the reference is the adapter switched off: it did not move
    with model.reference() as ref:
        assert not any(p.requires_grad for n, p in ref.named_parameters() if "lora" not in n)


def test_two_dpo_steps_update_every_trainable_parameter(tiny_policy, pairs, tmp_path):
    from torch.utils.data import DataLoader

    from ser.policy.dpo import DPOCollator, DPOModule, dpo_features
    from ser.policy.model import PolicyWithValue

    cfg, model, tokenizer = tiny_policy
    model = PolicyWithValue(model.policy, with_value=False)  # DPO needs no value head
    features = dpo_features(pairs[:8], tokenizer, cfg.policy)
    first = features[0]
    assert first["chosen"]["response_ids"][-1] == tokenizer.eos_token_id  # the policy learns to stop
    loader = DataLoader(features, batch_size=4, collate_fn=DPOCollator(tokenizer.pad_token_id))
    module = DPOModule(model, lambda params: torch.optim.AdamW(params, lr=1e-2), beta=0.1)
    before = _trainable(model)
    _trainer(tmp_path, max_steps=2).fit(module, loader)
    assert len(module.history) == 2
    _assert_all_changed(before, model)
    # step 1: policy == reference, so the implicit rewards are 0 and the loss is log 2
    assert module.history[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert module.history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_generation_is_scored_by_an_rm_with_another_tokenizer(tiny_policy, tiny_rm_dir, pairs, caplog):
    from ser.reward.export import RewardScorer

    _, model, tokenizer = tiny_policy
    with caplog.at_level(logging.INFO, logger="ser.policy.rollout"):
        reward = RewardFunction(tiny_rm_dir, tokenizer, normalize=False)
    assert not reward.same_tokenizer and "differs" in caplog.text
    prompts = sorted({p.prompt for p in pairs})[:4]
    rollout = generate(model, tokenizer, encode_prompts(tokenizer, prompts, 64, chat_template=False),
                       {"max_new_tokens": 5, "do_sample": True, "temperature": 1.0})
    assert rollout.response.shape == (4, rollout.response_mask.shape[1]) and rollout.lengths.min() >= 1
    scores = reward(prompts, rollout.texts)
    # the RM re-encodes the decoded text with its own tokenizer: the same as scoring the text directly
    direct = RewardScorer.from_pretrained(tiny_rm_dir).score(list(zip(prompts, rollout.texts)))
    torch.testing.assert_close(scores, direct)
    rm_ids = reward.scorer.tokenizer(rollout.texts[0])["input_ids"]
    assert rm_ids != tokenizer(rollout.texts[0])["input_ids"]


def test_evaluation_reports_zero_kl_before_training_and_win_rates(tiny_policy, tiny_rm_dir, pairs):
    _, model, tokenizer = tiny_policy
    prompts = sorted({p.prompt for p in pairs})[:4]
    ids = encode_prompts(tokenizer, prompts, 64, chat_template=False)
    judge = RewardFunction(tiny_rm_dir, tokenizer, normalize=False)
    result = evaluate_policy(model, tokenizer, prompts, ids, judge, {"max_new_tokens": 5, "temperature": 1.0},
                             batch_size=2)
    assert len(result["gold"]) == 4 and result["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # LoRA B starts at 0
    again = evaluate_policy(model, tokenizer, prompts, ids, judge, {"max_new_tokens": 5, "temperature": 1.0},
                            batch_size=2)
    assert again["responses"] == result["responses"]  # the eval seed fixes the sampling noise
    assert win_tie_loss([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]) == {"win": 1 / 3, "tie": 1 / 3, "loss": 1 / 3}


def test_response_logits_from_the_kept_positions_match_the_full_forward(tiny_policy, pairs):
    from ser.policy.ppo import response_logits

    _, model, tokenizer = tiny_policy
    prompts = sorted({p.prompt for p in pairs})[:3]
    rollout = generate(model, tokenizer, encode_prompts(tokenizer, prompts, 64, chat_template=False),
                       {"max_new_tokens": 5, "temperature": 1.0})
    r = rollout.response.shape[1]
    with torch.no_grad():
        full, _ = model(rollout.input_ids, rollout.attention_mask)
        kept, _ = model(rollout.input_ids, rollout.attention_mask, logits_to_keep=r + 1)
    torch.testing.assert_close(response_logits(kept, r, 1.0), full[:, rollout.query.shape[1] - 1:-1])


def test_target_logps_equal_the_full_logits_for_policy_and_reference(tiny_policy, pairs):
    """DPO and SFT apply the LM head to target tokens only: the same log-probs, and gradients, as the head
    on every position; with the adapter trained away from 0, so policy and reference differ."""
    from ser.policy.dpo import DPOCollator, dpo_features
    from ser.policy.math import sequence_logprobs

    import copy

    cfg, model, tokenizer = tiny_policy
    model = copy.deepcopy(model)  # its adapter is moved below
    batch = DPOCollator(tokenizer.pad_token_id)(dpo_features(pairs[:3], tokenizer, cfg.policy))
    ids, mask, targets = batch["input_ids"], batch["attention_mask"], batch["target_mask"]
    assert (mask[:, 1:] > targets[:, 1:]).any() and (mask == 0).any()  # prompts and padding left out
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn_like(p))

    def full(logits):
        logprobs, m = sequence_logprobs(logits, ids, targets)
        return (logprobs * m).sum(1)

    grads = []
    for fast in (True, False):
        model.zero_grad()
        logps = model.target_logps(ids, mask, targets) if fast else full(model(ids, mask, with_value=False)[0])
        logps.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if fast:
            fast_logps = logps.detach()
    torch.testing.assert_close(fast_logps, logps.detach())
    assert grads[0].keys() == grads[1].keys() and any("lora" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)
    reference = model.target_logps(ids, mask, targets, reference=True)
    torch.testing.assert_close(reference, full(model.reference_logits(ids, mask)))
    assert not torch.allclose(reference, fast_logps)


def test_sft_learns_the_response_only_and_becomes_the_new_reference(tiny_policy, pairs, tmp_path):
    from ser.policy.sft import collate_sequences, sft_features
    from ser.policy.train import run_sft

    cfg, model, tokenizer = tiny_policy
    features = sft_features(pairs[:2], tokenizer, cfg.policy)
    batch = collate_sequences(features, tokenizer.pad_token_id)
    first = features[0]
    n_prompt, n_resp = len(first["prompt_ids"]), len(first["response_ids"])
    # the loss targets are exactly the response tokens (EOS included), never the prompt or padding
    assert batch["target_mask"][0].tolist()[:n_prompt] == [0] * n_prompt
    assert batch["target_mask"][0].sum() == n_resp
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.policy.sft.lr = 1e-2
        cfg.trainer.enable_progress_bar = False
    base = {n: p.detach().clone() for n, p in model.policy.get_base_model().named_parameters() if "lora" not in n}
    new = run_sft(cfg, tmp_path, model, tokenizer, pairs[:8], loggers=[])
    merged = dict(new.policy.get_base_model().named_parameters())
    changed = [n for n, p in base.items() if n in merged and not torch.equal(p, merged[n].detach())]
    assert any("q_proj" in n for n in changed)  # the SFT adapter was merged into the weights
    assert new.uses_lora and new.value_head is not None
    prompts = sorted({p.prompt for p in pairs})[:3]
    ids = encode_prompts(tokenizer, prompts, 64, chat_template=False)
    def judge(prompts, responses):
        return torch.zeros(len(prompts))

    result = evaluate_policy(new, tokenizer, prompts, ids, judge, {"max_new_tokens": 4, "temperature": 1.0})
    assert result["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # PPO's reference is now the SFT model


def test_generation_sends_the_prompts_to_the_policys_device(tokenizer_free_prompts=((5, 6), (7,))):
    # Prompts arrive as token-id lists (the PPO batch and the evaluation): a policy on a GPU must get them
    # there. The meta device stands in for a second device; the fake policy records what reached it.
    from types import SimpleNamespace

    class Reached(Exception):
        pass

    def reach(input_ids, attention_mask, **kwargs):
        raise Reached(input_ids.device, attention_mask.device)

    class FakePolicy(torch.nn.Module):  # PolicyWithValue's shape: parameters, and .policy.generate
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, device="meta"))
            self.policy = SimpleNamespace(generate=reach)

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    with pytest.raises(Reached) as reached:
        generate(FakePolicy(), tokenizer, [list(p) for p in tokenizer_free_prompts], {"max_new_tokens": 2})
    assert [d.type for d in reached.value.args] == ["meta", "meta"]
