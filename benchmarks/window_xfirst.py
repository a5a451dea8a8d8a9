"""Two changes to the window forward with one global token, side by side in one process
(SlidingWindow(512) + token 0 global, bf16, batch 1, 12 heads, head_dim 64):

- X: the global key (every query sees it) after the band loop, as the library does (0); before it,
  so that the softmax starts from it with no rescaling (1); before it on the CUDA cores, its score
  q . k0 for each row and its value row as the accumulator (2) (`listed.X_FIRST`).
- G: the global row's partials over G key tiles by the programs w % G == 0, in a pipelined loop,
  against one tile by every program (G = 1, the library's) (`listed.BAND_ROWS_GROUP`).

Each variant is checked against the library's output first; the global-key-only window (no row:
the floor) is timed with X = 0 and 2. Times: do_bench of the eager call (host incl.) and CUDA-graph
replay (GPU-only), ms, the median over the rounds (the variants in turn each round); Flex once.

    PYTHONPATH=src:benchmarks python benchmarks/window_xfirst.py [--sizes 16384 65536] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels import listed
from window_row_stream import flex_fn  # (benchmarks/ is the script's directory)
from window_tma import rel, table

DEV, H, D = "cuda", 12, 64
VARIANTS = {  # label -> (X_FIRST, BAND_ROWS_GROUP, global rows)
    "library (X 0, G 1)": (0, 1, True),
    "X 1": (1, 1, True),
    "X 2": (2, 1, True),
    "G 2": (0, 2, True),
    "G 3": (0, 3, True),
    "G 4": (0, 4, True),
    "G 8": (0, 8, True),
    "X 2, G 2": (2, 2, True),
    "X 2, G 4": (2, 4, True),
    "(keys only, X 0)": (0, 1, False),
    "(keys only, X 2)": (2, 1, False),
}


def call(q, k, v, gm, xf: int, gr: int, rows: bool):
    w = SlidingWindow(512, global_rows=rows)

    def fwd():
        listed.X_FIRST[0], listed.BAND_ROWS_GROUP[0] = xf, gr
        return attend(q, k, v, w, global_mask=gm, backend="gpu")

    return fwd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows, out = [], []
    for n in args.sizes:
        g = torch.Generator(device=DEV).manual_seed(n)
        q, k, v = (torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(3))
        gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
        gm[:, 0] = True
        fns = {lab: call(q, k, v, gm, *cfg) for lab, cfg in VARIANTS.items()}
        with torch.no_grad():
            ref = {True: fns["library (X 0, G 1)"](), False: fns["(keys only, X 0)"]()}
            for lab, fn in fns.items():
                err = rel(fn(), ref[VARIANTS[lab][2]])
                assert err < 1e-2, (n, lab, err)
                print(n, lab, "agrees to", f"{err:.1e}", flush=True)
            times: dict = {}
            for _ in range(args.rounds):
                for lab, fn in fns.items():
                    host = do_bench(fn, warmup=20, rep=60, return_mode="median")
                    times.setdefault(lab, []).append((host, do_bench_cudagraph(fn, rep=40)))
            fx = flex_fn(n, q, k, v)
            fh, fg = do_bench(fx, warmup=20, rep=60, return_mode="median"), do_bench_cudagraph(fx, rep=40)
        listed.X_FIRST[0], listed.BAND_ROWS_GROUP[0] = 0, 1
        for lab, got in times.items():
            host, gpu = statistics.median(x for x, _ in got), statistics.median(y for _, y in got)
            rows.append((n, lab, host, gpu, f"{fh / host:.2f}x", f"{fg / gpu:.2f}x"))
            out.append(
                {
                    "n": n,
                    "variant": lab,
                    "host_ms": host,
                    "gpu_ms": gpu,
                    "flex_host_ms": fh,
                    "flex_gpu_ms": fg,
                }
            )
        rows.append((n, "flex", fh, fg, None, None))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "window_xfirst.json"), "w") as f:
            json.dump(out, f, indent=1)
    table(["n", "variant", "host incl. ms", "GPU-only ms", "Flex / it (host)", "Flex / it (GPU)"], rows)


if __name__ == "__main__":
    main()
