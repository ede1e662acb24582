"""rm.freeze_layers: replaying the cached bottom blocks gives the full forward's rewards, and only the top trains."""

from __future__ import annotations

import pytest
import torch

from ser.reward.collator import pad_batch
from ser.reward.frozen import FrozenPrefix, transformer_blocks
from ser.reward.module import compute_rewards


def _tiny_bert(layers: int = 3) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, num_labels=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()


SEQS = [[1, 5, 7, 9, 2], [1, 8, 2], [1, 4, 4, 4, 4, 4, 2]]


def test_replayed_rewards_equal_the_full_forward():
    model = _tiny_bert()
    batch = pad_batch(SEQS, pad_id=0)
    full = compute_rewards(model, batch["input_ids"], batch["attention_mask"], "hf")
    prefix = FrozenPrefix(model, 2, pad_id=0).attach()
    assert prefix.build(SEQS) == 3 and prefix.build(SEQS[:1]) == 0  # each distinct text once
    replayed = compute_rewards(model, batch["input_ids"], batch["attention_mask"], "hf")
    torch.testing.assert_close(replayed, full, rtol=0, atol=1e-6)
    # the replay does not depend on the batch: one row alone, padded differently, scores the same
    alone = pad_batch(SEQS[1:2], pad_id=0)
    torch.testing.assert_close(compute_rewards(model, alone["input_ids"], alone["attention_mask"], "hf"), full[1:2],
                               rtol=0, atol=1e-6)


def test_only_the_blocks_above_k_and_the_head_train():
    model = _tiny_bert()
    FrozenPrefix(model, 2, pad_id=0).attach()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("bert.embeddings") or ".layer.0." in n or ".layer.1." in n for n in trainable)
    assert any(".layer.2." in n for n in trainable) and "classifier.weight" in trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    batch = pad_batch(SEQS, pad_id=0)
    compute_rewards(model, batch["input_ids"], batch["attention_mask"], "hf").sum().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable and ".layer.2.attention.self.query.weight" in " ".join(changed)
    # the state dict keeps the transformers names: checkpoints and save_pretrained are unaffected
    assert set(model.state_dict()) == set(_tiny_bert().state_dict())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"rm.freeze_layers must be in \[1, 2\]"):
        FrozenPrefix(_tiny_bert(), 3, pad_id=0)
    model = _tiny_bert()
    FrozenPrefix(model, 1, pad_id=0).attach()
    left = pad_batch(SEQS, pad_id=0, side="left")
    with pytest.raises(ValueError, match="right padding"):
        compute_rewards(model, left["input_ids"], left["attention_mask"], "hf")
    assert len(transformer_blocks(model)) == 3


def test_the_disk_cache_is_shared_and_keyed_by_weights_and_texts(tmp_path):
    model = _tiny_bert()
    batch = pad_batch(SEQS, pad_id=0)
    full = compute_rewards(model, batch["input_ids"], batch["attention_mask"], "hf")
    first = FrozenPrefix(model, 2, pad_id=0).attach()
    assert first.build_with_disk_cache(SEQS, tmp_path).startswith("computed and saved")
    second = FrozenPrefix(_tiny_bert(), 2, pad_id=0)  # same weights (seeded), a fresh process would see the file
    assert second.build_with_disk_cache(SEQS, tmp_path).startswith("loaded")
    assert second.cache.keys() == first.cache.keys()
    assert all(torch.equal(second.cache[k], first.cache[k]) for k in first.cache)
    second.attach()
    torch.testing.assert_close(compute_rewards(second.model, batch["input_ids"], batch["attention_mask"], "hf"), full,
                               rtol=0, atol=1e-6)
    # other weights or other texts: another file, never a stale cache
    other = _tiny_bert()
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight.add_(1.0)
    assert FrozenPrefix(other, 2, pad_id=0).build_with_disk_cache(SEQS, tmp_path).startswith("computed")
    assert FrozenPrefix(_tiny_bert(), 2, pad_id=0).build_with_disk_cache(SEQS[:2], tmp_path).startswith("computed")
    assert len(list(tmp_path.glob("frozen-*.safetensors"))) == 3


def test_freeze_layers_with_several_devices_is_refused_before_anything_runs(tmp_path):
    from ser.config import ConfigError, validate_config
    from tests.conftest import compose

    cfg = compose(["experiment=smoke", "rm.freeze_layers=1", "trainer=ddp_spawn", "trainer.devices=2"], tmp_path)
    with pytest.raises(ConfigError, match=r"rm\.freeze_layers.*one device"):
        validate_config(cfg)
