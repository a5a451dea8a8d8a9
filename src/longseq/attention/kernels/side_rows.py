"""A sliding window's global rows on a side stream, beside the band (`listed.SIDE_ROWS`).

The band's forward programs take a window's rows that see every key (Longformer's global queries)
as a tail after their band loop (`_flash._band_rows`): a few loads and products each, but waited
for one after another, at the end of every program, where the four programs an SM end together
and nothing hides the wait. Here the band's programs skip those rows (RSKIP) and a small kernel
takes them: a grid of (key segments, batch * heads) programs of one warp, at most one an SM, each
over a segment of key tiles into a partial (unnormalised sums, maximum in log2 units, sum of
weights), the last of each (batch, head) (an atomic ticket) merging the partials into the rows' O
and LSE. It is launched first, on a stream of its own, so that its programs are placed before the
band's and run in the registers the band leaves free (the band's four programs of 4 warps at
<= 112 registers leave 8K of an SM's 64K); the caller's stream then waits for it.

Numerics: the same as `_band_rows` and `_merges._band_merge_kernel` (scores scaled into log2
units, the normaliser undropped, dropout by `dropout._keep` of the same pairs).
"""

# ruff: noqa: SIM108  (if / else on constexpr flags reads best in Triton kernels)
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._flash import _dot
from .dropout import _keep, _row_hash
from .launch import _INTERPRET, Consts, _sb, _sbh, launch


@triton.jit
def _side_rows_kernel(
    Q, K, V, KVAL, QVAL, QIDX, QCNT, SEED, GP, GML, CNT, O, LSE,
    qk_scale, rdrop,
    H, NQ, NK, NR, NSEG, TPS, thr,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, s_kvb, s_kvh, s_qvb, s_qvh, s_rib,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr,
    MMA: tl.constexpr, HAS_QVAL: tl.constexpr, KALL: tl.constexpr, DROP: tl.constexpr,
    PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Segment s = program 0 (key tiles [s * TPS, (s + 1) * TPS) of BLOCK_N keys) of (batch, head)
    z = program 1, for the rows QIDX[b, :QCNT[b]] (NR <= BLOCK_G slots). Partials: GP (B * H, NSEG,
    NR, D), GML (2, B * H, NSEG, NR) float32; CNT (B * H,) int32 zeros, the tickets. MMA: the
    products by tl.dot (BLOCK_G >= 16, `_rows_mma`); else one row on the CUDA cores (`_row_cores`)."""
    s = tl.program_id(0)
    z = tl.program_id(1)
    bh = tl.num_programs(1)
    b = z // H
    h = z % H
    gs = tl.arange(0, BLOCK_G)
    gw = gs < NR
    gok = gw & (gs < tl.load(QCNT + b))
    gidx = tl.load(QIDX + b * s_rib + gs, gok, 0)
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d < D
    qmask = gok[:, None] & dok[None, :]
    qg = tl.load(Q + b * sqb + h * sqh + gidx[:, None] * sqn + offs_d[None, :], qmask, 0.0)
    if DROP:
        hr = _row_hash(SEED, z, gidx)
    else:
        hr = gidx  # unused
    kp, vp = K + b * skb + h * skh, V + b * svb + h * svh
    t0 = s * TPS
    t1 = tl.minimum(t0 + TPS, tl.cdiv(NK, BLOCK_N))
    if MMA:
        m_i, l_i, acc = _rows_mma(
            qg, gok, hr, kp, vp, KVAL + b * s_kvb + h * s_kvh, skn, svn, offs_d, dok, qk_scale, thr, t0, t1,
            NK, BLOCK_N, BLOCK_G, BLOCK_D, KALL, DROP, PREC, UPCAST,
        )  # fmt: skip
    else:
        m_i, l_i, acc = _row_cores(
            qg, gok, hr, kp, vp, KVAL + b * s_kvb + h * s_kvh, skn, svn, offs_d, dok, qk_scale, thr, t0, t1,
            NK, BLOCK_N, BLOCK_D, KALL, DROP,
        )  # fmt: skip
    slot = (z * NSEG + s) * NR + gs
    tl.store(GP + slot[:, None] * D + offs_d[None, :], acc, gw[:, None] & dok[None, :])
    tl.store(GML + slot, m_i, gw)
    tl.store(GML + bh * NSEG * NR + slot, l_i, gw)
    tl.debug_barrier()  # every thread's partial written before the ticket is taken
    if tl.atomic_add(CNT + z, 1, sem="acq_rel", scope="gpu") == NSEG - 1:  # the last: merge
        mx = tl.full([BLOCK_G], float("-inf"), tl.float32)
        tot = tl.zeros([BLOCK_G], tl.float32)
        out = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        for s2 in range(NSEG):
            sl = (z * NSEG + s2) * NR + gs
            mm = tl.load(GML + sl, gw, float("-inf"), cache_modifier=".cg")
            ll = tl.load(GML + bh * NSEG * NR + sl, gw, 0.0, cache_modifier=".cg")
            pmask = gw[:, None] & dok[None, :]
            part = tl.load(GP + sl[:, None] * D + offs_d[None, :], pmask, 0.0, cache_modifier=".cg")
            m_new = tl.maximum(mx, mm)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(mx - m_safe)
            wgt = tl.math.exp2(mm - m_safe)  # 0 for partials that saw nothing
            tot = tot * alpha + ll * wgt
            out = out * alpha[:, None] + part * wgt[:, None]
            mx = m_new
        if HAS_QVAL:
            tot = tl.where(tl.load(QVAL + b * s_qvb + h * s_qvh + gidx, gok, 0) != 0, tot, 0.0)
        seen = tot > 0
        t_safe = tl.where(seen, tot, 1.0)
        out = tl.where(seen[:, None], out * (rdrop / t_safe)[:, None], 0.0)
        optr = O + b * sob + h * soh + gidx[:, None] * son + offs_d[None, :]
        tl.store(optr, out.to(O.dtype.element_ty), gok[:, None] & dok[None, :])
        m_safe = tl.where(mx == float("-inf"), 0.0, mx)
        lse = tl.where(seen, (m_safe + tl.math.log2(t_safe)) * 0.6931471805599453, float("-inf"))
        tl.store(LSE + z * NQ + gidx, lse, gok)


# Off: measured slower than the band's rows on an H200 (benchmarks/window_side_rows.py, 16K forward
# GPU-only: tail 0.1235 ms, side stream 0.1118, the band's rows 0.1069; see benchmarks/RESULTS.md).
# When on: where the band would take the rows (`listed._takes_band_rows`) and, on a side stream,
# where the grid fits one program an SM (batch * heads <= the SMs).
SIDE_ROWS = [False]
SIDE_BLOCK_N = 16  # keys a tile (CUDA-core products: a tile of k and v in 64 registers a thread)
SIDE_LAUNCH = {"num_warps": 1, "num_stages": 1}
# The band's forward beside it, capped so that its four programs an SM leave registers for two
# of the side kernel's (4 * 128 * 112 + 2 * 32 * 128 <= 64K; uncapped it takes 129, compiled for
# sm_90 on CPU, and the SM's registers would all be the band's).
# Both kernels prefer the most shared memory of the SM's L1 (`launch._carve`): an SM placed with the
# side kernel's program (next to no shared memory) might otherwise take a split the band's four
# programs (46 KB each) do not fit.
BAND_LAUNCH = {"num_warps": 4, "num_stages": 2, "maxnreg": 112, "carveout": 100}
SIDE_CARVEOUT = 100  # (-1: the driver's default)
# On sm90 and later the side kernel is rather the band's programmatic dependent launch on the same
# stream (tail): the band lets it start once its last program has started, so that its programs
# fill the SMs the band's last wave leaves idle; it has no wait (it reads only q, k, v, and writes
# only the rows the band skips), and, like any dependent with none, it ends after the band.
SIDE_TAIL = [True]
TAIL_TILES = [4]  # key tiles a program
TAIL_BLOCK_N = 64
TAIL_LAUNCH = {"num_warps": 4, "num_stages": 2}
# The band's forward before it: uncapped it takes 129 registers (sm_90 compile on CPU), which would
# leave three programs an SM, not four.
TAIL_BAND_LAUNCH = {"num_warps": 4, "num_stages": 2, "maxnreg": 128}
TAIL_IN_TURN = [False]  # (True: the tail's kernel after the band with no dependent launch; tests)
SIDE_ONE_ON_CORES = [True]  # (False: one row through tl.dot in a tile of 16 rows; benchmarks)
SIDE_CPU_SMS = 8  # the "SMs" under the interpreter: the tests take several segments
_CONSTS: dict[tuple, Consts] = {}
_STREAMS: dict[int, torch.cuda.Stream] = {}


@functools.cache
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sms(x: torch.Tensor) -> int:
    """The SMs of x's device (SIDE_CPU_SMS on CPU, under the interpreter)."""
    if not x.is_cuda:
        return SIDE_CPU_SMS
    return _sms(x.device.index if x.device.index is not None else torch.cuda.current_device())


def takes_side_rows(grows: bool, q: torch.Tensor, tail: bool = False) -> bool:
    """Whether the rows the band would take (grows) go to the side kernel instead: as the band's
    dependent launch (tail), or on a side stream where the grid fits one program an SM."""
    b, h = q.shape[:2]
    return SIDE_ROWS[0] and grows and (tail or b * h <= sms(q))


def segments(nk: int, bh: int, n_sms: int, block_n: int) -> tuple[int, int]:
    """(segments a (batch, head), key tiles a segment): at most n_sms programs, none empty."""
    tiles = -(-nk // block_n)
    want = max(1, min(tiles, n_sms // bh))
    tps = -(-tiles // want)
    return -(-tiles // tps), tps


def _shape(q: torch.Tensor, nk: int, ng: int, tail: bool) -> tuple[bool, int, int, int, int]:
    """(MMA, BLOCK_G, BLOCK_N, segments, tiles a segment) of a call."""
    if tail:
        bn, tps = TAIL_BLOCK_N, TAIL_TILES[0]
        tiles = -(-nk // bn)
        return True, max(16, 1 << (ng - 1).bit_length()), bn, -(-tiles // tps), tps
    mma = ng > 1 or not SIDE_ONE_ON_CORES[0]
    bg = max(16, 1 << (ng - 1).bit_length()) if mma else 1
    bn = 32 if mma else SIDE_BLOCK_N
    return (mma, bg, bn, *segments(nk, q.shape[0] * q.shape[1], sms(q), bn))


def buffers(q: torch.Tensor, nk: int, ng: int, tail: bool) -> tuple[torch.Tensor, ...]:
    """The partials (B * H * NSEG * G * D), maxima and sums (2 * B * H * NSEG * G) float32 and the
    tickets (B * H) int32 zeros of a `side_rows` call, made on the current stream."""
    nseg = _shape(q, nk, ng, tail)[3]
    b, h, _, d = q.shape
    gp = torch.empty(b * h * nseg * ng * d, device=q.device, dtype=torch.float32)
    gml = torch.empty(2 * b * h * nseg * ng, device=q.device, dtype=torch.float32)
    return gp, gml, torch.zeros(b * h, device=q.device, dtype=torch.int32)


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """The side kernel's stream on device: one of the highest priority, kept."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    st = _STREAMS.get(index)
    if st is None:
        st = _STREAMS[index] = torch.cuda.Stream(index, priority=torch.cuda.Stream.priority_range()[1])
    return st


def side_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kval: torch.Tensor,
    qval: torch.Tensor | None,
    idx: torch.Tensor,
    cnt: torch.Tensor,
    seed: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    qk_scale: float,
    rdrop: float,
    thr: int,
    drop: bool,
    kall: bool,
    tail: bool = False,
    bufs: tuple[torch.Tensor, ...] | None = None,
) -> None:
    """The rows idx[b, :cnt[b]] of o (B, H, NQ, D) and lse (B * H, NQ) over every valid key (kval
    (B, 1 | H, NK) int8), on the current stream. qk_scale: the score scale times log2(e). tail: as
    a programmatic dependent launch of the band's launch just made (`TAIL_LAUNCH`), into bufs
    (`buffers`, made before that launch: nothing may come between the two)."""
    b, h, nq, d = q.shape
    nk = k.shape[2]
    ng = idx.shape[1]
    mma, bg, bn, nseg, tps = _shape(q, nk, ng, tail)
    opts = TAIL_LAUNCH if tail else SIDE_LAUNCH
    carve = None if _INTERPRET or tail else SIDE_CARVEOUT
    key = (d, q.dtype, bg, bn, mma, qval is not None, kall, drop, carve, tail, tuple(opts.items()))
    c = _CONSTS.get(key)
    if c is None:
        kw = dict(
            D=d, BLOCK_D=max(16, 1 << (d - 1).bit_length()), BLOCK_N=bn, BLOCK_G=bg, MMA=mma,
            HAS_QVAL=qval is not None, KALL=kall, DROP=drop,
            PREC="ieee" if q.dtype == torch.float32 else "tf32",
            UPCAST=_INTERPRET and q.dtype == torch.bfloat16,
        )  # fmt: skip
        if not _INTERPRET:
            kw.update(opts)
            if tail:
                kw.update(launch_pdl=True)
        c = _CONSTS[key] = Consts(_side_rows_kernel, kw, carve)
    gp, gml, tickets = bufs if bufs is not None else buffers(q, nk, ng, tail)
    qv = qval if qval is not None else kval
    launch(
        _side_rows_kernel, (nseg, b * h),
        (q, k, v, kval, qv, idx, cnt, seed, gp, gml, tickets, o, lse),
        (qk_scale, rdrop, h, nq, nk, ng, nseg, tps, thr,
         *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
         *_sbh(kval), *_sbh(qval), _sb(idx)),
        c,
    )  # fmt: skip


@triton.jit
def _kv_tile(kp, vp, kvp, skn, svn, t, offs_d, dok, NK, BLOCK_N: tl.constexpr, KALL: tl.constexpr):
    """Key tile t: (key rows, k, v, valid)."""
    kcols = t * BLOCK_N + tl.arange(0, BLOCK_N)
    kok = kcols < NK
    kmask = kok[:, None] & dok[None, :]
    k = tl.load(kp + kcols[:, None] * skn + offs_d[None, :], kmask, 0.0)
    v = tl.load(vp + kcols[:, None] * svn + offs_d[None, :], kmask, 0.0)
    if KALL:
        kval = kok
    else:
        kval = tl.load(kvp + kcols, kok, 0) != 0
    return kcols, k, v, kval


@triton.jit
def _rows_mma(
    qg, gok, hr, kp, vp, kvp, skn, svn, offs_d, dok, qk_scale, thr, t0, t1, NK,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, KALL: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Rows qg (BLOCK_G, BLOCK_D) over key tiles [t0, t1): (maximum in log2 units, sum, sums)."""
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for t in range(t0, t1):
        kcols, k, v, kval = _kv_tile(kp, vp, kvp, skn, svn, t, offs_d, dok, NK, BLOCK_N, KALL)
        sc = _dot(qg, tl.trans(k), PREC, UPCAST)  # (BLOCK_G, BLOCK_N)
        sc = tl.where(gok[:, None] & kval[None, :], sc, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sc, 1) * qk_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(sc * qk_scale - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)  # the normaliser is the undropped one
        if DROP:
            p = tl.where(_keep(hr[:, None], kcols[None, :], thr), p, 0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, UPCAST)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _row_cores(
    qg, gok, hr, kp, vp, kvp, skn, svn, offs_d, dok, qk_scale, thr, t0, t1, NK,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KALL: tl.constexpr, DROP: tl.constexpr,
):  # fmt: skip
    """One row qg (1, BLOCK_D) over key tiles [t0, t1) on the CUDA cores: (maximum, sum, sums) as
    (1,), (1,), (1, BLOCK_D). The sums stay per key slot of the tile, (BLOCK_N, BLOCK_D), until
    the end: no reduction across threads in the loop but the scores' and the maximum's."""
    q1 = tl.sum(qg.to(tl.float32), 0)  # (BLOCK_D,)
    g1 = tl.sum(gok.to(tl.int32), 0) > 0
    h1 = tl.sum(hr, 0)
    m1 = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), 0)
    l2 = tl.zeros([BLOCK_N], tl.float32)
    acc2 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for t in range(t0, t1):
        kcols, k, v, kval = _kv_tile(kp, vp, kvp, skn, svn, t, offs_d, dok, NK, BLOCK_N, KALL)
        sc = tl.sum(k.to(tl.float32) * q1[None, :], 1)  # (BLOCK_N,)
        sc = tl.where(kval & g1, sc, float("-inf"))
        m_new = tl.maximum(m1, tl.max(sc, 0) * qk_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(sc * qk_scale - m_safe)
        alpha = tl.math.exp2(m1 - m_safe)
        l2 = l2 * alpha + p  # the normaliser is the undropped one
        if DROP:
            p = tl.where(_keep(h1, kcols, thr), p, 0.0)
        acc2 = acc2 * alpha + p[:, None] * v.to(tl.float32)
        m1 = m_new
    zero = tl.zeros([1], tl.float32)
    return zero + m1, zero + tl.sum(l2, 0), tl.sum(acc2, 0)[None, :]
