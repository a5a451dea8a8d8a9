"""Rows that see every key (global queries, BigBird's global blocks), split over key segments and
merged by LSE: in launches of their own, or in the main launches (`listed.ALONG`: their programs
first, overlapping the main plan's); for a window's rows, taken by the band's own programs, each
over its own tile of keys (`listed.BAND_ROWS`); side by side, with the window's cost with no global
token and with global keys only (no global rows).

Each variant is first checked against the first at an awkward length (bf16, relative error of the
output and the gradients under 1e-2), then timed GPU-only (CUDA-graph replay) and with do_bench
(host included), and each is run 50 times at 16K for the same bits. bf16, batch 1, 12 heads,
head_dim 64. Table last; JSON in $OUT. --profile prints
the GPU time of each kernel instead.

    PYTHONPATH=src python benchmarks/split_rows.py [--sizes 4096 16384 65536] [--variants 1,3]
        [--cases window,bigbird] [--profile [--every-case]]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from triton.testing import do_bench, do_bench_cudagraph

from longseq.attention import BlockSparse, Dense, SlidingWindow, attend
from longseq.attention.kernels import listed

DEV = "cuda"
H, D = 12, 64
SPLIT = ("window512+1g", "bigbird64 r3", "1 row over all keys")  # the cases with a split launch
WINDOW = ("window512+1g", "window512 +1g keys only")  # the cases the band's own knobs change
# name -> (whether `Rows` may run in the main launches, up to how many keys: listed.ALONG_MAX_KEYS;
# whether the band's programs take a window's rows: listed.BAND_ROWS)
VARIANTS = {
    "rows apart": (False, 0, False),
    "rows along": (True, 16384, False),
    "rows along, any length": (True, 2**31, False),
    "band rows (default)": (True, 16384, True),
}
DEFAULT = "band rows (default)"


def use(name: str) -> None:
    listed.ALONG[0], listed.ALONG_MAX_KEYS, listed.BAND_ROWS[0] = VARIANTS[name]


def tensors(n: int, rows: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(seed)
    shapes = [(1, H, rows or n, D), (1, H, n, D), (1, H, n, D), (1, H, rows or n, D)]
    out = [torch.randn(s, device=DEV, dtype=torch.bfloat16, generator=g) for s in shapes]
    for t in out[:3]:
        t.requires_grad_(True)
    return out  # q, k, v, dout


def cases(n: int) -> dict:
    """name -> fn(grad) returning the output (and the gradients)."""
    gm = torch.zeros(1, n, dtype=torch.bool, device=DEV)
    gm[:, 0] = True
    q, k, v, go = tensors(n)
    qr, kr, vr, gor = tensors(n, rows=1)

    def run(fn, ins, go):
        def call(grad: bool):
            out = fn()
            return [out] if not grad else [out, *torch.autograd.grad(out, ins, go)]

        return call

    return {
        "window512": run(lambda: attend(q, k, v, SlidingWindow(512), backend="gpu"), [q, k, v], go),
        "window512 +1g keys only": run(
            lambda: attend(q, k, v, SlidingWindow(512, global_rows=False), global_mask=gm, backend="gpu"),
            [q, k, v],
            go,
        ),
        "window512+1g": run(
            lambda: attend(q, k, v, SlidingWindow(512), global_mask=gm, backend="gpu"), [q, k, v], go
        ),
        "bigbird64 r3": run(
            lambda: attend(q, k, v, BlockSparse(64, 3, seed=0), backend="gpu"), [q, k, v], go
        ),
        "1 row over all keys": run(lambda: attend(qr, kr, vr, Dense(), backend="gpu"), [qr, kr, vr], gor),
    }


ONLY: list[str] = []  # --cases


def picked(name: str) -> bool:
    return not ONLY or any(name.startswith(c) for c in ONLY)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def profile(n: int, variants: list[str], every: bool = False) -> None:
    """GPU time per kernel (torch profiler, 10 calls) of the split cases at n (every: of every case,
    the window with no global token and with global keys only too), per variant."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, fn in cases(n).items():
        if (name not in SPLIT and not every) or not picked(name):
            continue
        for t in variants:
            use(t)
            for grad in (False, True):
                fn(grad)
                torch.cuda.synchronize()
                with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(10):
                        fn(grad)
                    torch.cuda.synchronize()
                times: dict[str, list[float]] = {}
                for ev in prof.events():
                    if ev.device_type == torch.autograd.DeviceType.CUDA:
                        times.setdefault(ev.name[:40], []).append(ev.device_time)
                cells = ", ".join(
                    f"{k} {len(v) // 10}x {sum(v) / 10:.1f}us"
                    for k, v in sorted(times.items(), key=lambda x: -sum(x[1]))
                )
                print(f"PROFILE {name} n={n} {t} {'fwd+bwd' if grad else 'fwd'}: {cells}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536])
    ap.add_argument("--variants", default="all", help="comma-separated indices into VARIANTS, or all")
    ap.add_argument("--profile", action="store_true", help="GPU time per kernel instead of timings")
    ap.add_argument("--every-case", action="store_true", help="--profile: the cases with no split launch too")
    ap.add_argument("--cases", default="", help="only the cases whose names start so (comma-separated)")
    args = ap.parse_args()
    ONLY[:] = [c for c in args.cases.split(",") if c]
    names = list(VARIANTS)
    targets = names if args.variants == "all" else [names[int(i)] for i in args.variants.split(",")]
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    if args.profile:
        for n in args.sizes:
            profile(n, targets, args.every_case)
        return
    check = cases(3001)
    use(targets[0])
    want = {name: fn(True) for name, fn in check.items()}
    for t in targets:
        use(t)
        for name, fn in check.items():
            errs = [rel(a, b) for a, b in zip(fn(True), want[name], strict=True)]
            print("check", t, name, [f"{e:.1e}" for e in errs], flush=True)
            assert all(e < 1e-2 for e in errs), (t, name, errs)
    # the same bits every call (no race between the band's programs and the merge)
    for t in targets:
        use(t)
        fn = cases(16384)["window512+1g"]
        first = fn(False)[0].clone()
        same = all(torch.equal(fn(False)[0], first) for _ in range(50))
        print("repeat", t, "50 calls, the same bits:", same, flush=True)
        assert same, t
    rows: list[dict] = []
    for n in args.sizes:
        for name, fn in cases(n).items():
            if not picked(name):
                continue
            every = name in SPLIT or name in WINDOW
            for t in targets if every else targets[-1:]:  # the others have no split launch
                use(t)
                for mode in ("fwd", "fwd+bwd"):
                    f = lambda fn=fn, g=mode != "fwd": fn(g)  # noqa: E731
                    try:
                        graph = do_bench_cudagraph(f, rep=40)
                        host = do_bench(f, warmup=20, rep=60, return_mode="median")
                    except Exception as ex:
                        print("failed", name, n, t, mode, type(ex).__name__, str(ex)[:300], flush=True)
                        continue
                    row = dict(
                        case=name, n=n, variant=t, mode=mode, gpu_ms=round(graph, 4), ms=round(host, 4)
                    )
                    rows.append(row)
                    print(row, flush=True)
    use(DEFAULT)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "split_rows.json"), "w") as f:
            json.dump(rows, f, indent=1)
    print("\n| case | n | mode | " + " | ".join(targets) + " |")
    print("|---|---|---|" + "---|" * len(targets))
    keys = sorted({(r["case"], r["n"], r["mode"]) for r in rows}, key=lambda x: (x[1], x[0], x[2]))
    for case, n, mode in keys:
        got = {r["variant"]: r for r in rows if (r["case"], r["n"], r["mode"]) == (case, n, mode)}
        cells = [f"{got[t]['gpu_ms']:.3f} ({got[t]['ms']:.3f})" if t in got else "" for t in targets]
        print(f"| {case} | {n} | {mode} | " + " | ".join(cells) + " |")
    print("(GPU-only ms, do_bench ms with the host in brackets)")


if __name__ == "__main__":
    main()
