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

from .autocast import autocast_from, autocast_state

__all__ = ["act_linear"]

Act = Callable[[torch.Tensor], torch.Tensor]


class _ActLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: Act
    ) -> torch.Tensor:
        a = act(h)  # (..., inner); ops here run under the caller's autocast
        y = F.linear(a, weight, bias)  # (..., out)
        ctx.act, ctx.has_bias, ctx.dtype = act, bias is not None, y.dtype
        ctx.autocast = autocast_state(h.device)
        ctx.save_for_backward(h, weight)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        with torch.enable_grad(), autocast_from(ctx.autocast):
            hh = h.detach().requires_grad_(True)
            a = ctx.act(hh)  # recomputed as in the forward
        dy = dy.to(ctx.dtype)
        a2 = a.detach().to(ctx.dtype).reshape(-1, a.shape[-1])  # (tokens, inner)
        dy2 = dy.reshape(-1, dy.shape[-1])  # (tokens, out)
        d_weight = (dy2.t() @ a2).to(weight.dtype) if ctx.needs_input_grad[1] else None
        d_bias = dy2.float().sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        d_h = None
        if ctx.needs_input_grad[0]:
            d_a = dy @ weight.to(ctx.dtype)  # (..., inner)
            (d_h,) = torch.autograd.grad(a, hh, d_a.to(a.dtype))
        return d_h, d_weight, d_bias, None


def act_linear(h: torch.Tensor, act: Act, linear: nn.Linear) -> torch.Tensor:
    """linear(act(h)), recomputing act(h) in the backward pass. h (..., in) -> (..., out)."""
    if not torch.is_grad_enabled() or not (h.requires_grad or linear.weight.requires_grad):
        return linear(act(h))
    return _ActLinear.apply(h, linear.weight, linear.bias, act)
