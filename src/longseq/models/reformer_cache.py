"""Cached decoding for Reformer: one new token attends to what earlier calls left in the cache.

Hugging Face's `past_buckets_states` keeps, per layer, the attention inputs seen so far (after the
layer's norm) and, for LSH layers, their buckets. A decoding step then

- local layers: attends from the new token to the cached states from the start of the previous
  chunk on (`local_num_chunks_before` chunks back), and itself;
- LSH layers: hashes the new token, sorts it among the cached buckets of every round, and attends
  to the window of `lsh_num_chunks_before + 1 + lsh_num_chunks_after` chunks around its place in
  the sorted order (the window wraps around within the round), rounds combined by log-sum-exp;
  until LSH buckets exist (the prompt fitted in one chunk) it attends to everything cached.

This is Hugging Face's algorithm, reproduced number for number, with one fix: HF gathers the LSH
window from the first batch row for every row (batch > 1 decodes wrongly); longseq gathers per
row. Note that HF's cached LSH step is not the full computation in general (its window wraps
within a round and within the tokens seen, where the full pass pads and looks across rounds);
both agree for local layers with `local_num_chunks_before` = 1 and while LSH inputs fit in a chunk.

The cache is a value: a step returns a new `ReformerCache`, the old one is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..attention import LSH
from ..attention._common import len_norm
from ..attention.lsh import hash_buckets
from .reformer_layers import NumBuckets, ReformerAttention, num_buckets_rule

__all__ = ["LayerCache", "ReformerCache", "decode_attention"]

_SELF_MASK = -1e5  # HF's score for a token attending to itself (LSH); -1e9 would be "masked"


@dataclass(frozen=True)
class LayerCache:
    """One layer's cache. states: (batch, seen, hidden) attention inputs after the layer norm;
    buckets: (batch, heads, num_hashes, seen) int64 with HF's round offsets, or None (local layers,
    and LSH layers that have not hashed yet); num_buckets: what the buckets were hashed with."""

    states: torch.Tensor
    buckets: torch.Tensor | None = None
    num_buckets: NumBuckets | None = None


@dataclass(frozen=True)
class ReformerCache:
    """`past_buckets_states`: one `LayerCache` per layer (Hugging Face's `ReformerDynamicCache`)."""

    layers: tuple[LayerCache, ...]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    @property
    def seen(self) -> int:
        """Tokens seen so far: the position of the next one."""
        return self.layers[0].states.shape[1]

    def index_select(self, rows: torch.Tensor) -> ReformerCache:
        """The cache of some batch rows (beam search's reorder)."""
        return ReformerCache(
            tuple(
                LayerCache(
                    c.states.index_select(0, rows),
                    None if c.buckets is None else c.buckets.index_select(0, rows),
                    c.num_buckets,
                )
                for c in self.layers
            )
        )


def _per_head(x: torch.Tensor, linear: torch.nn.Linear, heads: int) -> torch.Tensor:
    """Per-head projection of gathered states: (batch, heads, n, hidden) -> (batch, heads, n, head_dim)."""
    w = linear.weight.reshape(heads, -1, linear.weight.shape[-1]).transpose(-2, -1)  # (heads, hidden, d)
    return torch.einsum("bahx,axd->bahd", x, w)


def _round_offsets(buckets: torch.Tensor, per_round: torch.Tensor | int) -> torch.Tensor:
    rounds = torch.arange(buckets.shape[2], device=buckets.device)[:, None]  # (R, 1)
    return buckets + rounds * per_round


def _local_step(attn: ReformerAttention, h: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
    """h (batch, 1, hidden) normed; past (batch, seen, hidden) -> (batch, heads, 1, head_dim)."""
    start = (past.shape[1] // attn.chunk - attn.before) * attn.chunk
    kv = torch.cat([past[:, start:], h], dim=1)  # HF's slice: a negative start counts from the end
    q = attn.wq(h).view(h.shape[0], 1, attn.heads, -1).transpose(1, 2)  # (b, heads, 1, d)
    k = attn.wk(kv).view(kv.shape[0], kv.shape[1], attn.heads, -1).transpose(1, 2)
    v = attn.wv(kv).view(kv.shape[0], kv.shape[1], attn.heads, -1).transpose(1, 2)
    scores = torch.matmul(q, (k * attn.scale).transpose(-1, -2))  # (b, heads, 1, K)
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def _lsh_dense_step(
    attn: ReformerAttention, h: torch.Tensor, kv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cached token and the new one (the last of kv), the self score set to HF's -1e5."""
    b, n, _ = kv.shape
    q = attn.wqk(h).view(b, 1, attn.heads, -1).transpose(1, 2)  # (b, heads, 1, d)
    qk = attn.wqk(kv).view(b, n, attn.heads, -1).transpose(1, 2)  # (b, heads, K, d)
    v = attn.wv(kv).view(b, n, attn.heads, -1).transpose(1, 2)
    scores = torch.matmul(q, (len_norm(qk) * attn.scale).transpose(-1, -2))  # (b, heads, 1, K)
    is_self = torch.arange(n, device=kv.device) == n - 1
    scores = scores.masked_fill(is_self, _SELF_MASK)
    return torch.matmul(torch.softmax(scores, dim=-1), v), qk


def _lsh_window_step(
    attn: ReformerAttention,
    h: torch.Tensor,
    kv: torch.Tensor,
    past_buckets: torch.Tensor,
    pattern: LSH,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new token's LSH window among the cached buckets. Returns (out, new token's buckets)."""
    b, n, _ = kv.shape  # n = seen + 1
    R, c = pattern.num_hashes, attn.chunk
    q = attn.wqk(h).view(b, 1, attn.heads, -1).transpose(1, 2)  # (b, heads, 1, d)
    # HF: one padding bucket was added per round if the cached buckets show one
    grew = (past_buckets.max() > R * pattern.total_buckets - 1).long()
    real = torch.ones(b, 1, dtype=torch.bool, device=h.device)
    new = _round_offsets(hash_buckets(q, pattern, real), pattern.total_buckets + grew)  # (b, heads, R, 1)
    buckets = torch.cat([past_buckets, new], dim=-1)  # (b, heads, R, n)
    pos = torch.arange(n, device=h.device)
    keys = buckets * n + pos  # HF's stable sort key: bucket, then position
    order = torch.argsort(keys, dim=-1)  # sorted slot -> position
    slot = (keys < keys[..., -1:]).sum(-1, keepdim=True)  # the new token's slot, (b, heads, R, 1)
    width = c * (1 + attn.before + attn.after)
    window = ((slot // c - attn.before) * c + torch.arange(width, device=h.device)) % n  # (b, h, R, W)
    idx = order.gather(-1, window)  # positions seen by the new token, (b, heads, R, W)
    states = kv.gather(1, idx.reshape(b, -1, 1).expand(-1, -1, kv.shape[-1]))  # (b, heads*R*W, hidden)
    states = states.view(b, attn.heads, R * width, -1)
    qk = _per_head(states, attn.wqk, attn.heads).view(b, attn.heads, R, width, -1)
    v = _per_head(states, attn.wv, attn.heads).view(b, attn.heads, R, width, -1)
    scores = torch.matmul(q[:, :, None], (len_norm(qk) * attn.scale).transpose(-1, -2))  # (b, h, R, 1, W)
    scores = torch.where((idx == n - 1)[..., None, :], torch.full_like(scores, _SELF_MASK), scores)
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)  # (b, heads, R, 1, 1)
    out = torch.matmul(torch.exp(scores - lse), v)  # (b, heads, R, 1, d)
    weights = torch.exp(lse - torch.logsumexp(lse, dim=2, keepdim=True))
    return (out * weights).sum(2), new  # (b, heads, 1, d)


def decode_attention(
    attn: ReformerAttention, x: torch.Tensor, cache: LayerCache, num_hashes: int | None = None
) -> tuple[torch.Tensor, LayerCache]:
    """f of one layer for one new token. x (batch, 1, hidden) -> ((batch, 1, hidden), new LayerCache)."""
    if x.shape[1] != 1:
        raise ValueError(f"with past_buckets_states, give one new token per call, got {x.shape[1]}")
    h = attn.norm(x)  # (b, 1, hidden)
    kv = torch.cat([cache.states, h], dim=1)  # (b, seen + 1, hidden)
    buckets, num_buckets = cache.buckets, cache.num_buckets
    if attn.kind == "local":
        out = _local_step(attn, h, cache.states)
    elif cache.buckets is None:
        out, qk = _lsh_dense_step(attn, h, kv)
        if kv.shape[1] >= attn.chunk:  # HF starts hashing once a chunk is full
            if num_buckets is None:
                num_buckets = attn.num_buckets or num_buckets_rule(
                    kv.shape[1], attn.chunk, attn.max_positions
                )
            pattern = replace(attn.lsh_pattern(kv.shape[1], num_hashes), num_buckets=num_buckets)
            real = torch.ones(kv.shape[:2], dtype=torch.bool, device=kv.device)
            buckets = _round_offsets(hash_buckets(qk, pattern, real), pattern.total_buckets)
    else:
        assert num_buckets is not None
        pattern = replace(attn.lsh_pattern(kv.shape[1], num_hashes), num_buckets=num_buckets)
        if cache.buckets.shape[2] != pattern.num_hashes:
            raise ValueError(
                f"the cache was hashed with num_hashes={cache.buckets.shape[2]}, this step asks for "
                f"{pattern.num_hashes}: decode with the num_hashes of the first call"
            )
        out, new = _lsh_window_step(attn, h, kv, cache.buckets, pattern)
        buckets = torch.cat([cache.buckets, new], dim=-1)
    out = attn.wo(out.transpose(1, 2).reshape(x.shape[0], 1, -1))  # (b, 1, hidden)
    return out, LayerCache(kv, buckets, num_buckets)
