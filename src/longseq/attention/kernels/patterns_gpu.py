"""Thin per-pattern glue over the listed-blocks flash kernel: the `gpu` backend.

Each function takes what `attend` hands the torch backend and computes the same function, in one
autograd node per call wherever it can:
- SlidingWindow: one plan over window key tiles; global keys are extra keys (masked out of the window
  so each counts once) and global queries are rows that see every key (a single one taken by the
  band's forward programs, `listed.BAND_ROWS`), both read through index vectors built once per mask
  (`global_tokens`). Dilation d permutes the sequence into its d residue
  classes (global keys gathered), with the global queries in a second call.
- BlockSparse: middle query blocks walk [first, left, own, right, last, random...] at the pattern's
  own block size (repeats counted); the two global query blocks are rows that see every key.
- LocalChunks: each chunk walks its neighbouring chunks cyclically (repeats counted).
- LSH: kernels around the flash kernel's call on the hashed order (cyclic chunk look-back, self
  exclusion by position) find the buckets, gather into hashed order and unsort (`lsh_sorted`).
"""

from __future__ import annotations

import functools

import torch

from .._cache import tensor_key
from .._common import pad_seq, real_keys
from ..dense import dense_attention
from ..global_tokens import GlobalTokens, place_rows
from ..lsh import _dense_lsh
from ..patterns import LSH, BlockSparse, LocalChunks, SlidingWindow
from .listed import (
    Extra,
    Plan,
    Rows,
    Tiling,
    cached,
    cyclic_plan,
    empty_plan,
    expand_tiles,
    listed_attention,
    split_plan,
    window_plan,
)
from .lsh_sorted import lsh_sorted

WINDOW_BLOCK_M = 64
WINDOW_BLOCK_N = 64
SPLIT_BLOCK = 64


_I8: list[tuple[torch.Tensor, tuple[int, int], torch.Tensor]] = []  # (mask, its tensor key, int8)


def _i8(mask: torch.Tensor) -> torch.Tensor:
    """mask (b, ...) as int8 with a head dim of 1, (b, 1, ...), the kernels' form; kept for the last
    few masks (identity and version), so the layers of a model that share one padding mask convert
    it once, and get the same tensor object. Never cached while a CUDA graph is captured: the graph
    must hold the conversion, to redo it when replayed on new masks."""
    key = tensor_key(mask)
    if key is None or (mask.is_cuda and torch.cuda.is_current_stream_capturing()):
        return mask.to(torch.int8)[:, None]
    for held, held_key, value in _I8:
        if held is mask and held_key == key:
            return value
    value = mask.to(torch.int8)[:, None]
    _I8.insert(0, (mask, key, value))
    del _I8[8:]
    return value


def _qval(padding: torch.Tensor | None) -> torch.Tensor | None:
    return None if padding is None else _i8(padding)  # (b, 1, n)


_FILLED: dict[tuple, torch.Tensor] = {}


def _filled(b: int, n: int, device: torch.device, value: int, dtype: torch.dtype) -> torch.Tensor:
    """A cached (b, n) constant (the kernels only read it)."""
    key = (b, n, device, value, dtype)
    t = _FILLED.get(key)
    if t is None:
        if len(_FILLED) > 64:
            _FILLED.clear()
        t = _FILLED[key] = torch.full((b, n), value, dtype=dtype, device=device)
    return t


def _kval(padding: torch.Tensor | None, b: int, n: int, device: torch.device) -> torch.Tensor:
    """(b, 1, n) int8 of the real keys; without padding a cached ones vector. The same tensor object
    for the same mask while it is cached (`_FEW` keys on it)."""
    if padding is not None:
        return _i8(padding)
    key = ("kval", b, n, device)
    ones = _FILLED.get(key)
    if ones is None:
        if len(_FILLED) > 64:
            _FILLED.clear()
        ones = _FILLED[key] = torch.ones(b, 1, n, dtype=torch.int8, device=device)
    return ones


def _all_keys_rows(
    idx: torch.Tensor,
    cnt: torch.Tensor,
    nk: int,
    kval: torch.Tensor,
    slot: torch.Tensor | None = None,
    apart: bool = False,
    every: bool = False,
) -> Rows:
    """Rows idx[b, :cnt[b]] (idx (b | 1, G) int32) that see every key marked in kval; slot, apart,
    every: see `Rows` (how they may run in the main launches; whether they are all the queries)."""
    plan = split_plan(idx.shape[1], nk, idx.device, SPLIT_BLOCK)
    return Rows(idx, cnt, plan, kval, slot, apart, every)


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
    extra: Extra | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v (b, h, n, d); key_ok (b, n) or None (every key). Window over each residue class modulo
    `dilation` (> 1); extra keys are gathered (extra.kx, extra.vx)."""
    b, h, n, d = q.shape
    if key_ok is None:
        key_ok = real_keys(None, b, n, q.device)
    m = -(-n // dilation)

    def split(x: torch.Tensor) -> torch.Tensor:  # (b, h, n, d) -> (b, h * dilation, m, d), class-major
        return pad_seq(x, dilation).unflatten(2, (m, dilation)).transpose(2, 3).reshape(b, h * dilation, m, d)

    def split_mask(x: torch.Tensor) -> torch.Tensor:  # (b, n) -> (b, h * dilation, m) int8
        x = pad_seq(x, dilation, 1, value=False).unflatten(1, (m, dilation)).transpose(1, 2)
        return _i8(x).expand(b, h, dilation, m).reshape(b, h * dilation, m)

    ex = None
    if extra is not None:
        g = extra.kx.shape[2]
        kx, vx = (
            x[:, :, None].expand(b, h, dilation, g, d).reshape(b, h * dilation, g, d)
            for x in (extra.kx, extra.vx)
        )
        ex = Extra(extra.idx, extra.cnt, kx, vx, col=m)  # dropout columns past the m key rows
    plan = window_plan(m, half, causal, q.device, WINDOW_BLOCK_M, WINDOW_BLOCK_N)
    qval = None if padding is None else split_mask(padding)
    out, _ = listed_attention(
        split(q), split(k), split(v), plan, split_mask(key_ok), scale, qval=qval, extra=ex, dropout=dropout
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
    tokens: GlobalTokens | None = None,
    dropout: float = 0.0,
    rows_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim). tokens: the global
    tokens of `glob` when the caller has them (cached per mask), else found here. dropout: of the
    attention weights, inside the kernels. rows_out (batch, heads, G, head_dim): outputs of the
    global rows computed by the caller (`attend`'s global_rows_out), written into the output."""
    b, h, n, d = q.shape
    if glob is not None and tokens is None:
        tokens = GlobalTokens.of(glob)
    if tokens is not None and tokens.g == 0:
        tokens = None
    place = None if rows_out is None or tokens is None else (*tokens.rows_place(), rows_out)
    kval = _kval(padding, b, n, q.device)
    vec = tokens.kernel_vectors() if tokens is not None else None
    dilations = pattern.dilations(h)
    if set(dilations) == {1}:
        plan = window_plan(n, pattern.half, pattern.causal, q.device, WINDOW_BLOCK_M, WINDOW_BLOCK_N)
        every = padding is None  # kval is all ones: the band's whole tiles need no mask
        if vec is None:
            out, _ = listed_attention(
                q, k, v, plan, kval, scale, qval=_qval(padding), dropout=dropout, all_keys=every
            )
            return out
        # global keys stay window keys; as extra keys they count only where the window leaves them
        # out. Global queries are window rows too (overwritten), and rows that see every key.
        extra = vec.get("extra")
        if extra is None:  # (kept with the tokens' vectors: built once per mask)
            extra = vec["extra"] = Extra(vec["idx"], vec["cnt"], slot=vec["slot"], in_window=True)
        rows = None
        if pattern.global_rows:  # the window lists them too: the main launch leaves them to their programs
            rows = _all_keys_rows(vec["idx"], vec["cnt"], n, kval, slot=vec["slot"])
        # the caller's rows are left out of the kernels (forward and backward), then written in
        qval = _qval(padding) if place is None else tokens.other_queries(padding)
        out, _ = listed_attention(
            q,
            k,
            v,
            plan,
            kval,
            scale,
            qval=qval,
            extra=extra,
            rows=rows,
            dropout=dropout,
            place=place,
            all_keys=every,
        )
        return out

    # dilation > 1 somewhere: window per residue class, global queries apart
    key_ok = padding
    extra = None
    if tokens is not None:
        take = tokens.idx[:, None, :, None].expand(-1, h, -1, d)
        slots = torch.arange(tokens.g, device=q.device, dtype=torch.int32)[None]  # rows of the gathered keys
        extra = Extra(slots, vec["cnt"], k.gather(2, take), v.gather(2, take))
        key_ok = ~glob if padding is None else padding & ~glob  # global keys count once: not as window keys
    groups: dict[int, list[int]] = {}
    for head, dil in enumerate(dilations):
        groups.setdefault(dil, []).append(head)
    outs, order = [], []
    for dil, heads in groups.items():
        idx = torch.tensor(heads, device=q.device)
        ex = None if extra is None else Extra(extra.idx, extra.cnt, extra.kx[:, idx], extra.vx[:, idx], col=n)
        qs, ks, vs = q[:, idx], k[:, idx], v[:, idx]
        if dil == 1:
            plan = window_plan(n, pattern.half, pattern.causal, q.device, WINDOW_BLOCK_M, WINDOW_BLOCK_N)
            kv = kval if key_ok is None else _i8(key_ok)
            part, _ = listed_attention(
                qs, ks, vs, plan, kv, scale, qval=_qval(padding), extra=ex, dropout=dropout
            )
        else:
            part = _window(qs, ks, vs, key_ok, padding, pattern.half, dil, pattern.causal, ex, scale, dropout)
        outs.append(part)
        order.extend(heads)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)[:, torch.argsort(torch.tensor(order))]
    if place is not None:
        out = place_rows(out, tokens, rows_out)
    if tokens is None or not pattern.global_rows:
        return out
    rows = _all_keys_rows(vec["idx"], vec["cnt"], n, kval)
    empty = empty_plan(n, q.device, SPLIT_BLOCK)
    og, _ = listed_attention(q, k, v, empty, kval, scale, rows=rows, dropout=dropout)
    return torch.where(tokens.mask[:, None, :, None], og, out)  # og holds the global rows only


def few_rows_gpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Non-causal dense attention of a few query rows over many keys (Longformer's global rows):
    q (b, h, G, d), k, v (b, h, n, d); padding (b, n) marks the real keys. The rows are split over
    key segments and merged by LSE, so the work spreads over the GPU. A row with no real key gives
    zeros. Where `flash_rows_apply` holds, through torch's flash kernel instead (less host time)."""
    if flash_rows_apply(q, k, v, padding, dropout):
        # (b, h, G, d); the other outputs (logsumexp, ...) are the backward's
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, scale=scale)[0]
    b, h, g, _ = q.shape
    nk = k.shape[2]
    kval = _kval(padding, b, nk, q.device)
    key = (b, g, nk, q.device, id(kval))  # (the cached Rows hold kval: its id stays its own)
    got = _FEW.get(key)
    if got is None or got[0].kval is not kval:
        idx = cached(
            ("rows", g, str(q.device)), lambda: torch.arange(g, dtype=torch.int32, device=q.device)[None]
        )
        cnt = _filled(1, b, q.device, g, torch.int32)[0]
        rows = _all_keys_rows(idx, cnt, nk, kval, every=True)
        if len(_FEW) > 16:
            _FEW.clear()
        got = _FEW[key] = (rows, empty_plan(nk, q.device, SPLIT_BLOCK))
    rows, empty = got
    return listed_attention(q, k, v, empty, kval, scale, rows=rows, dropout=dropout)[0]


_FEW: dict[tuple, tuple[Rows, Plan]] = {}  # few_rows_gpu's rows and plan, per shape and key mask

# The few rows through torch's flash kernel (`_scaled_dot_product_flash_attention`, which splits
# the keys over programs for a few rows, as ours do) up to this many keys. One row over 16K keys, 12
# heads, bf16, forward + backward (H200, `benchmarks/few_rows_sdpa.py`): host 0.58 ms a call
# against 1.08 (5 launches and their glue), GPU 0.140 ms against 0.116; at 64K its GPU time is 0.477
# against 0.332 ms, where the GPU is what a step waits for. Not cuDNN's (torch's own pick without a
# mask), though faster: it builds a plan for each new length (hundreds of ms), and longseq takes
# any length.
FLASH_ROWS_MAX_KEYS = 16384


def flash_rows_apply(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding: torch.Tensor | None, dropout: float
) -> bool:
    """Whether `few_rows_gpu` runs through torch's flash kernel: no padding mask and no dropout (our
    kernels' masks and dropout stream stay ours), 16-bit inputs of one dtype with head_dim a multiple
    of 8 up to 256 and unit stride on it (what the flash kernel takes), at most FLASH_ROWS_MAX_KEYS
    keys; on a GPU of compute capability 8.0 or later with torch's flash SDPA enabled
    (`torch.backends.cuda.enable_flash_sdp`); not while a CUDA graph is captured (graphs keep our
    kernels, whose host time a replay does not pay) nor under deterministic algorithms (its backward
    adds dQ by atomics)."""
    d = q.shape[-1]
    return (
        padding is None
        and dropout == 0.0
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.dtype == k.dtype == v.dtype
        and d % 8 == 0
        and d <= 256
        and k.shape[2] <= FLASH_ROWS_MAX_KEYS
        and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
        and q.is_cuda
        and _flash_capable(q.device.index)
        and torch.backends.cuda.flash_sdp_enabled()
        and not torch.cuda.is_current_stream_capturing()
        and not torch.are_deterministic_algorithms_enabled()
    )


@functools.cache
def _flash_capable(index: int | None) -> bool:
    """Whether the GPU `index` (None: the current one) runs torch's flash kernel (sm80 and later)."""
    return torch.cuda.get_device_capability(index) >= (8, 0)


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
    # the first and last blocks are `Rows` of the same call, so every row is covered
    return Plan(w_qt.expand(hl, -1).contiguous(), klist.to(torch.int32).contiguous(), t, t, nkt)


def _bigbird_rows(pattern: BlockSparse, n: int, b: int, kval: torch.Tensor) -> Rows:
    """The first and last blocks (global queries) as rows that see every key."""
    bs = pattern.block_size
    last = (pattern.num_blocks(n) - 1) * bs
    idx = cached(
        ("bigbird-rows", bs, n, str(kval.device)),
        lambda: torch.cat([torch.arange(bs), torch.arange(last, n)]).to(torch.int32)[None].to(kval.device),
    )
    cnt = _filled(1, b, kval.device, idx.shape[1], torch.int32)[0]
    return _all_keys_rows(idx, cnt, n, kval, apart=True)  # (the plan lists the middle blocks only)


_TENSOR_PLANS: dict[tuple, tuple[torch.Tensor, Plan]] = {}  # key -> (seed, plan): the entry holds the seed


def block_sparse_gpu(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: BlockSparse,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q, k, v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    if pattern.is_dense(n):
        return dense_attention(q, k, v, False, padding, scale, dropout)
    if isinstance(pattern.seed, torch.Tensor):  # an explicit plan: kept per seed tensor
        seed = pattern.seed
        tk = tensor_key(seed)
        key = None if tk is None else (*tk, pattern.block_size, n, h, str(q.device))
        hit = _TENSOR_PLANS.get(key) if key is not None else None
        if hit is not None and hit[0] is seed:
            plan = hit[1]
        else:
            plan = _bigbird_plan(pattern, n, h, q.device)
            if key is not None:
                if len(_TENSOR_PLANS) > 64:
                    _TENSOR_PLANS.clear()
                _TENSOR_PLANS[key] = (seed, plan)
    else:
        plan = cached(
            ("bigbird", pattern, n, h, str(q.device)), lambda: _bigbird_plan(pattern, n, h, q.device)
        )
    kval = _kval(padding, b, n, q.device)
    rows = _bigbird_rows(pattern, n, b, kval)
    out, _ = listed_attention(q, k, v, plan, kval, scale, qval=_qval(padding), rows=rows, dropout=dropout)
    return out


# ---------------------------------------------------------------------------------------------------
# LocalChunks and LSH


def local_chunks_gpu(
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
    plan = cyclic_plan(n, c, pattern.chunks_before, pattern.chunks_after, pattern.causal, False, q.device)
    kval = _kval(padding, b, n, q.device)
    out, _ = listed_attention(q, k, v, plan, kval, scale, qval=_qval(padding), dropout=dropout)
    return out


def lsh_gpu(
    q: torch.Tensor,
    v: torch.Tensor,
    pattern: LSH,
    padding: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (shared with k), v: (batch, heads, seq, head_dim) -> (batch, heads, seq, head_dim)."""
    b, h, n, d = q.shape
    if n <= pattern.chunk_length:
        return _dense_lsh(q, v, pattern, real_keys(padding, b, n, q.device), scale, dropout)
    return lsh_sorted(q, v, pattern, padding, scale, dropout)
