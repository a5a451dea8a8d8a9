"""The Longformer's global rows (a few query rows over every key, `attend(..., Dense())`, which the
gpu backend runs as `patterns_gpu.few_rows_gpu`) against torch's SDPA on the same inputs: host and
GPU time of one row over 16K keys forward + backward, with and without padding, then the eager
Longformer training step of `step_host.py` with each, stepped in turn in one process, and in loops.

    PYTHONPATH=src:benchmarks python benchmarks/few_rows_sdpa.py

Findings: benchmarks/RESULTS.md, thirteenth session (SDPA not landed).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from longseq.attention.kernels import patterns_gpu as g
from step_host import build, make_step

N, H, D = 16384, 12, 64
KERNELS = g.few_rows_gpu


def sdpa_rows(q, k, v, padding, scale, dropout=0.0):
    mask = None if padding is None else padding[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


def op_level() -> None:
    qg = torch.randn(1, H, 1, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (
        torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2)
    )
    do = torch.randn(1, H, 1, D, device="cuda", dtype=torch.bfloat16)
    pad = torch.ones(1, N, dtype=torch.bool, device="cuda")
    pad[:, -100:] = False
    for name, fn in (("kernels", KERNELS), ("sdpa", sdpa_rows)):
        for padding in (None, pad):

            def call(fn=fn, padding=padding) -> None:
                o = fn(qg, k, v, padding, D**-0.5)
                torch.autograd.grad(o, [qg, k, v], do)

            ref = KERNELS(qg, k, v, padding, D**-0.5).float()
            diff = (fn(qg, k, v, padding, D**-0.5).float() - ref).abs()
            for _ in range(5):
                call()
            hosts = []
            for _ in range(30):
                torch.cuda.synchronize()
                t = time.perf_counter()
                call()
                hosts.append((time.perf_counter() - t) * 1e3)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    call()
                torch.cuda.synchronize()
            kern = [e for e in prof.key_averages() if e.device_time_total and e.cpu_time_total == 0]
            gpu = sum(e.device_time_total for e in kern) / 10 / 1e3
            top = sorted(((round(e.device_time_total / 10, 1), e.key[:50]) for e in kern), reverse=True)[:4]
            hosts.sort()
            print(
                f"{name} padding={padding is not None}: host fwd+bwd ms {hosts[15]:.3f}, GPU ms {gpu:.4f}, "
                f"max diff {diff.max().item():.2e}; kernels (us) {top}",
                flush=True,
            )


def step_level() -> None:
    model, ids, glob = build(N)
    step = make_step(model, ids, glob, fresh=True)
    times: dict[str, list[tuple[float, float]]] = {"kernels": [], "sdpa": []}
    fns = {"kernels": KERNELS, "sdpa": sdpa_rows}
    for fn in fns.values():
        g.few_rows_gpu = fn
        for _ in range(5):
            step()
    torch.cuda.synchronize()
    for i in range(80):
        name = "kernels" if i % 2 == 0 else "sdpa"
        g.few_rows_gpu = fns[name]
        torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        host = time.perf_counter() - t
        torch.cuda.synchronize()
        times[name].append((host * 1e3, (time.perf_counter() - t) * 1e3))
    print("\n| step | host ms median | host ms min | wall ms median |\n|---|---|---|---|")
    for name, rows in times.items():
        hosts, walls = sorted(h for h, _ in rows), sorted(w for _, w in rows)
        print(f"| {name}, in turn | {hosts[40 // 2]:.2f} | {hosts[0]:.2f} | {walls[40 // 2]:.2f} |")
    for name in ("kernels", "sdpa", "kernels", "sdpa"):  # back to back, as a training loop
        g.few_rows_gpu = fns[name]
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        print(f"| {name}, a loop of 20 | | | {(time.perf_counter() - t) / 20 * 1e3:.2f} |")
    g.few_rows_gpu = KERNELS


if __name__ == "__main__":
    op_level()
    step_level()
