"""ser.final_model=soup: the final RM is the exact average of the loops' RMs, LoRA included."""

import pytest
import torch
from safetensors.torch import load_file, save_model

from ser.evolve.soup import _effective_state, average_checkpoints
from ser.reward.backbone import apply_lora, load_backbone
from tests.unit.test_reward import TINY_LLAMA, VOCAB


def _perturbed_checkpoints(model, tmp_path, n: int) -> list:
    """n checkpoints of `model`, each with its trainable tensors set to fresh random values."""
    paths = []
    for k in range(n):
        torch.manual_seed(100 + k)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn_like(p) * 0.1)
        paths.append(tmp_path / f"loop_{k}.safetensors")
        save_model(model, str(paths[-1]))
    return paths


def test_the_soup_of_plain_checkpoints_is_their_elementwise_mean(tmp_path):
    model, _ = load_backbone({"source": TINY_LLAMA}, vocab_texts=VOCAB)
    paths = _perturbed_checkpoints(model, tmp_path, 3)
    average_checkpoints(model, paths)
    states = [load_file(p) for p in paths]
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[name] for s in states) / 3, rtol=1e-6, atol=1e-6)


def test_a_lora_soup_averages_the_effective_weights_not_the_adapter_factors(tmp_path):
    model, _ = load_backbone({"source": TINY_LLAMA}, vocab_texts=VOCAB)
    model = apply_lora(model, {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]})
    paths = _perturbed_checkpoints(model, tmp_path, 2)
    effective = []
    for p in paths:
        model.load_state_dict(load_file(p), strict=False)
        effective.append(_effective_state(model))
    average_checkpoints(model, paths)
    assert all(not p.any() for n, p in model.named_parameters() if "lora_B" in n)  # the average sits in the base
    souped = _effective_state(model)
    q = next(k for k in souped if "q_proj.base_layer.weight" in k)
    torch.testing.assert_close(souped[q], (effective[0][q] + effective[1][q]) / 2, rtol=1e-5, atol=1e-6)
    # averaging A and B apart would give another matrix: the test above would fail for that soup
    a = {k: (load_file(paths[0])[k] + load_file(paths[1])[k]) / 2 for k in load_file(paths[0]) if "lora_" in k}
    model.load_state_dict(load_file(paths[0]), strict=False)
    model.load_state_dict(a, strict=False)
    assert not torch.allclose(_effective_state(model)[q], souped[q], atol=1e-4)


def test_average_checkpoints_needs_a_checkpoint():
    model, _ = load_backbone({"source": TINY_LLAMA}, vocab_texts=VOCAB)
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints(model, [])
