"""Lean sliding-window kernels: pointer loads against TMA (tensor-descriptor) loads, host-made or
device-made, beside the library's band kernels in one run. Is the band kernels' cost in their loads?

The lean kernels do SlidingWindow(half * 2) with no global token, no padding and no dropout (what
the library's band kernels do in their middle tiles). Each is checked against the library's gpu
backend first (bf16, relative error under 1e-2), then timed with do_bench (one launch each).
--diag adds forward-only variants and timing diagnostics (no exp2, K / V loaded once, no softmax),
which give wrong results and are timed only, and the forward with its exp2 taken on the FMA units,
all or half of them (slower). (bf16 pairs on the special-function unit, `ex2.approx.ftz.bf16x2`,
were compiled for sm_90 once and dropped untimed: ptxas issues one MUFU.EX2.BF16 per value.)
Findings: benchmarks/RESULTS.md, ninth and thirteenth sessions.

    PYTHONPATH=src python benchmarks/window_tma.py [--sizes 16384 65536] [--variants 0,1,...] [--diag]
"""

# ruff: noqa: SIM108  (if / else on constexpr flags reads best in Triton kernels)
from __future__ import annotations

import argparse
import functools
import json
import os

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels._flash import _band, _part

DEV, H, D, HALF = "cuda", 12, 64, 256
LN2 = 0.6931471805599453
LOG2E = 1.4426950408889634


@triton.jit
def _dev_descs(Q, K, V, DO, b, h, sb, sh, sn, N, BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr):
    """Device-side descriptors of this (batch, head)'s rows of Q, K, V, DO (TMA == 2)."""
    base = b * sb + h * sh
    return (
        tl.make_tensor_descriptor(Q + base, [N, D], [sn, 1], [BM, D]),
        tl.make_tensor_descriptor(K + base, [N, D], [sn, 1], [BN, D]),
        tl.make_tensor_descriptor(V + base, [N, D], [sn, 1], [BN, D]),
        tl.make_tensor_descriptor(DO + base, [N, D], [sn, 1], [BM, D]),
    )


@triton.jit
def _ld(P, D_, b, h, r0, rows, sb, sh, sn, offs_d, n, BR: tl.constexpr, D: tl.constexpr, TMA: tl.constexpr,
        MASK: tl.constexpr):  # fmt: skip
    if TMA == 1:  # a host-side descriptor of the whole (batch, heads, rows, head_dim) tensor
        x = D_.load([b, h, r0, 0]).reshape(BR, D)
    elif TMA == 2:  # a device-side one of this (batch, head)
        x = D_.load([r0, 0])
    else:
        ptr = P + b * sb + h * sh + rows[:, None] * sn + offs_d[None, :]
        if MASK:
            x = tl.load(ptr, (rows < n)[:, None], 0.0)
        else:
            x = tl.load(ptr)
    return x


@triton.jit
def _ex2_poly(x):
    """2^x (x <= 0, fp32) on the FMA units: 2^floor(x) * p(frac(x)), p a cubic (relative error ~1e-4,
    under bf16's rounding of the weights)."""
    x = tl.maximum(x, -126.0)
    j = tl.floor(x)
    f = x - j
    p = 1.0 + f * (0.6951455 + f * (0.2275218 + f * 0.0771884))
    bits = p.to(tl.int32, bitcast=True) + (j.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _weights(x, EXP: tl.constexpr):
    """exp2 of the scaled scores (BM, BN) fp32 -> (weights in the dot's dtype, their row sums)."""
    if EXP == 2:
        p = _ex2_poly(x)
    elif EXP == 3:  # half the columns on each unit
        a, b2 = tl.split(x.reshape(x.shape[0], x.shape[1] // 2, 2))
        p = tl.join(tl.math.exp2(a), _ex2_poly(b2)).reshape(x.shape[0], x.shape[1])
    else:
        p = tl.math.exp2(x)
    return p.to(tl.bfloat16), tl.sum(p, 1)


@triton.jit
def _lean_fwd(Q, K, V, O, LSE, QD, KD, VD, OD, qk_scale, half, N, H, sb, sh, sn,
              BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, TMA: tl.constexpr,
              DIAG: tl.constexpr = 0, SINGLE: tl.constexpr = False, EXP: tl.constexpr = 0):  # fmt: skip
    # DIAG (timing diagnostics, wrong results): 1 no exp, 2 K / V loaded once (no L2 traffic in the
    # loop), 3 no softmax (MMA and loads only). SINGLE: one loop, every tile masked. EXP: how the
    # weights' exp2 is taken (`_weights`: 0 fp32 on the SFU, 2 on the FMA units, 3 half and half).
    w = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    if TMA == 2:
        QD, KD, VD, _ = _dev_descs(Q, K, V, Q, b, h, sb, sh, sn, N, BM, BN, D)
    rows = w * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = _ld(Q, QD, b, h, w * BM, rows, sb, sh, sn, offs_d, N, BM, D, TMA, True)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    first, a, bb, end = _band(w * BM, BM, BN, half, False, False, N)
    if DIAG == 2:
        cols0 = first * BN + tl.arange(0, BN)
        k0 = _ld(K, KD, b, h, first * BN, cols0, sb, sh, sn, offs_d, N, BN, D, TMA, True)
        v0 = _ld(V, VD, b, h, first * BN, cols0, sb, sh, sn, offs_d, N, BN, D, TMA, True)
    for part in tl.static_range(1 if SINGLE else 3):
        if SINGLE:
            lo, hi = first, end
        else:
            lo, hi = _part(part, first, a, bb, end)
        for kt in range(lo, hi):
            cols = kt * BN + tl.arange(0, BN)
            masked = SINGLE or part != 1
            if DIAG == 2:
                k = k0
                v = v0
            else:
                k = _ld(K, KD, b, h, kt * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, masked)
                v = _ld(V, VD, b, h, kt * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, masked)
            s = tl.dot(q, tl.trans(k))
            if masked:
                diff = rows[:, None] - cols[None, :]
                ok = (diff <= half) & (diff >= -half) & (cols < N)[None, :]
                s = tl.where(ok, s, float("-inf"))
            if DIAG == 3:
                acc += tl.dot(s.to(v.dtype), v)
            else:
                m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
                m_safe = m_new
                if masked:  # a row may see none of an edge tile's keys
                    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                if DIAG == 1:
                    p = s * qk_scale - m_safe[:, None]
                    alpha = m_i - m_safe
                    psum = tl.sum(p, 1)
                else:
                    p, psum = _weights(s * qk_scale - m_safe[:, None], EXP)
                    alpha = tl.math.exp2(m_i - m_safe)
                l_i = l_i * alpha + psum
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                m_i = m_new
    out = (acc / l_i[:, None]).to(Q.dtype.element_ty)
    if TMA == 1:
        OD.store([b, h, w * BM, 0], out.reshape(1, 1, BM, D))
    else:
        tl.store(O + b * sb + h * sh + rows[:, None] * sn + offs_d[None, :], out, (rows < N)[:, None])
    tl.store(LSE + z * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, rows < N)


@triton.jit
def _lean_dq(Q, K, V, DO, DQ, LSE, DELTA, QD, KD, VD, DOD, DQD, qk_scale, half, N, H, sb, sh, sn,
             BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, TMA: tl.constexpr):  # fmt: skip
    w = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    if TMA == 2:
        QD, KD, VD, DOD = _dev_descs(Q, K, V, DO, b, h, sb, sh, sn, N, BM, BN, D)
    rows = w * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = _ld(Q, QD, b, h, w * BM, rows, sb, sh, sn, offs_d, N, BM, D, TMA, True)
    do = _ld(DO, DOD, b, h, w * BM, rows, sb, sh, sn, offs_d, N, BM, D, TMA, True)
    lse2 = tl.load(LSE + z * N + rows, rows < N, 0.0) * 1.4426950408889634
    delta = tl.load(DELTA + z * N + rows, rows < N, 0.0)
    dq = tl.zeros([BM, D], tl.float32)
    first, a, bb, end = _band(w * BM, BM, BN, half, False, False, N)
    for part in tl.static_range(3):
        lo, hi = _part(part, first, a, bb, end)
        for kt in range(lo, hi):
            cols = kt * BN + tl.arange(0, BN)
            k = _ld(K, KD, b, h, kt * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, part != 1)
            v = _ld(V, VD, b, h, kt * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, part != 1)
            s = tl.dot(q, tl.trans(k)) * qk_scale
            p = tl.math.exp2(s - lse2[:, None])
            if part != 1:
                diff = rows[:, None] - cols[None, :]
                ok = (diff <= half) & (diff >= -half) & (cols < N)[None, :]
                p = tl.where(ok, p, 0.0)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k)
    dq = (dq * (qk_scale * 0.6931471805599453)).to(Q.dtype.element_ty)
    if TMA == 1:
        DQD.store([b, h, w * BM, 0], dq.reshape(1, 1, BM, D))
    else:
        tl.store(DQ + b * sb + h * sh + rows[:, None] * sn + offs_d[None, :], dq, (rows < N)[:, None])


@triton.jit
def _lean_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, QD, KD, VD, DOD, DKD, DVD, qk_scale, half, N, H, sb, sh, sn,
               BM: tl.constexpr, BN: tl.constexpr, D: tl.constexpr, TMA: tl.constexpr):  # fmt: skip
    # program: BN keys; walks query tiles of BM rows
    w = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    if TMA == 2:
        QD, KD, VD, DOD = _dev_descs(Q, K, V, DO, b, h, sb, sh, sn, N, BM, BN, D)
    cols = w * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    k = _ld(K, KD, b, h, w * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, True)
    v = _ld(V, VD, b, h, w * BN, cols, sb, sh, sn, offs_d, N, BN, D, TMA, True)
    dk = tl.zeros([BN, D], tl.float32)
    dv = tl.zeros([BN, D], tl.float32)
    first, a, bb, end = _band(w * BN, BN, BM, half, False, False, N)
    for part in tl.static_range(3):
        lo, hi = _part(part, first, a, bb, end)
        for qt in range(lo, hi):
            rows = qt * BM + tl.arange(0, BM)
            q = _ld(Q, QD, b, h, qt * BM, rows, sb, sh, sn, offs_d, N, BM, D, TMA, part != 1)
            do = _ld(DO, DOD, b, h, qt * BM, rows, sb, sh, sn, offs_d, N, BM, D, TMA, part != 1)
            lse2 = tl.load(LSE + z * N + rows, rows < N, 0.0) * 1.4426950408889634
            delta = tl.load(DELTA + z * N + rows, rows < N, 0.0)
            st = tl.dot(k, tl.trans(q)) * qk_scale  # (BN, BM)
            pt = tl.math.exp2(st - lse2[None, :])
            if part != 1:
                diff = rows[None, :] - cols[:, None]
                ok = (diff <= half) & (diff >= -half) & (rows < N)[None, :]
                pt = tl.where(ok, pt, 0.0)
            dv += tl.dot(pt.to(do.dtype), do)
            dpt = tl.dot(v, tl.trans(do))
            dst = pt * (dpt - delta[None, :])
            dk += tl.dot(dst.to(q.dtype), q)
    dk = (dk * (qk_scale * 0.6931471805599453)).to(K.dtype.element_ty)
    dv = dv.to(V.dtype.element_ty)
    if TMA == 1:
        DKD.store([b, h, w * BN, 0], dk.reshape(1, 1, BN, D))
        DVD.store([b, h, w * BN, 0], dv.reshape(1, 1, BN, D))
    else:
        tl.store(DK + b * sb + h * sh + cols[:, None] * sn + offs_d[None, :], dk, (cols < N)[:, None])
        tl.store(DV + b * sb + h * sh + cols[:, None] * sn + offs_d[None, :], dv, (cols < N)[:, None])


def desc(t: torch.Tensor, br: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, br, D])


class Lean:
    def __init__(self, q, k, v, do, tiles, warps, stages, tma, regs=None):
        self.regs = {key: {"maxnreg": r} for key, r in (regs or {}).items()}
        self.q, self.k, self.v, self.do = q, k, v, do
        self.tiles, self.warps, self.stages, self.tma = tiles, warps, stages, tma
        self.o, self.dq, self.dk, self.dv = (torch.empty_like(q) for _ in range(4))
        bh, n = q.shape[0] * q.shape[1], q.shape[2]
        self.lse = torch.empty(bh, n, device=DEV, dtype=torch.float32)
        self.delta = torch.empty(bh, n, device=DEV, dtype=torch.float32)
        self.n, self.scale = n, D**-0.5 * LOG2E
        self.descs = {}

    def d(self, name, br):
        if self.tma != 1:
            return getattr(self, name)  # a pointer: unused, or the base of a device-side descriptor
        key = (name, br)
        if key not in self.descs:
            self.descs[key] = desc(getattr(self, name), br)
        return self.descs[key]

    def fwd(self, diag: int = 0, single: bool = False, exp: int = 0):
        bm, bn = self.tiles["fwd"]
        q, n = self.q, self.n
        _lean_fwd[(triton.cdiv(n, bm), q.shape[0] * H)](
            q, self.k, self.v, self.o, self.lse, self.d("q", bm), self.d("k", bn), self.d("v", bn),
            self.d("o", bm), self.scale, HALF, n, H, q.stride(0), q.stride(1), q.stride(2),
            BM=bm, BN=bn, D=D, TMA=self.tma, DIAG=diag, SINGLE=single, EXP=exp, num_warps=self.warps["fwd"],
            num_stages=self.stages,
        )  # fmt: skip

    def prep(self):
        self.delta.copy_((self.o.float() * self.do.float()).sum(-1).reshape(self.delta.shape))

    def dq_(self):
        bm, bn = self.tiles["dq"]
        q, n = self.q, self.n
        _lean_dq[(triton.cdiv(n, bm), q.shape[0] * H)](
            q, self.k, self.v, self.do, self.dq, self.lse, self.delta, self.d("q", bm), self.d("k", bn),
            self.d("v", bn), self.d("do", bm), self.d("dq", bm), self.scale, HALF, n, H,
            q.stride(0), q.stride(1), q.stride(2),
            BM=bm, BN=bn, D=D, TMA=self.tma, num_warps=self.warps["dq"], num_stages=self.stages,
        )  # fmt: skip

    def dkdv(self):
        bm, bn = self.tiles["dkdv"]
        q, n = self.q, self.n
        _lean_dkdv[(triton.cdiv(n, bn), q.shape[0] * H)](
            q, self.k, self.v, self.do, self.dk, self.dv, self.lse, self.delta, self.d("q", bm),
            self.d("k", bn), self.d("v", bn), self.d("do", bm), self.d("dk", bn), self.d("dv", bn),
            self.scale, HALF, n, H, q.stride(0), q.stride(1), q.stride(2),
            BM=bm, BN=bn, D=D, TMA=self.tma, num_warps=self.warps["dkdv"], num_stages=self.stages,
            **self.regs.get("dkdv", {}),
        )  # fmt: skip


T64 = {"fwd": (64, 64), "dq": (64, 64), "dkdv": (64, 64)}
W4 = {"fwd": 4, "dq": 4, "dkdv": 4}
W8 = {"fwd": 8, "dq": 8, "dkdv": 8}
VARIANTS = {
    "ptr 64x64 4w 2s": (T64, W4, 2, 0),
    "tma 64x64 4w 2s": (T64, W4, 2, 1),
    "tma 64x64 4w 3s": (T64, W4, 3, 1),
    "tma 128x64 8w 2s": ({"fwd": (128, 64), "dq": (128, 64), "dkdv": (64, 128)}, W8, 2, 1),
    "tma 128x128 8w 2s": ({"fwd": (128, 128), "dq": (128, 128), "dkdv": (128, 128)}, W8, 2, 1),
    "tma 64x128 4w 2s": ({"fwd": (64, 128), "dq": (64, 128), "dkdv": (128, 64)}, W4, 2, 1),
    "tma-dev 64x64 4w 2s": (T64, W4, 2, 2),
    "tma-dev 64x64, dK/dV maxnreg 168": (T64, W4, 2, 2, {"dkdv": 168}),
    "tma-dev 64x64, dK/dV 32x64": ({"fwd": (64, 64), "dq": (64, 64), "dkdv": (32, 64)}, W4, 2, 2),
    "tma-dev 64x64, dK/dV 64x32": ({"fwd": (64, 64), "dq": (64, 64), "dkdv": (64, 32)}, W4, 2, 2),
}  # fmt: skip
# forward-only variants and timing diagnostics (DIAG > 0: wrong results, timing only):
# name -> (fwd tile, warps, stages, DIAG, SINGLE[, EXP])
FWD_DIAG = {
    "fwd exp2: on the FMA units": ((64, 64), 4, 2, 0, False, 2),
    "fwd exp2: half and half": ((64, 64), 4, 2, 0, False, 3),
    "fwd tma 64x64 (as above)": ((64, 64), 4, 2, 0, False),
    "fwd tma 64x64 1 stage": ((64, 64), 4, 1, 0, False),
    "fwd tma 64x64 one masked loop": ((64, 64), 4, 2, 0, True),
    "fwd tma 128x64 4w": ((128, 64), 4, 2, 0, False),
    "fwd tma 64x32 4w": ((64, 32), 4, 2, 0, False),
    "diag: no exp": ((64, 64), 4, 2, 1, False),
    "diag: K / V loaded once": ((64, 64), 4, 2, 2, False),
    "diag: no softmax": ((64, 64), 4, 2, 3, False),
    "diag: ptr, K / V loaded once": ((64, 64), 4, 2, -2, False),
}


def fwd_bwd(q, k, v, do) -> None:
    out = attend(q, k, v, SlidingWindow(2 * HALF), backend="gpu")
    torch.autograd.grad(out, [q, k, v], do)


def table(header: list[str], rows: list) -> None:
    """Print rows (tuples; None for an empty cell, floats to 4 places) as a markdown table."""
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = ["" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x)) for x in r]
        print("| " + " | ".join(cells) + " |")


def dump(rows: list, name: str) -> None:
    """rows as JSON to $OUT/name, where $OUT is set (the device's folder that comes back)."""
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, name), "w") as f:
            json.dump(rows, f)


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--variants", default="all")
    ap.add_argument("--diag", action="store_true", help="also the forward-only variants and diagnostics")
    args = ap.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device=DEV, dtype=torch.int8))
    names = (
        list(VARIANTS)
        if args.variants == "all"
        else [list(VARIANTS)[int(i)] for i in args.variants.split(",")]
    )
    rows = []
    for n in [3001, *args.sizes]:
        g = torch.Generator(device=DEV).manual_seed(n)
        q, k, v, do = (
            torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(4)
        )
        qr, kr, vr = (t.clone().requires_grad_(True) for t in (q, k, v))
        ref = attend(qr, kr, vr, SlidingWindow(2 * HALF), backend="gpu")
        grads = torch.autograd.grad(ref, [qr, kr, vr], do)
        gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
        gm[:, 0] = True
        w = SlidingWindow(2 * HALF)
        lib_f = functools.partial(attend, q, k, v, w, backend="gpu")
        lib_g = functools.partial(attend, q, k, v, w, global_mask=gm, backend="gpu")
        lib_fb = functools.partial(fwd_bwd, qr, kr, vr, do)
        if n != 3001:
            rows.append((n, "library band (no global)", do_bench(lib_f), do_bench(lib_fb), None, None, None))
            rows.append((n, "library band +1 global", do_bench(lib_g), None, None, None, None))
            print(rows[-2], rows[-1], flush=True)
        for name in names:
            tiles, warps, stages, tma, *regs = VARIANTS[name]
            try:
                lean = Lean(q, k, v, do, tiles, warps, stages, tma, *regs)
                lean.fwd()
                lean.prep()
                lean.dq_()
                lean.dkdv()
                errs = [
                    rel(lean.o, ref),
                    rel(lean.dq, grads[0]),
                    rel(lean.dk, grads[1]),
                    rel(lean.dv, grads[2]),
                ]
                ok = max(errs) < 1e-2
                print(
                    n,
                    name,
                    "errors o/dq/dk/dv",
                    [f"{e:.2e}" for e in errs],
                    "ok" if ok else "FAIL",
                    flush=True,
                )
                if n == 3001 or not ok:
                    continue
                tf, tq, tkv = do_bench(lean.fwd), do_bench(lean.dq_), do_bench(lean.dkdv)
                rows.append((n, name, tf, None, tq, tkv, tf + tq + tkv))
                print(rows[-1], flush=True)
            except Exception as e:  # a variant that does not compile is reported, not fatal
                print(n, name, "ERROR", type(e).__name__, str(e)[:300], flush=True)
        for name, (tile, warps, stages, diag, single, *exp) in FWD_DIAG.items() if args.diag else ():
            try:
                tiles = {"fwd": tile, "dq": tile, "dkdv": tile}
                lean = Lean(q, k, v, do, tiles, {"fwd": warps}, stages, int(diag >= 0))
                fn = functools.partial(lean.fwd, abs(diag), single, *exp)
                fn()
                if not diag:
                    err = rel(lean.o, ref)
                    print(n, name, f"error o {err:.2e}", flush=True)
                    if err > 1e-2:
                        continue
                if n != 3001:
                    rows.append((n, name, do_bench(fn), None, None, None, None))
                    print(rows[-1], flush=True)
            except Exception as e:  # a variant that does not compile is reported, not fatal
                print(n, name, "ERROR", type(e).__name__, str(e)[:300], flush=True)
    dump(rows, "window_tma.json")
    table(["n", "variant", "fwd ms", "lib fwd+bwd ms", "dQ ms", "dK/dV ms", "fwd+dQ+dK/dV ms"], rows)


if __name__ == "__main__":
    main()
