"""Attention dropout inside the flash kernels: a counter-based keep mask, never stored.

The forward and both backward kernels must drop the same (query, key) pairs, in whatever order they
walk them, so the mask is a pure function of the pair: for a call with seed words (s0, s1), the pair
of query row i and key row j in head z = batch * heads + head is kept when

    mix(row(z, i) ^ (j * 0x85EBCA6B)) >> 1  >=  thr,   thr = round(p * 2**31)

with `row(z, i) = mix(mix(s1 ^ mix(s0 ^ z)) ^ (i * 0x9E3779B9))` and `mix` the lowbias32 integer hash
(all arithmetic mod 2**32). i and j are the kernel's own row indices (the permuted rows of a dilated
window or of LSH's sorted order), so a pair gets one decision whichever kernel and path reaches it.
Extra keys read from a separate tensor (a dilated window's gathered global keys) sit at columns
`Extra.col + slot`, past the key rows. The row hash is one vector per query tile, so a pair costs
one `mix`. Kept weights are scaled by 1 / (1 - p); the softmax normaliser is the undropped one.

`keep_mask` is the same function in torch (the tests' oracle).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_M32 = 0xFFFFFFFF
_ROW_K = 0x9E3779B9
_COL_K = 0x85EBCA6B


@triton.jit
def _mix(x):
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _row_hash(SEED, z, rows):
    """(M,) int32 query rows -> (M,) uint32 row hashes of head z."""
    s0 = tl.load(SEED).to(tl.uint32, bitcast=True)
    s1 = tl.load(SEED + 1).to(tl.uint32, bitcast=True)
    hz = _mix(s1 ^ _mix(s0 ^ z.to(tl.uint32)))
    return _mix(hz ^ (rows.to(tl.uint32) * 0x9E3779B9))


@triton.jit
def _keep(hr, cols, thr):
    """Row hashes and int32 key rows, broadcast against each other -> kept (bool)."""
    x = _mix(hr ^ (cols.to(tl.uint32) * 0x85EBCA6B))
    return (x >> 1).to(tl.int32, bitcast=True) >= thr


def threshold(p: float) -> int:
    """The int32 threshold of drop probability p (0 <= p < 1)."""
    return min(round(p * 2**31), 2**31 - 1)


def kernel_args(p: float) -> tuple[float, int]:
    """The kernels' (rdrop, thr) for drop probability p: (1 / (1 - p), threshold), or (1, 0) for none."""
    return (1.0 / (1.0 - p), threshold(p)) if p > 0 else (1.0, 0)


def new_seed(device: torch.device) -> torch.Tensor:
    """Two random int32 seed words on `device`, from torch's generator (torch.manual_seed applies)."""
    return torch.randint(-(2**31), 2**31 - 1, (2,), dtype=torch.int32, device=device)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    # (x * c) mod 2**32 in int64 without overflow: c split in 16-bit halves
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix_torch(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keep_mask(
    seed: torch.Tensor,
    z: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    p: float,
) -> torch.Tensor:
    """The kernels' keep decision for broadcastable int tensors z, rows, cols -> bool."""
    s0, s1 = (int(w) & _M32 for w in seed.cpu().tolist())
    z, rows, cols = (t.long() for t in (z, rows, cols))
    hz = _mix_torch(s1 ^ _mix_torch(s0 ^ (z & _M32)))
    hr = _mix_torch(hz ^ _mul32(rows & _M32, _ROW_K))
    x = _mix_torch(hr ^ _mul32(cols & _M32, _COL_K))
    return (x >> 1) >= threshold(p)
