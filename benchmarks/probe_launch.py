"""Where a gpu-backend call spends its time: host cost of one Triton launch (normal vs direct),
host / wall / GPU time of attend(), and GPU-only kernel times (CUDA-graph replay) per tile config.

    PYTHONPATH=src python benchmarks/probe_launch.py
"""

from __future__ import annotations

import time

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import BlockSparse, SlidingWindow, attend
from longseq.attention.kernels import listed, patterns_gpu

DEV = "cuda"
H, D = 12, 64


def host_wall(fn, reps=50):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t) / reps * 1e6
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / reps * 1e6
    return host, wall


def qkv(n, grad=True):
    g = torch.Generator(device=DEV).manual_seed(0)
    return [
        torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(grad)
        for _ in range(3)
    ]


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    rows = []
    n = 16384
    q, k, v = qkv(n)
    w = SlidingWindow(512)
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    go = torch.randn_like(q)

    # trivial kernel, many args vs few
    import triton
    import triton.language as tl

    @triton.jit
    def tiny(X, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, B: tl.constexpr):
        tl.store(X + tl.program_id(0), a0 + a9)

    @triton.jit
    def tiny1(X, B: tl.constexpr):
        tl.store(X + tl.program_id(0), 1.0)

    x = torch.zeros(64, device=DEV)
    rows.append(("tiny kernel 1 arg [grid]", *host_wall(lambda: tiny1[(1,)](x, B=1), 500)))
    rows.append(("tiny kernel 11 args [grid]", *host_wall(lambda: tiny[(1,)](x, *range(3, 13), B=1), 500)))
    kern = tiny1[(1,)](x, B=1)
    stream = torch.cuda.current_stream().cuda_stream

    def direct():
        kern.run(1, 1, 1, stream, kern.function, kern.packed_metadata, None, None, None, x, 1)

    try:
        rows.append(("tiny kernel direct .run", *host_wall(direct, 500)))
    except Exception as ex:
        print("direct run failed", type(ex).__name__, ex, flush=True)
    rows.append(("torch.empty", *host_wall(lambda: torch.empty(16, device=DEV), 500)))
    rows.append(("torch add", *host_wall(lambda: x + 1, 500)))

    # the listed forward kernel alone (no autograd)
    plan = listed.window_plan(n, 256, False, q.device, 64, 64)
    kval = patterns_gpu._kval(None, 1, n, q.device)
    with torch.no_grad():
        rows.append(
            (
                "listed_attention window fwd (no grad)",
                *host_wall(lambda: listed.listed_attention(q, k, v, plan, kval, 0.125)),
            )
        )
    rows.append(
        (
            "listed_attention window fwd (grad)",
            *host_wall(lambda: listed.listed_attention(q, k, v, plan, kval, 0.125)),
        )
    )
    for name, fn in [
        ("attend window fwd", lambda: attend(q, k, v, w, backend="gpu")),
        ("attend window+g fwd", lambda: attend(q, k, v, w, global_mask=gm, backend="gpu")),
        (
            "attend window fwd+bwd",
            lambda: torch.autograd.grad(attend(q, k, v, w, backend="gpu"), [q, k, v], go),
        ),
        (
            "attend window+g fwd+bwd",
            lambda: torch.autograd.grad(attend(q, k, v, w, global_mask=gm, backend="gpu"), [q, k, v], go),
        ),
    ]:
        h, wl = host_wall(fn)
        rows.append((name, h, wl))
    bb = BlockSparse(64, 3, seed=0)
    q4, k4, v4 = qkv(4096)
    go4 = torch.randn_like(q4)
    rows.append(("attend bigbird 4K fwd", *host_wall(lambda: attend(q4, k4, v4, bb, backend="gpu"))))
    rows.append(
        (
            "attend bigbird 4K fwd+bwd",
            *host_wall(lambda: torch.autograd.grad(attend(q4, k4, v4, bb, backend="gpu"), [q4, k4, v4], go4)),
        )
    )
    print("\n| what | host us/call | wall us/call |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} |", flush=True)

    # GPU-only time of the same calls (CUDA-graph replay: no host in the way), against do_bench
    print("\n| call | n | graph ms | do_bench ms |\n|---|---|---|---|")
    for n in (16384, 65536):
        q, k, v = qkv(n)
        go = torch.randn_like(q)
        gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
        gm[:, 0] = True
        calls = {
            "window+g fwd": lambda q=q, k=k, v=v, gm=gm: attend(q, k, v, w, global_mask=gm, backend="gpu"),
            "window+g fwd+bwd": lambda q=q, k=k, v=v, gm=gm, go=go: torch.autograd.grad(
                attend(q, k, v, w, global_mask=gm, backend="gpu"), [q, k, v], go
            ),
        }
        for name, f in calls.items():
            g = do_bench_cudagraph(f, rep=50)
            d = do_bench(f, warmup=20, rep=50, return_mode="median")
            print(f"| {name} | {n} | {g:.4f} | {d:.4f} |", flush=True)


if __name__ == "__main__":
    main()
