"""The window forward's kernels under Nsight Compute: one launch of each, after warm-up, between
cudaProfilerStart / Stop, so that `ncu --profile-from-start off` profiles only these. SlidingWindow(512),
bf16, batch 1, 12 heads, head_dim 64, 16K tokens by default; in order:

1. the library's forward, no global token (`_fwd_kernel`);
2. the library's forward with token 0 global (`_fwd_kernel`, then the band merge);
3. the lean kernels of `window_rows.py` (`_fwd`): the band alone, + the global key, + the row.

    ncu --clock-control none --profile-from-start off --set full -o $OUT/win \\
        env PYTHONPATH=src:benchmarks python benchmarks/window_ncu.py
    ncu -i $OUT/win.ncu-rep --page details

Run alone it only checks that the launches work (no profiler attached: start / stop do nothing).
"""

from __future__ import annotations

import argparse

import torch
import triton

from longseq.attention import SlidingWindow, attend
from window_rows import BM, HALF, _fwd, buffers, inputs  # (benchmarks/ is the script's directory)

DEV, H, D = "cuda", 12, 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--lean", nargs="*", default=["0,0", "1,0", "1,1"], help="KEYS,ROW pairs")
    args = ap.parse_args()
    n = args.n
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device=DEV, dtype=torch.int8))
    q, k, v, gm = inputs(n)
    w = SlidingWindow(2 * HALF)
    nw, o, lse, gp, gml, qd, kd, vd, scale = buffers(q, k, v)

    def lean(keys: int, row: int) -> None:
        _fwd[(nw, H)](q, k, v, o, lse, gp, gml, qd, kd, vd, scale, HALF, n, H, *q.stride()[:3],
                      BM=BM, D=D, KEYS=keys, ROW=row, num_warps=4, num_stages=2)  # fmt: skip

    calls = [
        ("library, no global", lambda: attend(q, k, v, w, backend="gpu")),
        ("library, token 0 global", lambda: attend(q, k, v, w, global_mask=gm, backend="gpu")),
    ]
    for pair in args.lean:
        keys, row = (int(x) for x in pair.split(","))
        calls.append((f"lean KEYS={keys} ROW={row}", lambda keys=keys, row=row: lean(keys, row)))
    with torch.no_grad():
        for _, fn in calls:  # compile and warm up
            for _ in range(3):
                fn()
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        for name, fn in calls:
            torch.cuda.nvtx.range_push(name)
            fn()
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_pop()
        torch.cuda.cudart().cudaProfilerStop()
    print("launched, in order:", "; ".join(name for name, _ in calls))


if __name__ == "__main__":
    main()
