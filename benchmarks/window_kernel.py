"""The sliding-window kernels' variants side by side: band walk (contiguous tiles, unmasked middle)
against the listed walk, over tile sizes, warps and stages, with FlexAttention in the same run.

Each variant is first checked against the listed 64x64 walk at an awkward length (bf16, relative
error of the output and the gradients under 1e-2), then timed: GPU-only (CUDA-graph replay) and
do_bench (host included), forward and forward + backward, bf16, batch 1, 12 heads, head_dim 64,
SlidingWindow(512) with one global token (none at 256K). Prints a table last; JSON in $OUT.

    PYTHONPATH=src python benchmarks/window_kernel.py [--sizes 16384 65536] [--variants all | 0,1,...]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels import listed

DEV = "cuda"
H, D = 12, 64
F, DQ, DKDV = "_fwd_kernel", "_bwd_dq_kernel", "_bwd_dkdv_kernel"
W4, W8 = {"num_warps": 4, "num_stages": 2}, {"num_warps": 8, "num_stages": 2}
S3 = {"num_warps": 4, "num_stages": 3}
R168 = {"num_warps": 4, "num_stages": 2, "maxnreg": 168}
R128 = {"num_warps": 4, "num_stages": 2, "maxnreg": 128}
T64 = {F: (64, 64), DQ: (64, 64), DKDV: (64, 64)}
NO_TMA = {F: False, DQ: False, DKDV: False}
# name -> (band walk?, tiles per kernel (query rows, key rows), launch options per kernel[, TMA loads
# per kernel (default: all)])
VARIANTS: dict[str, tuple] = {
    "list 64x64": (False, {}, {}),
    "band 64x64 (default)": (True, {F: (64, 64), DQ: (64, 64), DKDV: (64, 64)}, {}),
    "band bwd dq128x32 dkdv32x128 4w": (True, {F: (64, 64), DQ: (128, 32), DKDV: (32, 128)}, {}),
    "band bwd dq128x32 dkdv32x128 8w": (
        True, {F: (64, 64), DQ: (128, 32), DKDV: (32, 128)}, {DQ: W8, DKDV: W8},
    ),
    "band bwd dq64x32 dkdv32x64": (True, {F: (64, 64), DQ: (64, 32), DKDV: (32, 64)}, {}),
    "band bwd dq128x64 dkdv64x128 8w": (
        True, {F: (64, 64), DQ: (128, 64), DKDV: (64, 128)}, {DQ: W8, DKDV: W8},
    ),
    "band bwd dkdv64x128 4w": (True, {F: (64, 64), DQ: (64, 64), DKDV: (64, 128)}, {}),
    "band fwd 128x32": (True, {F: (128, 32), DQ: (64, 64), DKDV: (64, 64)}, {}),
    "band fwd 64x32": (True, {F: (64, 32), DQ: (64, 64), DKDV: (64, 64)}, {}),
    "band fwd 128x64 8w": (True, {F: (128, 64), DQ: (64, 64), DKDV: (64, 64)}, {F: W8}),
    "band fwd 64x128 4w": (True, {F: (64, 128), DQ: (64, 64), DKDV: (64, 64)}, {}),
    "band fwd 64x128 8w": (True, {F: (64, 128), DQ: (64, 64), DKDV: (64, 64)}, {F: W8}),
    "band fwd 128x128 8w": (True, {F: (128, 128), DQ: (64, 64), DKDV: (64, 64)}, {F: W8}),
    "band 64x64 3 stages": (True, {F: (64, 64), DQ: (64, 64), DKDV: (64, 64)}, {F: S3, DQ: S3, DKDV: S3}),
    "band dq, dkdv 64x64 8w": (True, {F: (64, 64), DQ: (64, 64), DKDV: (64, 64)}, {DQ: W8, DKDV: W8}),
    "band dkdv 64x128 8w": (True, {F: (64, 64), DQ: (64, 64), DKDV: (64, 128)}, {DKDV: W8}),
    "band dq 128x64 8w": (True, {F: (64, 64), DQ: (128, 64), DKDV: (64, 64)}, {DQ: W8}),
    "band 64x64 no TMA": (True, T64, {}, NO_TMA),
    "band TMA fwd, dQ; dK/dV pointers": (True, T64, {}, {F: True, DQ: True, DKDV: False}),
    "band TMA, dK/dV maxnreg 168": (True, T64, {DKDV: R168}),
    "band no TMA, dK/dV maxnreg 168": (True, T64, {DKDV: R168}, NO_TMA),
    "band TMA, dQ and dK/dV maxnreg 168": (True, T64, {DQ: R168, DKDV: R168}),
    "band TMA, fwd r128, dQ r168, dK/dV r168": (True, T64, {F: R128, DQ: R168, DKDV: R168}),
    "band TMA, fwd r128, dQ r128, dK/dV r168": (True, T64, {F: R128, DQ: R128, DKDV: R168}),
    "band TMA fwd, dQ; fwd r128, dQ r168; dK/dV pointers": (
        True, T64, {F: R128, DQ: R168}, {F: True, DQ: True, DKDV: False},
    ),
    "band TMA, fwd r128, dQ r168, dK/dV uncapped": (True, T64, {F: R128, DQ: R168}),
}  # fmt: skip
DEFAULT = "band 64x64 (default)"


def use(name: str) -> None:
    band, tiles, launch, *tma = VARIANTS[name]
    listed.tune_band(tiles or VARIANTS[DEFAULT][1], launch, band=band)
    listed.TMA.update(tma[0] if tma else {F: True, DQ: True, DKDV: True})


def inputs(n: int, glob: bool, seed: int = 0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q, k, v = (
        torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(True)
        for _ in range(3)
    )
    gm = None
    if glob:
        gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
        gm[:, 0] = True
    return q, k, v, gm, torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g)


def run(q, k, v, gm, go, grad: bool):
    out = attend(q, k, v, SlidingWindow(512), global_mask=gm, backend="gpu")
    if not grad:
        return [out]
    return [out, *torch.autograd.grad(out, [q, k, v], go)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--variants", default="all", help="comma-separated indices into VARIANTS, or all")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    names = list(VARIANTS)
    variants = names if args.variants == "all" else [names[int(i)] for i in args.variants.split(",")]
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    rows: list[dict] = []
    # correctness of each variant against the listed 64x64 walk, awkward length, padding-free
    cq = inputs(3001, True, seed=1)
    use(names[0])
    want = run(*cq, grad=True)
    for var in variants:
        use(var)
        got = run(*cq, grad=True)
        errs = [rel(a, b) for a, b in zip(got, want, strict=True)]
        print("check", var, [f"{e:.2e}" for e in errs], flush=True)
        assert all(e < 1e-2 for e in errs), (var, errs)
    for n in args.sizes:
        glob = n <= 65536
        q, k, v, gm, go = inputs(n, glob)
        label = f"window512{'+1g' if glob else ''}"
        for var in variants:
            use(var)
            for mode in ("fwd", "fwd+bwd"):
                fn = lambda q=q, k=k, v=v, gm=gm, go=go, g=mode != "fwd": run(q, k, v, gm, go, g)  # noqa: E731
                try:
                    graph = do_bench_cudagraph(fn, rep=40)
                    host = do_bench(fn, warmup=20, rep=60, return_mode="median")
                except Exception as ex:
                    print("failed", var, n, mode, type(ex).__name__, str(ex)[:300], flush=True)
                    continue
                row = dict(pattern=label, n=n, mode=mode, impl=var, graph_ms=graph, ms=host)
                rows.append(row)
                print(row, flush=True)
        if glob and not args.no_flex:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            flex = torch.compile(flex_attention, dynamic=False)

            def mask(b, h, qi, kv):
                return ((qi - kv).abs() <= 256) | (qi == 0) | (kv == 0)

            bm = create_block_mask(mask, None, None, n, n, device=DEV)
            for mode in ("fwd", "fwd+bwd"):

                def fn(mode=mode, q=q, k=k, v=v, go=go, bm=bm, flex=flex):
                    out = flex(q, k, v, block_mask=bm)
                    return out if mode == "fwd" else torch.autograd.grad(out, [q, k, v], go)

                graph = do_bench_cudagraph(fn, rep=40)
                host = do_bench(fn, warmup=20, rep=60, return_mode="median")
                rows.append(dict(pattern=label, n=n, mode=mode, impl="flex", graph_ms=graph, ms=host))
                print(rows[-1], flush=True)
        del q, k, v, gm, go
        torch.cuda.empty_cache()
    use(DEFAULT)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "window_kernel.json"), "w") as f:
        json.dump(rows, f, indent=1)
    flex_ms = {(r["n"], r["mode"]): r["ms"] for r in rows if r["impl"] == "flex"}
    flex_graph = {(r["n"], r["mode"]): r["graph_ms"] for r in rows if r["impl"] == "flex"}
    print("\n| n | mode | impl | GPU-only ms | do_bench ms | Flex / longseq, GPU-only | do_bench |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f, fg = flex_ms.get((r["n"], r["mode"])), flex_graph.get((r["n"], r["mode"]))
        ratio = f"{f / r['ms']:.2f}x" if f and r["impl"] != "flex" else ""
        gratio = f"{fg / r['graph_ms']:.2f}x" if fg and r["impl"] != "flex" else ""
        times = f"{r['graph_ms']:.4f} | {r['ms']:.4f}"
        print(f"| {r['n']} | {r['mode']} | {r['impl']} | {times} | {gratio} | {ratio} |")


if __name__ == "__main__":
    main()
