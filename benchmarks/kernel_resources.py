"""Registers, spills and shared memory of the kernels a gpu-backend call launches, compiled for the
H100 (sm_90) on a machine with no GPU (Triton's compiler and its bundled ptxas / cuobjdump).

The call runs on CPU tensors with the launches caught (nothing runs); each kernel specialisation
is compiled in full and its cubin's resource usage read. Use it before spending device time: a
kernel at 255 registers with a stack (spills), or falling back from warpgroup MMA (wgmma) to
mma.sync, shows here; so do the innermost loops' sizes in SASS instructions (a band kernel's
edge loops, whole-tile loop, edge loops, in address order), with their global loads, warpgroup MMAs
and exp2s. The arguments are specialised as Triton's launch does (16-byte-aligned pointers and
integers divisible by 16 marked, integers equal to 1 made constants). bf16, batch 1, 12 heads,
head_dim 64, 4K tokens.

    PYTHONPATH=src python benchmarks/kernel_resources.py [--cases window window_global bigbird lsh]
"""

from __future__ import annotations

import argparse
import re

import torch

import longseq.attention as A
from longseq.attention import LSH, BlockSparse, SlidingWindow, attend
from longseq.attention.kernels import listed, lsh_sorted
from longseq.attention.kernels.launch import compile_sm90

N, H, D = 4096, 12, 64
CASES = {
    "window": (SlidingWindow(512), 0),
    "window_global": (SlidingWindow(512), 1),
    "window_keys_only": (SlidingWindow(512, global_rows=False), 1),
    "bigbird": (BlockSparse(64, 3, seed=0), 0),
    "lsh": (LSH(1, 64, 64, seed=0), 0),
}


def launches(pattern, glob: int) -> list[tuple]:
    """(kernel, pointers, scalars, constexprs and options) of one forward + backward call."""
    got: list[tuple] = []

    def catch(fn, grid, ptrs, scalars, consts, descs=()) -> None:
        got.append((fn, ptrs, scalars, dict(consts.kwargs), tuple(descs)))

    saved = listed.launch, lsh_sorted.launch, A._gpu_available, listed._pdl
    listed.launch = lsh_sorted.launch = catch
    A._gpu_available = lambda q: True
    listed._pdl = lambda x: True  # (as on an H100)
    try:
        q, k, v = (torch.randn(1, H, N, D, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        k = q if isinstance(pattern, LSH) else k
        gm = None
        if glob:
            gm = torch.zeros(1, N, dtype=torch.bool)
            gm[:, :glob] = True
        out = attend(q, k, v, pattern, global_mask=gm, backend="gpu")
        torch.autograd.grad(out, [q, v] if k is q else [q, k, v], torch.ones_like(out))
    finally:
        listed.launch, lsh_sorted.launch, A._gpu_available, listed._pdl = saved
    return got


def resources(fn, ptrs, scalars, kwargs: dict, descs: tuple = ()) -> dict:
    r = compile_sm90(fn, ptrs, scalars, kwargs, descs)
    ptx = r.pop("ptx")
    return {**r, "wgmma": "wgmma" in ptx, "mma.sync": "mma.sync" in ptx, "loops": inner_loops(r.pop("sass"))}


def inner_loops(sass: str) -> list[tuple[int, int, int, int]]:
    """The SASS's innermost loops (a backward branch whose body holds no other), in address order:
    (instructions, of them global loads, warpgroup MMAs, exp2s)."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)\S*(.*)", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2), m.group(3)))
    spans = []
    for addr, op, rest in ins:
        target = re.search(r"0x([0-9a-f]+)", rest) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            spans.append((int(target.group(1), 16), addr))
    inner = [(a, b) for a, b in spans if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    out = []
    for a, b in sorted(inner):
        body = [op for addr, op, _ in ins if a <= addr <= b]
        out.append((len(body), body.count("LDG"), body.count("HGMMA"), body.count("MUFU")))
    return [x for x in out if x[0] > 8]  # (not the 2-instruction waits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    args = ap.parse_args()
    print(
        "| case | kernel | regs | stack (spills) | dynamic smem | wgmma | mma.sync | warps | stages "
        "| inner loops: instructions (global loads, MMAs, exp2s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        seen = set()
        for fn, ptrs, scalars, kwargs, descs in launches(*CASES[name]):
            key = (fn.__name__, tuple(sorted(kwargs.items())))
            if key in seen:
                continue
            seen.add(key)
            r = resources(fn, ptrs, scalars, kwargs, descs)
            print(
                f"| {name} | {fn.__name__} | {r['regs']} | {r['stack']} | {r['smem']} | {r['wgmma']} | "
                f"{r['mma.sync']} | {r.get('num_warps', '')} | {r.get('num_stages', '')} | "
                + ", ".join(f"{n} ({g}, {m}, {e})" for n, g, m, e in r["loops"])
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
