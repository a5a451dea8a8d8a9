"""`embed(ids, table)`: an embedding lookup whose backward is one `index_add_`.

torch's embedding backward on CUDA sorts the ids, finds their segments and sums each one (about ten
launches; measured on an H200 at 16K tokens: 0.25 ms of GPU time and 0.4 ms of host time for each of
a Longformer's three tables). Here the weight's gradient is `zeros(V, D).index_add_(0, ids, grad)`,
with the padding row zeroed as `nn.Embedding(padding_idx=...)` does: the same sums, in another order
where ids repeat (atomics on CUDA). Under `torch.use_deterministic_algorithms(True)`, under
torch.compile, and for tables that need no gradient, it is plain `F.embedding`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["embed"]


class _Embed(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return F.embedding(ids, weight)  # (*ids.shape, D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        d = grad.shape[-1]
        g_w = grad.new_zeros(ctx.rows, d)  # (V, D)
        g_w.index_add_(0, ids.reshape(-1), grad.reshape(-1, d))
        if ctx.padding_idx is not None:
            g_w[ctx.padding_idx] = 0
        return None, g_w, None


def embed(ids: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
    """table(ids): (*ids.shape) -> (*ids.shape, D), with the backward above."""
    w = table.weight
    if (
        not (torch.is_grad_enabled() and w.requires_grad)
        or torch.are_deterministic_algorithms_enabled()
        or torch.compiler.is_compiling()
        or table.max_norm is not None
        or table.scale_grad_by_freq
        or table.sparse
    ):
        return table(ids)
    return _Embed.apply(ids, w, table.padding_idx)
