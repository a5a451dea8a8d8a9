"""Reformer's layers: the attention branch (local or LSH) and the reversible layer around it.

A layer is the pair (f, g) of a reversible residual block (`longseq.layers.reversible`):
f = `ReformerAttention` (norm, projections, `attend`, output projection, dropout) and
g = `ChunkedFeedForward`. Attention goes through `longseq.attention.attend` with a `LocalChunks` or
`LSH` pattern; cached decoding (one new token against the cache) lives in `reformer_cache.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import LSH, LocalChunks, attend
from ..attention.lsh import hash_buckets
from ..layers.feed_forward import ChunkedFeedForward
from ..layers.projection import project
from .configs import ReformerConfig
from .encoder import merge_heads, split_heads

__all__ = [
    "ReformerAttention",
    "ReformerLayer",
    "chunk_lcm",
    "layer_kinds",
    "min_chunk",
    "num_buckets_rule",
]

NumBuckets = int | tuple[int, ...]


def layer_kinds(config: ReformerConfig) -> list[str]:
    """ "local" or "lsh" for every layer, by Hugging Face's rule.

    One kind in `attn_layers`: every one of `num_hidden_layers` layers has it; two kinds: layer i
    has `attn_layers[i]`.
    """
    kinds = list(config.attn_layers)
    n = int(config.num_hidden_layers or len(kinds))
    if not kinds or not set(kinds) <= {"local", "lsh"}:
        raise ValueError(f"attn_layers must be a non-empty list of 'local' / 'lsh', got {config.attn_layers}")
    if len(set(kinds)) == 1:
        return [kinds[0]] * n
    if n > len(kinds):
        raise ValueError(f"num_hidden_layers={n} but attn_layers names only {len(kinds)} layers")
    return kinds[:n]


def _chunk_lengths(config: ReformerConfig) -> list[int]:
    lengths = {"local": config.local_attn_chunk_length, "lsh": config.lsh_attn_chunk_length}
    out = []
    for kind in set(layer_kinds(config)):
        c = lengths[kind]
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"{kind}_attn_chunk_length must be a positive int, got {c!r}")
        out.append(c)
    return out


def chunk_lcm(config: ReformerConfig) -> int:
    """Inputs longer than `min_chunk` are padded to a multiple of this (HF's least common multiple)."""
    return math.lcm(*_chunk_lengths(config))


def min_chunk(config: ReformerConfig) -> int:
    return min(_chunk_lengths(config))


def num_buckets_rule(seq: int, chunk: int, max_positions: int) -> NumBuckets:
    """Hugging Face's `_set_num_buckets`: about 2 * seq / chunk, a power of 2, factorised when large.

    Computed for every call from the (padded) length, where HF computes it once and writes it
    into the config (after which it never changes for that model object).
    """
    power = (2 * (seq // chunk)).bit_length() - 1
    if power < 1:
        return 2  # no hashing happens at this length (it is at most one chunk)
    limit = 2 * max(int((max_positions // chunk) ** 0.5), chunk)
    if 2**power > limit:
        return (2 ** (power // 2), 2 ** (power - power // 2))
    return 2**power


class ReformerAttention(nn.Module):
    """The attention branch f of a Reformer layer: pre-norm, self-attention, output projection.

    kind "lsh": shared query-key projection `wqk` and LSH attention; kind "local": `wq`, `wk` and
    chunked local attention. x (batch, seq, hidden) -> (batch, seq, hidden). `backend` is passed to
    `attend` ("auto" by default; "torch" or "reference" to force one).
    """

    def __init__(self, config: ReformerConfig, kind: str) -> None:
        super().__init__()
        if kind not in ("local", "lsh"):
            raise ValueError(f"attention kind must be 'local' or 'lsh', got {kind!r}")
        hidden, heads, d = config.hidden_size, config.num_attention_heads, config.attention_head_size
        self.kind = kind
        self.heads, self.head_dim = heads, d
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        if kind == "lsh":
            self.wqk = nn.Linear(hidden, heads * d, bias=False)
            self.chunk = config.lsh_attn_chunk_length
            self.before, self.after = config.lsh_num_chunks_before, config.lsh_num_chunks_after
            self.attn_dropout = float(config.lsh_attention_probs_dropout_prob or 0.0)
        else:
            self.wq = nn.Linear(hidden, heads * d, bias=False)
            self.wk = nn.Linear(hidden, heads * d, bias=False)
            self.chunk = config.local_attn_chunk_length
            self.before, self.after = config.local_num_chunks_before, config.local_num_chunks_after
            self.attn_dropout = float(config.local_attention_probs_dropout_prob)
        self.wv = nn.Linear(hidden, heads * d, bias=False)
        self.wo = nn.Linear(heads * d, hidden, bias=False)
        self.dropout = float(config.hidden_dropout_prob)
        self.causal = bool(config.is_decoder)
        nb = config.num_buckets
        self.num_buckets: NumBuckets | None = tuple(nb) if isinstance(nb, (list, tuple)) else nb
        self.num_hashes = int(config.num_hashes)
        self.seed = config.hash_seed
        self.max_positions = int(config.max_position_embeddings)
        self.scale = 1.0 / math.sqrt(d)  # HF divides the keys by np.sqrt(head_dim)
        self.backend = "auto"

    def buckets_for(self, seq: int) -> NumBuckets:
        """num_buckets at this (padded) length: the config's, or HF's rule."""
        if self.num_buckets is not None:
            return self.num_buckets
        return num_buckets_rule(seq, self.chunk, self.max_positions)

    def lsh_pattern(self, seq: int, num_hashes: int | None = None) -> LSH:
        return LSH(
            num_hashes=num_hashes or self.num_hashes,
            num_buckets=self.buckets_for(seq),
            chunk_length=self.chunk,
            chunks_before=self.before,
            chunks_after=self.after,
            causal=self.causal,
            seed=self.seed,
        )

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        num_hashes: int | None = None,
    ) -> torch.Tensor:
        h = self.norm(x)  # (batch, seq, hidden)
        dropout = self.attn_dropout if self.training else 0.0
        if self.kind == "lsh":
            # one matrix product for both projections (`project`): (batch, heads, seq, head_dim) each
            qk, v = (split_heads(t, self.heads) for t in project(h, self.wqk, self.wv))
            pattern = self.lsh_pattern(x.shape[1], num_hashes)
            out = attend(
                qk,
                qk,
                v,
                pattern,
                padding_mask=padding_mask,
                scale=self.scale,
                dropout=dropout,
                backend=self.backend,
            )
        else:
            q, k, v = (split_heads(t, self.heads) for t in project(h, self.wq, self.wk, self.wv))
            pattern = LocalChunks(self.chunk, self.before, self.after, self.causal)
            out = attend(
                q,
                k,
                v,
                pattern,
                padding_mask=padding_mask,
                scale=self.scale,
                dropout=dropout,
                backend=self.backend,
            )
        out = self.wo(merge_heads(out))  # (batch, seq, hidden)
        return F.dropout(out, p=self.dropout, training=self.training)

    def hashed(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None, num_hashes: int | None
    ) -> tuple[torch.Tensor | None, NumBuckets | None]:
        """The buckets this LSH layer's forward draws for x, as Hugging Face caches them.

        Returns ((batch, heads, num_hashes, seq) int64 with HF's round offsets, num_buckets), or
        (None, None) where HF hashes nothing (local layers; inputs of at most one chunk). Without a
        seed the rotations are the ones the next forward call will draw: the global random state is
        read, not advanced.
        """
        seq = x.shape[1]
        if self.kind != "lsh" or seq <= self.chunk:
            return None, None
        pattern = self.lsh_pattern(seq, num_hashes)
        qk = split_heads(project(self.norm(x), self.wqk, self.wv)[0], self.heads)  # as forward computes it
        real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        real = real if padding_mask is None else padding_mask.bool()
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=pattern.seed is None):
            buckets = hash_buckets(qk, pattern, real)  # (b, h, R, seq); padding in bucket total
        # HF adds one bucket for padding only when the batch has padding, and offsets each round
        per_round = pattern.total_buckets + (~real).any().long()
        rounds = torch.arange(pattern.num_hashes, device=x.device)[:, None]
        return buckets + rounds * per_round, pattern.num_buckets


class ReformerLayer(nn.Module):
    """One reversible Reformer layer: Y1 = X1 + attn(X2), Y2 = X2 + ff(Y1)."""

    def __init__(self, config: ReformerConfig, kind: str) -> None:
        super().__init__()
        self.attn = ReformerAttention(config, kind)
        self.ff = ChunkedFeedForward(
            config.hidden_size,
            config.feed_forward_size,
            config.hidden_act,
            config.layer_norm_eps,
            config.hidden_dropout_prob,
            config.chunk_size_feed_forward,
        )
