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
from .global_tokens import global_tokens, place_rows
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
# dense attention of at most FEW_ROWS query rows over at least MANY_KEYS keys (Longformer's global
# rows) runs through the kernels on the GPU: SDPA spreads it over one program per head
FEW_ROWS, MANY_KEYS = 128, 1024


def _check_rows_out(rows_out: torch.Tensor, q: torch.Tensor, pattern: Pattern, tokens) -> None:
    if not isinstance(pattern, SlidingWindow) or pattern.global_rows:
        raise ValueError("global_rows_out needs a SlidingWindow pattern with global_rows=False")
    if tokens is None:
        raise ValueError("global_rows_out needs global_mask (it says which rows it replaces)")
    b, h, _, d = q.shape
    want = (b, h, tokens.g, d)
    if tuple(rows_out.shape) != want:
        raise ValueError(
            f"global_rows_out has shape {tuple(rows_out.shape)}; expected (batch, heads, global tokens,"
            f" head_dim) = {want}, one slot per global token of the row with the most"
        )


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
    global_rows_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of q over k, v under `pattern`.

    q, k, v: (batch, heads, seq, head_dim). padding_mask: (batch, seq) bool, True = real token;
    padded keys are never attended and padded query rows give zeros. global_mask: (batch, seq)
    bool, True = global token (SlidingWindow only). scale: multiplies the scores, 1/sqrt(head_dim)
    by default. dropout: probability of dropping attention weights (pass 0 in eval); the gpu backend
    drops inside its kernels with a counter-based mask (`kernels/dropout.py`), the torch backend with
    torch's generator, so the two draw different masks from the same seed.
    global_rows_out: (batch, heads, G, head_dim), the outputs of the global query rows when the
    caller computes them itself (Longformer's own global projections; SlidingWindow with
    global_rows=False): slot g of row b replaces output row `global_tokens(...).idx[b, g]` where that
    slot is used. The gpu backend writes them into its output buffer, which saves a copy of it.
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
    padding, glob = check_inputs(q, k, v, pattern, padding_mask, global_mask, combine=False)
    if backend == "gpu" and not _gpu_available(q):
        raise ValueError("backend='gpu' needs CUDA tensors and the GPU kernels; use backend='torch'")
    s = default_scale(q.shape[-1], scale)
    fused = backend == "gpu" or (backend == "auto" and _gpu_available(q))
    tokens = None  # found once per mask (a host read), where the kernels or global_rows_out need them
    if glob is not None and (fused or global_rows_out is not None):
        tokens = global_tokens(global_mask, padding_mask)
        glob = tokens.mask  # (without padded tokens: combined once per mask)
    elif glob is not None and padding is not None:
        glob = glob & padding  # a padded token is never global
    if global_rows_out is not None:
        _check_rows_out(global_rows_out, q, pattern, tokens)
    if fused and isinstance(pattern, kernels.SUPPORTED):
        return kernels.gpu_attention(q, k, v, pattern, padding, glob, s, tokens, dropout, global_rows_out)
    if isinstance(pattern, SlidingWindow):
        out = sliding_window_attention(q, k, v, pattern, padding, glob, s, dropout)
        if global_rows_out is not None and tokens is not None and tokens.g:
            out = place_rows(out, tokens, global_rows_out)
        return out
    if isinstance(pattern, BlockSparse):
        return block_sparse_attention(q, k, v, pattern, padding, s, dropout)
    if isinstance(pattern, LocalChunks):
        return local_chunks_attention(q, k, v, pattern, padding, s, dropout)
    if isinstance(pattern, LSH):
        return lsh_attention(q, v, pattern, padding, s, dropout)
    if isinstance(pattern, Dense):
        if fused and not pattern.causal and q.shape[2] <= FEW_ROWS and k.shape[2] >= MANY_KEYS:
            return kernels.gpu_attention(q, k, v, pattern, padding, None, s, None, dropout)
        return dense_attention(q, k, v, pattern.causal, padding, s, dropout)
    raise ValueError(f"pattern {type(pattern).__name__} has no torch backend")
