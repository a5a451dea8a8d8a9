"""Autograd glue of the listed-blocks flash kernel: tile plans, launches, LSE merging.

A `Plan` says, for each work item w, its query tile `w_qt[w]` and a fixed-width row of key tiles
`klist[w]` (null entries, id >= the number of key tiles, are skipped by masking). Repeated key tiles
count as often as they are listed, which is how Hugging Face's gather-and-concatenate counts repeated
blocks. The backward pass walks the transposed list (for each key tile, the work items that list it)
for dK / dV and the forward list for dQ, so no atomics are needed except for the few extra keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from . import _flash

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter: no launch options


@dataclass(frozen=True)
class Tiling:
    """How logical blocks of `stride` rows are cut into tiles of at most `block` rows."""

    stride: int  # rows per logical block
    sub: int  # rows per tile
    nsub: int  # tiles per logical block
    block: int  # power-of-two tile size (>= sub)

    @staticmethod
    def of(stride: int, max_block: int = 128, split: int = 64) -> Tiling:
        if stride <= max_block:
            return Tiling(stride, stride, 1, max(16, _pow2(stride)))
        nsub = -(-stride // split)
        return Tiling(stride, split, nsub, split)

    def count(self, rows: int) -> int:
        """Tiles covering `rows` rows."""
        return -(-rows // self.stride) * self.nsub


def _pow2(x: int) -> int:
    return 1 << (max(x, 1) - 1).bit_length()


@dataclass(eq=False)
class Plan:
    """Work items and their key tiles. w_qt (Hl, W) int32; klist (Hl, W, WD) int32; Hl in {1, heads}."""

    w_qt: torch.Tensor
    klist: torch.Tensor
    qtiles: Tiling
    ktiles: Tiling
    n_ktiles: int  # key tiles of the key sequence (null id = n_ktiles)
    split: bool = False  # outputs per work item, to be merged by LSE
    window: int | None = None  # half width: |i - j| <= window
    causal: bool = False
    no_self: bool = False
    covers_all: bool = True  # every query tile is some work item's (else dQ starts from zeros)
    _transposed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _split_rows: dict = field(default_factory=dict, repr=False)  # nq -> (dst rows, src rows) of _sum_split
    _consts: dict = field(default_factory=dict, repr=False)  # (d, dtype) -> constexprs + launch options

    def transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each key tile, the work items listing it: (t_start, t_count) (Hl, n_ktiles), t_list."""
        if self._transposed is None:
            hl, w, wd = self.klist.shape
            nk = self.n_ktiles
            kt = self.klist.long().clamp(max=nk)  # nulls -> nk
            heads = torch.arange(hl, device=kt.device)[:, None, None]
            key = (heads * (nk + 1) + kt).flatten()
            item = torch.arange(w, device=kt.device)[None, :, None].expand(hl, w, wd).flatten()
            order = torch.sort(key, stable=True).indices
            t_list = item[order].view(hl, w * wd).to(torch.int32).contiguous()
            count = torch.bincount(key, minlength=hl * (nk + 1)).view(hl, nk + 1)
            start = count.cumsum(1) - count
            self._transposed = (
                start[:, :nk].to(torch.int32).contiguous(),
                count[:, :nk].to(torch.int32).contiguous(),
                t_list,
            )
        return self._transposed


def _strides4(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _strides_bh(x: torch.Tensor | None) -> tuple[int, int]:
    """A (B, 1 | H, N) vector: batch and head strides (0 for a shared head)."""
    if x is None:
        return 0, 0
    return x.stride(0), (0 if x.shape[1] == 1 else x.stride(1))


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


LAUNCH: dict = {}  # overrides of num_warps / num_stages (benchmarks)


def _launch_opts(d: int, block_m: int, block_n: int) -> dict:
    if _INTERPRET:
        return {}
    if LAUNCH:
        return dict(LAUNCH)
    warps = 4 if block_m * block_n <= 64 * 64 or d <= 64 else 8
    return {"num_warps": warps, "num_stages": 2}


def _consts(plan: Plan, d: int, dtype: torch.dtype) -> dict:
    """The kernels' constexprs and launch options for this plan, head_dim and dtype (cached on the plan)."""
    key = (d, dtype, tuple(sorted(LAUNCH.items())))
    c = plan._consts.get(key)
    if c is None:
        qt, kt = plan.qtiles, plan.ktiles
        c = dict(
            D=d,
            BLOCK_D=max(16, _pow2(d)),
            BLOCK_M=qt.block,
            BLOCK_N=kt.block,
            QS=qt.stride,
            QSUB=qt.sub,
            NQSUB=qt.nsub,
            KS=kt.stride,
            KSUB=kt.sub,
            NKSUB=kt.nsub,
            WINDOW=plan.window is not None,
            CAUSAL=plan.causal,
            NO_SELF=plan.no_self,
            PREC="ieee" if dtype == torch.float32 else "tf32",
            UPCAST=_INTERPRET and dtype == torch.bfloat16,
            SPLIT=plan.split,
            **_launch_opts(d, qt.block, kt.block),
        )
        plan._consts[key] = c
    return c


class _ListedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kx, vx, plan, kval, qval, pos, xval, scale):
        b, h, nq, d = q.shape
        nk = k.shape[2]
        w = plan.w_qt.shape[1]
        bm = plan.qtiles.block
        if plan.split:
            no = w * bm
            o = torch.empty(b, h, no, d, device=q.device, dtype=torch.float32)
        else:
            no = nq
            o = torch.empty_like(q)
        lse = torch.empty(b * h, no, device=q.device, dtype=torch.float32)
        has_x = kx is not None
        nx = kx.shape[2] if has_x else 0
        xk = kx if has_x else k
        xv = vx if has_x else v
        c = _consts(plan, d, q.dtype)
        hl = plan.w_qt.shape[0]
        wd = plan.klist.shape[2]
        dummy = kval
        _flash._fwd_kernel[(w, b * h)](
            q, k, v, o, lse, kval, qval if qval is not None else dummy, pos if pos is not None else dummy,
            xk, xv, xval if has_x else dummy, plan.w_qt, plan.klist,
            scale * _flash.LOG2E, plan.window or 0, h, nq, nk, nx, wd, no,
            *_strides4(q), *_strides4(k), *_strides4(v), *_strides4(o),
            *_strides_bh(kval), *_strides_bh(qval), *_strides_bh(pos),
            *_strides4(xk), *_strides4(xv), *_strides_bh(xval if has_x else None),
            w if hl > 1 else 0, w * wd if hl > 1 else 0,
            HAS_POS=pos is not None, HAS_QVAL=qval is not None, HAS_X=has_x, **c,
        )  # fmt: skip
        ctx.plan, ctx.scale, ctx.has_x = plan, scale, has_x
        ctx.save_for_backward(q, k, v, kx, vx, o, lse, kval, pos, xval)
        return o, lse.view(b, h, no)

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, kx, vx, o, lse, kval, pos, xval = ctx.saved_tensors
        plan, scale, has_x = ctx.plan, ctx.scale, ctx.has_x
        b, h, nq, d = q.shape
        nk = k.shape[2]
        w = plan.w_qt.shape[1]
        no = o.shape[2]
        if do is None:
            do = torch.zeros_like(o)
        do = _unit_last(do)
        delta = torch.empty(b * h, no, device=q.device, dtype=torch.float32)  # written by the dQ kernel
        if dlse is not None:
            dlse = dlse.reshape(b * h, no).float().contiguous()
        c = _consts(plan, d, q.dtype)
        hl = plan.w_qt.shape[0]
        wd = plan.klist.shape[2]
        s_wh, s_lh = (w if hl > 1 else 0), (w * wd if hl > 1 else 0)
        common = dict(HAS_POS=pos is not None, **c)
        dummy = kval

        if plan.split:
            dq_buf = torch.empty(b, h, no, d, device=q.device, dtype=torch.float32)
        else:
            dq_buf = torch.empty_like(q) if plan.covers_all else torch.zeros_like(q)
        nx = kx.shape[2] if has_x else 0
        dkx = torch.zeros(b, h, nx, d, device=q.device, dtype=torch.float32) if has_x else None
        dvx = torch.zeros_like(dkx) if has_x else None
        xk = kx if has_x else k
        xv = vx if has_x else v
        _flash._bwd_dq_kernel[(w, b * h)](
            q, k, v, o, do, lse, dlse if dlse is not None else lse, delta, dq_buf, kval,
            pos if pos is not None else dummy,
            xk, xv, xval if has_x else dummy, dkx if has_x else lse, dvx if has_x else lse,
            plan.w_qt, plan.klist,
            scale * _flash.LOG2E, scale, plan.window or 0, h, nq, nk, nx, wd, no,
            *_strides4(q), *_strides4(k), *_strides4(v), *_strides4(o), *_strides4(do), *_strides4(dq_buf),
            *_strides_bh(kval), *_strides_bh(pos),
            *_strides4(xk), *_strides4(xv), *_strides_bh(xval if has_x else None),
            s_wh, s_lh, HAS_X=has_x, HAS_DLSE=dlse is not None, **common,
        )  # fmt: skip
        dq = _sum_split(dq_buf, plan, nq).to(q.dtype) if plan.split else dq_buf

        t_start, t_count, t_list = plan.transposed()
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        _flash._bwd_dkdv_kernel[(plan.n_ktiles, b * h)](
            q, k, v, do, lse, delta, dk, dv, kval, pos if pos is not None else dummy,
            plan.w_qt, t_start, t_count, t_list,
            scale * _flash.LOG2E, scale, plan.window or 0, h, nq, nk, no,
            *_strides4(q), *_strides4(k), *_strides4(v), *_strides4(do), *_strides4(dk), *_strides4(dv),
            *_strides_bh(kval), *_strides_bh(pos),
            s_wh, plan.n_ktiles if hl > 1 else 0, t_list.shape[1] if hl > 1 else 0,
            **common,
        )  # fmt: skip
        gkx = dkx.to(kx.dtype) if has_x else None
        gvx = dvx.to(vx.dtype) if has_x else None
        return dq, dk, dv, gkx, gvx, None, None, None, None, None, None


def _sum_split(buf: torch.Tensor, plan: Plan, nq: int) -> torch.Tensor:
    """Partial dQ per work item (b, h, W * BLOCK_M, d) -> dQ (b, h, nq, d), summed over work items."""
    rows = plan._split_rows.get(nq)
    if rows is None:  # built once per plan and length (the boolean selection syncs)
        t = plan.qtiles
        assert plan.w_qt.shape[0] == 1, "split plans share one list across heads"
        offs = torch.arange(t.block, device=buf.device)
        qt = plan.w_qt[0].long()[:, None]
        u = qt % t.nsub
        dst = (qt // t.nsub) * t.stride + u * t.sub + offs  # (W, BLOCK_M)
        ok = ((offs < t.sub) & (u * t.sub + offs < t.stride) & (dst < nq)).flatten()
        src = torch.arange(ok.numel(), device=buf.device)
        rows = plan._split_rows[nq] = (dst.flatten()[ok].contiguous(), src[ok].contiguous())
    dst, src = rows
    out = buf.new_zeros(buf.shape[0], buf.shape[1], nq, buf.shape[-1])
    return out.index_add_(2, dst, buf.index_select(2, src))


def listed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: Plan,
    kval: torch.Tensor,
    scale: float,
    *,
    qval: torch.Tensor | None = None,
    pos: torch.Tensor | None = None,
    extra: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash attention of q over k, v along `plan`: (out, lse).

    q, k, v: (B, H, N, d). kval: (B, 1 | H, Nk) int8, 1 = a key the list may show. qval: (B, 1 | H, Nq)
    int8, 0 = a padded query (zero output, lse -inf). pos: (B, 1 | H, N) int32 positions for the
    window / causal / self tests (default: the row index). extra: (kx, vx, xval) keys (B, H, G, d)
    every query sees, xval (B, 1 | H, G) int8. Returns out (B, H, Nq, d) in q's dtype, or
    (B, H, W * BLOCK_M, d) float32 partial results for a split plan, and lse (B, H, rows) float32.
    """
    # one dtype for the kernel's dot products (under autocast a normalisation may come back in fp32)
    q, k, v = _unit_last(q), _unit_last(k.to(q.dtype)), _unit_last(v.to(q.dtype))
    kval = kval.contiguous()
    qval = None if qval is None else qval.contiguous()
    pos = None if pos is None else pos.contiguous()
    kx = vx = xval = None
    if extra is not None:
        kx, vx = _unit_last(extra[0].to(q.dtype)), _unit_last(extra[1].to(q.dtype))
        xval = extra[2].contiguous()
    return _ListedAttention.apply(q, k, v, kx, vx, plan, kval, qval, pos, xval, scale)


def merge_lse(
    outs: torch.Tensor, lses: torch.Tensor, dim: int, want_lse: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Combine partial softmax results along `dim` by log-sum-exp (parts that saw nothing weigh 0).

    outs (..., P, ..., d), lses of the same shape without d. Returns (out, lse) with `dim` removed
    (lse None unless `want_lse`). The weights are exp(lse - max): the largest is 1, so their sum is 0
    (nothing seen: out 0, lse -inf) or at least 1, and clamping it at 1 only touches unseen rows.
    """
    m = torch.nan_to_num(lses.detach().amax(dim, keepdim=True), neginf=0.0)
    wts = torch.exp(lses - m)
    total = wts.sum(dim, keepdim=True)
    denom = total.clamp_min(1.0)
    out = (outs * (wts / denom).unsqueeze(-1)).sum(dim)
    if not want_lse:
        return out, None
    lse = torch.where(total.detach() > 0, m + torch.log(denom), float("-inf")).squeeze(dim)
    return out, lse


# ---------------------------------------------------------------------------------------------------
# plans (cached: they depend only on lengths and pattern sizes)

_CACHE: dict[tuple, Plan] = {}


def cached(key: tuple, build) -> Plan:
    plan = _CACHE.get(key)
    if plan is None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        plan = _CACHE[key] = build()
    return plan


def expand_tiles(blocks: torch.Tensor, tiling: Tiling, null: int) -> torch.Tensor:
    """Logical key blocks (..., K) -> their tiles (..., K * nsub); negative or null blocks -> null tile."""
    tiles = blocks[..., None] * tiling.nsub + torch.arange(tiling.nsub, device=blocks.device)
    tiles = torch.where(blocks[..., None] >= 0, tiles, torch.full_like(tiles, null))
    return tiles.flatten(-2)


def window_plan(n: int, half: int, causal: bool, device: torch.device, block_m: int, block_n: int) -> Plan:
    """Sliding window over a sequence of n rows: query tile t sees the key tiles its window reaches."""

    def build() -> Plan:
        qt = Tiling(block_m, block_m, 1, block_m)
        kt = Tiling(block_n, block_n, 1, block_n)
        nqt, nkt = qt.count(n), kt.count(n)
        t = torch.arange(nqt, device=device)[:, None]
        lo = torch.div(t * block_m - half, block_n, rounding_mode="floor")
        hi_row = t * block_m + block_m - 1 + (0 if causal else half)
        hi = torch.div(hi_row, block_n, rounding_mode="floor")
        width = -(-(block_m + (half if causal else 2 * half)) // block_n) + 1
        cols = lo + torch.arange(width, device=device)
        keep = (cols >= 0) & (cols <= hi) & (cols < nkt)
        klist = torch.where(keep, cols, torch.full_like(cols, nkt))
        w_qt = torch.arange(nqt, device=device, dtype=torch.int32)[None]
        return Plan(w_qt, klist.to(torch.int32)[None].contiguous(), qt, kt, nkt, window=half, causal=causal)

    return cached(("window", n, half, causal, str(device), block_m, block_n), build)


def split_plan(nq: int, nk: int, device: torch.device, block: int, seg: int | None = None) -> Plan:
    """Every query sees every key: each query tile's key tiles cut into segments, one work item each."""

    def build() -> Plan:
        t = Tiling(block, block, 1, block)
        nqt, nkt = t.count(nq), t.count(nk)
        s = seg or max(16, -(-nkt // 256))
        nseg = -(-nkt // s)
        cols = torch.arange(nseg * s, device=device).view(nseg, s)
        cols = torch.where(cols < nkt, cols, torch.full_like(cols, nkt))
        klist = cols.repeat(nqt, 1, 1).flatten(0, 1)  # (nqt * nseg, s)
        w_qt = torch.arange(nqt, device=device).repeat_interleave(nseg)
        return Plan(
            w_qt.to(torch.int32)[None], klist.to(torch.int32)[None].contiguous(), t, t, nkt, split=True
        )

    return cached(("split", nq, nk, str(device), block, seg), build)


def cyclic_plan(
    n: int, chunk: int, before: int, after: int, causal: bool, no_self: bool, device: torch.device
) -> Plan:
    """Chunks of `chunk` rows that see chunks i - before .. i + after modulo the chunk count."""

    def build() -> Plan:
        t = Tiling.of(chunk)
        nc = -(-n // chunk)
        offs = torch.arange(-before, after + 1, device=device)
        chunks = torch.arange(nc, device=device)[:, None]
        blocks = (chunks + offs) % nc  # (nc, K)
        nkt = t.count(n)
        klist = expand_tiles(blocks, t, nkt)  # (nc, K * nsub)
        klist = klist.repeat_interleave(t.nsub, dim=0)  # one work item per query tile
        w_qt = torch.arange(nc * t.nsub, device=device, dtype=torch.int32)[None]
        return Plan(w_qt, klist.to(torch.int32)[None].contiguous(), t, t, nkt, causal=causal, no_self=no_self)

    return cached(("cyclic", n, chunk, before, after, causal, no_self, str(device)), build)
