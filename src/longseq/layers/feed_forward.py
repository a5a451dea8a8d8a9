"""Chunked feed-forward: the same per-token function applied to slices of the sequence.

`apply_chunked(fn, x, chunk_size)` is Hugging Face's `apply_chunking_to_forward` along dim 1: the
output equals `fn(x)`, but only `chunk_size` positions are expanded to the inner width at a time.
Unlike HF it accepts lengths that are no multiple of `chunk_size` (the last slice is shorter).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .act_linear import act_linear
from .activations import activation

__all__ = ["ChunkedFeedForward", "apply_chunked"]


def apply_chunked(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int, dim: int = 1
) -> torch.Tensor:
    """fn over slices of `chunk_size` along `dim`, concatenated; chunk_size 0 applies fn once."""
    if chunk_size <= 0 or x.shape[dim] <= chunk_size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk_size, dim=dim)], dim=dim)


class ChunkedFeedForward(nn.Module):
    """Reformer's pre-norm feed-forward: norm, w1, dropout, act, w2, dropout; `chunk_size` tokens at a time.

    The dropout sits before the activation, as in Hugging Face's `ReformerFeedForwardDense`.
    x (batch, seq, hidden) -> (batch, seq, hidden).
    """

    def __init__(
        self, hidden: int, inner: int, act: str, eps: float, dropout: float, chunk_size: int = 0
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.w1 = nn.Linear(hidden, inner)
        self.w2 = nn.Linear(inner, hidden)
        self.act = activation(act)
        self.dropout = float(dropout)
        self.chunk_size = int(chunk_size)

    def _chunk(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(self.w1(self.norm(x)), p=self.dropout, training=self.training)  # (b, chunk, inner)
        return F.dropout(act_linear(h, self.act, self.w2), p=self.dropout, training=self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_chunked(self._chunk, x, self.chunk_size)
