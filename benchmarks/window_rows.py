"""Where a sliding window's one global row costs the forward, in lean kernels (SlidingWindow(512) +
token 0 global, bf16, batch 1, 12 heads, head_dim 64, no padding or dropout): the band alone, with
the global key, and with the global row taken by every band program over its own key tile, read
again after the band loop (as the library does) or taken first, with the band's products of that
tile, so that the tile is read once. Then the merge of the row's partials: one program per (batch,
head) walking them in steps of 64 (the library's form until the thirteenth session) against one
program per (batch, head, 16 columns of head_dim) taking them all in one load (the library's now).
Each variant is checked against the library's gpu backend first (relative error under 1e-2); times
are do_bench, ms, one launch, and the same call captured in a CUDA graph and replayed
(do_bench_cudagraph: no launch gaps).

    PYTHONPATH=src python benchmarks/window_rows.py [--sizes 16384 65536]
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels._flash import _band, _part
from window_tma import dump, rel, table  # (benchmarks/ is the script's directory)

DEV, H, D, HALF, BM = "cuda", 12, 64, 256, 64
LOG2E = 1.4426950408889634


@triton.jit
def _online(s, m_i, l_i, acc, v, qk_scale, MASKED: tl.constexpr):
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    m_safe = m_new
    if MASKED:
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s * qk_scale - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    return m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)


@triton.jit
def _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D: tl.constexpr):
    """Global row (slot 0 of qg's 16) over one key tile -> partial (sums, max in log2 units, weight)."""
    gs = tl.arange(0, 16)
    sg = tl.dot(qg, tl.trans(k))  # (16, BM)
    sg = tl.where((gs == 0)[:, None], sg, float("-inf"))
    mg = tl.max(sg, 1) * qk_scale
    mg_safe = tl.where(mg == float("-inf"), 0.0, mg)
    pg = tl.math.exp2(sg * qk_scale - mg_safe[:, None])
    og = tl.dot(pg.to(v.dtype), v)  # (16, D)
    slot = z * nw + w
    offs_d = tl.arange(0, D)
    tl.store(GP + slot * D + offs_d[None, :] + gs[:, None] * 0, og, (gs == 0)[:, None])
    tl.store(GML + slot + gs * 0, mg, gs == 0)
    tl.store(GML + tl.num_programs(1) * nw + slot + gs * 0, tl.sum(pg, 1), gs == 0)


@triton.jit
def _ids(H, BM: tl.constexpr, D: tl.constexpr):
    """A lean program's tile w of (batch, head) z: (w, z, tiles a head, b, h, its rows, head_dim)."""
    w = tl.program_id(0)
    z = tl.program_id(1)
    return w, z, tl.num_programs(0), z // H, z % H, w * BM + tl.arange(0, BM), tl.arange(0, D)


@triton.jit
def _fwd(Q, K, V, O, LSE, GP, GML, QD, KD, VD, qk_scale, half, N, H, sb, sh, sn,
         BM: tl.constexpr, D: tl.constexpr, KEYS: tl.constexpr, ROW: tl.constexpr):  # fmt: skip
    # KEYS: the global key (token 0) for the rows whose window leaves it out (1: a 16-key block, 2: a
    # rank-1 update). ROW: 0 none, 1 over the own tile read again after the band loop, 2 over the own
    # tile taken first (read once), 3 over the first edge tile in its loop (programs 0-3: one of the
    # last four tiles read again), 4 as 1 with vector products in place of the 16-slot MMAs, 5 as 1
    # with the tile's loads (pointer loads) issued right after the band loop, before the global key
    # and the epilogue, so that their latency overlaps them. KEYS 3: as 1, its loads issued before
    # the band loop. 6: as 1 through pointer loads (the two issued together; TMA loads wait one by
    # one). 7: the row first, over the own tile loaded by pointer loads issued before q's.
    w, z, nw, b, h, rows, offs_d = _ids(H, BM, D)
    if ROW == 7:  # the row first, its tile through pointer loads issued before q's TMA load
        own = w * BM + tl.arange(0, BM)
        kr = tl.load(K + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
        vr = tl.load(V + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
        gq = tl.arange(0, 16)
        qg0 = tl.load(Q + b * sb + h * sh + gq[:, None] * sn + offs_d[None, :], (gq == 0)[:, None], 0.0)
    q = QD.load([b, h, w * BM, 0]).reshape(BM, D)
    if ROW == 7:
        _row_part(qg0, kr, vr, GP, GML, z, w, nw, qk_scale, D)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    gs = tl.arange(0, 16)
    if KEYS == 3:  # the global key's loads first: their latency hides behind the band loop
        xm = (gs == 0)[:, None]
        kx = tl.load(K + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
        vx = tl.load(V + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
    if ROW != 0 and ROW != 4 and ROW != 7:
        qg = tl.load(Q + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], (gs == 0)[:, None], 0.0)
    first, a, bb, end = _band(w * BM, BM, BM, half, False, False, N)
    if ROW == 2:  # the own tile first: it is whole (half >= BM, N a multiple of BM)
        k = KD.load([b, h, w * BM, 0]).reshape(BM, D)
        v = VD.load([b, h, w * BM, 0]).reshape(BM, D)
        m_i, l_i, acc = _online(tl.dot(q, tl.trans(k)), m_i, l_i, acc, v, qk_scale, False)
        _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)
    for part in tl.static_range(4 if ROW == 2 else 3):
        if ROW == 2:  # edge, whole below the own tile, whole above it, edge
            if part == 0:
                lo, hi = first, a
            elif part == 1:
                lo, hi = a, w
            elif part == 2:
                lo, hi = w + 1, bb
            else:
                lo, hi = bb, end
            masked = part == 0 or part == 3
        else:
            lo, hi = _part(part, first, a, bb, end)
            masked = part != 1
        for kt in range(lo, hi):
            cols = kt * BM + tl.arange(0, BM)
            k = KD.load([b, h, kt * BM, 0]).reshape(BM, D)
            v = VD.load([b, h, kt * BM, 0]).reshape(BM, D)
            s = tl.dot(q, tl.trans(k))
            if masked:
                diff = rows[:, None] - cols[None, :]
                ok = (diff <= half) & (diff >= -half) & (cols < N)[None, :]
                s = tl.where(ok, s, float("-inf"))
            m_i, l_i, acc = _online(s, m_i, l_i, acc, v, qk_scale, masked)
            if ROW == 3 and part == 0:  # this program's first tile (w >= 4: part 0 is that one tile)
                _row_part(qg, k, v, GP, GML, z, kt, nw, qk_scale, D)
    if ROW == 5:  # the own tile's loads now, used after the epilogue
        own = w * BM + tl.arange(0, BM)
        kr = tl.load(K + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
        vr = tl.load(V + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
    if KEYS == 2:  # one key as a rank-1 update: no MMA, no 16-key block
        kx = tl.load(K + b * sb + h * sh + offs_d).to(tl.float32)
        vx = tl.load(V + b * sb + h * sh + offs_d).to(tl.float32)
        sx = tl.sum(q.to(tl.float32) * kx[None, :], 1) * qk_scale  # (BM,)
        sx = tl.where(rows > half, sx, float("-inf"))
        m_new = tl.maximum(m_i, sx)
        alpha = tl.math.exp2(m_i - m_new)
        px = tl.math.exp2(sx - m_new)
        l_i = l_i * alpha + px
        acc = acc * alpha[:, None] + px[:, None] * vx[None, :]
        m_i = m_new
    elif KEYS:  # as the library: a block of 16 extra keys, after the band loop
        if KEYS == 1:
            xm = (gs == 0)[:, None]
            kx = tl.load(K + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
            vx = tl.load(V + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
        sx = tl.dot(q, tl.trans(kx))  # (BM, 16)
        sx = tl.where((gs == 0)[None, :] & (rows > half)[:, None], sx, float("-inf"))
        m_i, l_i, acc = _online(sx, m_i, l_i, acc, vx, qk_scale, True)
    out = (acc / l_i[:, None]).to(Q.dtype.element_ty)
    tl.store(O + b * sb + h * sh + rows[:, None] * sn + offs_d[None, :], out, (rows < N)[:, None])
    tl.store(LSE + z * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, rows < N)
    if ROW == 1:
        k = KD.load([b, h, w * BM, 0]).reshape(BM, D)
        v = VD.load([b, h, w * BM, 0]).reshape(BM, D)
        _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)
    if ROW == 3 and first == a:  # no part 0 (w < 4): one of the last tiles, which no part 0 holds
        t = nw - 4 + w
        k = KD.load([b, h, t * BM, 0]).reshape(BM, D)
        v = VD.load([b, h, t * BM, 0]).reshape(BM, D)
        _row_part(qg, k, v, GP, GML, z, t, nw, qk_scale, D)
    if ROW == 5:
        _row_part(qg, kr, vr, GP, GML, z, w, nw, qk_scale, D)
    if ROW == 6:
        own = w * BM + tl.arange(0, BM)
        kr = tl.load(K + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
        vr = tl.load(V + b * sb + h * sh + own[:, None] * sn + offs_d[None, :])
        _row_part(qg, kr, vr, GP, GML, z, w, nw, qk_scale, D)
    if ROW == 4:  # the own tile read again, the row as vector products (no MMA)
        k = KD.load([b, h, w * BM, 0]).reshape(BM, D).to(tl.float32)
        v = VD.load([b, h, w * BM, 0]).reshape(BM, D).to(tl.float32)
        qv = tl.load(Q + b * sb + h * sh + offs_d).to(tl.float32)
        sg = tl.sum(k * qv[None, :], 1) * qk_scale  # (BM,)
        mg = tl.max(sg, 0)
        pg = tl.math.exp2(sg - mg)
        og = tl.sum(pg[:, None] * v, 0)  # (D,)
        slot = z * nw + w
        tl.store(GP + slot * D + offs_d, og)
        tl.store(GML + slot, mg)
        tl.store(GML + tl.num_programs(1) * nw + slot, tl.sum(pg, 0))


@triton.jit
def _merge_walk(GP, GML, O, LSE, NW, N, sb, sh, D: tl.constexpr):
    """The library's form until the thirteenth session: one program per (batch, head), partials in
    steps of 64."""
    CW: tl.constexpr = 64
    z = tl.program_id(0)
    bh = tl.num_programs(0)
    offs_d = tl.arange(0, D)
    mx = tl.full([1], float("-inf"), tl.float32)
    tot = tl.zeros([1], tl.float32)
    acc = tl.zeros([D], tl.float32)
    for w0 in range(0, NW, CW):
        ws = w0 + tl.arange(0, CW)
        wok = ws < NW
        mm = tl.load(GML + z * NW + ws, wok, float("-inf"))
        ll = tl.load(GML + bh * NW + z * NW + ws, wok, 0.0)
        part = tl.load(GP + (z * NW + ws)[:, None] * D + offs_d[None, :], wok[:, None], 0.0)
        m_new = tl.maximum(mx, tl.max(mm, 0))
        alpha = tl.math.exp2(mx - m_new)
        wgt = tl.math.exp2(mm - m_new)
        tot = tot * alpha + tl.sum(ll * wgt, 0)
        acc = acc * alpha + tl.sum(part * wgt[:, None], 0)
        mx = m_new
    tl.store(O + (z // 12) * sb + (z % 12) * sh + offs_d, (acc / tot).to(O.dtype.element_ty))
    tl.store(LSE + z * N + tl.arange(0, 1), (mx + tl.math.log2(tot)) * 0.6931471805599453)


@triton.jit
def _merge_wide(GP, GML, O, LSE, NW, N, sb, sh, D: tl.constexpr, BW: tl.constexpr, DC: tl.constexpr):
    """One program per (batch, head, DC columns of head_dim): every partial in one load (BW >= NW)."""
    z = tl.program_id(0)
    c = tl.program_id(1)
    bh = tl.num_programs(0)
    ws = tl.arange(0, BW)
    wok = ws < NW
    offs = c * DC + tl.arange(0, DC)
    mm = tl.load(GML + z * NW + ws, wok, float("-inf"))
    ll = tl.load(GML + bh * NW + z * NW + ws, wok, 0.0)
    part = tl.load(GP + (z * NW + ws)[:, None] * D + offs[None, :], wok[:, None], 0.0)
    mx = tl.max(mm, 0)
    wgt = tl.math.exp2(mm - mx)
    tot = tl.sum(ll * wgt, 0)
    acc = tl.sum(part * wgt[:, None], 0)
    tl.store(O + (z // 12) * sb + (z % 12) * sh + offs, (acc / tot).to(O.dtype.element_ty))
    if c == 0:
        tl.store(
            LSE + z * N + tl.arange(0, 1),
            (tl.zeros([1], tl.float32) + mx + tl.math.log2(tot)) * 0.6931471805599453,
        )


def desc(t: torch.Tensor):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, BM, D])


VARIANTS = {"band": (0, 0), "band + global key": (1, 0), "band + global key, rank 1": (2, 0),
            "+ row, own tile read again": (1, 1), "+ row, own tile first": (1, 2),
            "+ row in the first edge tile's loop": (1, 3), "+ row read again, vector products": (1, 4),
            "rank-1 key + row in the first edge loop": (2, 3),
            "rank-1 key + row read again, vector products": (2, 4),
            "band + global key, its loads first": (3, 0),
            "+ row, its loads before the epilogue": (1, 5),
            "key's loads first + row's loads before the epilogue": (3, 5),
            "+ row read again through pointer loads": (1, 6),
            "key's loads first + row through pointer loads": (3, 6),
            "+ row first, pointer loads before q's": (1, 7),
            "key's loads first + row first": (3, 7)}  # fmt: skip


def inputs(n: int) -> tuple:
    """q, k, v (1, H, n, D) bf16 and the global mask of token 0."""
    g = torch.Generator(device=DEV).manual_seed(n)
    q, k, v = (torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(3))
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    return q, k, v, gm


def buffers(q, k, v) -> tuple:
    """The lean kernels' programs a head, outputs (o, lse), the row's partials (gp, gml), the TMA
    descriptors of q, k, v and the scale (log2 units)."""
    n = q.shape[2]
    nw = n // BM
    o = torch.empty_like(q)
    lse = torch.empty(H, n, device=DEV, dtype=torch.float32)
    gp = torch.empty(H, nw, D, device=DEV, dtype=torch.float32)
    gml = torch.empty(2, H, nw, device=DEV, dtype=torch.float32)
    return nw, o, lse, gp, gml, desc(q), desc(k), desc(v), D**-0.5 * LOG2E


def lean_error(o, gp, gml, ref, ref_row=None) -> float:
    """A lean kernel's relative error against the library's: its output past row 0 against ref, and
    with ref_row, the global row 0 from its partials (gp, gml), merged here in torch."""
    err = rel(o[:, :, 1:], ref[:, :, 1:])
    if ref_row is not None:
        mg, lg = gml[0], gml[1]
        wgt = torch.exp2(mg - mg.max(1, keepdim=True).values)
        row0 = (gp * wgt[..., None]).sum(1) / (lg * wgt).sum(1, keepdim=True)
        err = max(err, rel(row0, ref_row[0, :, 0]))
    return err


def one(n: int, rows: list) -> None:
    q, k, v, gm = inputs(n)
    w = SlidingWindow(2 * HALF)
    ref_band = attend(q, k, v, w, backend="gpu")
    ref_glob = attend(q, k, v, w, global_mask=gm, backend="gpu")
    for name, fn in (("library: band", lambda: attend(q, k, v, w, backend="gpu")),
                     ("library: with the global token",
                      lambda: attend(q, k, v, w, global_mask=gm, backend="gpu"))):  # fmt: skip
        rows.append((n, name, do_bench(fn), do_bench_cudagraph(fn)))
    nw, o, lse, gp, gml, qd, kd, vd, scale = buffers(q, k, v)
    for name, (keys, row) in VARIANTS.items():

        def fwd(keys=keys, row=row):
            _fwd[(nw, H)](q, k, v, o, lse, gp, gml, qd, kd, vd, scale, HALF, n, H, *q.stride()[:3],
                          BM=BM, D=D, KEYS=keys, ROW=row, num_warps=4, num_stages=2)  # fmt: skip

        fwd()
        err = lean_error(o, gp, gml, ref_glob if keys else ref_band, ref_glob if row else None)
        print(n, name, f"error {err:.2e}", flush=True)
        if err > 1e-2:
            continue
        rows.append((n, name, do_bench(fwd), do_bench_cudagraph(fwd)))
        print(rows[-1], flush=True)
    for name, fn in (
        ("merge: walk in steps of 64", lambda: _merge_walk[(H,)](
            gp, gml, o, lse, nw, n, *q.stride()[:2], D=D)),
        ("merge: one load, 16 columns a program", lambda: _merge_wide[(H, D // 16)](
            gp, gml, o, lse, nw, n, *q.stride()[:2], D=D, BW=triton.next_power_of_2(nw), DC=16,
            num_warps=8)),
    ):  # fmt: skip
        fn()
        err = rel(o[0, :, 0], ref_glob[0, :, 0])
        print(n, name, f"error {err:.2e}", flush=True)
        rows.append((n, name, do_bench(fn), do_bench_cudagraph(fn)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    args = ap.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device=DEV, dtype=torch.int8))
    rows: list = []
    for n in args.sizes:
        one(n, rows)
    dump(rows, "window_rows.json")
    table(["n", "variant", "ms", "GPU-only ms"], rows)


if __name__ == "__main__":
    main()
