"""Several Linear layers over one input as one matrix product (`project`), e.g. q, k, v."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["project"]


def project(x: torch.Tensor, *layers: nn.Linear) -> tuple[torch.Tensor, ...]:
    """x through several Linear layers as one matrix product: one launch, and one copy of x (its
    autocast cast) kept for backward instead of one per layer. Returns the outputs, (..., out_i)
    each, views of one (..., sum out_i) tensor."""
    weight = torch.cat([layer.weight for layer in layers])  # (sum of out_features, in_features)
    biases = [layer.bias for layer in layers]
    bias = None if any(b is None for b in biases) else torch.cat(biases)
    if bias is None and any(b is not None for b in biases):
        raise ValueError("project: the layers must all have a bias or none")
    return torch.nn.functional.linear(x, weight, bias).split([layer.out_features for layer in layers], -1)
