"""The attention core: one entry point, `attend(q, k, v, pattern)`, for every pattern and backend.

Backends:
- ``"reference"``: dense float32 attention under the pattern's mask (small lengths only).
- ``"torch"``: chunked / gathered PyTorch, linear in memory, on CPU and GPU, compiles.
- ``"gpu"``: fused GPU kernels (CUDA only), when available.
- ``"auto"``: the fastest available for the inputs' device.
"""

from __future__ import annotations

import torch

from . import kernels
from ._common import check_inputs, default_scale
from .block_sparse import block_sparse_attention
from .dense import dense_attention
from .global_tokens import global_tokens
from .local_chunks import local_chunks_attention
from .lsh import lsh_attention
from .patterns import LSH, BlockSparse, Dense, LocalChunks, Pattern, SlidingWindow
from .reference import reference
from .sliding_window import sliding_window_attention

__all__ = [
    "BACKENDS",
    "LSH",
    "BlockSparse",
    "Dense",
    "LocalChunks",
    "Pattern",
    "SlidingWindow",
    "attend",
    "reference",
]

BACKENDS = ("auto", "reference", "torch", "gpu")


def _gpu_available(q: torch.Tensor) -> bool:
    return q.is_cuda and kernels.available()


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    *,
    padding_mask: torch.Tensor | None = None,
    global_mask: torch.Tensor | None = None,
    backend: str = "auto",
    scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Attention of q over k, v under `pattern`.

    q, k, v: (batch, heads, seq, head_dim). padding_mask: (batch, seq) bool, True = real token;
    padded keys are never attended and padded query rows give zeros. global_mask: (batch, seq)
    bool, True = global token (SlidingWindow only). scale: multiplies the scores, 1/sqrt(head_dim)
    by default. dropout: probability of dropping attention weights (pass 0 in eval); the gpu backend
    drops inside its kernels with a counter-based mask (`kernels/dropout.py`), the torch backend with
    torch's generator, so the two draw different masks from the same seed.
    Returns (batch, heads, seq, head_dim) in q's dtype.

    With `global_mask`, the number of global tokens sizes a tensor, so it is read on the host: once
    per call on the torch backend, once per mask tensor on the gpu backend (kept by the mask's
    identity and version, so layers sharing a mask read it once). Without it, nothing is read back
    and the call compiles with `torch.compile(fullgraph=True)`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if backend == "reference":
        if dropout:
            raise ValueError("the reference backend has no dropout: pass dropout=0.0")
        return reference(q, k, v, pattern, padding_mask=padding_mask, global_mask=global_mask, scale=scale)
    padding, glob = check_inputs(q, k, v, pattern, padding_mask, global_mask)
    if backend == "gpu" and not _gpu_available(q):
        raise ValueError("backend='gpu' needs CUDA tensors and the GPU kernels; use backend='torch'")
    s = default_scale(q.shape[-1], scale)
    fused = backend == "gpu" or (backend == "auto" and _gpu_available(q))
    if fused and isinstance(pattern, kernels.SUPPORTED):
        tokens = None if glob is None else global_tokens(global_mask, padding_mask, glob)
        return kernels.gpu_attention(q, k, v, pattern, padding, glob, s, tokens, dropout)
    if isinstance(pattern, SlidingWindow):
        return sliding_window_attention(q, k, v, pattern, padding, glob, s, dropout)
    if isinstance(pattern, BlockSparse):
        return block_sparse_attention(q, k, v, pattern, padding, s, dropout)
    if isinstance(pattern, LocalChunks):
        return local_chunks_attention(q, k, v, pattern, padding, s, dropout)
    if isinstance(pattern, LSH):
        return lsh_attention(q, v, pattern, padding, s, dropout)
    if isinstance(pattern, Dense):
        return dense_attention(q, k, v, pattern.causal, padding, s, dropout)
    raise ValueError(f"pattern {type(pattern).__name__} has no torch backend")
