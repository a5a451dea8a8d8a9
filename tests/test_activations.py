"""Activations by Hugging Face's names equal HF's own (the oracle) and keep little for backward;
`act_linear` (the activation recomputed in backward) equals plain autograd."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.activations import ACT2FN  # noqa: E402

import longseq.layers.act_linear as act_linear_module  # noqa: E402
from longseq.layers.act_linear import act_linear  # noqa: E402
from longseq.layers.activations import ACTIVATIONS, activation  # noqa: E402


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_equals_hf(name: str) -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    x = x.float().requires_grad_(True)
    ours = activation(name)(x)
    hf = ACT2FN[name](x)
    torch.testing.assert_close(ours, hf, atol=1e-6, rtol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_hf,) = torch.autograd.grad(hf.sum(), x)
    torch.testing.assert_close(g_ours, g_hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"])
def test_keeps_only_its_input_for_backward(name: str) -> None:
    """One fused op: BigBird's default gelu_new kept four input-sized tensors when written out."""
    x = torch.randn(64, 256, requires_grad=True)
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        activation(name)(x)
    assert saved == {x.untyped_storage().data_ptr()}


def _grads(fn, h: torch.Tensor, linear: torch.nn.Linear, dy: torch.Tensor) -> list[torch.Tensor]:
    linear.zero_grad()
    h = h.detach().clone().requires_grad_(True)
    out = fn(h)
    (out.float() * dy).sum().backward()
    grads = [out.detach().float(), h.grad, linear.weight.grad.clone()]
    return grads + ([linear.bias.grad.clone()] if linear.bias is not None else [])


@pytest.fixture(params=["whole", "chunked"])
def chunks(request, monkeypatch) -> str:
    """act_linear's forward whole, or over chunks of 5 rows (26 rows: the last chunk is short)."""
    if request.param == "chunked":
        monkeypatch.setattr(act_linear_module, "CHUNK_ELEMENTS", 5 * 37)
    return request.param


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["gelu", "gelu_new", "relu", "silu", "tanh", "mish"])  # table and fallback
def test_act_linear_equals_plain_autograd(name: str, bias: bool, chunks: str) -> None:
    """Output and the input, weight and bias gradients of linear(act(h)), 3-d input of odd sizes."""
    gen = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(37, 11, bias=bias)
    h = torch.randn(2, 13, 37, generator=gen)
    dy = torch.randn(2, 13, 11, generator=gen)
    act = activation(name)
    ours = _grads(lambda x: act_linear(x, act, linear), h, linear, dy)
    plain = _grads(lambda x: linear(act(x)), h, linear, dy)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_act_linear_under_bf16_autocast(chunks: str) -> None:
    """Under autocast the backward recomputes in bf16 too: as close to float32 as plain bf16
    autograd is, and only h (not act(h)) is kept for backward."""
    gen = torch.Generator().manual_seed(2)
    linear = torch.nn.Linear(64, 32)
    h = torch.randn(4, 50, 64, generator=gen)
    dy = torch.randn(4, 50, 32, generator=gen)
    act = activation("gelu_new")
    exact = _grads(lambda x: linear(act(x)), h.double().float(), linear, dy)

    def bf16(fn):
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x.to(torch.bfloat16))

        return run

    ours = _grads(bf16(lambda x: act_linear(x, act, linear)), h, linear, dy)
    plain = _grads(bf16(lambda x: linear(act(x))), h, linear, dy)
    for name, o, p, e in zip(("out", "dh", "dw", "db"), ours, plain, exact, strict=True):
        err_o, err_p = (o.float() - e).abs().max().item(), (p.float() - e).abs().max().item()
        assert err_o <= 2 * err_p + 1e-6, (name, err_o, err_p)
    saved: list[torch.Size] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.shape)
        return t

    x = h.to(torch.bfloat16).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16):
        act_linear(x, act, linear)
    assert sorted(saved) == sorted([x.shape, linear.weight.shape])


def test_act_linear_without_grad_is_plain() -> None:
    linear = torch.nn.Linear(8, 4)
    h = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(act_linear(h, torch.tanh, linear), linear(torch.tanh(h)))


@pytest.mark.parametrize(("bound", "sizes"), [(10 * 37, [10, 10, 10]), (10 * 37 - 1, [8, 8, 8, 6])])
def test_act_linear_chunks_are_as_few_as_the_bound_allows(monkeypatch, bound: int, sizes: list) -> None:
    """30 rows of 37 under a bound of 370 elements: 3 chunks of 10; one element less: 4 chunks of
    about the same size (8, 8, 8, 6), not 3 of 9 and a last one of 3."""
    monkeypatch.setattr(act_linear_module, "CHUNK_ELEMENTS", bound)
    seen: list[int] = []

    def act(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return torch.tanh(x)

    linear = torch.nn.Linear(37, 5)
    h = torch.randn(30, 37, requires_grad=True)
    out = act_linear(h, act, linear)
    assert seen == sizes
    torch.testing.assert_close(out, linear(torch.tanh(h)), atol=1e-6, rtol=1e-6)
