"""project(): one matrix product for several Linear layers gives their outputs and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longseq.layers.projection import project


def _layers(bias: bool, sizes=(12, 12, 8)) -> list[nn.Linear]:
    torch.manual_seed(0)
    return [nn.Linear(10, s, bias=bias) for s in sizes]


def _plain(x: torch.Tensor, layers: list[nn.Linear]) -> tuple[torch.Tensor, ...]:
    return tuple(F.linear(x, layer.weight, layer.bias) for layer in layers)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("use", ["all", "first_two"])
@pytest.mark.parametrize("autocast", [False, True])
def test_gradients_equal_plain_autograd(bias: bool, use: str, autocast: bool) -> None:
    layers = _layers(bias)
    x = torch.randn(2, 7, 10, requires_grad=True)
    gos = [torch.randn(2, 7, layer.out_features) for layer in layers]
    results = []
    for fn in (project, _plain):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outs = fn(x, *layers) if fn is project else fn(x, layers)
        taken = range(3) if use == "all" else range(2)  # an unused output gets no gradient
        loss = sum((outs[i].float() * gos[i]).sum() for i in taken)
        params = [x, *(p for layer in layers for p in layer.parameters())]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        results.append(([o.detach() for o in outs], grads))
    (outs, grads), (want_outs, want_grads) = results
    for o, w in zip(outs, want_outs, strict=True):
        tol = dict(rtol=1e-2, atol=1e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
        assert o.dtype == w.dtype and torch.allclose(o.float(), w.float(), **tol)
    for g, w in zip(grads, want_grads, strict=True):
        if w is None:  # a part's weight with no gradient: zeros from the fused product
            assert g is None or not g.any()
            continue
        assert g.dtype == w.dtype
        tol = dict(rtol=2e-2, atol=1e-2) if autocast else dict(rtol=1e-5, atol=1e-6)
        assert torch.allclose(g.float(), w.float(), **tol)


def test_autocast_input_casts_once_under_autocast_only() -> None:
    from longseq.layers.projection import autocast_input

    x = torch.randn(2, 3, 4)
    assert autocast_input(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = autocast_input(x)
        assert cast.dtype == torch.bfloat16 and torch.equal(cast, x.to(torch.bfloat16))
        assert autocast_input(cast) is cast  # already in autocast's dtype


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    return t.view(t.shape[0], t.shape[1], h, -1).transpose(1, 2)


def test_fused_base_finds_the_heads_of_a_project_output_only() -> None:
    from longseq.attention._common import fused_base

    layers = [nn.Linear(8, 8) for _ in range(4)]
    x = torch.randn(2, 5, 8, requires_grad=True)
    q, k, v = (_heads(t, 2) for t in project(x, *layers[:3]))
    found = fused_base((q, k, v))
    assert found is not None
    base, slots, offs = found
    assert slots == (0, 1, 2) and offs == (0, 8, 16) and base.shape[-1] == 24
    assert q._base is base
    # k, v of one projection, q of another: the pair
    k2, v2 = (_heads(t, 2) for t in project(x, *layers[:2]))
    assert fused_base((q, k2, v2))[1] == (1, 2)
    # not covering the whole output (a fourth block unused), views of a plain tensor, no gradient
    q4, k4, v4, _ = (_heads(t, 2) for t in project(x, *layers))
    assert fused_base((q4, k4, v4)) is None
    plain = torch.randn(2, 5, 24, requires_grad=True)
    assert fused_base(tuple(_heads(t, 2) for t in plain.split(8, -1))) is None
    with torch.no_grad():
        assert fused_base(tuple(_heads(t, 2) for t in project(x, *layers[:3]))) is None
