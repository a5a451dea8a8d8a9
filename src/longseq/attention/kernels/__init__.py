"""The `gpu` backend: Triton flash-attention kernels over listed key blocks, with autograd.

`available()` says whether triton imports; `gpu_attention` runs a pattern through the kernels
(CUDA tensors; on CPU only under Triton's interpreter, TRITON_INTERPRET=1, which the tests use).
The kernels live in `_flash.py`, their autograd glue in `listed.py`, the per-pattern glue in
`patterns_gpu.py`, the lean launch path in `launch.py`.
"""

from __future__ import annotations

import functools

import torch

from ..patterns import LSH, BlockSparse, Dense, LocalChunks, Pattern, SlidingWindow

__all__ = ["SUPPORTED", "available", "gpu_attention"]

SUPPORTED = (SlidingWindow, BlockSparse, LocalChunks, LSH)


@functools.cache
def available() -> bool:
    """Whether triton imports (the kernels need it)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@torch.compiler.disable  # the Triton launches run as they are; the model around them compiles
def gpu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    padding: torch.Tensor | None,
    glob: torch.Tensor | None,
    scale: float,
    tokens=None,
    dropout: float = 0.0,
    rows_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Checked arguments as `attend` hands them over -> (batch, heads, seq, head_dim). tokens: the
    `GlobalTokens` of glob, when known. dropout: of the attention weights, inside the kernels.
    rows_out: `attend`'s global_rows_out (SlidingWindow)."""
    from . import patterns_gpu as g

    if isinstance(pattern, SlidingWindow):
        return g.sliding_window_gpu(q, k, v, pattern, padding, glob, scale, tokens, dropout, rows_out)
    if isinstance(pattern, BlockSparse):
        return g.block_sparse_gpu(q, k, v, pattern, padding, scale, dropout)
    if isinstance(pattern, LocalChunks):
        return g.local_chunks_gpu(q, k, v, pattern, padding, scale, dropout)
    if isinstance(pattern, LSH):
        return g.lsh_gpu(q, v, pattern, padding, scale, dropout)
    if isinstance(pattern, Dense) and not pattern.causal:  # a few query rows over many keys
        return g.few_rows_gpu(q, k, v, padding, scale, dropout)
    raise ValueError(f"pattern {type(pattern).__name__} has no gpu kernel")
