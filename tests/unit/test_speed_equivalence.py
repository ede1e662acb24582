"""The speed-ups change no result: dedup, length-sorted batches, one-pass tokenising, length-grouped
training batches, padding-free training (rewards, losses and gradients), bf16 autocast (bounded), and the
benchmarks' FLOP count (against torch's counter)."""

import functools

import pytest
import torch
from omegaconf import OmegaConf

from ser.reward.backbone import build_tiny_tokenizer, disable_dropout, load_backbone
from ser.data.tokens import TokenCache
from ser.reward.module import RewardModule, compute_rewards
from ser.reward.scoring import (
    distinct_sequences,
    length_sorted_batches,
    score_texts,
    score_token_ids,
)
from ser.reward.train import EpochBatches, fit_reward_model

TINY_BERT = {"kind": "config", "decoder": False, "config": {"model_type": "bert", "hidden_size": 16,
             "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "came", "back", "home", "to", "eat", "some", "food"]


def _model():
    torch.manual_seed(0)
    model, tok = load_backbone({"source": TINY_BERT}, vocab_texts=[" ".join(WORDS)])
    return model.eval(), tok


def _random_ids(n: int, seed: int = 0, low: int = 5, high: int = 20) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 40, (n,), generator=g).tolist()
    return [torch.randint(low, high, (k,), generator=g).tolist() for k in lengths]


def _naive(model, ids, pooling="hf"):
    """One sequence at a time, no padding, input order: the reference the fast path must match."""
    with torch.no_grad():
        return torch.stack([compute_rewards(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long),
                                            pooling)[0] for s in ids])


def test_sorted_batched_scoring_matches_one_at_a_time():
    model, tok = _model()
    ids = _random_ids(37)
    reference = _naive(model, ids)
    for batch_size in (1, 4, 64):
        fast = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf", batch_size=batch_size)
        assert fast.dtype == torch.float32 and fast.shape == (37,)
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_duplicates_are_scored_once_and_get_exactly_the_same_reward():
    model, tok = _model()
    distinct = _random_ids(10, seed=1)
    ids = [distinct[i] for i in (3, 0, 3, 9, 0, 3, 1, 2, 4, 5, 6, 7, 8, 9)]
    calls = []
    hook = model.base_model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]),
                                       with_kwargs=True)
    rewards = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf", batch_size=64)
    hook.remove()
    assert calls == [10]  # 14 inputs, 10 distinct rows forwarded
    alone = score_token_ids(model, distinct, pad_id=tok.pad_token_id, pooling="hf", batch_size=64)
    assert torch.equal(rewards, alone[torch.tensor([3, 0, 3, 9, 0, 3, 1, 2, 4, 5, 6, 7, 8, 9])])


def test_distinct_sequences_and_length_sorted_batches():
    distinct, where = distinct_sequences([[1, 2], [3], [1, 2], [4, 5, 6]])
    assert distinct == [[1, 2], [3], [4, 5, 6]] and where.tolist() == [0, 1, 0, 2]
    batches = length_sorted_batches([5, 1, 3, 2, 4], 2)
    assert batches == [[1, 3], [2, 4], [0]]
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches([1], 0)
    assert score_token_ids(torch.nn.Identity(), [], pad_id=0, pooling="hf").shape == (0,)


def test_scoring_restores_training_mode_and_score_texts_agrees():
    model, tok = _model()
    model.train()
    texts = ["the cat sat", "a dog ran far away", "the cat sat", "home"]
    cache = TokenCache(tok, max_length=16)
    rewards = score_texts(model, cache, texts, pooling="hf")
    assert model.training  # put back as found
    assert rewards[0] == rewards[2]
    torch.testing.assert_close(rewards, _naive(model.eval(), cache.encode(texts)), atol=1e-5, rtol=1e-5)


def test_bf16_autocast_moves_rewards_little():
    model, tok = _model()
    ids = _random_ids(40, seed=2)
    full = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf")
    half = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf", precision="bf16-mixed")
    assert half.dtype == torch.float32
    assert not torch.equal(half, full)  # autocast really ran in bf16
    assert (half - full).abs().max() < 0.05 * full.std() + 1e-2


def test_one_pass_tokenising_equals_truncating_tokenizer():
    tok = build_tiny_tokenizer([" ".join(WORDS)])
    tok.truncation_side = "left"
    texts = [" ".join(WORDS[:k]) for k in (1, 3, 6, 7, 8, 12, 20)]
    cache = TokenCache(tok, max_length=8)
    expected = tok(texts, truncation=True, max_length=8)["input_ids"]
    assert cache.encode(texts) == expected
    assert [cache.is_truncated(t) for t in texts] == [len(tok(t)["input_ids"]) > 8 for t in texts]
    assert any(cache.is_truncated(t) for t in texts) and not all(cache.is_truncated(t) for t in texts)


def _flat(batches: EpochBatches) -> list[list[int]]:
    return [list(b) for b in batches]


def test_length_grouped_batches_cover_every_pair_once_with_less_padding():
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(5, 500, (203,), generator=g).tolist()
    grouped, plain = EpochBatches(203, 8, seed=1, lengths=lengths), EpochBatches(203, 8, seed=1)
    for epoch in range(3):
        grouped.set_epoch(epoch)
        plain.set_epoch(epoch)
        batches = _flat(grouped)
        assert sorted(i for b in batches for i in b) == list(range(203))
        assert [len(b) for b in batches] == [8] * 25 + [3]  # a short batch only at the end
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        padded_plain = sum(len(b) * max(lengths[i] for i in b) for b in _flat(plain))
        assert padded < 0.75 * padded_plain, (padded, padded_plain)
    # deterministic per (seed, epoch), so a resumed run draws the same batches; epochs differ
    again = EpochBatches(203, 8, seed=1, lengths=lengths)
    again.set_epoch(2)
    assert _flat(again) == batches
    again.set_epoch(1)
    assert _flat(again) != batches
    # the long batches do not all come first: batch order is shuffled
    widths = [max(lengths[i] for i in b) for b in batches[:-1]]
    assert widths != sorted(widths, reverse=True)
    with pytest.raises(ValueError, match="lengths"):
        EpochBatches(5, 2, seed=0, lengths=[1, 2])


def _training_pairs(tok, longest: int) -> list[dict]:
    """24 pairs of word prefixes against word suffixes, of mixed lengths up to `longest` words."""
    g = torch.Generator().manual_seed(4)
    feats = []
    for _ in range(24):
        a, b = (torch.randint(1, longest, (1,), generator=g).item() for _ in range(2))
        feats.append({"chosen_ids": tok(" ".join(WORDS[:a]))["input_ids"],
                      "rejected_ids": tok(" ".join(WORDS[-b:]))["input_ids"], "weight": 1.0})
    return feats


def _fit(feats: list[dict], tmp_path, pad_id: int, *, group: bool = False, padding_free: bool = False,
         dropout: bool = True) -> dict[str, torch.Tensor]:
    """The tiny BERT from one seed, fit 2 epochs on `feats` (batches of 4, shuffle seed 7): its weights."""
    trainer_cfg = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
                                    "enable_progress_bar": False, "enable_model_summary": False,
                                    "default_root_dir": str(tmp_path)})
    torch.manual_seed(0)
    model, _ = load_backbone({"source": TINY_BERT}, vocab_texts=[" ".join(WORDS)])
    if not dropout:
        disable_dropout(model)
    module = RewardModule(model, lambda params: torch.optim.AdamW(params, lr=1e-2, fused=True), padding_free=padding_free)
    fit_reward_model(module, feats, [], trainer_cfg=trainer_cfg, epochs=2, batch_size=4, pad_id=pad_id, seed=7,
                     group_by_length=group)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_length_grouped_training_is_deterministic(tmp_path):
    tok = build_tiny_tokenizer([" ".join(WORDS)])
    feats = _training_pairs(tok, 12)
    first, second, plain = (_fit(feats, tmp_path, tok.pad_token_id, group=group) for group in (True, True, False))
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert any(not torch.equal(first[n], plain[n]) for n in first)  # grouping really changed the batches


def test_benchmark_flop_count_matches_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BertConfig, BertForSequenceClassification

    from experiments.bench.common import encoder_flops

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=50, num_labels=1, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    for n in (3, 17):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(input_ids=torch.randint(0, 50, (1, n)))
        assert encoder_flops(config, [n]) == counter.get_total_flops()


def test_op_ceiling_times_the_shapes_scoring_runs(monkeypatch):
    """Each op "takes" its FLOPs: the ceiling must then be the padded batches' matmul + attention
    FLOPs (hand-computed), and its no-padding variant the useful FLOPs of encoder_flops."""
    import types

    import torch.nn.functional as F

    from experiments.bench import common

    monkeypatch.setattr(common, "_op_seconds", lambda fn: fn())
    monkeypatch.setattr(F, "linear", lambda x, w, b: 2 * x.shape[0] * w.shape[1] * w.shape[0])
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda q, k, v: 4 * q.shape[0] * q.shape[1] * q.shape[2] ** 2 * q.shape[3])
    config = types.SimpleNamespace(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    ceiling = common.encoder_op_ceiling(config, [3, 5, 4], batch_size=2)
    # batches [3, 4] -> 2 x 4 padded, [5] -> 1 x 5; per token and layer 2 * (4 * 32^2 + 2 * 32 * 64) = 16384
    assert ceiling["linear_seconds"] == 2 * (8 + 5) * 16384
    assert ceiling["attention_seconds"] == 2 * 4 * 32 * (2 * 4 ** 2 + 5 ** 2)
    assert ceiling["seconds"] == ceiling["linear_seconds"] + ceiling["attention_seconds"] == 440576
    pooler_and_head = 3 * (2 * 32 * 32 + 2 * 32)
    assert ceiling["packed_seconds"] == common.encoder_flops(config, [3, 5, 4]) - pooler_and_head == 406016


@pytest.mark.slow
def test_compiled_scoring_matches_eager():
    model, tok = _model()
    ids = _random_ids(30, seed=5)
    eager = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf", batch_size=8)
    compiled = score_token_ids(model, ids, pad_id=tok.pad_token_id, pooling="hf", batch_size=8, compile=True)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_compiled_scoring_follows_weight_updates():
    """The compiled graph freezes the weights as constants: after a training step (in place) or a
    load_state_dict it must be rebuilt, or every later loop would be scored by the first loop's RM."""
    model, tok = _model()
    ids = _random_ids(20, seed=6)
    score = functools.partial(score_token_ids, model, ids, pad_id=tok.pad_token_id, pooling="hf", batch_size=8)
    before = score(compile=True)
    with torch.no_grad():
        model.classifier.weight.mul_(-2.0)  # in place, as an optimizer step
    after = score(compile=True)
    torch.testing.assert_close(after, score(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, -2.0 * (before - model.classifier.bias) + model.classifier.bias,
                               atol=1e-4, rtol=1e-4)
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
    torch.testing.assert_close(score(compile=True), score(), atol=1e-5, rtol=1e-5)


TINY_LLAMA = {"kind": "config", "decoder": True, "config": {"model_type": "llama", "hidden_size": 16,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 32}}


def _padded_batch(tok, side: str, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    from ser.reward.collator import pad_batch

    ids = _random_ids(12, seed=seed, low=5, high=len(WORDS))  # lengths 2..39: most rows carry padding
    batch = pad_batch(ids, tok.pad_token_id, side)
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize(("source", "pooling", "side"), [(TINY_BERT, "hf", "right"), (TINY_BERT, "mean", "right"),
                                                         (TINY_LLAMA, "last", "left"), (TINY_LLAMA, "mean", "right")])
def test_padding_free_rewards_losses_and_gradients_equal_the_padded_forward(source, pooling, side):
    from ser.reward.metrics import pairwise_loss
    from ser.reward.packed import packed_rewards

    torch.manual_seed(0)
    model, tok = load_backbone({"source": source}, vocab_texts=[" ".join(WORDS)])
    disable_dropout(model)  # so both paths compute the same function
    model.train()
    ids, mask = _padded_batch(tok, side)
    assert (mask == 0).float().mean() > 0.3  # the case the packed path exists for

    def loss_and_grads(fn):
        model.zero_grad()
        rewards = fn(model, ids, mask, pooling)
        loss = pairwise_loss(rewards[:6], rewards[6:])
        loss.backward()
        return rewards.detach(), loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded, packed = loss_and_grads(compute_rewards), loss_and_grads(packed_rewards)
    torch.testing.assert_close(packed[0], padded[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[1], padded[1], atol=1e-6, rtol=1e-5)
    assert packed[2].keys() == padded[2].keys() and len(padded[2]) > 5
    for name in padded[2]:
        torch.testing.assert_close(packed[2][name], padded[2][name], atol=1e-5, rtol=1e-3, msg=name)
    # positions restart per sequence: the same rows with their padding moved elsewhere give the same rewards
    flipped = packed_rewards(model, ids.flip(0), mask.flip(0), pooling).detach().flip(0)
    torch.testing.assert_close(flipped, packed[0], atol=1e-5, rtol=1e-4)


def test_padding_free_under_bf16_autocast_attends_in_fp32(monkeypatch):
    """CPU's bf16 flash-attention backward is ~10x slower than fp32's: the packed attention upcasts, the
    projections around it stay bf16, and rewards and gradients stay those of fp32 within bf16 rounding."""
    import torch.nn.functional as F

    from ser.reward.metrics import pairwise_loss
    from ser.reward.packed import packed_rewards

    torch.manual_seed(0)
    model, tok = load_backbone({"source": TINY_BERT}, vocab_texts=[" ".join(WORDS)])
    disable_dropout(model)
    model.train()
    ids, mask = _padded_batch(tok, "right")
    attended, matmuls = [], []
    sdpa, linear = F.scaled_dot_product_attention, F.linear
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, *a, **k: (attended.append(q.dtype), sdpa(q, *a, **k))[1])
    monkeypatch.setattr(F, "linear", lambda x, *a, **k: (matmuls.append((out := linear(x, *a, **k)).dtype), out)[1])

    def rewards_and_grads(bf16: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rewards = packed_rewards(model, ids, mask, "hf")
        pairwise_loss(rewards[:6], rewards[6:]).backward()
        return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    exact = rewards_and_grads(False)
    attended.clear(), matmuls.clear()
    mixed = rewards_and_grads(True)
    assert attended and set(attended) == {torch.float32}
    assert matmuls and torch.bfloat16 in matmuls  # autocast still runs the projections in bf16
    torch.testing.assert_close(mixed[0].float(), exact[0], atol=0.05, rtol=0.05)
    for name in ("bert.encoder.layer.0.attention.self.query.weight", "classifier.weight"):
        cosine = F.cosine_similarity(mixed[1][name].flatten(), exact[1][name].flatten(), dim=0)
        assert cosine > 0.99, name


@pytest.mark.parametrize("packed", [False, True])
def test_the_reward_head_runs_in_fp32_under_bf16_autocast(packed):
    """A bf16 reward has 8 bits of mantissa, so close rewards tie and decisions flip: the head (pooler,
    classifier) runs in fp32 over the bf16 encoder, padded or packed."""
    from ser.reward.packed import packed_rewards

    model, tok = _model()
    ids, mask = _padded_batch(tok, "right")
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)  # rewards of a trained RM's size (a few units), where bf16 spacing is coarse
    seen = []
    model.classifier.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    forward = packed_rewards if packed else compute_rewards
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rewards = forward(model, ids, mask, "hf")
    assert seen == [(torch.float32, torch.float32)] and rewards.dtype == torch.float32
    assert rewards.abs().max() > 1.0
    assert (rewards != rewards.bfloat16().float()).sum() >= len(rewards) // 2  # finer than bf16 could hold
    with torch.no_grad():
        exact = compute_rewards(model, ids, mask, "hf")
    torch.testing.assert_close(rewards, exact, atol=0.1, rtol=0.05)


def test_padding_free_training_ends_where_padded_training_ends(tmp_path):
    """A whole fit, packed against padded: the same batches give the same weights to float rounding."""
    tok = build_tiny_tokenizer([" ".join(WORDS)])
    feats = _training_pairs(tok, 19)
    # dropout off, as every RM config has it: its masks are drawn per padded or per packed token
    packed, padded = (_fit(feats, tmp_path, tok.pad_token_id, padding_free=on, dropout=False) for on in (True, False))
    start = load_backbone({"source": TINY_BERT}, vocab_texts=[" ".join(WORDS)])[0]
    moved = max((padded[n] - p).abs().max().item() for n, p in start.named_parameters())
    assert moved > 1e-2  # training moved the weights far more than the tolerance below
    # Two biases have a true gradient of 0: the head's cancels in r_chosen - r_rejected, and a key bias adds the
    # same q.b to every score of a softmax row. AdamW turns the float noise of either path into steps of ~lr
    # there, so they are left out; everything else must agree.
    zero_gradient = {n for n in padded if n == "classifier.bias" or n.endswith("attention.self.key.bias")}
    for name in set(padded) - zero_gradient:
        torch.testing.assert_close(packed[name], padded[name], atol=2e-4, rtol=1e-3, msg=name)


def test_padding_free_refuses_what_it_cannot_pack():
    from ser.reward.packed import check_packable

    model, _ = load_backbone({"source": TINY_LLAMA}, vocab_texts=[" ".join(WORDS)])
    with pytest.raises(ValueError, match="last token"):
        check_packable(model, "hf")
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=30, dim=16, n_layers=1, n_heads=2,
                                                                 hidden_dim=32, num_labels=1))
    with pytest.raises(ValueError, match="model_type 'distilbert' is not supported"):
        RewardModule(other, lambda params: torch.optim.SGD(params, lr=0.1), padding_free=True)
    sgd = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    assert not RewardModule(other, sgd, padding_free="auto").padding_free  # auto: padded where it cannot pack
    two_blocks = {**TINY_BERT, "config": {**TINY_BERT["config"], "num_hidden_layers": 2}}
    bert, _ = load_backbone({"source": two_blocks}, vocab_texts=[" ".join(WORDS)])
    assert RewardModule(bert, sgd, padding_free="auto").padding_free
    assert not RewardModule(bert, sgd, padding_free=False).padding_free
    from ser.reward.frozen import FrozenPrefix

    FrozenPrefix(bert, 1, 0).attach()  # rm.freeze_layers replays cached states per text: no packing
    assert not RewardModule(bert, sgd, padding_free="auto").padding_free


@pytest.mark.parametrize("causal", [False, True])
def test_per_sequence_attention_equals_the_scattered_batch(causal):
    """The CPU path (each sequence attends alone on its packed slice) against the batched one (scatter to
    [B, L], key mask, gather): outputs and gradients equal to fp32 rounding, an empty row included."""
    from ser.reward.packed import Pack, attend_each, attend_scattered

    torch.manual_seed(0)
    lengths = [5, 1, 0, 7, 3]
    rows, width, heads, dim = len(lengths), max(lengths), 3, 4
    real = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    pack = Pack(real.reshape(-1).nonzero().squeeze(1), rows, width, real[:, None, None, :], lengths)
    qkv = [torch.randn(1, heads, sum(lengths), dim, requires_grad=True) for _ in range(3)]
    grad = torch.randn(1, sum(lengths), heads, dim)
    results = []
    for attend in (attend_each, attend_scattered):
        out = attend(*qkv, pack, causal, None, 0.0)
        out.backward(grad)
        results.append((out.detach(), [t.grad.clone() for t in qkv]))
        for t in qkv:
            t.grad = None
    (each, each_grads), (scattered, scattered_grads) = results
    assert each.shape == (1, sum(lengths), heads, dim)
    torch.testing.assert_close(each, scattered, atol=1e-6, rtol=1e-5)
    for a, b in zip(each_grads, scattered_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # each sequence alone: token 0 of row 0 under the causal mask sees only itself
    if causal:
        torch.testing.assert_close(each[0, 0], qkv[2][0, :, 0].detach())
