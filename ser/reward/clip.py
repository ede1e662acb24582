"""Gradient-norm clipping that writes the gradients only when it clips.

`torch.nn.utils.clip_grad_norm_` multiplies every gradient by min(1, max_norm / norm) even when that factor
is 1, to spare a GPU a host sync. On the CPU there is no sync to spare, and the multiply is a full pass over
every gradient (the embedding matrix alone is half of MiniLM's): skipping it when the factor is 1 leaves the
same gradients bit for bit and saves that pass on most steps of a fit whose norms sit below the limit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ with the same result; on CPU gradients the multiply runs only when it changes them."""
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if not grads:
        return torch.tensor(0.0)
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if all(g.device.type == "cpu" for g in grads):
        # torch's own factor, computed as it computes it, before its clamp to 1; a nan norm compares false
        # and takes torch's path as it would
        if bool(max_norm / (total + 1e-6) >= 1.0):
            return total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)  # it takes the parameters
    return total
