"""Listed-blocks flash attention in Triton: forward, dQ, dK/dV and a merge kernel.

Every program works on one query tile and walks a list of key tiles (online softmax: scores are never
written out). A tile is a sub-block of a logical block of the pattern: logical block `l` of stride `S`
is cut into `NSUB` tiles of `SUB` rows, so tile `t` covers rows `(t // NSUB) * S + (t % NSUB) * SUB
+ [0, SUB)` clipped to the block and to the sequence. A tile id past the last tile is a null entry
(fully masked), which keeps every list the same width.

The element mask is built from position vectors: key validity (padding, or "not a window key" for
Longformer's global tokens), `|i - j| <= half` (WINDOW), `j <= i` (CAUSAL), `i != j` (NO_SELF), with
i, j the row indices or, with HAS_POS, positions read from a vector (LSH's sorted order). Fully masked
rows give O = 0 and LSE = -inf; padded query rows (HAS_QVAL) too.

Two kinds of extra attention, both given as index vectors so that nothing is gathered in torch and
nothing sizes a tensor from a device value:
- extra keys (HAS_X: Longformer's global keys, seen by every query): rows XIDX[b, :XCNT[b]] of KX / VX,
  a second loop in the forward and dQ kernels; their dK / dV are summed by fp32 atomics (they are few)
  and added by the dK / dV kernel through XSLOT (slot of each key position, -1 for none).
- rows that see every key (ROWS: Longformer's global queries, BigBird's global blocks): queries
  QIDX[b, :QCNT[b]], split over segments of key tiles (a split plan), partial results merged by
  `_merges._merge_kernel`, which writes their O and LSE (or summed dQ) in place. The dK / dV kernel
  walks them as extra queries of every key tile (HAS_XQ). When the main plan lists them too, their
  main-plan results are overwritten, and only their pairs outside the main plan count there (XSKIP).
  With ALONG, the split plan's programs come first in the main launch's grid (the kernels are
  bodies, `_fwd_body` / `_bwd_dq_body`, called for either), and the main plan's skip the rows
  (RSKIP). A sliding window's rows (GROWS: one by default, up to 16) are instead taken by the band's
  forward programs, each over its own tile of keys, and merged by `_merges._band_merge_kernel`: no
  pass of their own over the keys.

Layouts: q, k, v, o, do, dq, dk, dv are (batch, heads, rows, head_dim) with any batch / head / row
strides and unit stride on head_dim; lse and delta are (batch * heads, rows) float32, indexed by row
position. Pointers come first in every signature, then TMA descriptors, then floats, then ints, then
constexprs (the lean launcher in `launch.py` relies on that order).

TMA (with BAND): the band's contiguous tiles of q, k, v (forward, dQ) and of q, dO (dK / dV) are
loaded through host-made descriptors QD, KD, VD, DOD of the whole (batch, heads, rows, head_dim)
tensors (`_tma_rows`), which frees the loads' per-element address registers; rows past the sequence
read as 0, as the masked loads do. Without TMA the descriptor arguments are placeholders.
"""

# ruff: noqa: SIM108  (if / else on constexpr flags reads best in Triton kernels)
from __future__ import annotations

import triton
import triton.language as tl

from .dropout import _keep, _row_hash

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _tile_rows(t, S: tl.constexpr, SUB: tl.constexpr, NSUB: tl.constexpr, BLOCK: tl.constexpr, n_rows):
    offs = tl.arange(0, BLOCK)
    if NSUB == 1:
        rows = t * S + offs
        ok = (offs < S) & (rows < n_rows)
    else:
        u = t % NSUB
        rows = (t // NSUB) * S + u * SUB + offs
        ok = (offs < SUB) & (u * SUB + offs < S) & (rows < n_rows)
    return rows, ok


@triton.jit
def _visible(qp, kp, kval, half, WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr):
    # qp, kp, kval broadcast against each other: (M, 1), (1, N), (1, N) or transposed
    ok = kval
    diff = qp - kp
    if WINDOW:
        ok = ok & (diff <= half) & (diff >= -half)
    if CAUSAL:
        ok = ok & (diff >= 0)
    if NO_SELF:
        ok = ok & (diff != 0)
    return ok


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    # UPCAST: Triton's CPU interpreter multiplies bf16 wrongly, so the tests run bf16 dots in fp32
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _online(
    s, ok, m_i, l_i, acc, v, keep, qk_scale, MASK: tl.constexpr, DROP: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    # s: unscaled scores; m_i: the running maximum of the scaled ones (qk_scale > 0), so that the
    # scaling and the subtraction are one FMA. MASK False: every pair counts (ok unused).
    if MASK:
        s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s * qk_scale - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)  # the normaliser is the undropped one
    if DROP:
        p = tl.where(keep, p, 0.0)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, UPCAST)
    return m_new, l_i, acc


@triton.jit
def _band(
    t0, TB: tl.constexpr, OB: tl.constexpr, half, NONE_BELOW: tl.constexpr, NONE_ABOVE: tl.constexpr, n_other
):
    """A band's tiles (BAND): the tile of TB rows at t0 sees the positions [p - below, p + above] of
    each of its rows p (half each, or 0 on a causal side), in tiles of OB rows of a sequence of
    n_other. Returns (first, a, b, end): tiles [first, end) are reached, and those in [a, b) are
    whole and seen by every row (no mask)."""
    if NONE_BELOW:
        below = 0
    else:
        below = half
    if NONE_ABOVE:
        above = 0
    else:
        above = half
    first = tl.maximum(t0 - below, 0) // OB
    end = tl.minimum((t0 + TB - 1 + above) // OB + 1, tl.cdiv(n_other, OB))
    a = (tl.maximum(t0 + TB - 1 - below, 0) + OB - 1) // OB
    last = t0 + above - OB + 1  # the last tile start every row reaches
    b = tl.where(last >= 0, last // OB + 1, 0)
    b = tl.minimum(b, n_other // OB)  # whole tiles only
    a = tl.minimum(tl.maximum(a, first), end)
    b = tl.minimum(tl.maximum(b, a), end)
    return first, a, b, end


@triton.jit
def _part(part: tl.constexpr, first, a, b, end):
    """The tiles of part `part` of a band: 0 the edge before the whole tiles, 1 the whole tiles,
    2 the edge after."""
    if part == 0:
        lo, hi = first, a
    elif part == 1:
        lo, hi = a, b
    else:
        lo, hi = b, end
    return lo, hi


@triton.jit
def _rows_load(ptr, rok, dok, BOUND: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a (rows, head_dim) tile; BOUND: rows may be past the sequence (rok), EVEN_D: no padding
    of head_dim (the unmasked loads of a band's interior)."""
    if BOUND:
        if EVEN_D:
            x = tl.load(ptr, rok[:, None], 0.0)
        else:
            x = tl.load(ptr, rok[:, None] & dok[None, :], 0.0)
    else:
        if EVEN_D:
            x = tl.load(ptr)
        else:
            x = tl.load(ptr, dok[None, :], 0.0)
    return x


@triton.jit
def _tma_rows(desc, b, h, r0, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows [r0, r0 + ROWS) of (batch b, head h) through a TMA descriptor of the whole (batch, heads,
    rows, head_dim) tensor (block [1, 1, ROWS, BLOCK_D]); rows past the sequence read as 0."""
    return desc.load([b, h, r0, 0]).reshape(ROWS, BLOCK_D)


@triton.jit
def _key_tile(
    q, qpos, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half, kd, vd, tb, th, k0,
    BOUND: tl.constexpr, WIN: tl.constexpr, WINDOW: tl.constexpr, CAUSAL: tl.constexpr,
    NO_SELF: tl.constexpr, HAS_POS: tl.constexpr, EVEN_D: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr, TMA: tl.constexpr, KALL: tl.constexpr,
):  # fmt: skip
    """A key tile against the query tile: (k, v, unscaled scores, ok). kp, vp, kvp, pp: the (batch,
    head) bases of K, V, KVAL, POS. WIN: test each pair (window / causal / self); else ok is only the
    key's validity (a band's whole tiles). TMA: k, v through the descriptors kd, vd (batch tb, head
    th, contiguous rows from k0). KALL: KVAL is all ones, so a key is valid where it is in the
    sequence (kok), with no load (an edge tile's int8 load and its unpacking: 16 of 512 instructions
    and their addresses, compiled for sm_90)."""
    if KALL:
        kval = kok
    elif BOUND:
        kval = tl.load(kvp + kcols, kok, 0) != 0
    else:
        kval = tl.load(kvp + kcols) != 0
    if TMA:
        k = _tma_rows(kd, tb, th, k0, kcols.shape[0], offs_d.shape[0])
        v = _tma_rows(vd, tb, th, k0, kcols.shape[0], offs_d.shape[0])
    else:
        k = _rows_load(kp + kcols[:, None] * skn + offs_d[None, :], kok, dok, BOUND, EVEN_D)
        v = _rows_load(vp + kcols[:, None] * svn + offs_d[None, :], kok, dok, BOUND, EVEN_D)
    s = _dot(q, tl.trans(k), PREC, UPCAST)
    if WIN:
        if HAS_POS:
            kpos = tl.load(pp + kcols, kok, 0)
        else:
            kpos = kcols
        ok = _visible(qpos[:, None], kpos[None, :], kval[None, :], half, WINDOW, CAUSAL, NO_SELF)
    else:
        ok = kval[None, :]
    return k, v, s, ok


@triton.jit
def _fwd_tile(
    q, qpos, m_i, l_i, acc, hr, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half, qk_scale, thr,
    kd, vd, tb, th, k0,
    BOUND: tl.constexpr, WIN: tl.constexpr, WINDOW: tl.constexpr, CAUSAL: tl.constexpr,
    NO_SELF: tl.constexpr, HAS_POS: tl.constexpr, EVEN_D: tl.constexpr, KALL: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """One key tile of the forward pass (`_key_tile`); with KALL (every key valid) and not WIN, no
    mask at all."""
    k, v, s, ok = _key_tile(
        q, qpos, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half, kd, vd, tb, th, k0, BOUND, WIN,
        WINDOW, CAUSAL, NO_SELF, HAS_POS, EVEN_D, PREC, UPCAST, TMA, KALL,
    )  # fmt: skip
    if DROP:
        keep = _keep(hr[:, None], kcols[None, :], thr)
    else:
        keep = ok
    return _online(s, ok, m_i, l_i, acc, v, keep, qk_scale, WIN or not KALL, DROP, PREC, UPCAST)


@triton.jit
def _dq_tile(
    q, do, qpos, lse2, delta, dq, hr, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half, qk_scale,
    rdrop, thr, kd, vd, tb, th, k0,
    BOUND: tl.constexpr, WIN: tl.constexpr, WINDOW: tl.constexpr, CAUSAL: tl.constexpr,
    NO_SELF: tl.constexpr, HAS_POS: tl.constexpr, EVEN_D: tl.constexpr, KALL: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """One key tile of dQ (unscaled), as `_fwd_tile`."""
    k, v, s, ok = _key_tile(
        q, qpos, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half, kd, vd, tb, th, k0, BOUND, WIN,
        WINDOW, CAUSAL, NO_SELF, HAS_POS, EVEN_D, PREC, UPCAST, TMA, KALL,
    )  # fmt: skip
    s = s * qk_scale
    if WIN or not KALL:
        p = tl.where(ok, tl.math.exp2(s - lse2[:, None]), 0.0)
    else:
        p = tl.math.exp2(s - lse2[:, None])
    dp = _dot(do, tl.trans(v), PREC, UPCAST)
    if DROP:
        dp = tl.where(_keep(hr[:, None], kcols[None, :], thr), dp * rdrop, 0.0)
    ds = p * (dp - delta[:, None])
    return dq + _dot(ds.to(k.dtype), k, PREC, UPCAST)


@triton.jit
def _query_rows(
    W_QT, QIDX, QCNT, w, b, h, s_wh, s_rib, NQ, NR,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr, BLOCK_M: tl.constexpr, ROWS: tl.constexpr,
    BAND: tl.constexpr,
):  # fmt: skip
    """Work item w's query rows: (positions, ok). With ROWS, slots of QIDX (count-limited); with
    BAND, query tile w of BLOCK_M rows (the kernel's own tiles, not the plan's)."""
    if BAND:
        qidx = w * BLOCK_M + tl.arange(0, BLOCK_M)
        qok = qidx < NQ
    elif ROWS:
        slots, qok = _tile_rows(tl.load(W_QT + h * s_wh + w), QS, QSUB, NQSUB, BLOCK_M, NR)
        qok = qok & (slots < tl.load(QCNT + b))
        qidx = tl.load(QIDX + b * s_rib + slots, qok, 0)
    else:
        qidx, qok = _tile_rows(tl.load(W_QT + h * s_wh + w), QS, QSUB, NQSUB, BLOCK_M, NQ)
    return qidx, qok


@triton.jit
def _fwd_body(
    w, z,
    Q, K, V, O, LSE, KVAL, QVAL, POS, KX, VX, XIDX, XCNT, QIDX, QCNT, W_QT, LIST, SEED, RSLOT, GP, GML,
    QD, KD, VD,
    qk_scale, rdrop,
    half, H, NQ, NK, NX, NR, WD, NO, thr, xoff,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    s_kvb, s_kvh, s_qvb, s_qvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh,
    s_rsb,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr,
    KS: tl.constexpr, KSUB: tl.constexpr, NKSUB: tl.constexpr,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, HAS_POS: tl.constexpr,
    HAS_QVAL: tl.constexpr, HAS_X: tl.constexpr, ROWS: tl.constexpr, BLOCK_X: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, BAND: tl.constexpr, XSKIP: tl.constexpr,
    KALL: tl.constexpr, RSKIP: tl.constexpr, TMA: tl.constexpr, GROWS: tl.constexpr, BLOCK_G: tl.constexpr,
):  # fmt: skip
    """Work item w of (batch, head) z. DROP: attention dropout (see dropout.py), kept weights scaled
    by rdrop = 1 / (1 - p). ROWS: writes partial O / LSE at rows w * BLOCK_M + [0, BLOCK_M) of O /
    LSE (NO rows per head). RSKIP: rows whose RSLOT entry is >= 0 (the `Rows` of the same launch) are
    not written. GROWS (BAND): the rows QIDX[b, :QCNT[b]] that see every key, over this program's own
    keys (`_band_rows`); their window outputs written here are overwritten by the merge."""
    b = z // H
    h = z % H
    qidx, qok = _query_rows(
        W_QT, QIDX, QCNT, w, b, h, s_wh, s_rib, NQ, NR, QS, QSUB, NQSUB, BLOCK_M, ROWS, BAND
    )
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d < D
    if TMA:  # (BAND: the tile's rows are contiguous)
        q = _tma_rows(QD, b, h, w * BLOCK_M, BLOCK_M, BLOCK_D)
    else:
        q = tl.load(
            Q + b * sqb + h * sqh + qidx[:, None] * sqn + offs_d[None, :], qok[:, None] & dok[None, :], 0.0
        )
    if HAS_POS:
        qpos = tl.load(POS + b * s_pb + h * s_ph + qidx, qok, 0)
    else:
        qpos = qidx
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if DROP:
        hr = _row_hash(SEED, z, qidx)
    else:
        hr = qidx  # unused
    kp, vp = K + b * skb + h * skh, V + b * svb + h * svh
    kvp, pp = KVAL + b * s_kvb + h * s_kvh, POS + b * s_pb + h * s_ph
    EVEN_D = BLOCK_D == D
    # (not with TMA, every key valid and head_dim <= 64: the launch caps that kernel at 96 registers for
    # five programs an SM, `listed.TMA_LAUNCH_KALL_D64`, and the early block's shared memory and
    # registers would leave room for four)
    XPRE: tl.constexpr = BAND and HAS_X and BLOCK_X <= 16 and not (TMA and KALL and BLOCK_D <= 64)
    if XPRE:  # the first block of extra keys loaded now: its loads' latency hides behind the band
        xcnt = tl.load(XCNT + b)
        xk0, xv0, xc0, xok0 = _x_block(KX, VX, XIDX, xcnt, 0, b, h, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib,
                                      offs_d, dok, NX, BLOCK_X)  # fmt: skip
    if GROWS:  # the rows' slots now: two dependent loads, whose latency hides behind the band loop
        gs = tl.arange(0, BLOCK_G)
        gok = (gs < NR) & (gs < tl.load(QCNT + b))
        gidx = tl.load(QIDX + b * s_rib + gs, gok, 0)
    else:
        gidx, gok = qidx, qok  # unused
    if BAND:  # a sliding window: contiguous key tiles, the whole ones in the middle unmasked
        first, a, bb, end = _band(w * BLOCK_M, BLOCK_M, BLOCK_N, half, False, CAUSAL, NK)
        for part in tl.static_range(3):  # edge tiles, whole tiles (no window test), edge tiles
            lo, hi = _part(part, first, a, bb, end)
            for kt in range(lo, hi):
                kcols = kt * BLOCK_N + tl.arange(0, BLOCK_N)
                m_i, l_i, acc = _fwd_tile(
                    q, qpos, m_i, l_i, acc, hr, kcols, kcols < NK, kp, vp, kvp, pp, skn, svn, offs_d, dok,
                    half, qk_scale, thr, KD, VD, b, h, kt * BLOCK_N, part != 1, part != 1, WINDOW, CAUSAL,
                    NO_SELF, HAS_POS, EVEN_D, KALL, DROP, PREC, UPCAST, TMA,
                )  # fmt: skip
    else:
        lbase = LIST + h * s_lh + w * WD
        for e in range(WD):
            kcols, kok = _tile_rows(tl.load(lbase + e), KS, KSUB, NKSUB, BLOCK_N, NK)
            m_i, l_i, acc = _fwd_tile(
                q, qpos, m_i, l_i, acc, hr, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half,
                qk_scale, thr, KD, VD, b, h, 0, True, True, WINDOW, CAUSAL, NO_SELF, HAS_POS, False, False,
                DROP, PREC, UPCAST, False,
            )  # fmt: skip
    if HAS_X:  # in blocks of BLOCK_X (<= BLOCK_N) keys: few global tokens cost little
        if XPRE:
            m_i, l_i, acc = _x_tile(
                q, qpos, m_i, l_i, acc, hr, xk0, xv0, xc0, xok0, half, qk_scale, thr, xoff,
                WINDOW, CAUSAL, NO_SELF, XSKIP, DROP, PREC, UPCAST,
            )  # fmt: skip
            x_from = BLOCK_X
        else:
            xcnt = tl.load(XCNT + b)
            x_from = 0
        for x0 in range(x_from, NX, BLOCK_X):
            k, v, xcols, xok = _x_block(
                KX, VX, XIDX, xcnt, x0, b, h, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, offs_d, dok, NX,
                BLOCK_X,
            )  # fmt: skip
            m_i, l_i, acc = _x_tile(
                q, qpos, m_i, l_i, acc, hr, k, v, xcols, xok, half, qk_scale, thr, xoff,
                WINDOW, CAUSAL, NO_SELF, XSKIP, DROP, PREC, UPCAST,
            )  # fmt: skip
    if HAS_QVAL:
        qval = tl.load(QVAL + b * s_qvb + h * s_qvh + qidx, qok, 0) != 0
        l_i = tl.where(qval, l_i, 0.0)
    if ROWS:
        l_i = tl.where(qok, l_i, 0.0)  # unused slots: nothing seen
    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    if DROP:
        out = acc * (rdrop / l_safe)[:, None]
    else:
        out = acc * (1.0 / l_safe)[:, None]  # one division a row, not one an element
    out = tl.where(seen[:, None], out, 0.0)
    lse = tl.where(seen, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    if ROWS:
        orows = w * BLOCK_M + tl.arange(0, BLOCK_M)
        ook = orows >= 0
    else:
        orows = qidx
        ook = qok
        if RSKIP:
            ook = ook & (tl.load(RSLOT + b * s_rsb + qidx, qok, -1) < 0)
    optr = O + b * sob + h * soh + orows[:, None] * son + offs_d[None, :]
    tl.store(optr, out.to(O.dtype.element_ty), ook[:, None] & dok[None, :])
    tl.store(LSE + z * NO + orows, lse, ook)
    if GROWS:  # (its queries loaded there: before the band loop, they cost registers the loop needs)
        _band_rows(
            w, z, b, h, Q, K, V, KVAL, gidx, gok, GP, GML, SEED, KD, VD, qk_scale, thr, NK, NR,
            sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, s_kvb, s_kvh, s_rib,
            D, BLOCK_D, BLOCK_M, BLOCK_N, BLOCK_G, DROP, PREC, UPCAST, TMA, KALL,
        )  # fmt: skip


@triton.jit
def _fwd_kernel(
    Q, K, V, O, LSE, KVAL, QVAL, POS, KX, VX, XIDX, XCNT, QIDX, QCNT, W_QT, LIST, SEED,
    RO, RLSE, RW_QT, RLIST, RSLOT, QD, KD, VD,
    qk_scale, rdrop,
    half, H, NQ, NK, NX, NR, WD, NO, thr, xoff,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
    s_kvb, s_kvh, s_qvb, s_qvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh,
    NRP, NMAIN, BH, RWD, RNO, srob, sroh, sron, s_rsb,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr,
    KS: tl.constexpr, KSUB: tl.constexpr, NKSUB: tl.constexpr,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, HAS_POS: tl.constexpr,
    HAS_QVAL: tl.constexpr, HAS_X: tl.constexpr, ROWS: tl.constexpr, BLOCK_X: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, BAND: tl.constexpr, XSKIP: tl.constexpr,
    KALL: tl.constexpr, ALONG: tl.constexpr, RSKIP: tl.constexpr, R_BM: tl.constexpr, R_BN: tl.constexpr,
    TMA: tl.constexpr, GROWS: tl.constexpr, BLOCK_G: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """The forward pass (`_fwd_body`): a (work item, batch * head) grid; or, with ALONG, a 1-D grid
    whose first NRP * BH programs are the work items of a split plan of `Rows` (RW_QT, RLIST: rows
    QIDX[b, :QCNT[b]], tiles of R_BM rows over key tiles of R_BN keys, partials into RO / RLSE with
    RNO rows per head, merged by the next launch), and the others the main plan's (NMAIN per head).
    With GROWS (no ALONG), RO / RLSE take `_band_rows`' partials. PDL: the next launch (the band
    merge, a programmatic dependent) may start now; it waits for this launch's writes."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    if ALONG:
        pid = tl.program_id(0)
        if pid < NRP * BH:  # the rows' programs first: they start first, and overlap the main ones
            _fwd_body(
                pid // BH, pid % BH,
                Q, K, V, RO, RLSE, KVAL, QVAL, POS, K, V, XIDX, XCNT, QIDX, QCNT, RW_QT, RLIST, SEED, RSLOT,
                RO, RLSE, QD, KD, VD,
                qk_scale, rdrop,
                0, H, NQ, NK, 0, NR, RWD, RNO, thr, 0,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, srob, sroh, sron,
                s_kvb, s_kvh, s_qvb, s_qvh, 0, 0, skb, skh, skn, svb, svh, svn, 0, s_rib, 0, 0,
                s_rsb,
                D, BLOCK_D, R_BM, R_BN, R_BM, R_BM, 1, R_BN, R_BN, 1,
                False, False, False, False, HAS_QVAL, False, True, 16,
                DROP, PREC, UPCAST, False, False, False, False, False, False, 16,
            )  # fmt: skip
        else:
            p = pid - NRP * BH
            _fwd_body(
                p % NMAIN, p // NMAIN,
                Q, K, V, O, LSE, KVAL, QVAL, POS, KX, VX, XIDX, XCNT, QIDX, QCNT, W_QT, LIST, SEED, RSLOT,
                RO, RLSE, QD, KD, VD,
                qk_scale, rdrop,
                half, H, NQ, NK, NX, NR, WD, NO, thr, xoff,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
                s_kvb, s_kvh, s_qvb, s_qvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib,
                s_wh, s_lh, s_rsb,
                D, BLOCK_D, BLOCK_M, BLOCK_N, QS, QSUB, NQSUB, KS, KSUB, NKSUB,
                WINDOW, CAUSAL, NO_SELF, HAS_POS, HAS_QVAL, HAS_X, ROWS, BLOCK_X,
                DROP, PREC, UPCAST, BAND, XSKIP, KALL, RSKIP, TMA, False, 16,
            )  # fmt: skip
    else:
        _fwd_body(
            tl.program_id(0), tl.program_id(1),
            Q, K, V, O, LSE, KVAL, QVAL, POS, KX, VX, XIDX, XCNT, QIDX, QCNT, W_QT, LIST, SEED, RSLOT,
            RO, RLSE, QD, KD, VD,
            qk_scale, rdrop,
            half, H, NQ, NK, NX, NR, WD, NO, thr, xoff,
            sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son,
            s_kvb, s_kvh, s_qvb, s_qvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh,
            s_lh, s_rsb,
            D, BLOCK_D, BLOCK_M, BLOCK_N, QS, QSUB, NQSUB, KS, KSUB, NKSUB,
            WINDOW, CAUSAL, NO_SELF, HAS_POS, HAS_QVAL, HAS_X, ROWS, BLOCK_X,
            DROP, PREC, UPCAST, BAND, XSKIP, KALL, RSKIP, TMA, GROWS, BLOCK_G,
        )  # fmt: skip


@triton.jit
def _x_block(
    KX, VX, XIDX, xcnt, x0, b, h, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, offs_d, dok, NX,
    BLOCK_X: tl.constexpr,
):  # fmt: skip
    """Extra keys x0 + [0, BLOCK_X) of batch b, head h: (k, v, their key positions, ok). The
    positions are read up to the index's width NX, not its count xcnt, so that their load need not
    wait for the count's."""
    xs = x0 + tl.arange(0, BLOCK_X)
    xcols = tl.load(XIDX + b * s_xib + xs, xs < NX, 0)
    xok = xs < xcnt
    kmask = xok[:, None] & dok[None, :]
    k = tl.load(KX + b * sxkb + h * sxkh + xcols[:, None] * sxkn + offs_d[None, :], kmask, 0.0)
    v = tl.load(VX + b * sxvb + h * sxvh + xcols[:, None] * sxvn + offs_d[None, :], kmask, 0.0)
    return k, v, xcols, xok


@triton.jit
def _x_tile(
    q, qpos, m_i, l_i, acc, hr, k, v, xcols, xok, half, qk_scale, thr, xoff,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, XSKIP: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """A block of extra keys (`_x_block`) into the online softmax of the query tile."""
    s = _dot(q, tl.trans(k), PREC, UPCAST)
    ok = xok[None, :] & (qpos[:, None] >= 0)
    if XSKIP:  # the extra keys are window keys too: only the pairs the window leaves out
        ok = ok & ~_visible(qpos[:, None], xcols[None, :], ok, half, WINDOW, CAUSAL, NO_SELF)
    if DROP:
        keep = _keep(hr[:, None], xcols[None, :] + xoff, thr)
    else:
        keep = ok
    return _online(s, ok, m_i, l_i, acc, v, keep, qk_scale, True, DROP, PREC, UPCAST)


@triton.jit
def _band_rows(
    w, z, b, h, Q, K, V, KVAL, gidx, gok, GP, GML, SEED, KD, VD, qk_scale, thr, NK, NR,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, s_kvb, s_kvh, s_rib,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_G: tl.constexpr, DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
    TMA: tl.constexpr, KALL: tl.constexpr,
):  # fmt: skip
    """GROWS: the rows gidx (QIDX[b, :QCNT[b]], valid where gok; NR <= BLOCK_G slots, loaded by the
    caller before its band loop) that see every key, over band program w's own tile of keys,
    [w * BLOCK_M, (w + 1) * BLOCK_M), read once more (from L2: the band loop has just read it). The
    partial (unnormalised sums, maximum in log2 units, sum of weights) goes to GP (B * H, W, NR, D)
    and GML (2, B * H, W, NR) float32, W the programs of a head, for `_merges._band_merge_kernel`."""
    nw = tl.num_programs(0)
    gs = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d < D
    qg = tl.load(
        Q + b * sqb + h * sqh + gidx[:, None] * sqn + offs_d[None, :], gok[:, None] & dok[None, :], 0.0
    )
    kcols = w * BLOCK_M + tl.arange(0, BLOCK_M)
    kok = kcols < NK
    if TMA and BLOCK_M == BLOCK_N:
        k = _tma_rows(KD, b, h, w * BLOCK_M, BLOCK_M, BLOCK_D)
        v = _tma_rows(VD, b, h, w * BLOCK_M, BLOCK_M, BLOCK_D)
    else:
        kmask = kok[:, None] & dok[None, :]
        k = tl.load(K + b * skb + h * skh + kcols[:, None] * skn + offs_d[None, :], kmask, 0.0)
        v = tl.load(V + b * svb + h * svh + kcols[:, None] * svn + offs_d[None, :], kmask, 0.0)
    if KALL:
        kval = kok
    else:
        kval = tl.load(KVAL + b * s_kvb + h * s_kvh + kcols, kok, 0) != 0
    s = _dot(qg, tl.trans(k), PREC, UPCAST)  # (BLOCK_G, BLOCK_M)
    s = tl.where(gok[:, None] & kval[None, :], s, float("-inf"))
    m = tl.max(s, 1) * qk_scale
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    p = tl.math.exp2(s * qk_scale - m_safe[:, None])
    lsum = tl.sum(p, 1)  # the normaliser is the undropped one
    if DROP:
        p = tl.where(_keep(_row_hash(SEED, z, gidx)[:, None], kcols[None, :], thr), p, 0.0)
    acc = _dot(p.to(v.dtype), v, PREC, UPCAST)  # (BLOCK_G, BLOCK_D)
    slot = (z * nw + w) * NR + gs
    tl.store(GP + slot[:, None] * D + offs_d[None, :], acc, (gs < NR)[:, None] & dok[None, :])
    tl.store(GML + slot, m, gs < NR)
    tl.store(GML + tl.num_programs(1) * nw * NR + slot, lsum, gs < NR)


@triton.jit
def _bwd_dq_body(
    w, z,
    Q, K, V, O, DO, LSE, DLSE, DELTA, DQ, KVAL, POS, KX, VX, XIDX, XCNT, DKX, DVX, QIDX, QCNT, W_QT, LIST,
    SEED, RSLOT, QD, KD, VD, DOD,
    qk_scale, scale, rdrop,
    half, H, NQ, NK, NX, NR, WD, thr, xoff,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
    s_kvb, s_kvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh, s_rsb,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr,
    KS: tl.constexpr, KSUB: tl.constexpr, NKSUB: tl.constexpr,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, HAS_POS: tl.constexpr,
    HAS_X: tl.constexpr, ROWS: tl.constexpr, HAS_DLSE: tl.constexpr, BLOCK_X: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, BAND: tl.constexpr, XSKIP: tl.constexpr,
    KALL: tl.constexpr, RSKIP: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """dQ of work item w of (batch, head) z. DROP: dP of a dropped pair is 0, of a kept one dP * rdrop;
    delta = rowsum(dO * O) holds as is. Also writes delta = rowsum(dO * O) - dLSE for the dK / dV
    kernel that runs next. ROWS: partial dQ at rows w * BLOCK_M + [0, BLOCK_M) of DQ (summed by
    _merges._merge_kernel). RSKIP: rows whose RSLOT entry is >= 0 get neither dQ nor delta written."""
    b = z // H
    h = z % H
    qidx, qok = _query_rows(
        W_QT, QIDX, QCNT, w, b, h, s_wh, s_rib, NQ, NR, QS, QSUB, NQSUB, BLOCK_M, ROWS, BAND
    )
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d < D
    qmask = qok[:, None] & dok[None, :]
    if TMA:  # (BAND: the tile's rows are contiguous)
        q = _tma_rows(QD, b, h, w * BLOCK_M, BLOCK_M, BLOCK_D)
        do = _tma_rows(DOD, b, h, w * BLOCK_M, BLOCK_M, BLOCK_D)
    else:
        q = tl.load(Q + b * sqb + h * sqh + qidx[:, None] * sqn + offs_d[None, :], qmask, 0.0)
        do = tl.load(DO + b * sdob + h * sdoh + qidx[:, None] * sdon + offs_d[None, :], qmask, 0.0)
    o = tl.load(O + b * sob + h * soh + qidx[:, None] * son + offs_d[None, :], qmask, 0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + z * NQ + qidx, qok, 0.0)
    wok = qok  # rows this program writes
    if RSKIP:
        wok = wok & (tl.load(RSLOT + b * s_rsb + qidx, qok, -1) < 0)
    tl.store(DELTA + z * NQ + qidx, delta, wok)
    do = do.to(q.dtype)
    lse = tl.load(LSE + z * NQ + qidx, qok, float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    if HAS_POS:
        qpos = tl.load(POS + b * s_pb + h * s_ph + qidx, qok, 0)
    else:
        qpos = qidx
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if DROP:
        hr = _row_hash(SEED, z, qidx)
    else:
        hr = qidx  # unused
    kp, vp = K + b * skb + h * skh, V + b * svb + h * svh
    kvp, pp = KVAL + b * s_kvb + h * s_kvh, POS + b * s_pb + h * s_ph
    EVEN_D = BLOCK_D == D
    if BAND:  # as in the forward kernel
        first, a, bb, end = _band(w * BLOCK_M, BLOCK_M, BLOCK_N, half, False, CAUSAL, NK)
        for part in tl.static_range(3):  # edge tiles, whole tiles (no window test), edge tiles
            lo, hi = _part(part, first, a, bb, end)
            for kt in range(lo, hi):
                kcols = kt * BLOCK_N + tl.arange(0, BLOCK_N)
                dq = _dq_tile(
                    q, do, qpos, lse2, delta, dq, hr, kcols, kcols < NK, kp, vp, kvp, pp, skn, svn, offs_d,
                    dok, half, qk_scale, rdrop, thr, KD, VD, b, h, kt * BLOCK_N, part != 1, part != 1,
                    WINDOW, CAUSAL, NO_SELF, HAS_POS, EVEN_D, KALL, DROP, PREC, UPCAST, TMA,
                )  # fmt: skip
    else:
        lbase = LIST + h * s_lh + w * WD
        for e in range(WD):
            kcols, kok = _tile_rows(tl.load(lbase + e), KS, KSUB, NKSUB, BLOCK_N, NK)
            dq = _dq_tile(
                q, do, qpos, lse2, delta, dq, hr, kcols, kok, kp, vp, kvp, pp, skn, svn, offs_d, dok, half,
                qk_scale, rdrop, thr, KD, VD, b, h, 0, True, True, WINDOW, CAUSAL, NO_SELF, HAS_POS, False,
                False, DROP, PREC, UPCAST, False,
            )  # fmt: skip
    if HAS_X:
        xcnt = tl.load(XCNT + b)
        for x0 in range(0, NX, BLOCK_X):
            k, v, xcols, xok = _x_block(
                KX, VX, XIDX, xcnt, x0, b, h, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, offs_d, dok, NX,
                BLOCK_X,
            )  # fmt: skip
            s = _dot(q, tl.trans(k), PREC, UPCAST) * qk_scale
            ok = xok[None, :] & qok[:, None]
            if XSKIP:
                ok = ok & ~_visible(qpos[:, None], xcols[None, :], ok, half, WINDOW, CAUSAL, NO_SELF)
            p = tl.where(ok, tl.math.exp2(s - lse2[:, None]), 0.0)
            dp = _dot(do, tl.trans(v), PREC, UPCAST)
            pv = p
            if DROP:
                keep = _keep(hr[:, None], xcols[None, :] + xoff, thr)
                dp = tl.where(keep, dp * rdrop, 0.0)
                pv = tl.where(keep, p * rdrop, 0.0)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, PREC, UPCAST)
            # the extra keys are few and seen by every query tile: fp32 atomics (B, H, NX, D)
            xptr = (z * NX + x0 + tl.arange(0, BLOCK_X)[:, None]) * D + offs_d[None, :]
            dvx = _dot(tl.trans(pv).to(do.dtype), do, PREC, UPCAST)
            dkx = _dot(tl.trans(ds).to(q.dtype), q, PREC, UPCAST) * scale
            kmask = xok[:, None] & dok[None, :]
            tl.atomic_add(DVX + xptr, dvx, kmask)
            tl.atomic_add(DKX + xptr, dkx, kmask)
    dq = dq * scale
    if ROWS:
        drows = w * BLOCK_M + tl.arange(0, BLOCK_M)
        dqm = (drows >= 0)[:, None] & dok[None, :]
    else:
        drows = qidx
        dqm = wok[:, None] & dok[None, :]
    tl.store(
        DQ + b * sdqb + h * sdqh + drows[:, None] * sdqn + offs_d[None, :], dq.to(DQ.dtype.element_ty), dqm
    )


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, O, DO, LSE, DLSE, DELTA, DQ, KVAL, POS, KX, VX, XIDX, XCNT, DKX, DVX, QIDX, QCNT, W_QT, LIST,
    SEED, RDQ, RW_QT, RLIST, RSLOT, QD, KD, VD, DOD,
    qk_scale, scale, rdrop,
    half, H, NQ, NK, NX, NR, WD, thr, xoff,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
    s_kvb, s_kvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh,
    NRP, NMAIN, BH, RWD, srdb, srdh, srdn, s_rsb,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr,
    KS: tl.constexpr, KSUB: tl.constexpr, NKSUB: tl.constexpr,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, HAS_POS: tl.constexpr,
    HAS_X: tl.constexpr, ROWS: tl.constexpr, HAS_DLSE: tl.constexpr, BLOCK_X: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, BAND: tl.constexpr, XSKIP: tl.constexpr,
    KALL: tl.constexpr, ALONG: tl.constexpr, RSKIP: tl.constexpr, R_BM: tl.constexpr, R_BN: tl.constexpr,
    TMA: tl.constexpr,
):  # fmt: skip
    """dQ (`_bwd_dq_body`), on the grid of `_fwd_kernel`: with ALONG, the `Rows`' split plan first
    (partial dQ into RDQ), then the main plan's work items."""
    if ALONG:
        pid = tl.program_id(0)
        if pid < NRP * BH:  # the rows' programs first: they start first, and overlap the main ones
            _bwd_dq_body(
                pid // BH, pid % BH,
                Q, K, V, O, DO, LSE, DLSE, DELTA, RDQ, KVAL, POS, K, V, XIDX, XCNT, DKX, DVX, QIDX, QCNT,
                RW_QT, RLIST, SEED, RSLOT, QD, KD, VD, DOD,
                qk_scale, scale, rdrop,
                0, H, NQ, NK, 0, NR, RWD, thr, 0,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon,
                srdb, srdh, srdn,
                s_kvb, s_kvh, 0, 0, skb, skh, skn, svb, svh, svn, 0, s_rib, 0, 0, s_rsb,
                D, BLOCK_D, R_BM, R_BN, R_BM, R_BM, 1, R_BN, R_BN, 1,
                False, False, False, False, False, True, HAS_DLSE, 16,
                DROP, PREC, UPCAST, False, False, False, False, False,
            )  # fmt: skip
        else:
            p = pid - NRP * BH
            _bwd_dq_body(
                p % NMAIN, p // NMAIN,
                Q, K, V, O, DO, LSE, DLSE, DELTA, DQ, KVAL, POS, KX, VX, XIDX, XCNT, DKX, DVX, QIDX, QCNT,
                W_QT, LIST, SEED, RSLOT, QD, KD, VD, DOD,
                qk_scale, scale, rdrop,
                half, H, NQ, NK, NX, NR, WD, thr, xoff,
                sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon,
                sdqb, sdqh, sdqn,
                s_kvb, s_kvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh, s_rsb,
                D, BLOCK_D, BLOCK_M, BLOCK_N, QS, QSUB, NQSUB, KS, KSUB, NKSUB,
                WINDOW, CAUSAL, NO_SELF, HAS_POS, HAS_X, ROWS, HAS_DLSE, BLOCK_X,
                DROP, PREC, UPCAST, BAND, XSKIP, KALL, RSKIP, TMA,
            )  # fmt: skip
    else:
        _bwd_dq_body(
            tl.program_id(0), tl.program_id(1),
            Q, K, V, O, DO, LSE, DLSE, DELTA, DQ, KVAL, POS, KX, VX, XIDX, XCNT, DKX, DVX, QIDX, QCNT,
            W_QT, LIST, SEED, RSLOT, QD, KD, VD, DOD,
            qk_scale, scale, rdrop,
            half, H, NQ, NK, NX, NR, WD, thr, xoff,
            sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sob, soh, son, sdob, sdoh, sdon, sdqb, sdqh, sdqn,
            s_kvb, s_kvh, s_pb, s_ph, sxkb, sxkh, sxkn, sxvb, sxvh, sxvn, s_xib, s_rib, s_wh, s_lh, s_rsb,
            D, BLOCK_D, BLOCK_M, BLOCK_N, QS, QSUB, NQSUB, KS, KSUB, NKSUB,
            WINDOW, CAUSAL, NO_SELF, HAS_POS, HAS_X, ROWS, HAS_DLSE, BLOCK_X,
            DROP, PREC, UPCAST, BAND, XSKIP, KALL, RSKIP, TMA,
        )  # fmt: skip


@triton.jit
def _dkdv_step(
    Q, DO, LSE, DELTA, SEED, qrows, qok, ok, kcols, k, v, dk, dv, b, h, z, NQ, sqb, sqh, sqn, sdob, sdoh,
    sdon, offs_d, dok, qk_scale, rdrop, thr, QD, DOD, q0, DROP: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr, BOUND: tl.constexpr, EVEN_D: tl.constexpr, MASK: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """One query tile's share of a key tile's dK, dV; ok (N, M): which (key, query) pairs count.
    BOUND False: every row in qrows is a row of the sequence (a band's interior: unmasked loads);
    MASK False: every pair counts (ok unused). TMA: q, do through the descriptors QD, DOD (contiguous
    rows from q0)."""
    if TMA:
        q = _tma_rows(QD, b, h, q0, qrows.shape[0], offs_d.shape[0])
        do = _tma_rows(DOD, b, h, q0, qrows.shape[0], offs_d.shape[0])
    else:
        q = _rows_load(
            Q + b * sqb + h * sqh + qrows[:, None] * sqn + offs_d[None, :], qok, dok, BOUND, EVEN_D
        )
        do = _rows_load(
            DO + b * sdob + h * sdoh + qrows[:, None] * sdon + offs_d[None, :], qok, dok, BOUND, EVEN_D
        )
    do = do.to(q.dtype)
    if BOUND:
        lse = tl.load(LSE + z * NQ + qrows, qok, float("-inf"))
        delta = tl.load(DELTA + z * NQ + qrows, qok, 0.0)
    else:
        lse = tl.load(LSE + z * NQ + qrows)
        delta = tl.load(DELTA + z * NQ + qrows)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    st = _dot(k, tl.trans(q), PREC, UPCAST) * qk_scale  # (N, M)
    if MASK:
        pt = tl.where(ok, tl.math.exp2(st - lse2[None, :]), 0.0)
    else:
        pt = tl.math.exp2(st - lse2[None, :])
    dpt = _dot(v, tl.trans(do), PREC, UPCAST)
    if DROP:
        keep = _keep(_row_hash(SEED, z, qrows)[None, :], kcols[:, None], thr)
        dv += _dot(tl.where(keep, pt * rdrop, 0.0).to(do.dtype), do, PREC, UPCAST)
        dpt = tl.where(keep, dpt * rdrop, 0.0)
    else:
        dv += _dot(pt.to(do.dtype), do, PREC, UPCAST)
    dst = pt * (dpt - delta[None, :])
    dk += _dot(dst.to(q.dtype), q, PREC, UPCAST)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, KVAL, POS, QIDX, QCNT, XSLOT, DKX, DVX,
    W_QT, T_START, T_COUNT, T_LIST, SEED, QD, DOD,
    qk_scale, scale, rdrop,
    half, H, NQ, NK, NR, NX, thr,
    sqb, sqh, sqn, skb, skh, skn, svb, svh, svn, sdob, sdoh, sdon, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn,
    s_kvb, s_kvh, s_pb, s_ph, s_rib, s_xsb, s_wh, s_th, s_tlh,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    QS: tl.constexpr, QSUB: tl.constexpr, NQSUB: tl.constexpr,
    KS: tl.constexpr, KSUB: tl.constexpr, NKSUB: tl.constexpr,
    WINDOW: tl.constexpr, CAUSAL: tl.constexpr, NO_SELF: tl.constexpr, HAS_POS: tl.constexpr,
    HAS_XQ: tl.constexpr, HAS_XSLOT: tl.constexpr, BLOCK_R: tl.constexpr,
    DROP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr, BAND: tl.constexpr, XSKIP: tl.constexpr,
    KALL: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    kt = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    kcols, kok = _tile_rows(kt, KS, KSUB, NKSUB, BLOCK_N, NK)
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d < D
    kmask = kok[:, None] & dok[None, :]
    k = tl.load(K + b * skb + h * skh + kcols[:, None] * skn + offs_d[None, :], kmask, 0.0)
    v = tl.load(V + b * svb + h * svh + kcols[:, None] * svn + offs_d[None, :], kmask, 0.0)
    kval = tl.load(KVAL + b * s_kvb + h * s_kvh + kcols, kok, 0) != 0
    if HAS_POS:
        kpos = tl.load(POS + b * s_pb + h * s_ph + kcols, kok, 0)
    else:
        kpos = kcols
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    EVEN_D = BLOCK_D == D
    if BAND:  # the query tiles of a window: contiguous, the whole ones in the middle unmasked
        first, a, bb, end = _band(kt * BLOCK_N, BLOCK_N, BLOCK_M, half, CAUSAL, False, NQ)
        for part in tl.static_range(3):  # edge tiles, whole tiles (no window test), edge tiles
            lo, hi = _part(part, first, a, bb, end)
            for qt in range(lo, hi):
                qrows = qt * BLOCK_M + tl.arange(0, BLOCK_M)
                if part == 1:
                    ok = kval[:, None]
                else:
                    ok = _visible(
                        qrows[None, :], kcols[:, None], kval[:, None], half, WINDOW, CAUSAL, NO_SELF
                    )
                dk, dv = _dkdv_step(
                    Q, DO, LSE, DELTA, SEED, qrows, qrows < NQ, ok, kcols, k, v, dk, dv, b, h, z, NQ, sqb,
                    sqh, sqn, sdob, sdoh, sdon, offs_d, dok, qk_scale, rdrop, thr, QD, DOD, qt * BLOCK_M,
                    DROP, PREC, UPCAST, part != 1, EVEN_D, part != 1 or not KALL, TMA,
                )  # fmt: skip
    else:
        start = tl.load(T_START + h * s_th + kt)
        count = tl.load(T_COUNT + h * s_th + kt)
        for e in range(count):
            w = tl.load(T_LIST + h * s_tlh + start + e)
            qt = tl.load(W_QT + h * s_wh + w)
            qrows, qok = _tile_rows(qt, QS, QSUB, NQSUB, BLOCK_M, NQ)
            if HAS_POS:
                qpos = tl.load(POS + b * s_pb + h * s_ph + qrows, qok, 0)
            else:
                qpos = qrows
            ok = _visible(qpos[None, :], kpos[:, None], kval[:, None], half, WINDOW, CAUSAL, NO_SELF)
            dk, dv = _dkdv_step(
                Q, DO, LSE, DELTA, SEED, qrows, qok, ok, kcols, k, v, dk, dv, b, h, z, NQ, sqb, sqh, sqn,
                sdob, sdoh, sdon, offs_d, dok, qk_scale, rdrop, thr, QD, DOD, 0, DROP, PREC, UPCAST, True,
                False, True, False,
            )  # fmt: skip
    if HAS_XSLOT:
        xs_slot = tl.load(XSLOT + b * s_xsb + kcols, kok, -1)
    else:
        xs_slot = kcols  # unused
    if HAS_XQ:  # rows that see every key (global queries): extra queries of every key tile
        # (their pairs with extra keys come through the dQ kernel's atomics: kval leaves those keys
        # out, or with XSKIP the slot test does)
        rcnt = tl.load(QCNT + b)
        for r0 in range(0, NR, BLOCK_R):  # in blocks of BLOCK_R (<= BLOCK_M) rows
            slots = r0 + tl.arange(0, BLOCK_R)
            sok = slots < rcnt
            qrows = tl.load(QIDX + b * s_rib + slots, sok, 0)
            ok = kval[:, None] & sok[None, :]
            if XSKIP:  # global keys are window keys: the window's pairs, and those of global keys
                # (the dQ kernel's atomics), are counted elsewhere
                ok = ok & (xs_slot < 0)[:, None]
                ok = ok & ~_visible(qrows[None, :], kcols[:, None], ok, half, WINDOW, CAUSAL, NO_SELF)
            dk, dv = _dkdv_step(
                Q, DO, LSE, DELTA, SEED, qrows, sok, ok, kcols, k, v, dk, dv, b, h, z, NQ, sqb, sqh, sqn,
                sdob, sdoh, sdon, offs_d, dok, qk_scale, rdrop, thr, QD, DOD, 0, DROP, PREC, UPCAST, True,
                False, True, False,
            )  # fmt: skip
    dk = dk * scale
    if HAS_XSLOT:  # global keys: what the dQ kernel summed for them by atomics
        xm = (xs_slot >= 0)[:, None] & dok[None, :]
        xptr = (z * NX + xs_slot[:, None]) * D + offs_d[None, :]
        dk += tl.load(DKX + xptr, xm, 0.0)
        dv += tl.load(DVX + xptr, xm, 0.0)
    tl.store(
        DK + b * sdkb + h * sdkh + kcols[:, None] * sdkn + offs_d[None, :], dk.to(DK.dtype.element_ty), kmask
    )
    tl.store(
        DV + b * sdvb + h * sdvh + kcols[:, None] * sdvn + offs_d[None, :], dv.to(DV.dtype.element_ty), kmask
    )


__all__ = ["LN2", "LOG2E", "_bwd_dkdv_kernel", "_bwd_dq_kernel", "_fwd_kernel", "triton"]
