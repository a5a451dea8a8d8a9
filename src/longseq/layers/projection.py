"""Several Linear layers over one input as one matrix product (`project`), e.g. q, k, v."""

from __future__ import annotations

import torch
from torch import nn

from ..attention._common import mark_fused
from .weight_cast import cast_of

__all__ = ["autocast_input", "project"]


def project(x: torch.Tensor, *layers: nn.Linear) -> tuple[torch.Tensor, ...]:
    """x through several Linear layers as one matrix product: one launch, and one copy of x (its
    autocast cast) kept for backward instead of one per layer. Returns the outputs, (..., out_i)
    each, views of one (..., sum out_i) tensor, marked for the gpu kernels (`mark_fused`): when
    the heads of all its outputs go into one attention call, their gradient comes back as one
    tensor, with no concatenation. Under an open `cast_linears` that holds the layers as one group,
    their weights come from its one cast, already concatenated."""
    cast = cast_of(layers)
    if cast is not None:
        weight, bias = cast
    else:
        weight = torch.cat([layer.weight for layer in layers])  # (sum of out_features, in_features)
        biases = [layer.bias for layer in layers]
        bias = None if any(b is None for b in biases) else torch.cat(biases)
        if bias is None and any(b is not None for b in biases):
            raise ValueError("project: the layers must all have a bias or none")
    out = mark_fused(torch.nn.functional.linear(x, weight, bias))
    return out.split([layer.out_features for layer in layers], -1)


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in autocast's dtype when autocast is on for its device and x is float32 (else x): cast once
    for several `project` calls over x, which then keep one copy of it for backward, not one each."""
    kind = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(kind):
        return x.to(torch.get_autocast_dtype(kind))
    return x
