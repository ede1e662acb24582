"""Collator, loss, pooling and metrics on exact tensors; tiny models built from a config."""

import math

import pytest
import torch

from ser.reward.backbone import build_tiny_tokenizer, load_backbone
from ser.data.tokens import TokenCache
from ser.reward.collator import PairCollator, pad_batch
from ser.reward.metrics import PairwiseMetrics, pairwise_loss
from ser.reward.module import RewardModule, compute_rewards, last_token_index, resolve_pooling

TINY_BERT = {"kind": "config", "decoder": False, "config": {"model_type": "bert", "hidden_size": 16,
             "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}
TINY_LLAMA = {"kind": "config", "decoder": True, "config": {"model_type": "llama", "hidden_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32}}
VOCAB = ["the cat sat on the mat", "a dog ran far away", "Question : Answer"]


def test_collator_stacks_chosen_then_rejected_with_explicit_padding():
    batch = PairCollator(pad_id=0)([
        {"chosen_ids": [5, 6, 7], "rejected_ids": [8], "weight": 1.0},
        {"chosen_ids": [9], "rejected_ids": [10, 11], "weight": 0.5},
    ])
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [9, 0, 0], [8, 0, 0], [10, 11, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]]))
    assert torch.equal(batch["weight"], torch.tensor([1.0, 0.5]))


def test_left_padding_and_last_token_index():
    batch = pad_batch([[1, 2], [3, 4, 5]], pad_id=9, side="left")
    assert torch.equal(batch["input_ids"], torch.tensor([[9, 1, 2], [3, 4, 5]]))
    assert last_token_index(batch["attention_mask"]).tolist() == [2, 2]
    right = pad_batch([[1, 2], [3, 4, 5]], pad_id=9)
    assert last_token_index(right["attention_mask"]).tolist() == [1, 2]


def test_pairwise_loss_exact_values():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    expected = (-math.log(1 / (1 + math.exp(-1))) - math.log(1 / (1 + math.exp(2)))) / 2
    assert pairwise_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)
    weighted = pairwise_loss(chosen, rejected, torch.tensor([1.0, 0.0]))
    assert weighted.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))), rel=1e-6)


def test_metrics_exact_values():
    m = PairwiseMetrics(n_bins=10)
    m.update(torch.tensor([2.0, 0.0, 1.0, 3.0]), torch.tensor([1.0, 0.0, 2.0, 1.0]))
    out = m.compute()
    assert out["accuracy"] == pytest.approx(0.5)  # margins 1, 0 (tie = wrong), -1, 2
    assert out["margin"] == pytest.approx(0.5)
    rewards = torch.tensor([2.0, 0.0, 1.0, 3.0, 1.0, 0.0, 2.0, 1.0])
    assert out["reward_mean"] == pytest.approx(rewards.mean().item())
    assert out["reward_std"] == pytest.approx(rewards.std(unbiased=False).item(), rel=1e-5)
    # symmetrised ECE: a perfectly calibrated p = 0.5 everywhere gives 0
    m2 = PairwiseMetrics()
    m2.update(torch.zeros(4), torch.zeros(4))
    assert m2.compute()["ece"] == pytest.approx(0.0, abs=1e-7)


def test_token_cache_counts_truncation_once():
    tok = build_tiny_tokenizer(VOCAB)
    cache = TokenCache(tok, max_length=4)
    ids = cache.encode(["the cat sat on the mat", "a dog"])
    assert len(ids[0]) == 4 and cache.is_truncated("the cat sat on the mat")
    assert not cache.is_truncated("a dog")


def test_decoder_pooling_uses_last_real_token_when_pad_equals_eos():
    torch.manual_seed(0)
    model, tok = load_backbone({"source": TINY_LLAMA}, vocab_texts=VOCAB)
    assert tok.pad_token_id == tok.eos_token_id  # the trap: pad == eos
    assert resolve_pooling(model, "auto") == "last"
    short = tok("the cat")["input_ids"]  # ends with eos
    assert short[-1] == tok.eos_token_id
    alone = compute_rewards(model.eval(), torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long), "last")
    batch = pad_batch([short, tok("a dog ran far away")["input_ids"]], tok.pad_token_id)
    padded = compute_rewards(model, batch["input_ids"], batch["attention_mask"], "last")
    # right-padded with eos, the short row's reward is that of the row alone: pooled at its own eos
    assert torch.allclose(padded[0], alone[0], atol=1e-5)
    left = pad_batch([short, tok("a dog ran far away")["input_ids"]], tok.pad_token_id, side="left")
    assert torch.allclose(compute_rewards(model, left["input_ids"], left["attention_mask"], "last")[0], alone[0], atol=1e-5)
    # and that position is the sequence's own eos, not the token before it (where a pad-id search stops)
    with torch.no_grad():
        per_position = model(input_ids=torch.tensor([short]), output_hidden_states=True).hidden_states[-1]
        at_eos, before_eos = model.score(per_position[0, -1]), model.score(per_position[0, -2])
    assert torch.allclose(alone[0], at_eos.squeeze(), atol=1e-5)
    assert not torch.allclose(alone[0], before_eos.squeeze(), atol=1e-5)


def test_encoder_uses_its_own_head_and_one_forward_pass_per_pair():
    model, tok = load_backbone({"source": TINY_BERT}, vocab_texts=VOCAB)
    assert resolve_pooling(model, "auto") == "hf"
    module = RewardModule(model, lambda params: torch.optim.SGD(params, lr=0.1))
    calls = []
    model.base_model.register_forward_hook(lambda *a: calls.append(1))
    batch = PairCollator(tok.pad_token_id)([{"chosen_ids": tok("the cat")["input_ids"],
                                             "rejected_ids": tok("a dog ran")["input_ids"]}] * 3)
    chosen, rejected = module._pair_rewards(batch)
    assert chosen.shape == rejected.shape == (3,) and len(calls) == 1
    # the head is the model's own (pooler, dropout, classifier), applied as the model applies it
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    torch.testing.assert_close(torch.cat([chosen, rejected]), own)


def test_training_steps_change_every_trainable_parameter(tmp_path):
    from omegaconf import OmegaConf
    from ser.reward.train import fit_reward_model

    torch.manual_seed(0)
    model, tok = load_backbone({"source": TINY_BERT}, vocab_texts=VOCAB)
    module = RewardModule(model, lambda params: torch.optim.AdamW(params, lr=1e-2))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    feats = [{"chosen_ids": tok("the cat sat")["input_ids"], "rejected_ids": tok("a dog ran far")["input_ids"],
              "weight": 1.0}] * 8
    trainer_cfg = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
                                    "enable_progress_bar": False, "enable_model_summary": False,
                                    "default_root_dir": str(tmp_path)})
    fit_reward_model(module, feats, [], trainer_cfg=trainer_cfg, epochs=1, batch_size=4,
                     pad_id=tok.pad_token_id, seed=0)
    unchanged = [n for n, p in model.named_parameters()
                 if p.requires_grad and torch.equal(p.detach(), before[n]) and "pooler" not in n
                 and "token_type" not in n and "position" not in n]
    # word embeddings of tokens never seen do not move, but the tensor as a whole does
    assert unchanged == [], unchanged


def test_lora_keeps_the_score_head_trainable_and_saved(tmp_path):
    from ser.reward.backbone import apply_lora
    from ser.reward.export import RewardScorer, export_reward_model

    model, tok = load_backbone({"source": TINY_LLAMA}, vocab_texts=VOCAB)
    peft_model = apply_lora(model, {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "score" in n and p.requires_grad:
                p.fill_(0.25)
    rewards = RewardScorer(peft_model, tok, pooling="last").score([("the cat", "sat")])
    out = export_reward_model(peft_model, tok, tmp_path / "rm", {"pooling": "last", "template": "{prompt} {response}",
                                                                 "max_length": 32})
    loaded = RewardScorer.from_pretrained(out)
    assert torch.allclose(loaded.model.score.weight, torch.full_like(loaded.model.score.weight, 0.25))
    assert torch.allclose(loaded.score([("the cat", "sat")]), RewardScorer(peft_model, tok, pooling="last",
                          template="{prompt} {response}").score([("the cat", "sat")]), atol=1e-5)
    assert rewards.shape == (1,)


def test_bf16_autocast_with_gradient_clipping_trains_with_a_fused_optimizer(tmp_path):
    # rm.optimizer.fused=true + trainer.precision=bf16-mixed + gradient_clip_val: Lightning's AMP plugin refuses
    # to clip a fused optimizer; bf16 has no scaler, so the module clips the final gradients itself.
    from ser.tasks.run import run_experiment
    from tests.conftest import compose

    cfg = compose(["experiment=smoke", "schedule=seed_only", "logger=csv", "trainer.precision=bf16-mixed",
                   "++rm.optimizer.fused=true", "trainer.gradient_clip_val=1.0"], tmp_path)
    summary = run_experiment(cfg)
    assert summary["final"]["test_accuracy"] > 0.65  # it learned (a coin: 0.5; fp32 smoke: 0.75)


def test_bf16_clipping_bounds_the_gradient_norm_the_optimizer_sees():
    import pytorch_lightning as pl
    from functools import partial

    from ser.reward.module import RewardModule

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    module = RewardModule.__new__(RewardModule)
    pl.LightningModule.__init__(module)
    module.model = net

    class _Trainer:  # the two attributes the hook reads
        precision = "bf16-mixed"

    module._trainer = _Trainer()
    (net(torch.randn(8, 4) * 100).sum()).backward()
    optimizer = partial(torch.optim.AdamW, fused=True)(net.parameters())
    assert torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]) > 1.0
    module.configure_gradient_clipping(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("accelerator, cuda, expected", [
    ("cpu", True, "cpu"), ("gpu", True, "cuda:0"), ("cuda", True, "cuda:0"), ("auto", True, "cuda:0"),
    ("gpu", False, "cpu"), ("auto", False, "cpu"), (None, True, "cpu"),
])
def test_scoring_device_follows_the_trainer_accelerator(accelerator, cuda, expected, monkeypatch):
    from ser.reward.scoring import scoring_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert scoring_device(accelerator) == torch.device(expected)


def test_the_loop_scores_on_the_accelerator_not_where_lightning_left_the_module(monkeypatch):
    # Lightning moves the module to the CPU when fit ends: a GPU run once scored its pool and splits
    # on one CPU core (130 s a loop on an H200 instead of seconds). The scorer must target the GPU.
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from ser.reward.scorer import make_scorer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cfg = OmegaConf.create({"rm": {"eval_batch_size": 8}, "trainer": {"accelerator": "gpu", "precision": "bf16-mixed"}})
    scorer = make_scorer(cfg, SimpleNamespace(), pad_id=0, work_dir=None, world=1)
    assert scorer.device == torch.device("cuda", 0)


def test_pair_rewards_moves_the_module_to_the_scoring_device(monkeypatch):
    import ser.reward.train as train

    moved, seen = [], {}

    class Module:
        device, model, pooling = torch.device("cpu"), None, "auto"

        def to(self, device):
            moved.append(torch.device(device))
            self.device = torch.device(device)
            return self

    def fake_score(model, ids, **kwargs):
        seen.update(kwargs)
        return torch.zeros(len(ids))

    monkeypatch.setattr(train, "score_token_ids", fake_score)
    features = [{"chosen_ids": [1, 2], "rejected_ids": [1, 3]}]
    train.pair_rewards(Module(), features, pad_id=0, batch_size=4, device=torch.device("meta"))
    assert moved == [torch.device("meta")] and seen["device"] == torch.device("meta")


def test_pairwise_loss_margin_and_hard_pair_weighting_by_hand():
    import math

    from ser.reward.metrics import pairwise_loss

    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])  # margins 2 (right) and -1 (wrong)
    nll = lambda m: -math.log(1 / (1 + math.exp(-m)))
    assert pairwise_loss(chosen, rejected).item() == pytest.approx((nll(2) + nll(-1)) / 2, rel=1e-6)
    assert pairwise_loss(chosen, rejected, margin=1.0).item() == pytest.approx((nll(1) + nll(-2)) / 2, rel=1e-6)
    # gamma 2: weights (1 - sigmoid(2))^2 and (1 - sigmoid(-1))^2; the wrong pair dominates
    w = [(1 - 1 / (1 + math.exp(-m))) ** 2 for m in (2.0, -1.0)]
    expected = (w[0] * nll(2) + w[1] * nll(-1)) / 2
    assert pairwise_loss(chosen, rejected, hard_pair_gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
