"""Attention patterns: frozen dataclasses that say which keys each query may see.

A pattern is data. Every pattern but LSH can draw its own mask for a given length
(`pattern.mask(seq_len)`), and `pattern.counts(seq_len)` says how many times each key counts in a
query's softmax (1 for every visible key, except where a pattern reproduces Hugging Face's
gather-and-concatenate with repeated blocks or chunks). `longseq.attention.reference` is dense
float32 attention under those counts: the ground truth for every fast path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ._cache import tensor_key

__all__ = ["LSH", "BlockSparse", "Dense", "LocalChunks", "Pattern", "SlidingWindow"]


def _check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> None:
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")


class Pattern:
    """Base of all patterns. Subclasses are frozen dataclasses."""

    #: whether `global_mask` may be given with this pattern
    supports_global: bool = False

    def counts(self, seq_len: int) -> torch.Tensor:
        """How many times query i counts key j: int64 (seq, seq) or (heads, seq, seq).

        Defined for small lengths only (it is n x n); LSH has none (its keys depend on the data).
        """
        raise NotImplementedError(f"{type(self).__name__} has no data-free mask")

    def mask(self, seq_len: int) -> torch.Tensor:
        """Which keys query i may see: bool (seq, seq), or (heads, seq, seq) for per-head patterns."""
        return self.counts(seq_len) > 0


@dataclass(frozen=True)
class Dense(Pattern):
    """Full attention; `causal` lets query i see keys j <= i only."""

    causal: bool = False

    def counts(self, seq_len: int) -> torch.Tensor:
        full = torch.ones(seq_len, seq_len, dtype=torch.int64)
        return full.tril() if self.causal else full


@dataclass(frozen=True)
class SlidingWindow(Pattern):
    """Longformer's sliding window, optionally dilated and causal, with global tokens.

    Non-causal: query i sees key j when |i - j| <= (window / 2) * dilation and (i - j) % dilation
    == 0. Causal: when 0 <= i - j <= (window / 2) * dilation, same divisibility. With `global_mask`
    global tokens see every real token and every token sees every global token. `dilation` is an
    int or a tuple with one value per head. `global_rows=False`: global tokens are only keys that
    every query sees, their own rows see what a plain token sees (a Longformer layer computes the
    global rows apart, with their own projections, and overwrites these).
    """

    window: int
    dilation: int | tuple[int, ...] = 1
    causal: bool = False
    global_rows: bool = True

    supports_global = True

    def __post_init__(self) -> None:
        _check_positive_int("window", self.window)
        if self.window % 2:
            raise ValueError(
                f"window must be even (it is the total span, window/2 on each side), got {self.window}"
            )
        if isinstance(self.dilation, list):
            object.__setattr__(self, "dilation", tuple(self.dilation))
        dilations = self.dilation if isinstance(self.dilation, tuple) else (self.dilation,)
        if not dilations:
            raise ValueError("dilation must be a positive int or a non-empty tuple of them, got ()")
        for d in dilations:
            _check_positive_int("dilation", d)

    @property
    def half(self) -> int:
        """Keys on each side of a query, before dilation."""
        return self.window // 2

    def dilations(self, num_heads: int) -> tuple[int, ...]:
        """One dilation per head, checked against the head count."""
        if isinstance(self.dilation, tuple):
            if len(self.dilation) != num_heads:
                raise ValueError(
                    f"dilation has {len(self.dilation)} values but the input has {num_heads} heads: "
                    "give one dilation per head, or a single int for all heads"
                )
            return self.dilation
        return (self.dilation,) * num_heads

    def counts(self, seq_len: int) -> torch.Tensor:
        i = torch.arange(seq_len)[:, None]
        j = torch.arange(seq_len)[None, :]
        diff = i - j
        masks = []
        dilations = self.dilation if isinstance(self.dilation, tuple) else (self.dilation,)
        for d in dilations:
            reach = diff.abs() if not self.causal else diff
            m = (reach <= self.half * d) & (diff % d == 0)
            if self.causal:
                m &= diff >= 0
            masks.append(m)
        out = torch.stack(masks) if isinstance(self.dilation, tuple) else masks[0]
        return out.to(torch.int64)


@dataclass(frozen=True, eq=False)
class BlockSparse(Pattern):
    """BigBird ITC block-sparse attention.

    The sequence is cut into blocks of `block_size` (the last one padded inside). The first and last
    blocks are global: they see every key and every query sees them. Every other query block sees
    its left, own and right block plus `num_random_blocks` random key blocks. `seed` is either an
    int, from which a deterministic plan is drawn that never repeats a window or global block (the
    same on every device), or an explicit plan: an integer tensor of shape (num_blocks, r) or
    (heads, num_blocks, r), or Hugging Face's layout with num_blocks - 2 rows (rows for blocks
    1 .. num_blocks - 2). A block listed k times in an explicit plan counts k times in the softmax,
    as Hugging Face's gather-and-concatenate computes it. At lengths up to
    (5 + 2 * num_random_blocks) * block_size the pattern is dense (Hugging Face's threshold),
    decided per call.
    """

    block_size: int
    num_random_blocks: int
    seed: int | torch.Tensor = 0

    def __post_init__(self) -> None:
        _check_positive_int("block_size", self.block_size)
        _check_positive_int("num_random_blocks", self.num_random_blocks, allow_zero=True)
        if isinstance(self.seed, torch.Tensor):
            plan = self.seed
            if plan.is_floating_point() or plan.is_complex() or plan.dtype == torch.bool:
                raise ValueError(f"seed as an explicit plan must be an integer tensor, got {plan.dtype}")
            if plan.dim() not in (2, 3) or plan.shape[-1] != self.num_random_blocks:
                raise ValueError(
                    "seed as an explicit plan must have shape (num_blocks, num_random_blocks) or "
                    "(heads, num_blocks, num_random_blocks) with "
                    f"num_random_blocks={self.num_random_blocks}, "
                    f"got {tuple(plan.shape)}"
                )
        elif isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(
                f"seed must be an int or an explicit plan tensor, got {type(self.seed).__name__}"
            )

    def _key(self) -> tuple:
        seed = self.seed
        if isinstance(seed, torch.Tensor):
            seed = ("plan", tuple(seed.shape), tuple(seed.flatten().tolist()))
        return (self.block_size, self.num_random_blocks, seed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BlockSparse):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def dense_threshold(self) -> int:
        """Lengths up to this many tokens use dense attention (Hugging Face's rule)."""
        return (5 + 2 * self.num_random_blocks) * self.block_size

    def is_dense(self, seq_len: int) -> bool:
        return seq_len <= self.dense_threshold

    def num_blocks(self, seq_len: int) -> int:
        return -(-seq_len // self.block_size)

    def random_blocks(self, num_blocks: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The random key blocks of each query block: LongTensor (num_blocks, r) or (heads, num_blocks, r).

        Rows 0 and num_blocks - 1 (the global blocks, which see everything) hold -1.
        """
        _check_positive_int("num_blocks", num_blocks)
        r = self.num_random_blocks
        if isinstance(self.seed, torch.Tensor):
            return _explicit_plan(self.seed, num_blocks, r, device)
        return _seeded_plan(self.seed, num_blocks, r, device)

    def counts(self, seq_len: int) -> torch.Tensor:
        if self.is_dense(seq_len):
            return torch.ones(seq_len, seq_len, dtype=torch.int64)
        b = self.block_size
        nb = self.num_blocks(seq_len)
        plan = self.random_blocks(nb)  # (..., nb, r)
        blocks = torch.zeros(*plan.shape[:-2], nb, nb, dtype=torch.int64)
        blocks[..., [0, nb - 1], :] = 1
        blocks[..., :, [0, nb - 1]] = 1
        mid = torch.arange(1, nb - 1)
        for off in (-1, 0, 1):
            blocks[..., mid, mid + off] = 1
        if self.num_random_blocks:
            inner = plan[..., 1:-1, :]
            blocks[..., 1:-1, :].scatter_add_(-1, inner, torch.ones_like(inner))
        full = blocks.repeat_interleave(b, dim=-2).repeat_interleave(b, dim=-1)
        return full[..., :seq_len, :seq_len].contiguous()


def _mix(x: torch.Tensor) -> torch.Tensor:
    """An integer hash on int64 values below 2**31, exact and identical on every device."""
    for mult in (0x2C1B3C6D, 0x297A2D39, 0x6F4F2A35):
        x = x ^ (x >> 15)
        x = (x * mult) & 0x7FFFFFFF
    return x ^ (x >> 16)


_EXPLICIT: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (seed, validated plan)


def _explicit_plan(seed: torch.Tensor, num_blocks: int, r: int, device) -> torch.Tensor:
    """An explicit plan in the (num_blocks, r) layout with -1 on the global rows, validated. Built
    once per seed tensor (kept by identity and version, the entry holding the seed), since the range
    check reads the device."""
    tk = tensor_key(seed)
    key = None if tk is None else (*tk, num_blocks, str(device))
    hit = _EXPLICIT.get(key) if key is not None else None
    if hit is not None and hit[0] is seed:
        return hit[1]
    plan = seed.to(device=device, dtype=torch.int64)
    rows = plan.shape[-2]
    if rows == num_blocks - 2:
        fill = plan.new_full((*plan.shape[:-2], 1, r), -1)
        plan = torch.cat([fill, plan, fill], dim=-2)
    elif rows != num_blocks:
        raise ValueError(
            f"seed (an explicit plan) has {rows} rows but the input has {num_blocks} blocks: "
            f"give {num_blocks} rows (or {num_blocks - 2}, Hugging Face's layout)"
        )
    else:
        plan = plan.clone()
        plan[..., 0, :] = -1
        plan[..., -1, :] = -1
    inner = plan[..., 1:-1, :]
    if inner.numel() and (inner.min() < 0 or inner.max() >= num_blocks):
        raise ValueError(f"seed (an explicit plan) lists blocks outside 0..{num_blocks - 1}")
    if key is not None:
        if len(_EXPLICIT) > 64:
            _EXPLICIT.clear()
        _EXPLICIT[key] = (seed, plan)
    return plan


def _seeded_plan(seed: int, num_blocks: int, r: int, device: torch.device | str | None) -> torch.Tensor:
    """Draw r distinct random key blocks per middle query block (Floyd's sampling), as tensors only.

    Candidates for block i are 1 .. num_blocks - 2 without i - 1, i, i + 1: never a window or global
    block. Built from integer arithmetic, so the plan is the same on any device and compiles.
    """
    nb = num_blocks
    plan = torch.full((nb, r), -1, dtype=torch.int64, device=device)
    if nb < 3 or r == 0:
        return plan
    rows = torch.arange(1, nb - 1, device=device)  # middle query blocks
    lo_count = (rows - 2).clamp_min(0)  # candidates 1 .. i - 2
    hi_start = rows + 2  # candidates i + 2 .. nb - 2
    m = lo_count + (nb - 1 - hi_start).clamp_min(0)  # candidates per row
    fewest = min(max(i - 2, 0) + max(nb - 3 - i, 0) for i in {1, 2, nb - 3, nb - 2} if 1 <= i <= nb - 2)
    if fewest < r:
        raise ValueError(
            f"{nb} blocks leave only {fewest} candidate random blocks, fewer than "
            f"num_random_blocks={r}: use a longer input or fewer random blocks"
        )
    salt = _mix(torch.tensor(seed & 0x7FFFFFFF, device=device) ^ 0x5BD1E995)
    chosen = torch.full((rows.numel(), r), -1, dtype=torch.int64, device=device)
    for step in range(r):
        j = m - r + step  # Floyd: draw t in [0, j], take j if t was taken already
        h = _mix((salt + rows * 0x01000193 + j * 0x000C2B2B) & 0x7FFFFFFF)
        t = h % (j + 1)
        taken = (chosen == t[:, None]).any(-1)
        chosen[:, step] = torch.where(taken, j, t)
    blocks = torch.where(
        chosen < lo_count[:, None], 1 + chosen, hi_start[:, None] + chosen - lo_count[:, None]
    )
    plan[1:-1] = blocks
    return plan


@dataclass(frozen=True)
class LocalChunks(Pattern):
    """Reformer's local attention: chunks that see their neighbours, counted cyclically.

    Query chunk i sees key chunks i - chunks_before .. i + chunks_after modulo the number of chunks
    (the chunk before the first is the last, as in Hugging Face and trax); a chunk that appears
    twice in that list (few chunks) counts twice, as Hugging Face computes it. `causal` also
    requires key position <= query position. At lengths up to `chunk_length` attention is dense
    (causal if `causal`), as in Hugging Face.
    """

    chunk_length: int
    chunks_before: int = 1
    chunks_after: int = 0
    causal: bool = False

    def __post_init__(self) -> None:
        _check_positive_int("chunk_length", self.chunk_length)
        _check_positive_int("chunks_before", self.chunks_before, allow_zero=True)
        _check_positive_int("chunks_after", self.chunks_after, allow_zero=True)

    def counts(self, seq_len: int) -> torch.Tensor:
        if seq_len <= self.chunk_length:
            return Dense(self.causal).counts(seq_len)
        c = self.chunk_length
        nc = -(-seq_len // c)
        qc = torch.arange(nc)[:, None]
        blocks = torch.zeros(nc, nc, dtype=torch.int64)
        for off in range(-self.chunks_before, self.chunks_after + 1):
            blocks.scatter_add_(1, (qc + off) % nc, torch.ones_like(qc))
        full = blocks.repeat_interleave(c, 0).repeat_interleave(c, 1)[:seq_len, :seq_len]
        if self.causal:
            full = full.tril()
        return full.contiguous()


@dataclass(frozen=True)
class LSH(Pattern):
    """Reformer's LSH attention with shared query-key (pass the same tensor as q and k).

    Keys are the queries normalised to unit root-mean-square and scaled by 1/sqrt(head_dim), as in
    Reformer. Tokens are hashed by random rotations (`num_hashes` rounds; `num_buckets` an even int,
    or a pair of even ints for factorised buckets), sorted by bucket, cut into chunks of
    `chunk_length` that see `chunks_before` / `chunks_after` neighbouring chunks (cyclically over
    all rounds), and a token never attends to itself unless it has nothing else in any round. The
    rounds are combined by log-sum-exp and the order is undone. `seed` fixes the rotations (like
    Hugging Face's `hash_seed`); None draws them from torch's global generator. At lengths up to
    `chunk_length` attention is dense (with the same self rule), as in Hugging Face.
    """

    num_hashes: int
    num_buckets: int | tuple[int, int]
    chunk_length: int
    chunks_before: int = 1
    chunks_after: int = 0
    causal: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_positive_int("num_hashes", self.num_hashes)
        _check_positive_int("chunk_length", self.chunk_length)
        _check_positive_int("chunks_before", self.chunks_before, allow_zero=True)
        _check_positive_int("chunks_after", self.chunks_after, allow_zero=True)
        if isinstance(self.num_buckets, list):
            object.__setattr__(self, "num_buckets", tuple(self.num_buckets))
        factors = self.num_buckets if isinstance(self.num_buckets, tuple) else (self.num_buckets,)
        if not factors or len(factors) > 2:
            raise ValueError(
                f"num_buckets must be an even int or a pair of even ints, got {self.num_buckets!r}"
            )
        for f in factors:
            _check_positive_int("num_buckets", f)
            if f % 2:
                raise ValueError(f"num_buckets must be even (rotations and their negatives), got {f}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")

    @property
    def bucket_factors(self) -> tuple[int, ...]:
        return self.num_buckets if isinstance(self.num_buckets, tuple) else (self.num_buckets,)

    @property
    def total_buckets(self) -> int:
        total = 1
        for f in self.bucket_factors:
            total *= f
        return total


def replace(pattern: Pattern, **changes: object) -> Pattern:
    """A copy of `pattern` with some fields changed."""
    return dataclasses.replace(pattern, **changes)  # type: ignore[type-var]
