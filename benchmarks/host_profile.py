"""Where the host time of a gpu-backend call goes: cProfile of attend() forward + backward
(SlidingWindow(512) + 1 global token, 16K, bf16), of BigBird at 4K and of LSH with its projections
at 16K, top functions by own time.

    PYTHONPATH=src python benchmarks/host_profile.py [--calls 200]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from longseq.attention import LSH, BlockSparse, SlidingWindow, attend
from longseq.layers.projection import project

DEV = "cuda"
H, D = 12, 64


def qkv(n: int) -> list[torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(0)
    return [
        torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(True)
        for _ in range(3)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    q, k, v = qkv(16384)
    gm = torch.zeros(1, 16384, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    go = torch.randn_like(q)
    w = SlidingWindow(512)
    q4, k4, v4 = qkv(4096)
    go4 = torch.randn_like(q4)
    bb = BlockSparse(64, 3, seed=0)
    hidden = torch.randn(1, 16384, H * D, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    wqk, wv = (torch.nn.Linear(H * D, H * D, bias=False, device=DEV, dtype=torch.bfloat16) for _ in range(2))
    lsh = LSH(1, 512, 64, seed=0)
    go_h = torch.randn_like(hidden)

    def lsh_step():
        qk, vv = (t.view(1, -1, H, D).transpose(1, 2) for t in project(hidden, wqk, wv))
        out = attend(qk, qk, vv, lsh, backend="gpu").transpose(1, 2).reshape(hidden.shape)
        return torch.autograd.grad(out, [hidden], go_h)

    cases = {
        "lsh (+proj) 16K fwd+bwd": lsh_step,
        "window+1g 16K fwd": lambda: attend(q, k, v, w, global_mask=gm, backend="gpu"),
        "window+1g 16K fwd+bwd": lambda: torch.autograd.grad(
            attend(q, k, v, w, global_mask=gm, backend="gpu"), [q, k, v], go
        ),
        "bigbird 4K fwd+bwd": lambda: torch.autograd.grad(
            attend(q4, k4, v4, bb, backend="gpu"), [q4, k4, v4], go4
        ),
    }
    for name, fn in cases.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.calls):
            fn()
        host = (time.perf_counter() - t) / args.calls * 1e6
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        torch.cuda.synchronize()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(f"=== {name}: host {host:.1f} us/call (no profiler)\n{s.getvalue()[:6000]}", flush=True)


if __name__ == "__main__":
    main()
