"""Merges of partial rows (rows that see every key, split over keys): `_merge_kernel` for a split
plan's segments (by LSE, or summed for dQ), `_band_merge_kernel` for the band programs' partials of a
sliding window's global rows (`_flash._band_rows`). Layouts as in `_flash`."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _band_merge_kernel(
    GP, GML, QVAL, QIDX, QCNT, O, LSE,
    rdrop,
    H, NW, NQ, NR, sob, soh, son, s_qvb, s_qvh, s_rib,
    D: tl.constexpr, BLOCK_DC: tl.constexpr, CW: tl.constexpr, HAS_QVAL: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    """`_band_rows`' NW partials of row slot g = program 1 of (batch, head) z = program 0 -> columns
    [c * BLOCK_DC, (c + 1) * BLOCK_DC) of its O, c = program 2 (and, in program c = 0, its LSE). The
    partials come CW at a time (CW >= NW up to 64K tokens: one load). Measured on an H200
    (benchmarks/window_rows.py): 5.8 / 6.8 us at 16K / 64K tokens, against 10.4 / 26.2 us for one
    program per (batch, head, row) walking the partials 64 at a time. PDL: launched as a programmatic
    dependent of the band's forward launch (which lets it start early), so it waits for that launch's
    writes (every program: none ends before the band's launch)."""
    z = tl.program_id(0)
    g = tl.program_id(1)
    c = tl.program_id(2)
    b = z // H
    h = z % H
    # the slot's count and row before the wait: written before the band's launch, so their loads
    # overlap it (g < NR: the grid's slots, within QIDX's width)
    cnt = tl.load(QCNT + b)
    row = tl.load(QIDX + b * s_rib + g)
    if HAS_QVAL:
        qv = tl.load(QVAL + b * s_qvb + h * s_qvh + row, g < cnt, 0)
    if PDL:
        tl.extra.cuda.gdc_wait()
    if g < cnt:
        offs_d = c * BLOCK_DC + tl.arange(0, BLOCK_DC)
        dok = offs_d < D
        bh = tl.num_programs(0)
        mx = tl.full([1], float("-inf"), tl.float32)
        tot = tl.zeros([1], tl.float32)
        acc = tl.zeros([BLOCK_DC], tl.float32)
        for w0 in range(0, NW, CW):
            ws = w0 + tl.arange(0, CW)
            wok = ws < NW
            slot = (z * NW + ws) * NR + g
            mm = tl.load(GML + slot, wok, float("-inf"))
            ll = tl.load(GML + bh * NW * NR + slot, wok, 0.0)
            part = tl.load(GP + slot[:, None] * D + offs_d[None, :], wok[:, None] & dok[None, :], 0.0)
            m_new = tl.maximum(mx, tl.max(mm, 0))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(mx - m_safe)
            wgt = tl.math.exp2(mm - m_safe)  # (CW,): 0 for partials that saw nothing
            tot = tot * alpha + tl.sum(ll * wgt, 0)
            acc = acc * alpha + tl.sum(part * wgt[:, None], 0)
            mx = m_new
        if HAS_QVAL:
            tot = tl.where(qv != 0, tot, 0.0)
        seen = tot > 0
        t_safe = tl.where(seen, tot, 1.0)
        out = tl.where(seen, acc * (rdrop / t_safe), 0.0)
        tl.store(O + b * sob + h * soh + row * son + offs_d, out.to(O.dtype.element_ty), dok)
        if c == 0:
            m_safe = tl.where(mx == float("-inf"), 0.0, mx)
            lse = tl.where(seen, (m_safe + tl.math.log2(t_safe)) * 0.6931471805599453, float("-inf"))
            tl.store(LSE + z * NQ + row + tl.arange(0, 1), lse)


@triton.jit
def _merge_kernel(
    P, PL, O, LSE, QIDX, QCNT,
    H, NQ, NR, NSEG, WBM, sob, soh, son, s_rib,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, SUM: tl.constexpr,
):  # fmt: skip
    """Partial rows of a split plan -> the rows QIDX[b, :QCNT[b]] of O (and LSE).

    P (B, H, WBM, D) float32 and PL (B * H, WBM) hold, for slot tile g and key segment s, rows
    (g * NSEG + s) * BLOCK_M + [0, BLOCK_M). SUM: add the partials (dQ); else merge them by LSE.
    """
    g = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    slots = g * BLOCK_M + tl.arange(0, BLOCK_M)
    ok = (slots < NR) & (slots < tl.load(QCNT + b))
    qidx = tl.load(QIDX + b * s_rib + slots, ok, 0)
    offs_d = tl.arange(0, BLOCK_D)
    mask = ok[:, None] & (offs_d < D)[None, :]
    base = z * WBM
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if SUM:
        for s in range(NSEG):
            r = base + (g * NSEG + s) * BLOCK_M + tl.arange(0, BLOCK_M)
            acc += tl.load(P + r[:, None] * D + offs_d[None, :], mask, 0.0)
    else:  # by LSE, in one pass: a running maximum, each partial loaded once
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        tot = tl.zeros([BLOCK_M], tl.float32)
        for s in range(NSEG):
            r = base + (g * NSEG + s) * BLOCK_M + tl.arange(0, BLOCK_M)
            pl = tl.load(PL + r, ok, float("-inf"))
            part = tl.load(P + r[:, None] * D + offs_d[None, :], mask, 0.0)
            m_new = tl.maximum(m, pl)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m - m_safe)
            wgt = tl.exp(pl - m_safe)
            tot = tot * alpha + wgt
            acc = acc * alpha[:, None] + wgt[:, None] * part
            m = m_new
        seen = tot > 0
        t_safe = tl.where(seen, tot, 1.0)
        acc = tl.where(seen[:, None], acc / t_safe[:, None], 0.0)
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        lse = tl.where(seen, m_safe + tl.log(t_safe), float("-inf"))
        tl.store(LSE + z * NQ + qidx, lse, ok)
    tl.store(O + b * sob + h * soh + qidx[:, None] * son + offs_d[None, :], acc.to(O.dtype.element_ty), mask)
