"""Dense float32 attention under a pattern's mask: the ground truth every fast path is tested against.

It builds the full (seq x seq) table of how many times each query counts each key, so it is for
small lengths only.
"""

from __future__ import annotations

import torch

from ._common import check_inputs, default_scale, len_norm, masked_softmax, real_keys
from .lsh import sorted_positions
from .patterns import LSH, Dense, Pattern


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    *,
    padding_mask: torch.Tensor | None = None,
    global_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense masked attention in float32; returns (batch, heads, seq, head_dim) in q's dtype.

    With `dropout` > 0, `keep` (batch, heads, seq, seq) bool says which weights survive (the caller's
    mask, e.g. the kernels' own, `kernels.dropout.keep_mask`); they are scaled by 1 / (1 - dropout).
    """
    padding, glob = check_inputs(q, k, v, pattern, padding_mask, global_mask)
    if (dropout > 0) != (keep is not None):
        raise ValueError("reference: pass dropout > 0 together with its keep mask, or neither")
    dtype = q.dtype
    scale = default_scale(q.shape[-1], scale)
    if isinstance(pattern, LSH):
        if keep is not None:
            raise ValueError("reference: LSH takes no keep mask (its pairs depend on the hashing)")
        return _lsh_reference(q, v, pattern, padding, scale).to(dtype)
    q, k, v = q.float(), k.float(), v.float()
    b, h, nq, _ = q.shape
    nk = k.shape[2]
    if isinstance(pattern, Dense) and nq != nk:
        counts = torch.ones(nq, nk, dtype=torch.int64)
    else:
        counts = pattern.counts(nk)
    counts = counts.to(q.device)
    counts = counts.expand(b, h, nq, nk)  # (seq, seq) or (heads, seq, seq) patterns
    if glob is not None:
        touches_global = glob[:, None, None, :]  # every query sees the global keys
        if getattr(pattern, "global_rows", True):
            touches_global = touches_global | glob[:, None, :, None]  # and they see every key
        counts = torch.where(touches_global, torch.ones_like(counts), counts)
    real = real_keys(padding, b, nk, q.device)
    counts = counts * real[:, None, None, :]
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale + torch.log(counts.float())
    probs, _ = masked_softmax(scores, counts > 0)
    if keep is not None:
        probs = probs * keep.to(probs.device) / (1.0 - dropout)
    out = torch.matmul(probs, v)
    if padding is not None and nq == nk:
        out = out * padding[:, None, :, None]
    return out.to(dtype)


def lsh_key_counts(slots: torch.Tensor, pattern: LSH, seq: int) -> torch.Tensor:
    """How many times each query counts each key in each round: (batch, heads, rounds, seq, seq).

    `slots` (batch, heads, rounds * seq) are token positions in hashed order. Slot s belongs to
    round s // seq and to chunk s // chunk_length, and sees the slots of chunks
    (chunk - chunks_before .. chunk + chunks_after) modulo the number of chunks over all rounds.
    """
    b, h, total = slots.shape
    c = pattern.chunk_length
    chunks = total // c
    s = torch.arange(total, device=slots.device)
    seen = []
    for off in range(-pattern.chunks_before, pattern.chunks_after + 1):
        chunk = (s // c + off) % chunks
        seen.append(chunk[:, None] * c + torch.arange(c, device=slots.device))  # (total, c)
    key_slots = torch.cat(seen, dim=1)  # (total, K)
    key_pos = slots[:, :, key_slots]  # (b, h, total, K)
    rows = (s // seq) * seq + slots  # (b, h, total): round * seq + query position
    counts = torch.zeros(b, h, total * seq, dtype=torch.int64, device=slots.device)
    flat = rows[..., None] * seq + key_pos  # index into (round, query, key)
    counts.scatter_add_(2, flat.flatten(2), torch.ones_like(flat.flatten(2)))
    return counts.view(b, h, total // seq, seq, seq)


def _lsh_reference(
    q: torch.Tensor, v: torch.Tensor, pattern: LSH, padding: torch.Tensor | None, scale: float
) -> torch.Tensor:
    b, h, n, _ = q.shape
    real = real_keys(padding, b, n, q.device)
    hashed_q = q  # buckets come from the input as given (the rotations are drawn in its dtype)
    q, v = q.float(), v.float()
    keys = len_norm(q) * scale
    scores = torch.matmul(q, keys.transpose(-1, -2))  # (b, h, n, n)
    pos = torch.arange(n, device=q.device)
    if n <= pattern.chunk_length:
        counts = torch.ones(b, h, 1, n, n, dtype=torch.int64, device=q.device)
    else:
        c = pattern.chunk_length
        n_p = -(-n // c) * c
        qp = torch.cat([hashed_q, hashed_q.new_zeros(b, h, n_p - n, q.shape[-1])], dim=2)
        rp = torch.cat([real, real.new_zeros(b, n_p - n)], dim=1)
        slots = sorted_positions(qp, pattern, rp)
        counts = lsh_key_counts(slots, pattern, n_p)[..., :n, :n]  # (b, h, R, n, n)
    counts = counts * real[:, None, None, None, :]
    if pattern.causal:
        counts = counts * (pos[:, None] >= pos[None, :])
    counts = counts * (pos[:, None] != pos[None, :])  # never oneself ...
    logits = scores[:, :, None] + torch.log(counts.float())
    probs, lse = masked_softmax(logits, counts > 0)  # per round
    out = torch.matmul(probs, v[:, :, None])  # (b, h, R, n, d)
    weights, total = masked_softmax(
        lse.squeeze(-1).transpose(2, 3), torch.isfinite(lse.squeeze(-1).transpose(2, 3))
    )
    out = torch.einsum("bhrnd,bhnr->bhnd", out, weights)
    has_other = torch.isfinite(total)  # (b, h, n, 1)
    out = torch.where(has_other, out, v)  # ... unless nothing else is visible in any round
    return out * real[:, None, :, None]
