"""The window's forward kernel under register caps: uncapped (108-109 registers a thread, four
programs an SM) against capped at 96 (five programs an SM by registers; with a global token its
45 KB of shared memory still allow four), compiled as Triton's launch specialises them
(`kernel_resources.py`). SlidingWindow(512) alone and + token 0 global, bf16, batch 1, 12 heads,
head_dim 64, forward without gradients; GPU-only ms (CUDA-graph replay) and Flex with the same mask
in the same run. Outputs are checked against the uncapped kernel's first (the same bits expected).

    PYTHONPATH=src:benchmarks python benchmarks/window_fwd_cap.py [--sizes 16384 65536]
"""

from __future__ import annotations

import argparse

import torch
from triton.testing import do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels import listed
from window_tma import table  # (benchmarks/ is the script's directory)

DEV, H, D = "cuda", 12, 64
CAPS = (None, 104, 96)


def flex(n: int, glob: bool, q, k, v):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask(b, h, qi, kv):
        near = (qi - kv).abs() <= 256
        return (near | (qi == 0) | (kv == 0)) if glob else near

    bm = create_block_mask(mask, None, None, n, n, device=DEV)
    fx = torch.compile(flex_attention, dynamic=False)
    return lambda: fx(q, k, v, block_mask=bm)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        g = torch.Generator(device=DEV).manual_seed(n)
        q, k, v = (torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(3))
        for glob in (False, True):
            gm = None
            if glob:
                gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
                gm[:, 0] = True
            ref = None
            for cap in CAPS:
                if cap is None:
                    listed.TMA_LAUNCH.pop("_fwd_kernel", None)
                else:
                    listed.TMA_LAUNCH["_fwd_kernel"] = {"num_warps": 4, "num_stages": 2, "maxnreg": cap}
                listed._TUNED[0] += 1  # (the plans' constexprs rebuilt)

                def fn(q=q, k=k, v=v, gm=gm):
                    return attend(q, k, v, SlidingWindow(512), global_mask=gm, backend="gpu")

                with torch.no_grad():
                    out = fn()
                    ref = out if ref is None else ref
                    same = bool(torch.equal(out, ref))
                    ms = do_bench_cudagraph(fn, rep=60)
                rows.append((n, "+1 global" if glob else "no global", cap or "none", round(ms, 4), same))
                print(rows[-1], flush=True)
            listed.TMA_LAUNCH.pop("_fwd_kernel", None)
            listed._TUNED[0] += 1
            fx = flex(n, glob, q, k, v)
            fx()
            ms = do_bench_cudagraph(fx, rep=60)
            rows.append((n, "+1 global" if glob else "no global", "flex", round(ms, 4), ""))
    for i, r in enumerate(rows):
        f = next(x for x in rows if x[:2] == r[:2] and x[2] == "flex")
        rows[i] = (*r, f"{f[3] / r[3]:.2f}x")
    table(["n", "case", "fwd cap", "GPU-only ms", "same bits", "Flex / it"], rows)


if __name__ == "__main__":
    main()
