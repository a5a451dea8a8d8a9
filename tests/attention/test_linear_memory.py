"""The torch backend never builds a (seq x seq) tensor: 131,072 tokens fit in a few GiB on the CPU.

Each pattern runs forward and backward in a fresh process whose address space is capped (setrlimit)
at what it held before the call plus a bound that one (seq x seq) float32 tensor (64 GiB at this
length) would break many times over: an allocation past the cap fails, so the bound is hard.
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
backend = sys.argv[4]
qs = q[:, :, :256]
out = attend(qs, qs if k is q else k[:, :, :256], v[:, :, :256], pattern, backend=backend)  # warm up
out.sum().backward()
vm = [line for line in open("/proc/self/status") if line.startswith("VmSize")][0]
cap = int(vm.split()[1]) * 1024 + int(float(sys.argv[3]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = attend(q, k, v, pattern, backend=backend)
out.sum().backward()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ok = bool(torch.isfinite(out).all()) and tuple(out.shape) == (1, 1, n, 64)
print(json.dumps({"extra_gib": (peak - before) / 2**20, "ok": ok}))
"""


def peak_extra_gib(pattern: str, seq: int, bound_gib: float = BOUND_GIB, backend: str = "torch") -> float:
    """Run forward + backward with the address space capped at its size before the call + bound."""
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, pattern, str(seq), str(bound_gib), backend],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, (
        f"{pattern} at {seq} tokens failed within {bound_gib} GiB: {run.stderr[-2000:]}"
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"]
    return result["extra_gib"]


@pytest.mark.parametrize(
    "pattern",
    ["SlidingWindow(512)", "BlockSparse(64, 3)", "LocalChunks(64)", "LSH(1, 2048, 64, seed=0)"],
)
def test_131k_tokens_forward_backward_in_linear_memory(pattern: str) -> None:
    extra = peak_extra_gib(pattern, SEQ)  # fails if the call needs more than BOUND_GIB more memory
    assert extra < BOUND_GIB < QUADRATIC_GIB / 10


def test_the_cap_catches_a_quadratic_path() -> None:
    """The harness is not vacuous: the dense reference (32K x 32K scores, 4 GiB) does not fit the cap."""
    with pytest.raises(AssertionError, match="failed within"):
        peak_extra_gib("SlidingWindow(512)", 32_768, bound_gib=2.0, backend="reference")
    assert peak_extra_gib("SlidingWindow(512)", 32_768, bound_gib=2.0) < 2.0  # while the torch path fits
