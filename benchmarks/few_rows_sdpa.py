"""The Longformer's global rows (a few query rows over every key, `attend(..., Dense())`, which the
gpu backend runs as `patterns_gpu.few_rows_gpu`) against torch's SDPA on the same inputs: host and
GPU time of G rows over n keys forward, and forward + backward, with and without padding, for each
SDPA backend (flash, cuDNN, memory-efficient, and torch's own pick) at --sizes; whether each call
can be captured in a CUDA graph; then the eager Longformer training step of `step_host.py` with
the kernels and with SDPA, stepped in turn in one process, and in loops (--step).

    PYTHONPATH=src:benchmarks python benchmarks/few_rows_sdpa.py [--sizes 16384 65536 1048576] [--step]

Findings: benchmarks/RESULTS.md, thirteenth and fourteenth sessions.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from longseq.attention.kernels import patterns_gpu as g
from step_host import build, make_step

N, H, D = 16384, 12, 64
LIBRARY = g.few_rows_gpu  # the kernels, or torch's flash kernel where `flash_rows_apply` holds


def kernel_rows(q, k, v, padding, scale, dropout=0.0):
    """few_rows_gpu through the few-rows kernels always (the path is chosen in the forward)."""
    apply = g.flash_rows_apply
    g.flash_rows_apply = lambda *args: False
    try:
        return LIBRARY(q, k, v, padding, scale, dropout)
    finally:
        g.flash_rows_apply = apply


def sdpa_rows(q, k, v, padding, scale, dropout=0.0):
    mask = None if padding is None else padding[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)


def sdpa_with(backend):
    """sdpa_rows with the forward pinned to one SDPA backend (None: torch's own pick)."""
    from torch.nn.attention import sdpa_kernel

    def run(q, k, v, padding, scale, dropout=0.0):
        if backend is None:
            return sdpa_rows(q, k, v, padding, scale, dropout)
        with sdpa_kernel([backend]):
            return sdpa_rows(q, k, v, padding, scale, dropout)

    return run


def measure(call, reps: int) -> tuple[float, float]:
    """(host ms a call, median, with the queue idle before it; GPU ms a call: the kernels' sum)."""
    for _ in range(3):
        call()
    hosts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        call()
        hosts.append((time.perf_counter() - t) * 1e3)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            call()
        torch.cuda.synchronize()
    kern = [e for e in prof.key_averages() if e.device_time_total and e.cpu_time_total == 0]
    return sorted(hosts)[reps // 2], sum(e.device_time_total for e in kern) / 5 / 1e3


def captures(call) -> bool:
    """Whether call (forward + backward) can be captured in a CUDA graph and replayed."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            call()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        graph.replay()
        torch.cuda.synchronize()
        return True
    except Exception as ex:  # a backend that cannot be captured is reported, not fatal
        print("  capture failed:", type(ex).__name__, str(ex)[:120], flush=True)
        torch.cuda.synchronize()
        return False


def op_level(sizes: list[int], rows: int) -> list[tuple]:
    from torch.nn.attention import SDPBackend

    fns = {
        "kernels": kernel_rows,
        "library (few_rows_gpu)": LIBRARY,
        "sdpa (torch's pick)": sdpa_with(None),
        "sdpa flash": sdpa_with(SDPBackend.FLASH_ATTENTION),
        "sdpa cuDNN": sdpa_with(SDPBackend.CUDNN_ATTENTION),
        "sdpa efficient": sdpa_with(SDPBackend.EFFICIENT_ATTENTION),
    }
    table = []
    for n in sizes:
        gen = torch.Generator(device="cuda").manual_seed(n)
        qg = torch.randn(1, H, rows, D, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(
            True
        )
        k, v = (
            torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
            for _ in range(2)
        )
        do = torch.randn(1, H, rows, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        pad = torch.ones(1, n, dtype=torch.bool, device="cuda")
        pad[:, -100:] = False
        reps = 30 if n <= 65536 else 8
        for padding in (None, pad):
            with torch.no_grad():
                ref = kernel_rows(qg, k, v, padding, D**-0.5).float()
            for name, fn in fns.items():
                try:
                    with torch.no_grad():
                        diff = (fn(qg, k, v, padding, D**-0.5).float() - ref).abs().max().item()

                    def fwd(fn=fn, padding=padding, qkv=(qg, k, v)) -> None:
                        with torch.no_grad():
                            fn(*qkv, padding, D**-0.5)

                    def fwd_bwd(fn=fn, padding=padding, qkv=(qg, k, v), do=do) -> None:
                        o = fn(*qkv, padding, D**-0.5)
                        torch.autograd.grad(o, list(qkv), do)

                    hf, gf = measure(fwd, reps)
                    hb, gb = measure(fwd_bwd, reps)
                    graph = captures(fwd_bwd)
                    table.append((n, padding is not None, name, hf, gf, hb, gb, diff, graph))
                except Exception as ex:  # a backend that refuses these inputs is reported, not fatal
                    table.append(
                        (n, padding is not None, name, None, None, None, None, None, type(ex).__name__)
                    )
                print(table[-1], flush=True)
    return table


def step_level() -> None:
    model, ids, glob = build(N)
    step = make_step(model, ids, glob, fresh=True)
    fns = {"kernels": kernel_rows, "library": LIBRARY, "sdpa": sdpa_rows}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():
        g.few_rows_gpu = fn
        for _ in range(5):
            step()
    torch.cuda.synchronize()
    for i in range(40 * len(fns)):
        name = list(fns)[i % len(fns)]
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
    for name in (*fns, *fns):  # back to back, as a training loop
        g.few_rows_gpu = fns[name]
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        print(f"| {name}, a loop of 20 | | | {(time.perf_counter() - t) / 20 * 1e3:.2f} |")
    g.few_rows_gpu = LIBRARY


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536, 1048576])
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--step", action="store_true", help="also the Longformer step with each")
    args = ap.parse_args()
    table = op_level(args.sizes, args.rows)
    if args.step:
        step_level()
    print(
        "\n| n | padding | rows by | fwd host ms | fwd GPU ms | fwd+bwd host ms | fwd+bwd GPU ms "
        "| max diff | graph |\n|---|---|---|---|---|---|---|---|---|"
    )
    for row in table:
        print(
            "| "
            + " | ".join("" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x)) for x in row)
            + " |"
        )


if __name__ == "__main__":
    main()
