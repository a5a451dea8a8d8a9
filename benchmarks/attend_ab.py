"""Two trees of longseq's `attend` side by side in one process: SlidingWindow(512) + token 0 global,
bf16, batch 1, 12 heads, head_dim 64, forward and forward + backward (inputs that need gradients, as
`attention.py` times them), each tree timed in turn over several rounds so that drift hits both;
FlexAttention with the same mask once per length for the ratio. Outputs are checked against each
other first; --no-pdl adds this tree with `listed.PDL_MERGE` off. Times: do_bench of the eager call
(host incl.) and CUDA-graph replay (GPU-only), ms, the median over the rounds.

The other tree is a copy of the package under another name, e.g. for the last commit:

    mkdir -p /tmp/ab && git archive HEAD src/longseq | tar -x -C /tmp/ab \\
        && mv /tmp/ab/src/longseq /tmp/ab/longseq_old
    PYTHONPATH=src:benchmarks:/tmp/ab python benchmarks/attend_ab.py [--other longseq_old] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib
import statistics

import torch
from triton.testing import do_bench, do_bench_cudagraph

from window_row_stream import flex_fn  # (benchmarks/ is the script's directory)
from window_tma import rel, table

DEV, H, D = "cuda", 12, 64


# pad: the last tenth of the tokens; drop: dropout 0.1. Only plain is timed against Flex.
CASES = ("plain", "causal", "pad", "drop")


def calls(pkg, q, k, v, gm, go, pdl: bool = True, case: str = "plain") -> dict:
    attn = importlib.import_module(f"{pkg}.attention")
    listed = importlib.import_module(f"{pkg}.attention.kernels.listed")
    w = attn.SlidingWindow(512, causal=case == "causal")
    pm = None
    if case == "pad":
        pm = torch.ones(gm.shape, dtype=torch.bool, device=gm.device)
        pm[:, -(gm.shape[1] // 10) :] = False

    def fwd():
        if hasattr(listed, "PDL_MERGE"):
            listed.PDL_MERGE[0] = pdl
        return attn.attend(
            q, k, v, w, global_mask=gm, padding_mask=pm, dropout=0.1 if case == "drop" else 0.0, backend="gpu"
        )

    def both():
        return torch.autograd.grad(fwd(), [q, k, v], go)

    return {"fwd": fwd, "fwd+bwd": both}


def agree(one: dict, other: dict) -> float:
    """The largest relative difference of two trees' outputs and gradients, each call seeded alike
    (the same dropout mask); nothing of the autograd graphs outlives it (their CUDA-graph capture)."""
    torch.manual_seed(0)
    a = one["fwd+bwd"]()
    torch.manual_seed(0)
    err = max(rel(x, y) for x, y in zip(a, other["fwd+bwd"](), strict=True))
    with torch.no_grad():
        torch.manual_seed(0)
        fa = one["fwd"]()
        torch.manual_seed(0)
        return max(err, rel(fa, other["fwd"]()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", default="longseq_old")
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-pdl", action="store_true", help="also this tree with the band merge's PDL off")
    ap.add_argument("--cases", nargs="+", default=["plain"], choices=CASES, help="Flex only for plain")
    args = ap.parse_args()
    rows = []
    for n, case in ((n, c) for c in args.cases for n in args.sizes):
        g = torch.Generator(device=DEV).manual_seed(n)
        q, k, v = (
            torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_()
            for _ in range(3)
        )
        gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
        gm[:, 0] = True
        go = torch.randn_like(q)
        trees = {
            "longseq": calls("longseq", q, k, v, gm, go, case=case),
            args.other: calls(args.other, q, k, v, gm, go, case=case),
        }
        if args.no_pdl:
            trees["longseq, no PDL"] = calls("longseq", q, k, v, gm, go, pdl=False, case=case)
        for t in list(trees)[1:]:
            err = agree(trees["longseq"], trees[t])
            print(n, case, "longseq and", t, "agree to", f"{err:.2e}", flush=True)
        for t, fns in trees.items():  # a CUDA graph's replay gives the eager call's bits
            if case == "drop":  # (a replay draws a new seed)
                break
            with torch.no_grad():
                eager = fns["fwd"]().clone()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = fns["fwd"]()
                out.zero_()
                graph.replay()
            torch.cuda.synchronize()
            print(n, case, t, "graph replay equal to eager:", bool(torch.equal(out, eager)), flush=True)
        times: dict = {}
        for _ in range(args.rounds):
            for t, fns in trees.items():
                for mode, fn in fns.items():
                    host = do_bench(fn, warmup=20, rep=60, return_mode="median")
                    gpu = do_bench_cudagraph(fn, rep=40)
                    times.setdefault((t, mode), []).append((host, gpu))
        ft: dict = {}
        if case == "plain":
            fx = flex_fn(n, q, k, v)
            ins = [q, k, v]
            flex = {"fwd": fx, "fwd+bwd": lambda fx=fx, ins=ins, go=go: torch.autograd.grad(fx(), ins, go)}
            ft = {m: (do_bench(f, warmup=20, rep=60, return_mode="median"), do_bench_cudagraph(f, rep=40))
                  for m, f in flex.items()}  # fmt: skip
        for (t, mode), got in times.items():
            host = statistics.median(x for x, _ in got)
            gpu = statistics.median(y for _, y in got)
            fh, fg = ft.get(mode, (None, None))
            ratios = (f"{fh / host:.2f}x", f"{fg / gpu:.2f}x") if fh else (None, None)
            rows.append((n, case, mode, t, host, gpu, *ratios))
        for mode, (fh, fg) in ft.items():
            rows.append((n, case, mode, "flex", fh, fg, None, None))
    head = ["n", "case", "mode", "tree", "host incl. ms", "GPU-only ms", "Flex / it (host)"]
    head.append("Flex / it (GPU)")
    table(head, rows)


if __name__ == "__main__":
    main()
