"""`linear(act(h))` that keeps only `h` for backward: the activation is recomputed, not stored.

In a feed-forward block `w2(act(w1(x)))`, autograd keeps both the activation's input and its output
(the input of w2): two (seq, ffn) tensors, a third of a layer's activation memory. Recomputing the
activation in the backward pass (an elementwise op, no matrix product) keeps one. The weight and
bias gradients and the input gradient are those of plain autograd; under autocast the backward
recomputes and multiplies in the forward's precision (`layers/autocast.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .activations import _gelu_tanh
from .autocast import autocast_from, autocast_state
from .weight_cast import cast_of

__all__ = ["act_linear"]

Act = Callable[[torch.Tensor], torch.Tensor]


class _ActLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: Act
    ) -> torch.Tensor:
        y = _chunked_forward(h, weight, bias, act)  # (..., out); under the caller's autocast
        ctx.act, ctx.has_bias, ctx.dtype = act, bias is not None, y.dtype
        # the activations of _DERIVATIVES are elementwise and outside autocast's lists: their
        # recomputation needs no autocast state (two contexts each backward, on the host)
        ctx.autocast = None if act in _DERIVATIVES else autocast_state(h.device)
        ctx.save_for_backward(h, weight)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        dy = dy.to(ctx.dtype)
        dy2 = dy.reshape(-1, dy.shape[-1])  # (tokens, out)
        d_weight = d_bias = d_h = None
        if ctx.needs_input_grad[1]:
            with torch.no_grad():
                if ctx.autocast is None:
                    a = ctx.act(h)  # recomputed as in the forward, (..., inner)
                else:
                    with autocast_from(ctx.autocast):
                        a = ctx.act(h)
            d_weight = (dy2.t() @ a.to(ctx.dtype).reshape(-1, a.shape[-1])).to(weight.dtype)
            del a  # freed before the input gradient's two (..., inner) tensors exist
        if ctx.has_bias and ctx.needs_input_grad[2]:
            d_bias = dy2.sum(0, dtype=torch.float32).to(weight.dtype)  # (no float32 copy of dy)
        if ctx.needs_input_grad[0]:
            d_a = dy @ weight.to(ctx.dtype)  # (..., inner)
            if ctx.autocast is None:  # act'(h) * d_a written over d_a: one (..., inner) tensor
                d_a = d_a.to(h.dtype)
                d_h = _DERIVATIVES[ctx.act](d_a, h, d_a)
            else:
                with torch.enable_grad(), autocast_from(ctx.autocast):
                    hh = h.detach().requires_grad_(True)
                    a = ctx.act(hh)
                (d_h,) = torch.autograd.grad(a, hh, d_a.to(a.dtype))
        return d_h, d_weight, d_bias, None


CHUNK_ELEMENTS = 1 << 24  # act(h) exists about this many elements at a time in the forward pass


def _chunked_forward(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: Act
) -> torch.Tensor:
    """linear(act(h)) over chunks of rows, so that act(h) (a (rows, inner) tensor, the layer's
    largest) is never whole: at the end of a forward pass every saved tensor is alive, and this one
    came on top of them."""
    inner = h.shape[-1]
    rows = h.reshape(-1, inner)  # (tokens, inner)
    chunks = -(-rows.shape[0] * inner // CHUNK_ELEMENTS)  # as few as the bound allows, made even:
    if chunks <= 1:  # (16K tokens of 3072: 3 chunks of 5462 rows, where 5461 a chunk would take 4)
        return F.linear(act(h), weight, bias)
    step = -(-rows.shape[0] // chunks)
    dev = h.device.type
    dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    w = weight.to(dt).t()  # (inner, out): what autocast's linear multiplies by
    b = None if bias is None else bias.to(dt)
    y = torch.empty(rows.shape[0], weight.shape[0], dtype=dt, device=h.device)  # (tokens, out)
    for s in range(0, rows.shape[0], step):
        a = act(rows[s : s + step]).to(dt)
        if b is None:
            torch.mm(a, w, out=y[s : s + step])
        else:
            torch.addmm(b, a, w, out=y[s : s + step])
        del a  # else the next chunk is made while this one is still held
    return y.view(*h.shape[:-1], weight.shape[0])


_aten = torch.ops.aten
# the backward formulas autograd itself runs for these activations (its derivatives.yaml), as
# (grad, input, out) -> out: elementwise, so out may be grad itself
_DERIVATIVES: dict[Act, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    F.gelu: lambda g, x, o: _aten.gelu_backward.grad_input(g, x, grad_input=o),
    _gelu_tanh: lambda g, x, o: _aten.gelu_backward.grad_input(g, x, approximate="tanh", grad_input=o),
    F.relu: lambda g, x, o: _aten.threshold_backward.grad_input(g, x, 0, grad_input=o),
    F.silu: lambda g, x, o: _aten.silu_backward.grad_input(g, x, grad_input=o),
}


def act_linear(h: torch.Tensor, act: Act, linear: nn.Linear) -> torch.Tensor:
    """linear(act(h)), recomputing act(h) in the backward pass. h (..., in) -> (..., out). The
    weights are those of an open `cast_linears` where it holds the layer."""
    weight, bias = cast_of((linear,)) or (linear.weight, linear.bias)
    if not torch.is_grad_enabled() or not (h.requires_grad or weight.requires_grad):
        return F.linear(act(h), weight, bias)
    return _ActLinear.apply(h, weight, bias, act)
