"""Dense attention with padding and causal masks: the baseline, and the short-input path of patterns
that fall back to it (BigBird, Reformer). Quadratic in compute; through PyTorch's SDPA wherever no
query row can be left with nothing to see (SDPA gives NaN there), else an explicit masked softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import masked_softmax


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (batch, heads, seq_q, d), k, v (batch, heads, seq_k, d) -> (batch, heads, seq_q, d)."""
    if padding is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, dropout_p=dropout)
    nq, nk = q.shape[2], k.shape[2]
    if not causal:
        # a row of only padding would leave every query with nothing to see: let it see all, then
        # zero it below (its queries are padding too)
        keys = (padding | ~padding.any(1, keepdim=True))[:, None, None, :]  # (b, 1, 1, nk)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, scale=scale, dropout_p=dropout)
    else:
        pos = torch.arange(nk, device=q.device)
        valid = padding[:, None, None, :] & (pos[:, None] >= pos[None, :])  # (b, 1, n, n)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        probs, _ = masked_softmax(scores, valid, dropout)
        out = torch.matmul(probs.to(v.dtype), v)
    if nq == nk:
        out = torch.where(padding[:, None, :, None], out, torch.zeros_like(out))
    return out
