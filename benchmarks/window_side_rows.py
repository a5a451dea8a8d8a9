"""A sliding window's global row by its own kernel (`kernels/side_rows.py`): as the band's
programmatic dependent launch (tail: its programs fill the band's last wave), or on a side stream;
against the band taking it (`_flash._band_rows` and the band merge, the form before), the band with
the global token as a key only (no row: the floor), and FlexAttention with the same mask, in one
run. SlidingWindow(512) + token 0 global, bf16, batch 1, 12 heads, head_dim 64. Tail variants: key
tiles a program, pipeline stages, the band's register cap.

Every variant is checked first against the fp32 dense reference of the same mask (relative error;
the band-rows form's too). Times: do_bench of the eager call (host incl.) and of its CUDA-graph replay
(GPU-only), ms; forward without gradients, and forward + backward for the default, the band-rows
form and Flex. --profile: each kernel's mean GPU time at the first size (torch.profiler).

    PYTHONPATH=src:benchmarks python benchmarks/window_side_rows.py [--sizes 16384 65536] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import SlidingWindow, attend
from longseq.attention.kernels import side_rows
from window_tma import rel, table  # (benchmarks/ is the script's directory)

DEV, H, D = "cuda", 12, 64


@contextlib.contextmanager
def setting(
    side: bool = True, tail: bool = True, tiles: int = 4, stages: int = 2, cap: int = 128, cores: bool = False
):
    s = side_rows
    saved = (s.SIDE_ROWS[0], s.SIDE_TAIL[0], s.TAIL_TILES[0], s.TAIL_LAUNCH, s.TAIL_BAND_LAUNCH)
    saved += (s.SIDE_ONE_ON_CORES[0],)
    s.SIDE_ROWS[0], s.SIDE_TAIL[0], s.TAIL_TILES[0], s.SIDE_ONE_ON_CORES[0] = side, tail, tiles, cores
    s.TAIL_LAUNCH = {"num_warps": 4, "num_stages": stages}
    s.TAIL_BAND_LAUNCH = {"num_warps": 4, "num_stages": 2, "maxnreg": cap}
    try:
        yield
    finally:
        s.SIDE_ROWS[0], s.SIDE_TAIL[0], s.TAIL_TILES[0], s.TAIL_LAUNCH, s.TAIL_BAND_LAUNCH = saved[:5]
        s.SIDE_ONE_ON_CORES[0] = saved[5]


VARIANTS = {
    "tail, 4 key tiles a program (default)": dict(),
    "tail, 2 key tiles a program": dict(tiles=2),
    "tail, 8 key tiles a program": dict(tiles=8),
    "tail, 16 key tiles a program": dict(tiles=16),
    "tail, 3 stages": dict(stages=3),
    "tail, band capped at 120": dict(cap=120),
    "side stream, tl.dot (call 1's)": dict(tail=False),
    "band rows (before)": dict(side=False),
}
BACKWARD = ("tail, 4 key tiles a program (default)", "band rows (before)")


def flex_fn(n: int):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask(b, h, qi, kv):
        return ((qi - kv).abs() <= 256) | (qi == 0) | (kv == 0)

    bm = create_block_mask(mask, None, None, n, n, device=DEV)
    fx = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: fx(q, k, v, block_mask=bm)


def reference(q, k, v, n: int) -> torch.Tensor:
    """fp32 dense attention under the mask, by blocks of 2048 query rows (no n x n at once)."""
    out = torch.empty(q.shape, device=DEV, dtype=torch.float32)
    qf, kf, vf = q.float(), k.float(), v.float()
    j = torch.arange(n, device=DEV)
    for i0 in range(0, n, 2048):
        i = torch.arange(i0, min(i0 + 2048, n), device=DEV)
        ok = ((i[:, None] - j[None, :]).abs() <= 256) | (i[:, None] == 0) | (j[None, :] == 0)
        s = (qf[:, :, i] @ kf.transpose(-1, -2)) * D**-0.5
        out[:, :, i] = torch.softmax(s.masked_fill(~ok, float("-inf")), -1) @ vf
    return out


def timed(fn) -> tuple:
    host = do_bench(fn, warmup=20, rep=60, return_mode="median")
    try:
        gpu = round(do_bench_cudagraph(fn, rep=40), 4)
    except Exception as ex:  # (not capturable)
        gpu = type(ex).__name__
        torch.cuda.synchronize()
    return round(host, 4), gpu


def one(n: int, rows: list, profile: bool) -> None:
    g = torch.Generator(device=DEV).manual_seed(n)
    q, k, v = (torch.randn(1, H, n, D, device=DEV, dtype=torch.bfloat16, generator=g) for _ in range(3))
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    ref = reference(q, k, v, n)
    pattern, keys = SlidingWindow(512), SlidingWindow(512, global_rows=False)
    fx = flex_fn(n)
    calls = {name: (opts, pattern) for name, opts in VARIANTS.items()}
    calls["band + global key only (no row)"] = ({}, keys)
    for name, (opts, pat) in calls.items():
        with setting(**opts):

            def fwd(pat=pat):
                return attend(q, k, v, pat, global_mask=gm, backend="gpu")

            def fwd_bwd(pat=pat):
                qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
                out = attend(qq, kk, vv, pat, global_mask=gm, backend="gpu")
                return torch.autograd.grad(out, (qq, kk, vv), out)

            with torch.no_grad():
                out = fwd()
            err = rel(out, ref) if pat is pattern else None
            row_err = rel(out[:, :, :1], ref[:, :, :1]) if pat is pattern else None
            with torch.no_grad():
                t = timed(fwd)
            errs = ("", "") if err is None else (f"{err:.2e}", f"{row_err:.2e}")
            rows.append((n, name, "fwd", *t, *errs))
            print(rows[-1], flush=True)
            if name in BACKWARD:
                rows.append((n, name, "fwd+bwd", *timed(fwd_bwd), "", ""))
                print(rows[-1], flush=True)
    flex_out = fx(q, k, v)
    with torch.no_grad():
        rows.append((n, "flex", "fwd", *timed(lambda: fx(q, k, v)), f"{rel(flex_out, ref):.2e}", ""))

    def flex_bwd():
        qq, kk, vv = (t.detach().requires_grad_() for t in (q, k, v))
        out = fx(qq, kk, vv)
        return torch.autograd.grad(out, (qq, kk, vv), out)

    rows.append((n, "flex", "fwd+bwd", *timed(flex_bwd), "", ""))
    flex = {r[2]: r for r in rows if r[0] == n and r[1] == "flex"}
    for i, r in enumerate(rows):
        if r[0] == n and r[1] != "flex" and len(r) == 7:
            f = flex[r[2]]
            gpu = f"{f[4] / r[4]:.2f}x" if isinstance(r[4], float) and isinstance(f[4], float) else ""
            rows[i] = (*r, f"{f[3] / r[3]:.2f}x", gpu)
    if profile:
        for name in BACKWARD:
            with setting(**VARIANTS[name]), torch.no_grad():
                kernels(name, lambda: attend(q, k, v, pattern, global_mask=gm, backend="gpu"))


def kernels(name: str, fn) -> None:
    """Each kernel's mean GPU time over 20 calls (torch.profiler), us, and the span of a call."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
    print(f"\n{name}:")
    for e in prof.key_averages():
        if e.device_time_total > 0:
            print(f"  {e.key[:60]:60s} {e.device_time_total / max(e.count, 1):8.1f} us x {e.count}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    rows: list = []
    for i, n in enumerate(args.sizes):
        one(n, rows, args.profile and i == 0)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "window_side_rows.json"), "w") as f:
            json.dump(rows, f)
    header = ["n", "variant", "mode", "host incl. ms", "GPU-only ms", "error", "row error"]
    table([*header, "Flex / it (host)", "Flex / it (GPU)"], rows)


if __name__ == "__main__":
    main()
