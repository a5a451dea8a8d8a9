"""The sliding window's band forward as one loop, with Triton's warp specialisation (Hopper autoWS:
a producer warp group for the TMA loads, consumers for the MMAs and the softmax), against the lean
three-loop kernel of `window_tma.py` in one run. Is the band's softmax hidden behind its loads and
MMAs once the loads have their own warps?

SlidingWindow(512), no global token, bf16, batch 1, 12 heads, head_dim 64. Triton's Hopper pass only
specialises a kernel with a single top-level loop (three loops fail to compile or are left as they
are: compiled for sm_90 on CPU), so the band here is one loop over every tile it reaches, each tile
masked. Variants: WS on / off, the mask as two compares or one unsigned compare, none (timing only:
wrong results), num_stages. Each variant with a mask is checked against the library first
(relative error < 1e-2); times are do_bench ms, one launch.

    PYTHONPATH=src:benchmarks python benchmarks/window_ws.py [--sizes 16384 65536]
"""

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
from window_tma import DEV, HALF, LOG2E, D, H, Lean, desc, rel, table


@triton.jit
def _one_loop_fwd(O, LSE, QD, KD, VD, OD, qk_scale, half, N, H, BM: tl.constexpr, BN: tl.constexpr,
                  D: tl.constexpr, WS: tl.constexpr, MASK: tl.constexpr, STAGES: tl.constexpr):  # fmt: skip
    # MASK: 0 none (wrong results: timing only), 1 two compares, 2 one unsigned compare
    w = tl.program_id(0)
    z = tl.program_id(1)
    b = z // H
    h = z % H
    rows = w * BM + tl.arange(0, BM)
    q = QD.load([b, h, w * BM, 0]).reshape(BM, D)
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, D], tl.float32)
    lo = tl.maximum(w * BM - half, 0) // BN
    hi = tl.minimum((w * BM + BM - 1 + half) // BN + 1, tl.cdiv(N, BN))
    for kt in tl.range(lo, hi, num_stages=STAGES, warp_specialize=WS):
        cols = kt * BN + tl.arange(0, BN)
        k = KD.load([b, h, kt * BN, 0]).reshape(BN, D)
        v = VD.load([b, h, kt * BN, 0]).reshape(BN, D)
        s = tl.dot(q, tl.trans(k))
        if MASK == 1:
            diff = rows[:, None] - cols[None, :]
            ok = (diff <= half) & (diff >= -half) & (cols < N)[None, :]
            s = tl.where(ok, s, float("-inf"))
        elif MASK == 2:  # |row - col| <= half as one unsigned compare (cols past N: beyond half of any row)
            ok = (rows[:, None] - cols[None, :] + half).to(tl.uint32, bitcast=True) <= 2 * half
            s = tl.where(ok & (cols < N)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s * qk_scale - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(tl.bfloat16), v)
        m_i = m_new
    out = (acc / l_i[:, None]).to(tl.bfloat16)
    OD.store([b, h, w * BM, 0], out.reshape(1, 1, BM, D))
    tl.store(LSE + z * N + rows, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, rows < N)


VARIANTS = {  # name -> (WS, MASK, stages, warps)
    "one loop, mask 2 compares": (False, 1, 2, 4),
    "one loop, unsigned mask": (False, 2, 2, 4),
    "one loop, no mask (timing only)": (False, 0, 2, 4),
    "WS one loop, mask 2 compares": (True, 1, 2, 4),
    "WS one loop, unsigned mask": (True, 2, 2, 4),
    "WS one loop, unsigned mask, 3 stages": (True, 2, 3, 4),
    "WS one loop, unsigned mask, 4 stages": (True, 2, 4, 4),
    "WS one loop, no mask (timing only)": (True, 0, 2, 4),
}


class OneLoop:
    def __init__(self, q, k, v, ws, mask, stages, warps, bm=64, bn=64):
        self.q, self.k, self.v = q, k, v
        self.o = torch.empty_like(q)
        self.n = q.shape[2]
        self.lse = torch.empty(q.shape[0] * H, self.n, device=DEV, dtype=torch.float32)
        self.descs = desc(q, bm), desc(k, bn), desc(v, bn), desc(self.o, bm)
        self.args = dict(BM=bm, BN=bn, D=D, WS=ws, MASK=mask, STAGES=stages)
        self.args |= dict(num_warps=warps, num_stages=stages)
        self.grid = (triton.cdiv(self.n, bm), q.shape[0] * H)

    def __call__(self):
        _one_loop_fwd[self.grid](
            self.o, self.lse, *self.descs, D**-0.5 * LOG2E, HALF, self.n, H, **self.args
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    args = ap.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device=DEV, dtype=torch.int8))
    rows = []
    for n in [3001, *args.sizes]:
        g = torch.Generator(device=DEV).manual_seed(n)
        q, k, v, do = (
            torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(4)
        )
        ref = attend(q, k, v, SlidingWindow(2 * HALF), backend="gpu")
        lean = Lean(q, k, v, do, {"fwd": (64, 64)}, {"fwd": 4}, 2, 1)
        lean.fwd()
        print(n, "lean three loops", f"error {rel(lean.o, ref):.2e}", flush=True)
        if n != 3001:
            rows.append((n, "lean three loops (window_tma.py)", do_bench(lean.fwd)))
            lib = functools.partial(attend, q, k, v, SlidingWindow(2 * HALF), backend="gpu")
            rows.append((n, "library band", do_bench(lib)))
        for name, (ws, mask, stages, warps) in VARIANTS.items():
            try:
                fn = OneLoop(q, k, v, ws, mask, stages, warps)
                fn()
                if mask:
                    err = rel(fn.o, ref)
                    print(n, name, f"error {err:.2e}", flush=True)
                    if err > 1e-2:
                        continue
                if n != 3001:
                    rows.append((n, name, do_bench(fn)))
                    print(rows[-1], flush=True)
            except Exception as e:  # a variant that does not compile is reported, not fatal
                print(n, name, "ERROR", type(e).__name__, str(e)[-300:], flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "window_ws.json"), "w") as f:
            json.dump(rows, f)
    table(["n", "variant", "fwd ms"], rows)


if __name__ == "__main__":
    main()
