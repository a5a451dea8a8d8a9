"""project(): one matrix product for several Linear layers, with the gradients of plain autograd;
parts' gradients that already lie in one buffer laid out as the fused output are used in place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longseq.attention.kernels.listed import _sibling_grads
from longseq.layers.projection import _fused_grad, project


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


def test_gradients_in_one_buffer_are_used_in_place() -> None:
    sizes, shape = [4, 4, 3], torch.Size((2, 5, 11))
    buf = torch.randn(shape)
    buf.longseq_grad_buffer = True  # as the attention kernels mark theirs
    stride = buf.stride()
    parts = list(buf.split(sizes, -1))  # views at offsets 0, 4, 8 with the fused output's strides
    alone = torch.randn(2, 5, 3)  # the third part's gradient came from elsewhere
    dy = _fused_grad((parts[0], parts[1], alone), sizes, shape, stride, buf.dtype, buf.device)
    assert dy.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()  # no new buffer
    assert torch.equal(dy[..., :8], torch.cat(parts[:2], -1)) and torch.equal(dy[..., 8:], alone)
    # not laid out as the output (contiguous parts): a new buffer, the same values
    loose = (parts[0].contiguous(), parts[1].contiguous(), None)
    other = _fused_grad(loose, sizes, shape, stride, buf.dtype, buf.device)
    assert other.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr()
    assert torch.equal(other[..., :8], torch.cat(parts[:2], -1)) and not other[..., 8:].any()
    # laid out as the output, but a buffer the kernels did not make (a cat's gradient): never written
    foreign = torch.randn(shape)
    before = foreign.clone()
    views = foreign.split(sizes, -1)
    got = _fused_grad((views[0], views[1], alone), sizes, shape, stride, buf.dtype, buf.device)
    assert torch.equal(foreign, before)
    assert got.untyped_storage().data_ptr() != foreign.untyped_storage().data_ptr()
    assert torch.equal(got[..., 8:], alone)


def test_sibling_grads_only_for_disjoint_heads_of_one_tensor() -> None:
    b, n, h, d = 2, 6, 3, 4
    fused = torch.randn(b, n, 3 * h * d)
    q, k, v = (x.view(b, n, h, d).transpose(1, 2) for x in fused.split(h * d, -1))
    dq, dk, dv = _sibling_grads(q, k, v, zero_q=False)
    assert len({g.untyped_storage().data_ptr() for g in (dq, dk, dv)}) == 1
    assert [g.storage_offset() for g in (dq, dk, dv)] == [0, h * d, 2 * h * d]
    assert all(g.stride() == q.stride() for g in (dq, dk, dv))
    # overlapping views of one tensor (offsets closer than a row's heads): separate buffers
    wide = torch.randn(b, n, 2 * h * d)
    q2, k2, v2 = (wide[..., o : o + h * d].view(b, n, h, d).transpose(1, 2) for o in (0, d, 2 * d))
    grads = _sibling_grads(q2, k2, v2, zero_q=True)
    assert len({g.untyped_storage().data_ptr() for g in grads}) == 3 and not grads[0].any()
    # separate tensors: separate buffers
    a, c, e = (torch.randn(b, h, n, d) for _ in range(3))
    assert len({g.untyped_storage().data_ptr() for g in _sibling_grads(a, c, e, zero_q=False)}) == 3
