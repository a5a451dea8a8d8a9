"""A sliding window's one global row taken apart from the band: the library's band with the global
token as a key only (`SlidingWindow(512, global_rows=False)`), and the row over every key by torch's
flash or cuDNN SDPA, in turn on the same stream or on a forked stream (launched before the band, or
after it on a stream of high priority) that joins before the row is written into the output. Set
beside the library's call (the row taken by the band's programs and merged) and FlexAttention with
the same mask, in one run. bf16, batch 1, 12 heads, head_dim 64, token 0 global, forward without
gradients. Each variant is checked against the library's output first (relative error under 1e-2).
Times: do_bench of the eager call (host incl.) and the call captured in a CUDA graph and replayed
(GPU-only), ms.

    PYTHONPATH=src:benchmarks python benchmarks/window_row_stream.py [--sizes 16384 65536]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from window_tma import rel, table  # (benchmarks/ is the script's directory)

DEV, H, D = "cuda", 12, 64


def flex_fn(n: int, q, k, v):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask(b, h, qi, kv):
        return ((qi - kv).abs() <= 256) | (qi == 0) | (kv == 0)

    bm = create_block_mask(mask, None, None, n, n, device=DEV)
    fx = torch.compile(flex_attention, dynamic=False)
    return lambda: fx(q, k, v, block_mask=bm)


def variants(n: int, q, k, v, gm) -> dict:
    full, keys = SlidingWindow(512), SlidingWindow(512, global_rows=False)
    scale = D**-0.5
    side = torch.cuda.Stream()
    high = torch.cuda.Stream(priority=torch.cuda.Stream.priority_range()[1])  # (the highest)

    def library():
        return attend(q, k, v, full, global_mask=gm, backend="gpu")

    def band():
        return attend(q, k, v, keys, global_mask=gm, backend="gpu")

    def flash_row():
        return torch.ops.aten._scaled_dot_product_flash_attention(q[:, :, :1], k, v, scale=scale)[0]

    def cudnn_row():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q[:, :, :1], k, v, scale=scale)

    def in_turn(row):
        def fn():
            o = band()
            o[:, :, :1] = row()
            return o

        return fn

    def forked(row, stream, first: bool):
        def fn():
            cur = torch.cuda.current_stream()
            stream.wait_stream(cur)
            if first:
                with torch.cuda.stream(stream):
                    r = row()
                o = band()
            else:
                o = band()
                with torch.cuda.stream(stream):
                    r = row()
            cur.wait_stream(stream)
            o[:, :, :1] = r
            return o

        return fn

    return {
        "library (row in the band's programs, merged)": library,
        "band + global key only (no row)": band,
        "flash row alone": flash_row,
        "cuDNN row alone": cudnn_row,
        "band, then flash row": in_turn(flash_row),
        "band, then cuDNN row": in_turn(cudnn_row),
        "flash row forked first, band": forked(flash_row, side, True),
        "band, flash row forked after (high priority)": forked(flash_row, high, False),
        "cuDNN row forked first, band": forked(cudnn_row, side, True),
        "band, cuDNN row forked after (high priority)": forked(cudnn_row, high, False),
        "flex": flex_fn(n, q, k, v),
    }


def one(n: int, rows: list) -> None:
    g = torch.Generator(device=DEV).manual_seed(n)
    q, k, v = (torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(3))
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    with torch.no_grad():
        ref = attend(q, k, v, SlidingWindow(512), global_mask=gm, backend="gpu")
        for name, fn in variants(n, q, k, v, gm).items():
            try:
                out = fn()
                err = rel(out, ref if out.shape == ref.shape else ref[:, :, :1])
                print(n, name, f"error {err:.2e}", flush=True)
                if err > 1e-2:
                    rows.append((n, name, f"error {err:.1e}", None))
                    continue
                host = do_bench(fn, warmup=20, rep=60, return_mode="median")
                try:
                    gpu = do_bench_cudagraph(fn, rep=40)
                except Exception as ex:  # (not capturable)
                    gpu = f"{type(ex).__name__}"
                    torch.cuda.synchronize()
                rows.append((n, name, round(host, 4), gpu if isinstance(gpu, str) else round(gpu, 4)))
            except Exception as ex:
                rows.append((n, name, f"{type(ex).__name__}: {str(ex)[:80]}", None))
            print(rows[-1], flush=True)
    flex = {r[1]: r for r in rows if r[0] == n}.get("flex")
    if flex and isinstance(flex[2], float):
        for r in list(rows):
            if r[0] == n and r[1] != "flex" and isinstance(r[2], float):
                i = rows.index(r)
                gpu_ratio = flex[3] / r[3] if isinstance(r[3], float) and isinstance(flex[3], float) else None
                rows[i] = (*r, f"{flex[2] / r[2]:.2f}x", f"{gpu_ratio:.2f}x" if gpu_ratio else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    args = ap.parse_args()
    rows: list = []
    for n in args.sizes:
        one(n, rows)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "window_row_stream.json"), "w") as f:
            json.dump(rows, f)
    table(["n", "variant", "host incl. ms", "GPU-only ms", "Flex / it (host)", "Flex / it (GPU)"], rows)


if __name__ == "__main__":
    main()
