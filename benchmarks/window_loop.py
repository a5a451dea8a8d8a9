"""The window forward's loop structure, in lean kernels (SlidingWindow(512) + token 0 global, bf16,
batch 1, 12 heads, head_dim 64, no padding or dropout), beside `window_rows.py`'s library-like lean
kernel. Nsight Compute (`window_ncu.py`, eighteenth session) found the band forward latency-bound
(4 warps a scheduler, one eligible, issue slots 53% busy), its warps waiting on TMA loads where a
loop starts: three loops a program (edge tile, whole tiles, edge tile), each with its own pipeline
prologue, then the global row's two tiles, loaded and waited for one by one. Variants:

- LOOP 0: three loops (the library's); 1: one loop over the band, the window test in a branch taken
  by the edge tiles only, so that the pipeline runs through.
- XPRE: the global key's and row's rows loaded before the band loop (the library's), or after it.
- RCP: the epilogue multiplies by 1 / l (one reciprocal a row) in place of a division an element;
  RCP 2: so, and O is stored through TMA.
- ROW 1: the global row over the own key tile, read again after the loop (the library's);
  ROW 2: the same tile as one more iteration of the single loop (LOOP 1), so that the pipeline
  prefetches it during the band's last tile; the iteration takes the row's branch. ROW 3: half the
  programs take the row first, half last, alternating between the programs an SM holds together
  (blocks NSM apart), so that one's row overlaps another's band; ROW 4: every program first;
  ROW 5: alternating between neighbours.

Each variant is checked against the library's gpu backend first (relative error under 1e-2; the
row through its partials, merged here in torch); times are do_bench_cudagraph (GPU-only), ms, one
launch, median of --rounds rounds taken in turn.

    PYTHONPATH=src:benchmarks python benchmarks/window_loop.py [--sizes 16384 65536] [--rounds 3]
"""

# ruff: noqa: SIM102, SIM108  (nested ifs on constexpr and run-time conditions: Triton takes no `and`)
from __future__ import annotations

import argparse
import statistics

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels._flash import _band, _part
from window_rows import _fwd as _fwd_rows  # (benchmarks/ is the script's directory)
from window_rows import _ids, _online, _row_part, buffers, desc, inputs, lean_error
from window_tma import dump, table

DEV, H, D, HALF, BM = "cuda", 12, 64, 256, 64
LOG2E = 1.4426950408889634


@triton.jit
def _edge_mask(s, rows, cols, half, N):
    """The window test of an edge tile."""
    diff = rows[:, None] - cols[None, :]
    ok = (diff <= half) & (diff >= -half) & (cols < N)[None, :]
    return tl.where(ok, s, float("-inf"))


@triton.jit
def _band_step(q, k, v, m_i, l_i, acc, rows, cols, half, N, kt, a, bb, qk_scale):
    """One band tile of the single loop: the window test only where the tile is an edge one."""
    s = tl.dot(q, tl.trans(k))
    if (kt < a) | (kt >= bb):
        s = _edge_mask(s, rows, cols, half, N)
    return _online(s, m_i, l_i, acc, v, qk_scale, True)


@triton.jit
def _fwd(Q, K, V, O, LSE, GP, GML, QD, KD, VD, OD, qk_scale, half, N, H, sb, sh, sn,
         BM: tl.constexpr, D: tl.constexpr, LOOP: tl.constexpr, XPRE: tl.constexpr,
         RCP: tl.constexpr, ROW: tl.constexpr, NSM: tl.constexpr):  # fmt: skip
    w, z, nw, b, h, rows, offs_d = _ids(H, BM, D)
    gs = tl.arange(0, 16)
    xm = (gs == 0)[:, None]
    if XPRE:  # the global key's and row's loads first, as the library's
        kx = tl.load(K + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
        vx = tl.load(V + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
    if XPRE or ROW >= 2:  # (the row in the loop, or first, needs its query there)
        qg = tl.load(Q + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
    lin = w + z * nw
    if ROW == 3:  # the programs an SM holds together (blocks NSM apart) alternate
        late = (lin // NSM) % 2
    elif ROW == 4:
        late = lin * 0
    else:
        late = lin % 2
    if ROW >= 3:
        if late == 0:  # the row first, over the own tile
            k = KD.load([b, h, w * BM, 0]).reshape(BM, D)
            v = VD.load([b, h, w * BM, 0]).reshape(BM, D)
            _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)
    q = QD.load([b, h, w * BM, 0]).reshape(BM, D)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    first, a, bb, end = _band(w * BM, BM, BM, half, False, False, N)
    if LOOP == 0:
        for part in tl.static_range(3):
            lo, hi = _part(part, first, a, bb, end)
            for kt in range(lo, hi):
                cols = kt * BM + tl.arange(0, BM)
                k = KD.load([b, h, kt * BM, 0]).reshape(BM, D)
                v = VD.load([b, h, kt * BM, 0]).reshape(BM, D)
                s = tl.dot(q, tl.trans(k))
                if part != 1:
                    s = _edge_mask(s, rows, cols, half, N)
                m_i, l_i, acc = _online(s, m_i, l_i, acc, v, qk_scale, part != 1)
    else:
        stop = end
        if ROW == 2:
            stop = end + 1
        for kt in range(first, stop):
            t = kt
            if ROW == 2:
                t = tl.where(kt == end, w, kt)
            cols = t * BM + tl.arange(0, BM)
            k = KD.load([b, h, t * BM, 0]).reshape(BM, D)
            v = VD.load([b, h, t * BM, 0]).reshape(BM, D)
            if ROW == 2:
                if kt == end:
                    _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)
                else:
                    m_i, l_i, acc = _band_step(q, k, v, m_i, l_i, acc, rows, cols, half, N, kt, a, bb,
                                               qk_scale)  # fmt: skip
            else:
                m_i, l_i, acc = _band_step(q, k, v, m_i, l_i, acc, rows, cols, half, N, kt, a, bb, qk_scale)
    if not XPRE:
        kx = tl.load(K + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
        vx = tl.load(V + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
        if ROW < 2:
            qg = tl.load(Q + b * sb + h * sh + gs[:, None] * sn + offs_d[None, :], xm, 0.0)
    sx = tl.dot(q, tl.trans(kx))  # (BM, 16): the global key, for the rows whose window leaves it out
    sx = tl.where((gs == 0)[None, :] & (rows > half)[:, None], sx, float("-inf"))
    m_i, l_i, acc = _online(sx, m_i, l_i, acc, vx, qk_scale, True)
    if RCP:
        out = acc * (1.0 / l_i)[:, None]
    else:
        out = acc / l_i[:, None]
    if RCP == 2:  # through TMA: rows past the sequence are not written
        OD.store([b, h, w * BM, 0], out.to(Q.dtype.element_ty).reshape(1, 1, BM, D))
    else:
        tl.store(O + b * sb + h * sh + rows[:, None] * sn + offs_d[None, :], out.to(Q.dtype.element_ty),
                 (rows < N)[:, None])  # fmt: skip
    tl.store(LSE + z * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, rows < N)
    if ROW == 1:
        k = KD.load([b, h, w * BM, 0]).reshape(BM, D)
        v = VD.load([b, h, w * BM, 0]).reshape(BM, D)
        _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)
    if ROW >= 3:
        if late == 1:
            k = KD.load([b, h, w * BM, 0]).reshape(BM, D)
            v = VD.load([b, h, w * BM, 0]).reshape(BM, D)
            _row_part(qg, k, v, GP, GML, z, w, nw, qk_scale, D)


VARIANTS = {  # name: (LOOP, XPRE, RCP, ROW[, maxnreg])
    "three loops (library-like, before this session)": (0, 1, 0, 1),
    "three loops, reciprocal, loads after, capped at 96 (the library's now)": (0, 0, 1, 1, 96),
    "same, O through TMA": (0, 0, 2, 1, 96),
    "same, O through TMA, row first / last by neighbour": (0, 0, 2, 5, 96),
    "same, O through TMA, row first everywhere": (0, 0, 2, 4, 96),
    "one loop, reciprocal, loads after, capped at 96": (1, 0, 1, 1, 96),
    "one loop, O through TMA, capped at 96": (1, 0, 2, 1, 96),
    "three loops, capped, no row": (0, 0, 1, 0, 96),
    "three loops, capped, O through TMA, no row": (0, 0, 2, 0, 96),
}
# the variants of the session's earlier calls (RESULTS.md, eighteenth session): --all runs them too
EARLIER = {
    "three loops, reciprocal epilogue": (0, 1, 1, 1),
    "three loops, loads after the loop": (0, 0, 0, 1),
    "three loops, reciprocal, row first / last by SM slot": (0, 1, 1, 3),
    "three loops, reciprocal, row first everywhere": (0, 1, 1, 4),
    "three loops, reciprocal, row first / last by neighbour": (0, 1, 1, 5),
    "one loop": (1, 1, 0, 1),
    "one loop, reciprocal, loads after the loop": (1, 0, 1, 1),
    "one loop, row as its last iteration": (1, 1, 0, 2),
    "one loop, reciprocal, row first / last by SM slot, capped at 96": (1, 0, 1, 3, 96),
    "three loops, no row (floor)": (0, 1, 0, 0),
    "one loop, reciprocal, no row, loads after": (1, 0, 1, 0),
}


def one(n: int, rounds: int, rows: list, variants_def: dict) -> None:
    q, k, v, gm = inputs(n)
    win = SlidingWindow(2 * HALF)
    ref = attend(q, k, v, win, global_mask=gm, backend="gpu")
    nw, o, lse, gp, gml, qd, kd, vd, scale = buffers(q, k, v)
    od = desc(o)
    NSM = torch.cuda.get_device_properties(0).multi_processor_count
    fns = {"library (with its merge)": lambda: attend(q, k, v, win, global_mask=gm, backend="gpu")}

    def rows_lean():
        _fwd_rows[(nw, H)](q, k, v, o, lse, gp, gml, qd, kd, vd, scale, HALF, n, H, *q.stride()[:3],
                           BM=BM, D=D, KEYS=3, ROW=1, num_warps=4, num_stages=2)  # fmt: skip

    variants = {"window_rows.py lean (KEYS 3, ROW 1)": (rows_lean, 1)}
    for name, (loop, xpre, rcp, row, *cap) in variants_def.items():
        opts = {"maxnreg": cap[0]} if cap else {}

        def fwd(loop=loop, xpre=xpre, rcp=rcp, row=row, opts=opts):
            _fwd[(nw, H)](q, k, v, o, lse, gp, gml, qd, kd, vd, od, scale, HALF, n, H, *q.stride()[:3],
                          BM=BM, D=D, LOOP=loop, XPRE=xpre, RCP=rcp, ROW=row, NSM=NSM, num_warps=4,
                          num_stages=2, **opts)  # fmt: skip

        variants[name] = (fwd, row)
    for name, (fn, row) in variants.items():
        gp.zero_()
        o.zero_()
        fn()
        err = lean_error(o, gp, gml, ref, ref if row else None)
        print(n, name, f"error {err:.2e}", flush=True)
        if err < 1e-2:
            fns[name] = fn
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(do_bench_cudagraph(fn))
    for name, ts in times.items():
        rows.append((n, name, statistics.median(ts), min(ts)))
        print(rows[-1], flush=True)


def compile_only(variants_def: dict) -> None:
    """Each variant compiled for sm_90 on this machine (`kernel_resources.resources`): registers,
    spills, shared memory and the innermost loops' sizes."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from kernel_resources import resources

    n = 4096
    q, k, v, o = (torch.empty(1, H, n, D, dtype=torch.bfloat16) for _ in range(4))
    lse, gp, gml = (torch.empty(H * n, dtype=torch.float32) for _ in range(3))
    descs = tuple(TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, BM, D]) for t in (q, k, v, o))
    scalars = (D**-0.5 * LOG2E, HALF, n, H, *q.stride()[:3])
    for name, (loop, xpre, rcp, row, *cap) in variants_def.items():
        kw = dict(BM=BM, D=D, LOOP=loop, XPRE=xpre, RCP=rcp, ROW=row, NSM=132, num_warps=4, num_stages=2)
        if cap:
            kw["maxnreg"] = cap[0]
        r = resources(_fwd, (q, k, v, o, lse, gp, gml), scalars, kw, descs)
        print(f"{name}: regs {r['regs']}, stack {r['stack']}, smem {r['smem']}, loops {r['loops']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile-only", action="store_true", help="sm_90 registers and loops, no GPU")
    ap.add_argument("--all", action="store_true", help="also the earlier calls' variants")
    args = ap.parse_args()
    variants_def = {**VARIANTS, **EARLIER} if args.all else VARIANTS
    if args.compile_only:
        compile_only(variants_def)
        return
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device=DEV, dtype=torch.int8))
    rows: list = []
    for n in args.sizes:
        one(n, args.rounds, rows, variants_def)
    dump(rows, "window_loop.json")
    table(["n", "variant", "GPU-only ms (median)", "min"], rows)


if __name__ == "__main__":
    main()
