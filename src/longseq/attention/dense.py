"""Dense attention with padding and causal masks: the baseline, and the short-input path of patterns
that fall back to it (BigBird, Reformer). Quadratic in compute; through PyTorch's SDPA wherever no
query row can be left with nothing to see (SDPA gives NaN there), else an explicit masked softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import masked_softmax

# On CUDA, SDPA with a mask runs cuDNN's kernel, which builds a plan for every new shape (hundreds of
# ms each): training on batches of varying length paid it every step (LRA ListOps, H200: 153K tokens/s
# against 1.16M at one fixed length). Masked lengths are padded up to a multiple of this, so a run
# meets a few shapes only.
CUDA_LENGTH_MULTIPLE = 64


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
    length_multiple: int | None = None,
) -> torch.Tensor:
    """q (batch, heads, seq_q, d), k, v (batch, heads, seq_k, d) -> (batch, heads, seq_q, d).

    length_multiple: with a padding mask, pad both lengths up to a multiple of it with masked keys
    (None: CUDA_LENGTH_MULTIPLE on CUDA, 1 elsewhere). The output is the same."""
    if padding is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, dropout_p=dropout)
    nq, nk = q.shape[2], k.shape[2]
    if not causal:
        m = length_multiple if length_multiple is not None else (CUDA_LENGTH_MULTIPLE if q.is_cuda else 1)
        # a row of only padding would leave every query with nothing to see: let it see all, then
        # zero it below (its queries are padding too)
        keys = padding | ~padding.any(1, keepdim=True)  # (b, nk)
        if m > 1:  # only tensors whose length is off the multiple are copied
            q, k, v = (F.pad(t, (0, 0, 0, -t.shape[2] % m)) if t.shape[2] % m else t for t in (q, k, v))
            if nk % m:
                keys = F.pad(keys, (0, -nk % m), value=False)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys[:, None, None, :], scale=scale, dropout_p=dropout
        )[:, :, :nq]
    else:
        pos = torch.arange(nk, device=q.device)
        valid = padding[:, None, None, :] & (pos[:, None] >= pos[None, :])  # (b, 1, n, n)
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
        probs, _ = masked_softmax(scores, valid, dropout)
        out = torch.matmul(probs.to(v.dtype), v)
    if nq == nk:
        out = torch.where(padding[:, None, :, None], out, torch.zeros_like(out))
    else:  # queries of a row with no real key see nothing: zeros, as the reference and the kernels
        out = torch.where(padding.any(1)[:, None, None, None], out, torch.zeros_like(out))
    return out
