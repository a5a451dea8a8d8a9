"""Thin per-pattern glue over the listed-blocks flash kernel: the `gpu` backend.

Each function takes what `attend` hands the torch backend and computes the same function:
- SlidingWindow: one launch over window key tiles plus the global keys as extra columns (masked out of
  the window so each counts once); dilation d by permuting the sequence into its d residue classes;
  global query rows apart, as a split pass over every key merged by log-sum-exp.
- BlockSparse: middle query blocks walk [first, left, own, right, last, random...] at the pattern's
  own block size (repeats counted); the two global query blocks are a split pass over every key.
- LocalChunks: each chunk walks its neighbouring chunks cyclically (repeats counted).
- LSH: torch hashes, sorts and gathers; the kernel runs on the sorted sequence with cyclic chunk
  look-back and self exclusion by position; torch unsorts and combines the rounds by log-sum-exp.
"""

from __future__ import annotations

import torch

from .._common import len_norm, pad_seq, real_keys
from ..dense import dense_attention
from ..lsh import _dense_lsh, _self_fallback, sorted_positions
from ..patterns import LSH, BlockSparse, LocalChunks, SlidingWindow
from ..sliding_window import global_index
from .listed import (
    Plan,
    Tiling,
    cyclic_plan,
    expand_tiles,
    listed_attention,
    merge_lse,
    split_plan,
    window_plan,
)

WINDOW_BLOCK_M = 64
WINDOW_BLOCK_N = 64
SPLIT_BLOCK = 64


def _i8(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.int8)


def _qval(padding: torch.Tensor | None) -> torch.Tensor | None:
    return None if padding is None else _i8(padding)[:, None]  # (b, 1, n)


_ONES: dict[tuple, torch.Tensor] = {}


def _kval(padding: torch.Tensor | None, b: int, n: int, device: torch.device) -> torch.Tensor:
    """(b, 1, n) int8 of the real keys; without padding a cached ones vector (the kernels only read it)."""
    if padding is not None:
        return _i8(padding)[:, None]
    key = (b, n, device)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        ones = _ONES[key] = torch.ones(b, 1, n, dtype=torch.int8, device=device)
    return ones


def _everything(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kval: torch.Tensor,
    qval: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Queries q (b, h, m, d) over every real key (kval (b, 1, n) int8) of k, v (b, h, n, d): split
    over keys, merged by LSE."""
    b, h, m, d = q.shape
    plan = split_plan(m, k.shape[2], q.device, SPLIT_BLOCK)
    parts, lses = listed_attention(q, k, v, plan, kval, scale, qval=qval)
    nqt = plan.qtiles.count(m)
    nseg = plan.w_qt.shape[1] // nqt
    parts = parts.view(b, h, nqt, nseg, SPLIT_BLOCK, d)
    out, _ = merge_lse(parts, lses.view(b, h, nqt, nseg, SPLIT_BLOCK), dim=3, want_lse=False)
    return out.flatten(2, 3)[:, :, :m].to(q.dtype)


# ---------------------------------------------------------------------------------------------------
# SlidingWindow


def _window(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_ok: torch.Tensor | None,
    padding: torch.Tensor | None,
    half: int,
    dilation: int,
    causal: bool,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    scale: float,
) -> torch.Tensor:
    """q, k, v (b, h, n, d); key_ok (b, n) or None (every key). Window over each residue class modulo
    `dilation`."""
    b, h, n, d = q.shape
    if dilation == 1:
        plan = window_plan(n, half, causal, q.device, WINDOW_BLOCK_M, WINDOW_BLOCK_N)
        kval = _kval(key_ok, b, n, q.device)
        out, _ = listed_attention(q, k, v, plan, kval, scale, qval=_qval(padding), extra=extra)
        return out
    if key_ok is None:
        key_ok = real_keys(None, b, n, q.device)
    m = -(-n // dilation)

    def split(x: torch.Tensor) -> torch.Tensor:  # (b, h, n, d) -> (b, h * dilation, m, d), class-major
        return pad_seq(x, dilation).unflatten(2, (m, dilation)).transpose(2, 3).reshape(b, h * dilation, m, d)

    def split_mask(x: torch.Tensor) -> torch.Tensor:  # (b, n) -> (b, h * dilation, m) int8
        x = pad_seq(x, dilation, 1, value=False).unflatten(1, (m, dilation)).transpose(1, 2)
        return _i8(x)[:, None].expand(b, h, dilation, m).reshape(b, h * dilation, m)

    ex = None
    if extra is not None:
        kx, vx, xval = extra
        g = kx.shape[2]
        ex = tuple(
            x[:, :, None].expand(b, h, dilation, g, d).reshape(b, h * dilation, g, d) for x in (kx, vx)
        )
        ex = (*ex, xval)
    plan = window_plan(m, half, causal, q.device, WINDOW_BLOCK_M, WINDOW_BLOCK_N)
    qval = None if padding is None else split_mask(padding)
    out, _ = listed_attention(
        split(q), split(k), split(v), plan, split_mask(key_ok), scale, qval=qval, extra=ex
    )
    return out.view(b, h, dilation, m, d).transpose(2, 3).reshape(b, h, m * dilation, d)[:, :, :n]


def sliding_window_gpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: SlidingWindow,
    padding: torch.Tensor | None,
    glob: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    key_ok = padding
    extra = None
    if glob is not None:
        gidx, gused = global_index(glob)  # (b, G)
        take = gidx[:, None, :, None].expand(-1, h, -1, d)
        extra = (k.gather(2, take), v.gather(2, take), _i8(gused)[:, None])  # every query sees them
        key_ok = ~glob if padding is None else padding & ~glob  # ... once: not again as window keys
    dilations = pattern.dilations(h)
    groups: dict[int, list[int]] = {}
    for head, dil in enumerate(dilations):
        groups.setdefault(dil, []).append(head)
    if len(groups) == 1:
        out = _window(q, k, v, key_ok, padding, pattern.half, dilations[0], pattern.causal, extra, scale)
    else:
        outs, order = [], []
        for dil, heads in groups.items():
            idx = torch.tensor(heads, device=q.device)
            ex = None if extra is None else (extra[0][:, idx], extra[1][:, idx], extra[2])
            part = _window(
                q[:, idx], k[:, idx], v[:, idx], key_ok, padding, pattern.half, dil, pattern.causal, ex, scale
            )
            outs.append(part)
            order.extend(heads)
        inverse = torch.argsort(torch.tensor(order, device=q.device))
        out = torch.cat(outs, dim=1)[:, inverse]
    if glob is not None:
        qg = q.gather(2, take)  # global queries see every real key
        og = _everything(qg, k, v, _kval(padding, b, n, q.device), None, scale)
        og = torch.where(gused[:, None, :, None], og, out.gather(2, take))  # unused slots keep theirs
        out = out.scatter(2, take, og)
    return out


# ---------------------------------------------------------------------------------------------------
# BlockSparse


def _bigbird_plan(pattern: BlockSparse, n: int, heads: int, device: torch.device) -> Plan:
    bs = pattern.block_size
    nb = pattern.num_blocks(n)
    t = Tiling.of(bs)
    nkt = t.count(n)
    rnd = pattern.random_blocks(nb, device=device)[..., 1:-1, :]  # (heads?, nb - 2, r)
    if rnd.dim() == 3 and rnd.shape[0] != heads:
        raise ValueError(f"seed (an explicit plan) has {rnd.shape[0]} heads but the input has {heads}")
    mid = torch.arange(1, nb - 1, device=device)
    first = torch.where(mid - 1 != 0, 0, -1)  # block 0 already is the left window block of block 1
    last = torch.where(mid + 1 != nb - 1, nb - 1, -1)  # likewise the last block for block nb - 2
    fixed = torch.stack([first, mid - 1, mid, mid + 1, last], -1)  # (nb - 2, 5)
    if rnd.dim() == 3:
        blocks = torch.cat([fixed.expand(heads, -1, -1), rnd], -1)  # (h, nb - 2, 5 + r)
    else:
        blocks = torch.cat([fixed, rnd], -1)[None]  # (1, nb - 2, 5 + r)
    klist = expand_tiles(blocks, t, nkt).repeat_interleave(t.nsub, dim=1)  # one row per query tile
    hl = klist.shape[0]
    w_qt = torch.arange(t.nsub, (nb - 1) * t.nsub, device=device, dtype=torch.int32)
    return Plan(
        w_qt.expand(hl, -1).contiguous(), klist.to(torch.int32).contiguous(), t, t, nkt, covers_all=False
    )


def block_sparse_gpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: BlockSparse,
    padding: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    if pattern.is_dense(n):
        return dense_attention(q, k, v, False, padding, scale)
    bs = pattern.block_size
    nb = pattern.num_blocks(n)
    if isinstance(pattern.seed, torch.Tensor):
        plan = _bigbird_plan(pattern, n, h, q.device)
    else:
        from .listed import cached

        plan = cached(
            ("bigbird", pattern, n, h, str(q.device)), lambda: _bigbird_plan(pattern, n, h, q.device)
        )
    kval = _kval(padding, b, n, q.device)
    om, _ = listed_attention(q, k, v, plan, kval, scale, qval=_qval(padding))
    last = (nb - 1) * bs
    qg = torch.cat([q[:, :, :bs], q[:, :, last:]], dim=2)  # the two global query blocks
    qval = None if padding is None else _i8(torch.cat([padding[:, :bs], padding[:, last:]], 1))[:, None]
    og = _everything(qg, k, v, kval, qval, scale)
    return torch.cat([og[:, :, :bs], om[:, :, bs:last], og[:, :, bs:]], dim=2)


# ---------------------------------------------------------------------------------------------------
# LocalChunks and LSH


def local_chunks_gpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: LocalChunks,
    padding: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    c = pattern.chunk_length
    if n <= c:
        return dense_attention(q, k, v, pattern.causal, padding, scale)
    plan = cyclic_plan(n, c, pattern.chunks_before, pattern.chunks_after, pattern.causal, False, q.device)
    out, _ = listed_attention(q, k, v, plan, _kval(padding, b, n, q.device), scale, qval=_qval(padding))
    return out


def lsh_gpu(
    q: torch.Tensor, v: torch.Tensor, pattern: LSH, padding: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """q (shared with k), v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    real = real_keys(padding, b, n, q.device)
    if n <= pattern.chunk_length:
        return _dense_lsh(q, v, pattern, real, scale, 0.0)
    c, rounds = pattern.chunk_length, pattern.num_hashes
    q, v = pad_seq(q, c), pad_seq(v, c)
    real = pad_seq(real, c, dim=1, value=False)
    n_p = q.shape[2]
    slots = sorted_positions(q, pattern, real)  # (b, h, R * n_p), hashed order
    sq = q.gather(2, slots[..., None].expand(-1, -1, -1, d))
    sv = v.gather(2, slots[..., None].expand(-1, -1, -1, v.shape[-1]))
    sreal = real.gather(1, slots.flatten(1)).view(b, h, rounds * n_p)
    plan = cyclic_plan(
        rounds * n_p, c, pattern.chunks_before, pattern.chunks_after, pattern.causal, True, q.device
    )
    out, lse = listed_attention(sq, len_norm(sq), sv, plan, _i8(sreal), scale, pos=slots.to(torch.int32))

    # undo the sort: slot of (round, position) is inverse[round, position]
    flat = slots.view(b, h, rounds, n_p)
    inverse = torch.empty_like(flat).scatter_(-1, flat, torch.arange(n_p, device=q.device).expand_as(flat))
    inverse = (inverse + torch.arange(rounds, device=q.device)[:, None] * n_p).flatten(2)
    out = out.gather(2, inverse[..., None].expand(-1, -1, -1, out.shape[-1]))
    lse = lse.gather(2, inverse)
    out, total = merge_lse(out.view(b, h, rounds, n_p, -1).float(), lse.view(b, h, rounds, n_p), dim=2)
    out = _self_fallback(out.to(v.dtype), v, torch.isfinite(total)[..., None], real)
    return out[:, :, :n]
