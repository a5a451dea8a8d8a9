"""The torch backend never builds a (seq x seq) tensor: 131,072 tokens fit in a few GiB on the CPU.

Each pattern runs forward and backward in a fresh process; its peak resident memory, less what the
process held before the call, must stay under a bound that one (seq x seq) float32 tensor (64 GiB at
this length) would break many times over.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SEQ = 131_072
BOUND_GIB = 4.0
QUADRATIC_GIB = SEQ * SEQ * 4 / 2**30

SCRIPT = """
import json, resource, sys, torch
from longseq.attention import LSH, BlockSparse, LocalChunks, SlidingWindow, attend
torch.manual_seed(0)
n = int(sys.argv[2])
pattern = eval(sys.argv[1])
q, k, v = (torch.randn(1, 1, n, 64, requires_grad=True) for _ in range(3))
if isinstance(pattern, LSH):
    k = q
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = attend(q, k, v, pattern, backend="torch")
out.sum().backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ok = bool(torch.isfinite(out).all()) and tuple(out.shape) == (1, 1, n, 64)
print(json.dumps({"extra_gib": (peak - before) / 2**20, "ok": ok}))
"""


def peak_extra_gib(pattern: str, seq: int) -> float:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, pattern, str(seq)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"]
    return result["extra_gib"]


@pytest.mark.parametrize(
    "pattern",
    ["SlidingWindow(512)", "BlockSparse(64, 3)", "LocalChunks(64)", "LSH(1, 2048, 64, seed=0)"],
)
def test_131k_tokens_forward_backward_in_linear_memory(pattern: str) -> None:
    extra = peak_extra_gib(pattern, SEQ)
    assert extra < BOUND_GIB, (
        f"{pattern} at {SEQ} tokens used {extra:.2f} GiB over its inputs; bound {BOUND_GIB} GiB "
        f"(one seq x seq float32 tensor would be {QUADRATIC_GIB:.0f} GiB)"
    )
    half = peak_extra_gib(pattern, SEQ // 2)
    assert extra < 2.6 * half + 0.25, (
        f"{pattern}: doubling the length took memory from {half:.2f} to {extra:.2f} GiB"
    )
