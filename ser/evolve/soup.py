"""The final RM as the average of every loop's RM ("model soup"; Wortsman et al., 2022).

Each loop's RM is fine-tuned from the same pretrained weights (`ser.retrain_from=base`), so their
weights can be averaged. At this scale validation holds a few dozen pairs, too few to pick the one
loop that generalises best (docs/results/real_data.md); the average needs no pick, keeps the seed
RM's clean-label knowledge beside what the self-labeled loops added, and smooths their noise.

LoRA: averaging the adapters' factors A and B is not averaging their product B·A, so each loop's
adapter is merged into its dense weights first, the dense weights are averaged, and the adapters
are zeroed: the model then computes exactly the average of the loops' effective weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_model


def _varying_keys(model: torch.nn.Module) -> set[str]:
    """State keys that can differ between loops: trainable tensors, and the base weights LoRA merges into.
    Frozen tensors (the base model under LoRA, rm.freeze_layers' blocks) are the same in every loop
    and are left alone: no fp32 copies of an 8B model's frozen weights."""
    keys = {name for name, p in model.named_parameters() if p.requires_grad}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            keys.add(f"{name}.base_layer.weight")
    return keys


def _effective_state(model: torch.nn.Module, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The model's floating-point tensors as it computes (LoRA merged in), as float32 copies."""
    merge = getattr(model, "merge_adapter", None)
    if merge is not None:
        merge()
    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()
             if v.is_floating_point() and (keys is None or k in keys)}
    if merge is not None:
        model.unmerge_adapter()  # resets peft's merged flag; the next checkpoint load overwrites the weights
    return state


def average_checkpoints(model: torch.nn.Module, paths: Sequence[str | Path]) -> None:
    """Load into `model` the uniform average of the checkpoints at `paths` (safetensors of this model)."""
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    keys = _varying_keys(model)
    total: dict[str, torch.Tensor] | None = None
    for path in paths:
        load_model(model, str(path))
        state = _effective_state(model, keys)
        total = state if total is None else {k: total[k] + state[k] for k in total}
    own = model.state_dict()
    with torch.no_grad():
        for key, summed in total.items():
            own[key].copy_((summed / len(paths)).to(own[key].dtype))
        for name, param in model.named_parameters():
            if "lora_B" in name:  # the averaged effective weights now sit in the base layers
                param.zero_()
