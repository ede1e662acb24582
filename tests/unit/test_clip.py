"""Gradient clipping: the same gradients as torch's clip_grad_norm_, written only when it clips."""

from types import SimpleNamespace

import pytest
import torch

from ser.reward.clip import clip_grad_norm
from ser.reward.module import RewardModule


def _params(scale: float) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7)), torch.nn.Parameter(torch.randn(2))]
    for p in params[:2]:
        p.grad = torch.randn_like(p) * scale
    return params  # the last one has no gradient, as a frozen or unused parameter


@pytest.mark.parametrize("scale", [1e-3, 0.05, 10.0, 1e3])
def test_equals_torch_bit_for_bit(scale):
    ours, theirs = _params(scale), _params(scale)
    total = clip_grad_norm(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(total, expected)
    for a, b in zip(ours[:2], theirs[:2]):
        assert torch.equal(a.grad, b.grad)


def test_writes_the_gradients_only_when_it_clips():
    below, above = _params(0.01), _params(10.0)
    versions = [p.grad._version for p in below[:2]]
    assert float(clip_grad_norm(below, 1.0)) < 1.0
    assert [p.grad._version for p in below[:2]] == versions  # no in-place multiply by 1
    before = [p.grad.clone() for p in above[:2]]
    assert float(clip_grad_norm(above, 1.0)) > 1.0
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in above[:2]]))) == pytest.approx(1.0, rel=1e-5)
    assert all(not torch.equal(a, p.grad) for a, p in zip(before, above[:2]))


def test_non_finite_norm_as_torch():
    ours, theirs = _params(1.0), _params(1.0)
    for ps in (ours, theirs):
        ps[0].grad[0, 0] = float("nan")
    clip_grad_norm(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for a, b in zip(ours[:2], theirs[:2]):
        assert torch.equal(a.grad.isnan(), b.grad.isnan())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_module_clips_through_it(monkeypatch, precision):
    calls = []
    monkeypatch.setattr("ser.reward.module.clip_grad_norm", lambda params, limit: calls.append((len(params), limit)))
    module = RewardModule(torch.nn.Linear(2, 1), lambda params: torch.optim.SGD(params, lr=0.1))
    monkeypatch.setattr(RewardModule, "trainer", property(lambda self: SimpleNamespace(precision=precision)))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.configure_gradient_clipping(optimizer, 0.5, "norm")
    assert calls == [(2, 0.5)]
