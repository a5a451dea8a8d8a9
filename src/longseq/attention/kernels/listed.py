"""Autograd glue of the listed-blocks flash kernel: tile plans, launches, LSE merging.

A `Plan` says, for each work item w, its query tile `w_qt[w]` and a fixed-width row of key tiles
`klist[w]` (null entries, id >= the number of key tiles, are skipped by masking). Repeated key tiles
count as often as they are listed, which is how Hugging Face's gather-and-concatenate counts repeated
blocks. The backward pass walks the transposed list (for each key tile, the work items that list it)
for dK / dV and the forward list for dQ, so no atomics are needed except for the few extra keys.

One call of `listed_attention` is one autograd node whatever it holds: the main plan, extra keys
(`Extra`, seen by every query) and rows that see every key (`Rows`, split over keys and merged by
LSE in a kernel). Forward: 1 launch, or 3 with rows; backward: 2, or 4 with rows. Up to 16K keys the
rows' programs run in the main launch instead of one of their own (`ALONG`), which saves a launch's
latency: 2 launches forward, 3 backward (the window's dQ with global keys keeps its own).

q, k, v that are the heads of one `project` output go in as that tensor, and their gradient comes
back as one buffer (`fused_base`), not as three that autograd concatenates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from triton.tools.tensor_descriptor import TensorDescriptor

from .._common import fused_base
from ..global_tokens import read_rows, write_rows_
from . import _flash, _merges
from .dropout import kernel_args, new_seed
from .launch import _INTERPRET, Consts, launch

T = TypeVar("T")


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


def small_block(count: int, block: int = 64) -> int:
    """Tile rows for `count` extra keys or rows: a power of two in [16, block]."""
    return min(block, max(16, _pow2(count)))


@dataclass(eq=False)
class Plan:
    """Work items and their key tiles. w_qt (Hl, W) int32; klist (Hl, W, WD) int32; Hl in {1, heads}."""

    w_qt: torch.Tensor
    klist: torch.Tensor
    qtiles: Tiling
    ktiles: Tiling
    n_ktiles: int  # key tiles of the key sequence (null id = n_ktiles)
    window: int | None = None  # half width: |i - j| <= window
    causal: bool = False
    no_self: bool = False
    covers_all: bool = True  # every query row is some work item's, or a `Rows` row (else dQ is zeroed)
    band: bool = False  # a window plan: the kernels walk its contiguous tiles themselves (BAND)
    _transposed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _consts: dict = field(default_factory=dict, repr=False)  # flags -> Consts of each kernel

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
            t_list = item[order].view(hl, w * wd) if w * wd else kt.new_zeros(hl, 1)  # (a null list)
            count = torch.bincount(key, minlength=hl * (nk + 1)).view(hl, nk + 1)
            start = count.cumsum(1) - count
            self._transposed = (
                start[:, :nk].to(torch.int32).contiguous(),
                count[:, :nk].to(torch.int32).contiguous(),
                t_list.to(torch.int32).contiguous(),
            )
        return self._transposed

    def consts(self, kernel, d: int, dtype: torch.dtype, *flags: bool) -> Consts:
        """The kernel's constexprs and launch options for this plan, head_dim, dtype and flags (the
        kernel's flag constexprs, in `_FLAGS[kernel]` order)."""
        band = self.band and BAND  # (BAND is read here, so tune_band takes effect on the next call)
        key = (kernel, d, dtype, flags, band, _TUNED[0], tuple(LAUNCH.items()) if LAUNCH else ())
        c = self._consts.get(key)
        if c is None:
            qt, kt = self.qtiles, self.ktiles
            opts = None
            if band:  # each kernel walks the band in its own tiles
                bm, bn = BAND_TILES[kernel.__name__]
                qt, kt = Tiling(bm, bm, 1, bm), Tiling(bn, bn, 1, bn)
                opts = BAND_LAUNCH.get(kernel.__name__)
                if opts is None and flags[-1] and not _INTERPRET:  # TMA (the last flag of each kernel)
                    opts = TMA_LAUNCH.get(kernel.__name__)
                    if d <= 64 and dict(zip(_FLAGS[kernel], flags, strict=True)).get("KALL"):
                        opts = TMA_LAUNCH_KALL_D64.get(kernel.__name__, opts)
            kw = dict(
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
                WINDOW=self.window is not None,
                CAUSAL=self.causal,
                NO_SELF=self.no_self,
                PREC="ieee" if dtype == torch.float32 else "tf32",
                UPCAST=_INTERPRET and dtype == torch.bfloat16,
                BAND=band,
                **dict(zip(_FLAGS[kernel], flags, strict=True)),
                **(opts or _launch_opts(d, qt.block, kt.block)),
            )
            c = self._consts[key] = Consts(kernel, kw)
        return c


_FLAGS = {
    _flash._fwd_kernel: (
        "HAS_POS", "HAS_QVAL", "HAS_X", "ROWS", "BLOCK_X", "DROP", "XSKIP", "KALL",
        "ALONG", "RSKIP", "R_BM", "R_BN", "GROWS", "BLOCK_G", "PDL", "TMA",
    ),
    _flash._bwd_dq_kernel: (
        "HAS_POS", "HAS_X", "ROWS", "HAS_DLSE", "BLOCK_X", "DROP", "XSKIP", "KALL",
        "ALONG", "RSKIP", "R_BM", "R_BN", "TMA",
    ),
    _flash._bwd_dkdv_kernel: (
        "HAS_POS", "HAS_XQ", "HAS_XSLOT", "BLOCK_R", "DROP", "XSKIP", "KALL", "TMA",
    ),
}  # fmt: skip


@dataclass(eq=False)
class Extra:
    """Keys every query sees: rows idx[b, :cnt[b]] of kx / vx (of k / v themselves when kx is None).

    idx (B, G) int32; cnt (B,) int32; kx, vx (B, H, *, d) or None; slot (B, N) int32, the slot of
    each key position in idx (-1: none), needed when kx is None (their dK / dV land in dk / dv)."""

    idx: torch.Tensor
    cnt: torch.Tensor
    kx: torch.Tensor | None = None
    vx: torch.Tensor | None = None
    slot: torch.Tensor | None = None
    col: int = 0  # dropout's column of slot 0: 0 when idx holds key rows, past the key rows for kx rows
    in_window: bool = False  # the keys are window keys too (kval keeps them): extra only outside it


@dataclass(eq=False)
class Rows:
    """Query rows idx[b, :cnt[b]] that see every key with kval (B, 1, N) int8, split over keys.

    idx (B | 1, G) int32; cnt (B,) int32; plan: `split_plan` over the G slots. When the main plan
    lists these rows too, their main-plan results are overwritten (and with `Extra.in_window` their
    dK / dV pairs inside the main plan come from it). slot (B, N) int32: the slot of each row in idx
    (-1: none), given when the main plan lists them; apart: the main plan does not list them. With
    either, and the main plan's kval, the rows' programs run in the main launches (`ALONG`)."""

    idx: torch.Tensor
    cnt: torch.Tensor
    plan: Plan
    kval: torch.Tensor
    slot: torch.Tensor | None = None
    apart: bool = False
    every: bool = False  # the rows are all the query rows, each written (the output needs no zeros)

    @property
    def nseg(self) -> int:
        return self.plan.w_qt.shape[1] // self.plan.qtiles.count(self.idx.shape[1])


def _s4(x: torch.Tensor) -> tuple[int, ...]:
    return x.stride()[:3]


def _sbh(x: torch.Tensor | None) -> tuple[int, int]:
    """A (B, 1 | H, N) vector: batch and head strides (0 for a shared head)."""
    if x is None:
        return 0, 0
    st = x.stride()
    return st[0], (0 if x.shape[1] == 1 else st[1])


def _sb(x: torch.Tensor | None) -> int:
    """A (B | 1, ...) tensor's batch stride (0 when shared)."""
    return 0 if x is None or x.shape[0] == 1 else x.stride(0)


def _like(x: torch.Tensor, zero: bool = False) -> torch.Tensor:
    """A new (B, H, N, d) tensor laid out as x: sequence-major, (B, N, H, d) in memory, when x is (the
    heads of a projection), so that merging the heads of the output is a view, not a copy."""
    b, h, n, d = x.shape
    if h > 1 and n > 1 and x.stride(1) < x.stride(2):
        new = torch.zeros if zero else torch.empty
        return new(b, n, h, d, device=x.device, dtype=x.dtype).transpose(1, 2)
    new_like = torch.zeros_like if zero else torch.empty_like
    return new_like(x, memory_format=torch.contiguous_format)


_I32 = 2**31 - 1  # the kernels compute element offsets in int32


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    """x with unit stride on its last dim and every element's offset within int32: a copy when either
    fails (e.g. the heads of a fused projection over a million tokens span more than 2^31 elements)."""
    if x.stride(-1) == 1:
        if x.untyped_storage().nbytes() <= _I32 * x.element_size():  # (quick: every offset is in it)
            return x
        span = sum((size - 1) * st for size, st in zip(x.shape, x.stride(), strict=True) if size > 1)
        if span <= _I32:
            return x
    x = x.contiguous()
    if x.numel() > _I32:
        raise ValueError(
            f"a tensor of shape {tuple(x.shape)} has {x.numel()} elements, past the gpu kernels' limit "
            "of 2^31: split the batch or the heads over several calls"
        )
    return x


LAUNCH: dict = {}  # overrides of num_warps / num_stages (benchmarks)
BAND = True  # window plans walk their tiles in the kernels (False: through their lists; benchmarks)
# (query rows, key rows) of a tile, per kernel, when a window plan's band is walked
BAND_TILES: dict[str, tuple[int, int]] = {
    "_fwd_kernel": (64, 64),
    "_bwd_dq_kernel": (64, 64),
    "_bwd_dkdv_kernel": (64, 64),
}
BAND_LAUNCH: dict[str, dict] = {}  # per kernel: num_warps / num_stages with BAND, if not the default
_TUNED = [0]  # bumped by tune_band: plans rebuild their constexprs


def tune_band(
    tiles: dict[str, tuple[int, int]] | None = None, launch: dict[str, dict] | None = None, band: bool = True
) -> None:
    """Set the band walk (benchmarks): on or off, each kernel's tiles and launch options."""
    global BAND
    BAND = band
    if tiles is not None:
        BAND_TILES.update(tiles)
    if launch is not None:
        BAND_LAUNCH.clear()
        BAND_LAUNCH.update(launch)
    _TUNED[0] += 1


# Band kernels that load their contiguous tiles through TMA descriptors (`_tma`), where the inputs
# allow: the loads' address registers go (forward kernel: 255 -> 130 registers a thread) and more
# programs fit an SM. Measured on an H200, bf16: SlidingWindow(512) + 1 global token at 16K, forward
# 0.140 -> 0.119 ms, 64K 0.528 -> 0.455 ms (benchmarks/window_kernel.py); the lean kernels of
# benchmarks/window_tma.py, forward 0.112 -> 0.092 ms. Descriptors made on the device cost more than
# they save there (0.109 ms): they are made on the host, one per tensor and launch.
TMA: dict[str, bool] = {"_fwd_kernel": True, "_bwd_dq_kernel": True, "_bwd_dkdv_kernel": True}


# With TMA loads, the backward kernels fit in 168 registers a thread (3 programs an SM, not 2), which
# ptxas does not choose by itself: SlidingWindow(512) + 1 global token, 16K, fwd + bwd 0.525 -> 0.478
# ms, 64K 1.936 -> 1.783 ms (benchmarks/window_kernel.py). Capping the forward kernel (128) changed
# nothing, capping dQ at 128 lost (0.499 ms); the pointer kernels spill at 168 and keep no cap.
TMA_LAUNCH: dict[str, dict] = {
    "_bwd_dq_kernel": {"num_warps": 4, "num_stages": 2, "maxnreg": 168},
    "_bwd_dkdv_kernel": {"num_warps": 4, "num_stages": 2, "maxnreg": 168},
}
# At head_dim <= 64 with every key valid (KALL: no padding), the TMA forward fits in 96 registers
# once its first block of extra keys is loaded after the band loop (`_flash._fwd_body`'s XPRE is off
# there): five programs an SM by registers and by shared memory (42 KB a program), not four. Measured
# on an H200 (eighteenth session, benchmarks/attend_ab.py), SlidingWindow(512) + 1 global token,
# GPU-only, with `_flash._x_block`'s parallel index loads, against 109 registers: 16K 0.1067 -> 0.1041
# ms, 64K 0.4078 -> 0.3935, causal 16K 0.0810 -> 0.0776, dropout 0.1 16K 0.1948 -> 0.1836. With
# padding it spills (32 bytes) and gained nothing (0.1258 -> 0.1266 ms): no cap there.
TMA_LAUNCH_KALL_D64: dict[str, dict] = {"_fwd_kernel": {"num_warps": 4, "num_stages": 2, "maxnreg": 96}}


def _tma(plan: Plan, kernel, d: int, *xs: torch.Tensor) -> bool:
    """Whether `kernel` can read xs through TMA along `plan`: a band walk, 16-bit inputs, head_dim a
    power of two (one block), every tensor's base and strides on 16 bytes (a TMA descriptor's rule)."""
    if not (TMA.get(kernel.__name__) and plan.band and BAND and d >= 16 and d & (d - 1) == 0):
        return False
    for x in xs:
        if x.dtype not in (torch.bfloat16, torch.float16) or x.data_ptr() % 16:
            return False
        if any(st <= 0 or st % 8 for st in x.stride()[:-1]):
            return False
    return True


def _descs(c: Consts, blocks: tuple[str, ...], xs: tuple[torch.Tensor, ...], dummy) -> tuple:
    """TMA descriptors of xs (B, H, N, d) in blocks of [1, 1, c.kwargs[block], d] rows, or with TMA off
    placeholders (the kernel leaves them unused)."""
    if not c.kwargs["TMA"]:
        return (dummy,) * len(xs)
    d = c.kwargs["BLOCK_D"]
    return tuple(_descriptor(x, [1, 1, c.kwargs[blk], d]) for x, blk in zip(xs, blocks, strict=True))


def _descriptor(x: torch.Tensor, block: list[int]) -> TensorDescriptor:
    """TensorDescriptor(x, x.shape, x.stride(), block) without its checks, which `_tma` made (and the
    constexprs' powers of two): they take 10 us a descriptor on a slow host, the fields 3 us, and a
    band call makes 9 descriptors forward and backward."""
    desc = object.__new__(TensorDescriptor)
    desc.base, desc.shape, desc.strides, desc.block_shape = x, list(x.shape), list(x.stride()), block
    desc.padding = "zero"
    return desc


ALONG = [True]  # `Rows` run in the main launches where they can (False: launches of their own; benchmarks)
# Measured on an H200 (benchmarks/split_rows.py): in the main launch the rows' programs overlap it,
# which saves their own launch's latency up to 16K keys (window + 1 global row, forward: 0.154 ->
# 0.140 ms at 16K), but from 64K keys they compete with it (0.532 -> 0.543 ms); and the window's dQ
# launch, with its atomics for global keys, gets slower with them (164 -> 185 us at 16K).
ALONG_MAX_KEYS = 16384


@dataclass(frozen=True, slots=True)
class _Along:
    """How `Rows` run: in the main launch (on; skip: the main plan lists the rows too and leaves them
    to the rows' programs, RSKIP), in tiles of bm rows over key tiles of bn keys; or apart."""

    on: bool
    skip: bool
    bm: int
    bn: int

    @staticmethod
    def of(
        plan: Plan, rows: Rows | None, kval: torch.Tensor, pos: torch.Tensor | None, atomics: bool = False
    ) -> _Along:
        """atomics: the main launch sums extra keys' gradients by atomics (the window's dQ launch)."""
        ok = (
            ALONG[0]
            and kval.shape[-1] <= ALONG_MAX_KEYS
            and not atomics
            and rows is not None
            and plan.w_qt.shape[1] > 0
            and rows.kval is kval
            and pos is None
            and (rows.slot is not None or rows.apart)
        )
        if not ok:
            return _APART
        return _Along(True, rows.slot is not None, rows.plan.qtiles.block, rows.plan.ktiles.block)

    def flags(self) -> tuple:
        return (self.on, self.skip, self.bm, self.bn)


_APART = _Along(False, False, 16, 16)


# A window's rows that see every key (Longformer's global queries), up to BAND_ROWS_MAX of them, are
# taken by the band's forward programs (GROWS): each over its own tile of keys, read once more from
# L2, then one merge launch. No programs of their own and no pass of their own over the keys.
# Measured on an H200 (benchmarks/split_rows.py, SlidingWindow(512) + 1 global token, bf16, GPU-only):
# forward 0.120 -> 0.116 ms at 16K and 0.456 -> 0.443 ms at 64K against the split plan's programs in
# the main launch. Merging in that launch (the last program of each head, through a counter) was
# slower (0.117 / 0.450 ms), so was the work done inside the band loop (0.174 / 0.670: the loop is
# no longer pipelined) or transposed for the warpgroup MMA (0.117, and NaN on the H200). With 8 or
# 16 rows it was slower than the split plan (16K: 0.153 / 0.192 against 0.121 / 0.127 ms, with a
# merge of one program per head, which now has one per row, untimed with more rows), so by default it
# takes one row; the kernels take up to BAND_ROWS_MOST.
BAND_ROWS = [True]  # (False: a split plan's programs, as for the other patterns; benchmarks)
BAND_ROWS_MAX = 1
BAND_ROWS_MOST = 16  # (one tile of rows)
BAND_ROWS_BYTES = 64 << 20  # the partials' buffer at most (more: a split plan)


def _takes_band_rows(
    plan: Plan,
    rows: Rows | None,
    kval: torch.Tensor,
    pos: torch.Tensor | None,
    nq: int,
    nk: int,
    bh: int,
    d: int,
) -> bool:
    """Whether the band's forward programs take `rows` (GROWS)."""
    if not (BAND_ROWS[0] and plan.band and BAND and rows is not None and rows.slot is not None):
        return False
    nw = -(-nq // BAND_TILES["_fwd_kernel"][0])
    g = rows.idx.shape[1]
    return (
        rows.kval is kval
        and pos is None
        and nq == nk
        and g <= min(BAND_ROWS_MAX, BAND_ROWS_MOST)
        and bh * nw * g * (d + 2) * 4 <= BAND_ROWS_BYTES
    )


_BAND_MERGE: dict[tuple, Consts] = {}


def _band_merge(
    gp: torch.Tensor,
    gml: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    rows: Rows,
    qval: torch.Tensor | None,
    dummy: torch.Tensor,
    rdrop: float,
    nw: int,
    pdl: bool,
) -> None:
    """`_band_rows`' partials -> the rows' O and LSE: one program per (batch, head, row slot, 16
    columns of head_dim), each taking up to 1024 partials in one load. (One row, the default, is the
    launch measured; more rows were measured with one program per (batch, head) walking them, the
    slower form.) pdl: launched as a programmatic dependent of the band's launch (`_pdl`)."""
    b, h, nq, d = o.shape
    cw = min(_pow2(nw), BAND_MERGE_CHUNK)
    key = (d, qval is not None, cw, BAND_MERGE_COLUMNS, pdl)
    c = _BAND_MERGE.get(key)
    if c is None:
        kw = dict(D=d, BLOCK_DC=BAND_MERGE_COLUMNS, CW=cw, HAS_QVAL=qval is not None, PDL=pdl)
        if not _INTERPRET:
            kw.update(num_warps=8 if cw >= 256 else 4, num_stages=2)
        if pdl:
            kw.update(launch_pdl=True)
        c = _BAND_MERGE[key] = Consts(_merges._band_merge_kernel, kw)
    ptrs = (gp, gml, qval if qval is not None else dummy, rows.idx, rows.cnt, o, lse)
    scalars = (rdrop, h, nw, nq, rows.idx.shape[1], *_s4(o), *_sbh(qval), _sb(rows.idx))
    grid = (b * h, rows.idx.shape[1], -(-d // BAND_MERGE_COLUMNS))
    launch(_merges._band_merge_kernel, grid, ptrs, scalars, c)


# The band merge as a programmatic dependent launch of the band's forward (PDL, sm90 and later): its
# programs may start while the band's last wave runs, and wait for its writes in the kernel.
PDL_MERGE = [True]


def _pdl(x: torch.Tensor) -> bool:
    """Whether the band merge after a launch on x's device is a programmatic dependent launch."""
    return PDL_MERGE[0] and not _INTERPRET and x.is_cuda and _sm90(x.device.index)


@functools.cache
def _sm90(index: int | None) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


BAND_MERGE_CHUNK = 1024  # partials a load in the band merge (one per 64 tokens: one load up to 64K)
BAND_MERGE_COLUMNS = 16  # columns of head_dim a band-merge program takes


def _grid(c: Consts, plan: Plan, rows: int, keys: bool = False) -> int:
    """Programs of a main launch: the plan's work items (or key tiles), or with BAND the kernel's own
    tiles over `rows` rows."""
    if c.kwargs["BAND"]:
        return -(-rows // c.kwargs["BLOCK_N" if keys else "BLOCK_M"])
    return plan.n_ktiles if keys else plan.w_qt.shape[1]


def _launch_opts(d: int, block_m: int, block_n: int) -> dict:
    if _INTERPRET:
        return {}
    if LAUNCH:
        return dict(LAUNCH)
    warps = 4 if block_m * block_n <= 64 * 64 or d <= 64 else 8
    return {"num_warps": warps, "num_stages": 2}


_MERGE: dict[tuple, Consts] = {}


def _merge(parts, part_lse, o, lse, rows: Rows, h: int, nq: int, total: bool) -> None:
    """Write the merged (or, with `total`, summed) partial rows into o (and lse) at rows.idx."""
    d = o.shape[-1]
    bm = rows.plan.qtiles.block
    key = (d, bm, total)
    c = _MERGE.get(key)
    if c is None:
        kw = dict(D=d, BLOCK_D=max(16, _pow2(d)), BLOCK_M=bm, SUM=total)
        if not _INTERPRET:
            kw.update(num_warps=4, num_stages=3)
        c = _MERGE[key] = Consts(_merges._merge_kernel, kw)
    g = rows.idx.shape[1]
    ptrs = (parts, part_lse, o, lse, rows.idx, rows.cnt)
    scalars = (h, nq, g, rows.nseg, parts.shape[2], *_s4(o), _sb(rows.idx))
    launch(_merges._merge_kernel, (-(-g // bm), o.shape[0] * h), ptrs, scalars, c)


@dataclass(eq=False, slots=True)
class _Call:
    """What a call passes besides the tensors that get gradients (one argument of `apply`: each
    argument costs host time there)."""

    plan: Plan
    kval: torch.Tensor
    qval: torch.Tensor | None
    pos: torch.Tensor | None
    extra: Extra | None
    rows: Rows | None
    scale: float
    dropout: float
    seed: torch.Tensor | None
    place: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None  # (idx, used, flat)
    kall: bool
    fused: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    # (slots, offsets, shape, stride): inputs slots of (q, k, v) are views of one tensor, passed
    # in their first slot (`fused_base`), whose gradient is written in one buffer


def _covered(call: _Call) -> bool:
    """Whether the kernels write every query row (the plan's, or the rows that are all of them)."""
    return call.plan.covers_all or (call.rows is not None and call.rows.every)


def _views(base: torch.Tensor, fused: tuple, args: list) -> list:
    """args (q, k, v) with the views of base in the fused slots."""
    slots, offs, shape, stride = fused
    out = list(args)
    for i, off in zip(slots, offs, strict=True):
        out[i] = base.as_strided(shape, stride, base.storage_offset() + off)
    return out


class _ListedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kx, vx, pv, call: _Call):
        saved = [q, k, v]
        if call.fused is not None:  # q, k, v (some of them) as views of the tensor in the first slot
            q, k, v = _views(saved[call.fused[0][0]], call.fused, saved)
        plan, kval, qval, pos, extra, rows = call.plan, call.kval, call.qval, call.pos, call.extra, call.rows
        scale, dropout, seed, place, kall = call.scale, call.dropout, call.seed, call.place, call.kall
        b, h, nq, d = q.shape
        drop = dropout > 0
        rdrop, thr = kernel_args(dropout)
        nk = k.shape[2]
        w = plan.w_qt.shape[1]
        o = _like(q, zero=not _covered(call))
        lse = torch.empty(b * h, nq, device=q.device, dtype=torch.float32)
        has_x = extra is not None
        xk = kx if kx is not None else k
        xv = vx if vx is not None else v
        nx = extra.idx.shape[1] if has_x else 0
        xidx, xcnt = (extra.idx, extra.cnt) if has_x else (kval, kval)
        xcol = extra.col if has_x else 0
        hl = plan.w_qt.shape[0]
        wd = plan.klist.shape[2]
        s_wh, s_lh = (w if hl > 1 else 0), (w * wd if hl > 1 else 0)
        dummy = kval
        qv = qval if qval is not None else dummy
        ps = pos if pos is not None else dummy
        qs, ks, vs = _s4(q), _s4(k), _s4(v)
        bx = small_block(nx, plan.ktiles.block)
        sd = seed if drop else dummy
        xskip = has_x and extra.in_window
        grows = _takes_band_rows(plan, rows, kval, pos, nq, nk, b * h, d)
        al = _APART if grows else _Along.of(plan, rows, kval, pos)
        ng = rows.idx.shape[1] if grows else 0
        c = plan.consts(
            _flash._fwd_kernel,
            d,
            q.dtype,
            pos is not None,
            qval is not None,
            has_x,
            False,
            bx,
            drop,
            xskip,
            kall,
            *al.flags(),
            grows,
            small_block(ng, BAND_ROWS_MOST),
            grows and _pdl(q),
            _tma(plan, _flash._fwd_kernel, d, q, k, v),
        )
        nmain = _grid(c, plan, nq)
        if grows:  # partials (B * H, W, G, d); maxima and sums (2, B * H, W, G): float32
            gp = torch.empty(b * h * nmain * ng * d, device=q.device, dtype=torch.float32)
            gml = torch.empty(2 * b * h * nmain * ng, device=q.device, dtype=torch.float32)
        elif rows is not None:
            rp = rows.plan
            rw = rp.w_qt.shape[1]
            no = rw * rp.qtiles.block
            parts = torch.empty(b, h, no, d, device=q.device, dtype=torch.float32)
            part_lse = torch.empty(b * h, no, device=q.device, dtype=torch.float32)
        if al.on:  # the rows' programs first, then the main plan's, in one launch
            slot = rows.slot if al.skip else dummy
            grid = (rw * b * h + nmain * b * h, 1)
            rptrs = (parts, part_lse, rp.w_qt, rp.klist, slot)
            rints = (rw, nmain, b * h, rp.klist.shape[2], no, *_s4(parts), _sb(slot) if al.skip else 0)
            ridx, rcnt, nr, s_rib = rows.idx, rows.cnt, rows.idx.shape[1], _sb(rows.idx)
        else:
            grid = (nmain, b * h)
            rptrs = (gp, gml, dummy, dummy, dummy) if grows else (dummy,) * 5
            rints = (0,) * 9
            ridx, rcnt, nr, s_rib = (rows.idx, rows.cnt, ng, _sb(rows.idx)) if grows else (dummy, dummy, 0, 0)
        launch(
            _flash._fwd_kernel, grid,
            (q, k, v, o, lse, kval, qv, ps, xk, xv, xidx, xcnt, ridx, rcnt, plan.w_qt, plan.klist, sd,
             *rptrs),
            (scale * _flash.LOG2E, rdrop, plan.window or 0, h, nq, nk, nx, nr, wd, nq, thr, xcol,
             *qs, *ks, *vs, *_s4(o), *_sbh(kval), *_sbh(qval), *_sbh(pos),
             *_s4(xk), *_s4(xv), _sb(xidx) if has_x else 0, s_rib, s_wh, s_lh, *rints),
            c,
            _descs(c, ("BLOCK_M", "BLOCK_N", "BLOCK_N"), (q, k, v), dummy),
        )  # fmt: skip
        if grows:
            _band_merge(gp, gml, o, lse, rows, qval, dummy, rdrop, nmain, c.kwargs["PDL"])
        elif rows is not None:
            if not al.on:
                cr = rp.consts(
                    _flash._fwd_kernel, d, q.dtype, False, qval is not None, False, True, 16, drop, False,
                    False, *_APART.flags(), False, 16, False, False,
                )  # fmt: skip
                launch(
                    _flash._fwd_kernel, (rw, b * h),
                    (q, k, v, parts, part_lse, rows.kval, qv, dummy, k, v, dummy, dummy, rows.idx, rows.cnt,
                     rp.w_qt, rp.klist, sd, *(dummy,) * 5),
                    (scale * _flash.LOG2E, rdrop, 0, h, nq, nk, 0, rows.idx.shape[1], rp.klist.shape[2], no,
                     thr, 0,
                     *qs, *ks, *vs, *_s4(parts), *_sbh(rows.kval), *_sbh(qval), 0, 0,
                     *ks, *vs, 0, _sb(rows.idx), 0, 0, *(0,) * 9),
                    cr,
                    (dummy,) * 3,
                )  # fmt: skip
            _merge(parts, part_lse, o, lse, rows, h, nq, total=False)
        if place is not None:  # the caller's rows, written over the kernel's (their lse stays)
            write_rows_(o, place[0], place[1], pv, place[2])
        ctx.set_materialize_grads(False)  # an unused lse (or out) gets no zeros, and no dLSE pass
        ctx.call = call  # (kval, pos: read-only inputs that get no gradient)
        ctx.save_for_backward(*saved, kx, vx, o, lse)  # (fused: the base once, in its first slot)
        return o, lse.view(b, h, nq)

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, kx, vx, o, lse = ctx.saved_tensors
        call = ctx.call
        dbase = None
        if call.fused is not None:
            base = (q, k, v)[call.fused[0][0]]
            q, k, v = _views(base, call.fused, [q, k, v])
            # one buffer for the fused inputs' gradients (dQ is zeroed where the plan may leave rows)
            zero = not _covered(call) and 0 in call.fused[0]
            dbase = torch.zeros_like(base) if zero else torch.empty_like(base)
        plan, scale, extra, rows = call.plan, call.scale, call.extra, call.rows
        kval, pos = call.kval, call.pos
        drop = call.dropout > 0
        rdrop, thr = kernel_args(call.dropout)
        b, h, nq, d = q.shape
        nk = k.shape[2]
        w = plan.w_qt.shape[1]
        if do is None:
            do = torch.zeros_like(o)
        dpv = None
        if call.place is not None:  # placed rows: their gradient goes to pv (qval kept them out)
            dpv = read_rows(do, *call.place)  # (b, h, G, d)
        do = _unit_last(do)
        delta = torch.empty(b * h, nq, device=q.device, dtype=torch.float32)  # written by the dQ kernels
        if dlse is not None:
            dlse = dlse.reshape(b * h, nq).float().contiguous()
        hl = plan.w_qt.shape[0]
        wd = plan.klist.shape[2]
        s_wh, s_lh = (w if hl > 1 else 0), (w * wd if hl > 1 else 0)
        dummy = kval
        ps = pos if pos is not None else dummy
        dl = dlse if dlse is not None else lse
        has_x = extra is not None
        grads = [None, None, None] if dbase is None else _views(dbase, call.fused, [None, None, None])
        dq = grads[0] if grads[0] is not None else _like(q, zero=not _covered(call))
        nx = extra.idx.shape[1] if has_x else 0
        xk = kx if kx is not None else k
        xv = vx if vx is not None else v
        xidx, xcnt = (extra.idx, extra.cnt) if has_x else (kval, kval)
        xcol = extra.col if has_x else 0
        # the extra keys' dK and dV (fp32 atomics): one zeroed buffer for both
        dkx, dvx = torch.zeros(2, b, h, nx, d, device=q.device, dtype=torch.float32) if has_x else (lse, lse)
        qs, ks, vs, os_, dos = _s4(q), _s4(k), _s4(v), _s4(o), _s4(do)
        bx = small_block(nx, plan.ktiles.block)
        has_dl = dlse is not None
        sd = call.seed if drop else dummy
        xskip = has_x and extra.in_window
        al = _Along.of(plan, rows, kval, pos, atomics=has_x)
        tma = _tma(plan, _flash._bwd_dq_kernel, d, q, k, v, do)
        flags = (pos is not None, has_x, False, has_dl, bx, drop, xskip, call.kall, *al.flags(), tma)
        c = plan.consts(_flash._bwd_dq_kernel, d, q.dtype, *flags)
        nmain = _grid(c, plan, nq)
        if rows is not None:
            rp = rows.plan
            rw = rp.w_qt.shape[1]
            parts = torch.empty(b, h, rw * rp.qtiles.block, d, device=q.device, dtype=torch.float32)
        if al.on:  # the rows' programs first, then the main plan's, in one launch
            slot = rows.slot if al.skip else dummy
            grid = (rw * b * h + nmain * b * h, 1)
            rptrs = (parts, rp.w_qt, rp.klist, slot)
            rints = (rw, nmain, b * h, rp.klist.shape[2], *_s4(parts), _sb(slot) if al.skip else 0)
            ridx, rcnt, nr, s_rib = rows.idx, rows.cnt, rows.idx.shape[1], _sb(rows.idx)
        else:
            grid = (nmain, b * h)
            rptrs = (dummy,) * 4
            rints = (0,) * 8
            ridx, rcnt, nr, s_rib = dummy, dummy, 0, 0
        launch(
            _flash._bwd_dq_kernel, grid,
            (q, k, v, o, do, lse, dl, delta, dq, kval, ps, xk, xv, xidx, xcnt, dkx, dvx, ridx, rcnt,
             plan.w_qt, plan.klist, sd, *rptrs),
            (scale * _flash.LOG2E, scale, rdrop, plan.window or 0, h, nq, nk, nx, nr, wd, thr, xcol,
             *qs, *ks, *vs, *os_, *dos, *_s4(dq), *_sbh(kval), *_sbh(pos),
             *_s4(xk), *_s4(xv), _sb(xidx) if has_x else 0, s_rib, s_wh, s_lh, *rints),
            c,
            _descs(c, ("BLOCK_M", "BLOCK_N", "BLOCK_N", "BLOCK_M"), (q, k, v, do), dummy),
        )  # fmt: skip
        if rows is not None:
            if not al.on:
                flags = (False, False, True, dlse is not None, 16, drop, False, False, *_APART.flags(), False)
                cr = rp.consts(_flash._bwd_dq_kernel, d, q.dtype, *flags)
                launch(
                    _flash._bwd_dq_kernel, (rw, b * h),
                    (q, k, v, o, do, lse, dl, delta, parts, rows.kval, dummy, k, v, dummy, dummy, lse, lse,
                     rows.idx, rows.cnt, rp.w_qt, rp.klist, sd, *(dummy,) * 4),
                    (scale * _flash.LOG2E, scale, rdrop, 0, h, nq, nk, 0, rows.idx.shape[1],
                     rp.klist.shape[2], thr, 0,
                     *qs, *ks, *vs, *os_, *dos, *_s4(parts), *_sbh(rows.kval), 0, 0,
                     *ks, *vs, 0, _sb(rows.idx), 0, 0, *(0,) * 8),
                    cr,
                    (dummy,) * 4,
                )  # fmt: skip
            _merge(parts, lse, dq, lse, rows, h, nq, total=True)

        t_start, t_count, t_list = plan.transposed()
        dk = grads[1] if grads[1] is not None else _like(k)
        dv = grads[2] if grads[2] is not None else _like(v)
        on_k = has_x and kx is None
        ridx, rcnt = (rows.idx, rows.cnt) if rows is not None else (dummy, dummy)
        xslot = extra.slot if on_k else dummy
        br = small_block(rows.idx.shape[1] if rows is not None else 0, plan.qtiles.block)
        ck = plan.consts(
            _flash._bwd_dkdv_kernel,
            d,
            q.dtype,
            pos is not None,
            rows is not None,
            on_k,
            br,
            drop,
            xskip,
            call.kall,
            _tma(plan, _flash._bwd_dkdv_kernel, d, q, do),
        )
        launch(
            _flash._bwd_dkdv_kernel, (_grid(ck, plan, nk, keys=True), b * h),
            (q, k, v, do, lse, delta, dk, dv, kval, ps, ridx, rcnt, xslot, dkx, dvx, plan.w_qt, t_start,
             t_count, t_list, sd),
            (scale * _flash.LOG2E, scale, rdrop,
             plan.window or 0, h, nq, nk, rows.idx.shape[1] if rows is not None else 0, nx, thr,
             *qs, *ks, *vs, *dos, *_s4(dk), *_s4(dv), *_sbh(kval), *_sbh(pos),
             _sb(ridx) if rows is not None else 0, _sb(xslot) if on_k else 0,
             s_wh, plan.n_ktiles if hl > 1 else 0, t_list.shape[1] if hl > 1 else 0),
            ck,
            _descs(ck, ("BLOCK_M", "BLOCK_M"), (q, do), dummy),
        )  # fmt: skip
        gkx = dkx.to(kx.dtype) if kx is not None else None
        gvx = dvx.to(vx.dtype) if vx is not None else None
        if dbase is not None:  # the base's gradient in its slot, none in the others
            out = [dq, dk, dv]
            for i in call.fused[0]:
                out[i] = None
            out[call.fused[0][0]] = dbase
            return *out, gkx, gvx, dpv, None
        return dq, dk, dv, gkx, gvx, dpv, None


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
    extra: Extra | None = None,
    rows: Rows | None = None,
    dropout: float = 0.0,
    place: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None,
    all_keys: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash attention of q over k, v along `plan`: (out, lse).

    q, k, v: (B, H, N, d). kval: (B, 1 | H, Nk) int8, 1 = a key the list may show. qval: (B, 1 | H, Nq)
    int8, 0 = a padded query (zero output, lse -inf). pos: (B, 1 | H, N) int32 positions for the
    window / causal / self tests (default: the row index). extra: keys every query sees; rows: query
    rows that see every key (see `Extra`, `Rows`). Returns out (B, H, Nq, d) in q's dtype and lse
    (B, H, Nq) float32. dropout: probability of dropping each attention weight (`dropout.py`); the
    seed is drawn from torch's generator on q's device, once per call. place: (idx (B, G), used
    (B, G) bool, flat (B * G,) or None (`GlobalTokens.rows_place`), values (B, H, G, d)): output rows
    idx[b, g] replaced by values[b, :, g] where used,
    in the output buffer (lse -inf there); their gradient goes to values. qval must mark those rows 0,
    so that the kernels give them nothing, forward or backward. all_keys: kval
    is all ones (no padding, no key left out), so whole tiles of a band need no mask.
    """
    # one dtype for the kernel's dot products (under autocast a normalisation may come back in fp32)
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    if v.dtype != q.dtype:
        v = v.to(q.dtype)
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    kval = _unit_last(kval)  # the kernels index these vectors with unit stride
    qval = None if qval is None else _unit_last(qval)
    pos = None if pos is None else _unit_last(pos)
    kx = vx = None
    if extra is not None and extra.kx is not None:
        kx, vx = _unit_last(extra.kx.to(q.dtype)), _unit_last(extra.vx.to(q.dtype))
    assert pos is None or rows is None, "rows that see every key take no positions"
    seed = new_seed(q.device) if dropout > 0 else None
    pv = None if place is None else place[3]
    where = None if place is None else place[:3]
    if scale < 0:  # the kernels scale inside their max (qk_scale > 0): the sign moves into q
        q, scale = -q, -scale
    call = _Call(plan, kval, qval, pos, extra, rows, scale, dropout, seed, where, all_keys)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, kx, vx, pv)):
        args = [q, k, v]
        found = fused_base((q, k, v)) if k is not q else None
        if found is not None:  # heads of one projection: its gradient in one buffer, no concatenation
            base, slots, offs = found
            first = (q, k, v)[slots[0]]
            call.fused = (slots, offs, tuple(first.shape), first.stride())
            args[slots[0]] = base
            for i in slots[1:]:
                args[i] = None
        return _ListedAttention.apply(*args, kx, vx, pv, call)
    return _ListedAttention.forward(_NoGrad(), q, k, v, kx, vx, pv, call)  # inference: no autograd node


class _NoGrad:
    """Stands for the autograd context when nothing needs a gradient."""

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


# ---------------------------------------------------------------------------------------------------
# plans (cached: they depend only on lengths and pattern sizes)

_CACHE: dict[tuple, Any] = {}


def cached(key: tuple, build: Callable[[], T]) -> T:
    """build(), kept under key (plans, and the small index tensors made with them)."""
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
        klist = klist.to(torch.int32)[None].contiguous()
        return Plan(w_qt, klist, qt, kt, nkt, window=half, causal=causal, band=True)

    return cached(("window", n, half, causal, str(device), block_m, block_n), build)


def split_plan(nq: int, nk: int, device: torch.device, block: int, seg: int | None = None) -> Plan:
    """Rows that see every key: each tile of the nq slots (tiles of `small_block(nq, block)` rows)
    with every key tile (of `block` keys), cut into segments of `seg` key tiles, one work item each
    (w = slot tile * segments + segment)."""

    def build() -> Plan:
        bq = small_block(nq, block)
        t = Tiling(block, block, 1, block)
        qt = Tiling(bq, bq, 1, bq)
        nqt, nkt = qt.count(nq), t.count(nk)
        s = seg or max(16, -(-nkt // 256))
        nseg = -(-nkt // s)
        cols = torch.arange(nseg * s, device=device).view(nseg, s)
        cols = torch.where(cols < nkt, cols, torch.full_like(cols, nkt))
        klist = cols.repeat(nqt, 1, 1).flatten(0, 1)  # (nqt * nseg, s)
        w_qt = torch.arange(nqt, device=device).repeat_interleave(nseg)
        return Plan(w_qt.to(torch.int32)[None], klist.to(torch.int32)[None].contiguous(), qt, t, nkt)

    return cached(("split", nq, nk, str(device), block, seg), build)


def empty_plan(nk: int, device: torch.device, block: int) -> Plan:
    """No work items (every query row is a `Rows` row): the dK / dV kernel still walks every key tile."""

    def build() -> Plan:
        t = Tiling(block, block, 1, block)
        klist = torch.zeros(1, 0, 1, dtype=torch.int32, device=device)
        w_qt = torch.zeros(1, 0, dtype=torch.int32, device=device)
        return Plan(w_qt, klist, t, t, t.count(nk), covers_all=False)

    return cached(("empty", nk, str(device), block), build)


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
