"""Reformer LSH attention: hash, sort by bucket, attend within chunks with look-back, unsort, combine.

Reproduces Hugging Face's `LSHSelfAttention` (and trax): random-rotation hashing of the shared
query-key vectors, factorised buckets, padding tokens in an extra bucket of their own, a stable
sort by (round, bucket, position), chunks of `chunk_length` that see their neighbours cyclically
over all rounds, keys normalised to unit RMS, no attention to oneself unless nothing else is
visible in any round, and rounds combined by log-sum-exp. Memory is linear in the length.
"""

from __future__ import annotations

import torch

from ._common import len_norm, masked_softmax, pad_seq, real_keys
from .patterns import LSH


@torch.library.custom_op("longseq::lsh_rotations", mutates_args=())
def _seeded_rotations(seed: int, shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # An op of its own, so that torch.compile traces it whole (a Generator cannot live in a graph).
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype, device=device)


@_seeded_rotations.register_fake
def _(seed: int, shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def rotations(
    pattern: LSH, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Random rotations (heads, head_dim, num_hashes, rotation_size // 2), as Hugging Face draws them.

    With `pattern.seed` they equal `torch.manual_seed(seed); torch.randn(...)` on that device,
    which is what Hugging Face's `hash_seed` gives; without it they come from the global generator.
    """
    shape = (heads, head_dim, pattern.num_hashes, sum(pattern.bucket_factors) // 2)
    if pattern.seed is None:
        return torch.randn(shape, dtype=dtype, device=device)
    if torch.compiler.is_compiling():
        return _seeded_rotations(pattern.seed, list(shape), dtype, device)
    key = (pattern.seed, shape, dtype, str(device))
    rot = _ROTATIONS.get(key)
    if rot is None:  # a seeded draw is the same every call: drawn once (a generator and a launch saved)
        if len(_ROTATIONS) > 64:
            _ROTATIONS.clear()
        rot = _ROTATIONS[key] = _seeded_rotations(pattern.seed, list(shape), dtype, device)
    return rot


_ROTATIONS: dict[tuple, torch.Tensor] = {}


def rotate(qk: torch.Tensor, pattern: LSH) -> torch.Tensor:
    """qk (batch, heads, seq, head_dim) through the random rotations: (batch, heads, R, seq, rot/2),
    by Hugging Face's einsum (the gpu backend's hash kernel computes the same numbers, rounded
    alike: `kernels/lsh_sorted.py`)."""
    b, h, n, d = qk.shape
    rot = rotations(pattern, h, d, qk.dtype, qk.device)  # (h, d, R, rot/2)
    return torch.einsum("bhtd,hdrk->bhrtk", qk.detach(), rot)


def hash_buckets(qk: torch.Tensor, pattern: LSH, real: torch.Tensor) -> torch.Tensor:
    """Bucket of every token in every round: (batch, heads, num_hashes, seq) int64.

    qk (batch, heads, seq, head_dim); real (batch, seq) bool. Padding tokens get the extra bucket
    `pattern.total_buckets`.
    """
    rotated = rotate(qk, pattern)  # (b, h, R, n, rot/2)
    buckets = None
    start, product = 0, 1
    for factor in pattern.bucket_factors:
        part = rotated[..., start : start + factor // 2]
        start += factor // 2
        # argmax over [part, -part] without building it (first index on ties, as argmax)
        top, at_top = part.max(dim=-1)
        low, at_low = part.min(dim=-1)
        idx = torch.where(-low > top, at_low + factor // 2, at_top)  # (b, h, R, n)
        buckets = idx if buckets is None else buckets + product * idx
        product *= factor
    assert buckets is not None
    return torch.where(real[:, None, None, :], buckets, torch.full_like(buckets, pattern.total_buckets))


def sorted_positions(qk: torch.Tensor, pattern: LSH, real: torch.Tensor) -> torch.Tensor:
    """Token positions in hashed order, round after round: (batch, heads, num_hashes * seq) int64.

    Within a round tokens are ordered by bucket, then by position (Hugging Face's stable sort).
    """
    n = qk.shape[2]
    buckets = hash_buckets(qk, pattern, real)  # (b, h, R, n)
    pos = torch.arange(n, device=qk.device)
    order = torch.argsort(buckets * n + pos, dim=-1)  # keys are unique: the sort is stable
    return order.flatten(2)


def _dense_lsh(
    q: torch.Tensor, v: torch.Tensor, pattern: LSH, real: torch.Tensor, scale: float, dropout: float
) -> torch.Tensor:
    """Hugging Face's path for inputs no longer than one chunk: full attention, same self rule."""
    n = q.shape[2]
    keys = len_norm(q) * scale
    scores = torch.matmul(q, keys.transpose(-1, -2)).float()  # (b, h, n, n)
    pos = torch.arange(n, device=q.device)
    valid = real[:, None, None, :] & (pos[:, None] != pos[None, :])
    if pattern.causal:
        valid = valid & (pos[:, None] >= pos[None, :])
    probs, lse = masked_softmax(scores, valid, dropout)
    out = torch.matmul(probs.to(v.dtype), v)
    return _self_fallback(out, v, torch.isfinite(lse), real)


def _self_fallback(
    out: torch.Tensor, v: torch.Tensor, has_other: torch.Tensor, real: torch.Tensor
) -> torch.Tensor:
    """Queries with nothing else to see attend to themselves; padded queries give zeros."""
    out = torch.where(has_other, out, v)
    return out * real[:, None, :, None].to(out.dtype)


def lsh_attention(
    q: torch.Tensor,
    v: torch.Tensor,
    pattern: LSH,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (shared with k), v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    real = real_keys(padding, b, n, q.device)
    if n <= pattern.chunk_length:
        return _dense_lsh(q, v, pattern, real, scale, dropout)

    c, R = pattern.chunk_length, pattern.num_hashes
    q, v = pad_seq(q, c), pad_seq(v, c)
    real = pad_seq(real, c, dim=1, value=False)
    n_p = q.shape[2]
    slots = sorted_positions(q, pattern, real)  # (b, h, R * n_p)
    gather = slots[..., None].expand(-1, -1, -1, d)
    sq = q.gather(2, gather)  # (b, h, R * n_p, d), hashed order
    sv = v.gather(2, slots[..., None].expand(-1, -1, -1, v.shape[-1]))
    chunks = R * n_p // c
    sq = sq.view(b, h, chunks, c, d)
    sv = sv.view(b, h, chunks, c, -1)
    spos = slots.view(b, h, chunks, c)
    sreal = real.gather(1, slots.flatten(1)).view(b, h, chunks, c)

    keys = len_norm(sq) * scale
    offsets = range(-pattern.chunks_before, pattern.chunks_after + 1)

    def adjacent(x: torch.Tensor) -> torch.Tensor:
        # chunk i sees chunks i + off for each offset, cyclically: (b, h, chunks, K, ...)
        return torch.cat([x.roll(-off, dims=2) for off in offsets], dim=3)

    kpos, kreal = adjacent(spos), adjacent(sreal)  # (b, h, chunks, K)
    scores = torch.matmul(sq, adjacent(keys).transpose(-1, -2)).float()  # (b, h, chunks, c, K)
    valid = kreal[..., None, :] & (spos[..., :, None] != kpos[..., None, :])
    if pattern.causal:
        valid = valid & (spos[..., :, None] >= kpos[..., None, :])
    probs, lse = masked_softmax(scores, valid, dropout)
    out = torch.matmul(probs.to(sv.dtype), adjacent(sv))  # (b, h, chunks, c, dv)

    # undo the sort: slot of (round, position) is inverse[round, position]
    flat = slots.view(b, h, R, n_p)
    inverse = torch.empty_like(flat).scatter_(-1, flat, torch.arange(n_p, device=q.device).expand_as(flat))
    inverse = inverse + torch.arange(R, device=q.device)[:, None] * n_p  # (b, h, R, n_p)
    inverse = inverse.flatten(2)
    out = out.reshape(b, h, R * n_p, -1).gather(2, inverse[..., None].expand(-1, -1, -1, out.shape[-1]))
    lse = lse.reshape(b, h, R * n_p).gather(2, inverse)
    out = out.view(b, h, R, n_p, -1)
    lse = lse.view(b, h, R, n_p, 1)

    # combine the rounds by log-sum-exp; a round that saw nothing gets weight 0
    weights, total = masked_softmax(lse.transpose(2, 4), torch.isfinite(lse.transpose(2, 4)))
    out = (out * weights.transpose(2, 4).to(out.dtype)).sum(2)  # (b, h, n_p, dv)
    out = _self_fallback(out, v, torch.isfinite(total.squeeze(-1).transpose(2, 3)), real)
    return out[:, :, :n]
