"""Host time of single ops and calls that a Longformer training step makes (16K tokens, hidden 768,
12 heads, one global token, bf16): microseconds of host time per call, from a loop of calls with no
sync inside (the GPU keeps up with all of these), and the GPU time of the same calls.

    PYTHONPATH=src python benchmarks/host_ops.py [--calls 200] [--profile]   # --profile: the ops of
        one Longformer layer's attention, forward + backward, by host time (torch.profiler, 10 calls)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from longseq.attention import Dense, SlidingWindow, attend
from longseq.attention.global_tokens import global_tokens

DEV = "cuda"
N, H, D, V = 16384, 12, 64, 30522


def host_us(fn, calls: int) -> tuple[float, float]:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return host, start.elapsed_time(end) / calls * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    g = torch.Generator(device=DEV).manual_seed(0)
    table = torch.randn(V, H * D, device=DEV, generator=g)
    ids = torch.randint(0, V, (1, N), device=DEV, generator=g)
    flat = ids.view(-1)
    x = torch.randn(1, N, H * D, device=DEV, generator=g)
    q, k, v, kg, vg = (
        torch.randn(1, H, N, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(True)
        for _ in range(5)
    )
    qg = torch.randn(1, H, 1, D, device=DEV, dtype=torch.bfloat16, generator=g).requires_grad_(True)
    go, gog = torch.randn_like(q), torch.randn_like(qg)
    glob = torch.zeros(1, N, dtype=torch.bool, device=DEV)
    glob[:, 0] = True
    pad = torch.ones(1, N, dtype=torch.bool, device=DEV)
    global_tokens(glob, pad)
    w = SlidingWindow(512, global_rows=False)

    def layer_attention():
        rows = attend(qg, kg, vg, Dense(), padding_mask=pad)
        out = attend(q, k, v, w, padding_mask=pad, global_mask=glob, global_rows_out=rows)
        torch.autograd.backward([out], [go])

    def rows_only():
        rows = attend(qg, kg, vg, Dense(), padding_mask=pad)
        torch.autograd.backward([rows], [gog])

    def window_only():
        out = attend(q, k, v, w, padding_mask=pad, global_mask=glob)
        torch.autograd.backward([out], [go])

    cases = {
        "F.embedding fp32 (16K of 30522 x 768)": lambda: F.embedding(ids, table),
        "table.index_select(0, ids)": lambda: table.index_select(0, flat),
        "table[ids]": lambda: table[flat],
        "torch.gather(table, 0, ids expanded)": lambda: table.gather(0, flat[:, None].expand(-1, H * D)),
        "x.flatten(0, 1).index_select(0, ids[:1])": lambda: x.flatten(0, 1).index_select(0, flat[:1]),
        "empty (16K x 768)": lambda: torch.empty(N, H * D, device=DEV),
        "x + x": lambda: x + x,
        "longformer layer attention fwd+bwd (rows + window)": layer_attention,
        "global rows (Dense, few rows) fwd+bwd": rows_only,
        "window + 1 global key fwd+bwd": window_only,
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        layer_attention()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                layer_attention()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=60))
    rows = []
    for name, fn in cases.items():
        host, gpu = host_us(fn, args.calls)
        rows.append((name, host, gpu))
        print(f"{name}: host {host:.1f} us, GPU {gpu:.1f} us", flush=True)
    print("\ncall | host us / call | GPU us / call (host-bound calls: the host's)")
    for name, host, gpu in rows:
        print(f"{name} | {host:.1f} | {gpu:.1f}")


if __name__ == "__main__":
    main()
