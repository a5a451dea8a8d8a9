"""One cast of a layer's Linear weights per forward pass under autocast, instead of one per Linear.

Under autocast each `F.linear` casts its float32 weight and bias to the autocast dtype, and the
backward casts each gradient back: for a Longformer layer 18 casts and 18 casts back per training
step, each a few ops of host time, and the step is bound by host time. `cast_linears(groups)` casts
every weight and bias of the given groups of Linear layers in one `cat` and one `to`, and their
gradients back in one `cat` and one `to`: the values are those of autocast's casts (the same
rounding, the same gradient rounding). A group of several layers, used together by `project`, gets
its weights as one (sum of out, in) matrix with no concatenation of its own. The encoder layers
open one each (`models/encoder.py`): their gradients arrive when the layer's backward ends, so
data-parallel training still reduces them while the layers below run theirs.

While the context is open, `linear(x, layer)`, `project` and `act_linear` take the cast weights of
the layers it holds; other layers, and every layer outside it, are autocast's as before. It does
nothing where it would not help: autocast off or not a 16-bit dtype, parameters not float32, or
under torch.compile (which fuses the casts itself).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cast_linears", "cast_of", "linear"]

_STATE = threading.local()  # .table: {tuple of layer ids: (weight, bias or None)} while a context is open


def cast_of(layers: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The cast (weight (sum of out, in), bias (sum of out) or None) of `layers` as one group, when
    an open `cast_linears` holds that group (or the one layer); else None."""
    table = getattr(_STATE, "table", None)
    if not table:
        return None
    return table.get(tuple(map(id, layers)))


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """layer(x), with the layer's weights cast once by an open `cast_linears`, if it holds them."""
    cast = cast_of((layer,))
    if cast is None:
        return layer(x)
    return F.linear(x, *cast)


# torch's own flatten (DDP's buckets): the views and the `cat` in one call from Python, not one call
# per tensor (on the CPU here 7.6 us against 19.6 us for 18 tensors)
_FLATTEN = getattr(torch._C._nn, "flatten_dense_tensors", None)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """tensors concatenated flat (a view of a single tensor)."""
    if _FLATTEN is not None:
        return _FLATTEN(list(tensors))
    return torch.cat([t if t.dim() == 1 else t.reshape(-1) for t in tensors])


def _pieces(flat: torch.Tensor, sizes: list[int], shapes: list[torch.Size]) -> list[torch.Tensor]:
    """flat cut into views of `shapes` (numels `sizes`), in one `split`."""
    return [p if len(s) == 1 else p.view(s) for p, s in zip(flat.split(sizes), shapes, strict=True)]


def _flat_cast(dtype: torch.dtype, layout: list[list[int]], params: Sequence[torch.Tensor]) -> list:
    """params (float32) in one flat cast to dtype; one view of it per entry of layout (the indices of
    adjacent params, in order): a group's weights as one (sum of out, in) matrix, or its biases."""
    flat = _flat(params).to(dtype)  # (total,)
    sizes, shapes = [], []
    for idx in layout:
        n = sum(params[i].numel() for i in idx)
        row = params[idx[0]].shape[1:]  # () for biases, (in,) for weights
        sizes.append(n)
        shapes.append(torch.Size((n // row.numel(), *row)))
    return _pieces(flat, sizes, shapes)


class _Cast(torch.autograd.Function):
    """`_flat_cast` with autograd: the incoming gradients in one flat tensor, cast back to float32,
    split per parameter (views of it)."""

    @staticmethod
    def forward(ctx: Any, dtype: torch.dtype, layout: list[list[int]], *params: torch.Tensor) -> tuple:
        ctx.layout, ctx.shapes = layout, [p.shape for p in params]
        ctx.set_materialize_grads(False)  # an unused output: None, so its params keep no gradient
        return tuple(_flat_cast(dtype, layout, params))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple:
        out: list[torch.Tensor | None] = [None] * len(ctx.shapes)
        present = [i for i, g in enumerate(grads) if g is not None]
        if present:
            flat = _flat([grads[i] for i in present]).float()  # type: ignore[misc]
            which = [j for i in present for j in ctx.layout[i]]
            shapes = [ctx.shapes[j] for j in which]
            for j, g in zip(which, _pieces(flat, [s.numel() for s in shapes], shapes), strict=True):
                out[j] = g
        return None, None, *out


def _applies(params: list[torch.Tensor]) -> torch.dtype | None:
    """The autocast dtype to cast params to, or None where the cast would not help."""
    if not params or torch.compiler.is_compiling():
        return None
    kind = params[0].device.type
    if not torch.is_autocast_enabled(kind):
        return None
    dtype = torch.get_autocast_dtype(kind)
    if dtype not in (torch.bfloat16, torch.float16):
        return None
    if any(p.dtype != torch.float32 or p.device != params[0].device for p in params):
        return None
    return dtype


@contextlib.contextmanager
def cast_linears(groups: Sequence[Sequence[nn.Linear]]) -> Iterator[None]:
    """Cast the weights and biases of `groups` (each a tuple of Linear layers with the same input
    size, all with a bias or none) once for the block inside."""
    params: list[torch.Tensor] = []
    layout: list[list[int]] = []
    keys: list[tuple[int, ...]] = []
    for group in groups:
        weights = [layer.weight for layer in group]
        biases = [layer.bias for layer in group]
        ws = list(range(len(params), len(params) + len(weights)))
        params += weights
        layout.append(ws)
        if all(b is not None for b in biases):
            layout.append(list(range(len(params), len(params) + len(biases))))
            params += biases  # type: ignore[arg-type]
        elif any(b is not None for b in biases):
            raise ValueError("cast_linears: the layers of a group must all have a bias or none")
        else:
            layout.append([])
        keys.append(tuple(map(id, group)))
    dtype = _applies(params)
    if dtype is None or getattr(_STATE, "table", None):  # nested: the outer cast stands
        yield
        return
    used = [idx for idx in layout if idx]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        outs = iter(_Cast.apply(dtype, used, *params))
    else:
        outs = iter(_flat_cast(dtype, used, params))
    table = {}
    for key, biases in zip(keys, layout[1::2], strict=True):  # layout: a group's weights, then its biases
        table[key] = (next(outs), next(outs) if biases else None)
    _STATE.table = table
    try:
        yield
    finally:
        _STATE.table = None
