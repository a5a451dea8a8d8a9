"""Pieces shared by every backend: argument checks and a softmax that survives fully masked rows."""

from __future__ import annotations

import math

import torch

from .patterns import LSH, Dense, Pattern


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Pattern,
    padding_mask: torch.Tensor | None,
    global_mask: torch.Tensor | None,
    combine: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the arguments of `attend`; return the masks as bool tensors (or None), the global
    one without its padded tokens (combine False: as given, for a caller that has it combined).

    Raises ValueError naming the argument at fault.
    """
    if not isinstance(pattern, Pattern):
        raise ValueError(
            "pattern must be one of Dense, SlidingWindow, BlockSparse, LocalChunks, LSH; "
            f"got {type(pattern).__name__}"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (batch, heads, seq, head_dim), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            "q, k and v must share batch and heads: "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share head_dim: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share seq: k {tuple(k.shape)}, v {tuple(v.shape)}")
    cross = isinstance(pattern, Dense) and not pattern.causal
    if q.shape[2] != k.shape[2] and not cross:
        raise ValueError(
            f"q and k must share seq for {type(pattern).__name__} (only non-causal Dense takes "
            f"queries of another length): q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if isinstance(pattern, LSH) and k is not q:
        raise ValueError("LSH shares queries and keys: pass the same tensor as q and k")
    batch, seq_k = k.shape[0], k.shape[2]
    padding = _as_bool_mask("padding_mask", padding_mask, batch, seq_k, k.device)
    glob = _as_bool_mask("global_mask", global_mask, batch, seq_k, k.device)
    if glob is not None:
        if not pattern.supports_global:
            raise ValueError(
                f"global_mask is not defined for {type(pattern).__name__}: only SlidingWindow takes "
                "global tokens (BlockSparse has its first and last blocks global already)"
            )
        if padding is not None and combine:
            glob = glob & padding  # a padded token is never global
    return padding, glob


def _as_bool_mask(
    name: str, mask: torch.Tensor | None, batch: int, seq: int, device: torch.device
) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (batch, seq), got {type(mask).__name__}")
    if mask.shape != (batch, seq):
        raise ValueError(f"{name} must have shape (batch, seq) = ({batch}, {seq}), got {tuple(mask.shape)}")
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(
            f"{name} must be a bool tensor (True = {'real token' if name == 'padding_mask' else 'global'}), "
            f"got {mask.dtype}; pass mask.bool() for a 0/1 mask"
        )
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but q, k, v are on {device}")
    return mask if mask.dtype == torch.bool else mask != 0


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


def masked_softmax(
    scores: torch.Tensor, valid: torch.Tensor, dropout: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last dim where `valid`; rows with no valid key give zeros (never NaN).

    Returns (probs, lse): lse is the log-sum-exp of the valid scores, -inf for empty rows. `dropout`
    drops probabilities (training), as Hugging Face's attention dropout does; lse is unaffected.
    """
    s = scores.masked_fill(~valid, float("-inf"))
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    denom = p.sum(-1, keepdim=True)
    seen = denom > 0
    safe = torch.where(seen, denom, torch.ones_like(denom))
    lse = torch.where(seen, m + torch.log(safe), torch.full_like(denom, float("-inf")))
    p = p / safe
    if dropout > 0:
        p = torch.nn.functional.dropout(p, dropout)
    return p, lse


def len_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Reformer's key normalisation: unit root-mean-square over the last dim."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def pad_seq(x: torch.Tensor, multiple: int, dim: int = 2, value: float | bool = 0) -> torch.Tensor:
    """Pad dim `dim` of x up to a multiple of `multiple`."""
    n = x.shape[dim]
    extra = -n % multiple
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def real_keys(padding: torch.Tensor | None, batch: int, seq: int, device: torch.device) -> torch.Tensor:
    """(batch, seq) bool of real tokens."""
    if padding is None:
        return torch.ones(batch, seq, dtype=torch.bool, device=device)
    return padding


# ---------------------------------------------------------------------------------------------------
# heads of one fused projection

FUSED = "_longseq_fused"  # set on the output of `layers.projection.project`


def mark_fused(x: torch.Tensor) -> torch.Tensor:
    """Mark x (a projection's output, (..., n, blocks * heads * head_dim)) as one whose column blocks
    the gpu kernels may take as one input: the gradient of its heads is then written into one
    buffer, not into one per block and then concatenated. Only for tensors made for this (`project`):
    it changes which tensors the autograd graph passes through (its heads are views nobody else
    differentiates by). Not under torch.compile, where the views are traced."""
    if not torch.compiler.is_compiling():  # on the tensor views of x name as their base
        setattr(x if x._base is None else x._base, FUSED, True)
    return x


def fused_base(
    ts: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]] | None:
    """(base, slots, offsets) when the (b, h, n, d) tensors ts[i] for i in `slots` (two or more) are
    the heads of the column blocks of one `mark_fused` tensor base (b, n, len(slots) * h * d) in
    memory (any shape: a linear layer's output is a view of its matrix product), which they cover
    exactly; offsets: their storage offsets from base's. Else None."""
    bases = [t._base if t._base is not None and getattr(t._base, FUSED, False) else None for t in ts]
    base = next((tb for tb in bases if tb is not None and sum(b is tb for b in bases) >= 2), None)
    if base is None or not base.requires_grad or not base.is_contiguous():
        return None
    slots = [i for i, tb in enumerate(bases) if tb is base]
    b, h, n, d = ts[slots[0]].shape
    c = h * d
    width = len(slots) * c
    if base.numel() != b * n * width or base.shape[-1] != width:
        return None
    want = (n * width, d, width, 1)
    offs = tuple(ts[i].storage_offset() - base.storage_offset() for i in slots)
    if any(tuple(ts[i].shape) != (b, h, n, d) or ts[i].stride() != want for i in slots):
        return None
    if sorted(offs) != [j * c for j in range(len(slots))]:
        return None
    return base, tuple(slots), offs
