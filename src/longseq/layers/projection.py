"""Several Linear layers over one input as one matrix product (`project`), e.g. q, k, v.

Forward: one launch, and one copy of x (its autocast cast) kept for backward instead of one per
layer. Backward: the gradient of the fused output is built from the parts' gradients. When those
are views of one buffer at the parts' own offsets, laid out as the fused output, and that buffer is
one the gpu attention kernels made for dq, dk, dv of the heads of one projection (marked
`longseq_grad_buffer`; `kernels/listed.py`, `_sibling_grads`), that buffer is the gradient: only the
other parts are copied into its free slots. Otherwise every part is copied into a new buffer, as
autograd's own split backward would (a cat). A buffer not made by the kernels is never written.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["project"]


def _autocast_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sizes: list[int]
    ) -> tuple[torch.Tensor, ...]:
        dt = _autocast_dtype(x)  # what autocast's linear computes in
        xc, wc = x.to(dt), weight.to(dt)
        with torch.autocast(x.device.type, enabled=False):
            y = F.linear(xc, wc, None if bias is None else bias.to(dt))  # (..., sum(sizes))
        ctx.save_for_backward(xc, wc)
        ctx.sizes, ctx.shape, ctx.stride = sizes, y.shape, y.stride()
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y.split(sizes, -1)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        xc, wc = ctx.saved_tensors
        dy = _fused_grad(grads, ctx.sizes, ctx.shape, ctx.stride, wc.dtype, wc.device)
        dy2 = dy.view(-1, dy.shape[-1])  # (tokens, sum(sizes))
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (dy2 @ wc).view(*dy.shape[:-1], wc.shape[1]).to(x_dtype)
        if ctx.needs_input_grad[1]:
            dw = (dy2.t() @ xc.reshape(-1, xc.shape[-1])).to(w_dtype)
        if b_dtype is not None and ctx.needs_input_grad[2]:
            db = dy2.sum(0).to(b_dtype)
        return dx, dw, db, None


def _fused_grad(
    grads: tuple[torch.Tensor | None, ...],
    sizes: list[int],
    shape: torch.Size,
    stride: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The gradient of the fused output (shape, stride, contiguous) from its parts' gradients."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    extent = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))  # elements from offset 0
    base = None
    for g, s in zip(grads, starts, strict=True):  # a buffer laid out as the output, parts in place?
        if g is None or g.dtype != dtype or g.stride() != stride or g.storage_offset() != s:
            continue
        # only the kernels' own buffers: their other slots hold nothing, so they may be written
        owned = g._base is not None and getattr(g._base, "longseq_grad_buffer", False)
        if owned and g.untyped_storage().nbytes() >= extent * g.element_size():
            base = g
            break
    dy = torch.empty(shape, dtype=dtype, device=device) if base is None else base.as_strided(shape, stride, 0)
    ptr = dy.untyped_storage().data_ptr()
    for g, s, size in zip(grads, starts, sizes, strict=True):
        part = dy[..., s : s + size]
        if g is None:
            part.zero_()
        elif not (g.untyped_storage().data_ptr() == ptr and g.storage_offset() == s and g.stride() == stride):
            part.copy_(g)  # not in place already
    return dy


def project(x: torch.Tensor, *layers: nn.Linear) -> tuple[torch.Tensor, ...]:
    """x through several Linear layers as one matrix product. Returns the outputs, (..., out_i)
    each, views of one (..., sum out_i) tensor."""
    weight = torch.cat([layer.weight for layer in layers])  # (sum of out_features, in_features)
    biases = [layer.bias for layer in layers]
    bias = None if any(b is None for b in biases) else torch.cat(biases)
    if bias is None and any(b is not None for b in biases):
        raise ValueError("project: the layers must all have a bias or none")
    sizes = [layer.out_features for layer in layers]
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():  # plain ops (traced, or no backward)
        return F.linear(x, weight, bias).split(sizes, -1)
    return _Project.apply(x, weight, bias, sizes)
