"""Reformer local attention: chunks that see their neighbouring chunks, cyclically, as Hugging Face's
`LocalSelfAttention` computes it. Linear in memory: scores are (seq x (1 + before + after) * chunk)."""

from __future__ import annotations

import torch

from ._common import masked_softmax, pad_seq, real_keys
from .dense import dense_attention
from .patterns import LocalChunks


def local_chunks_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: LocalChunks,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    c = pattern.chunk_length
    if n <= c:
        return dense_attention(q, k, v, pattern.causal, padding, scale, dropout)
    real = pad_seq(real_keys(padding, b, n, q.device), c, dim=1, value=False)
    q, k, v = pad_seq(q, c), pad_seq(k, c), pad_seq(v, c)
    chunks = q.shape[2] // c
    pos = torch.arange(chunks * c, device=q.device).view(chunks, c)
    offsets = range(-pattern.chunks_before, pattern.chunks_after + 1)

    def adjacent(x: torch.Tensor, axis: int) -> torch.Tensor:
        # chunk i gets chunks i + off for every offset, cyclically
        return torch.cat([x.roll(-off, dims=axis) for off in offsets], dim=axis + 1)

    qc = q.unflatten(2, (chunks, c))  # (b, h, chunks, c, d)
    kc = adjacent(k.unflatten(2, (chunks, c)), 2)  # (b, h, chunks, K, d)
    vc = adjacent(v.unflatten(2, (chunks, c)), 2)
    kpos = adjacent(pos, 0)  # (chunks, K)
    valid = adjacent(real.unflatten(1, (chunks, c)), 1)[:, None, :, None, :]  # (b, 1, chunks, 1, K)
    if pattern.causal:
        valid = valid & (pos[:, :, None] >= kpos[:, None, :])
    scores = torch.matmul(qc, kc.transpose(-1, -2)).float() * scale  # (b, h, chunks, c, K)
    probs, _ = masked_softmax(scores, valid, dropout)
    out = torch.matmul(probs.to(vc.dtype), vc).flatten(2, 3)[:, :, :n]
    if padding is not None:
        out = out * padding[:, None, :, None].to(out.dtype)
    return out
