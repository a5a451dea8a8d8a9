"""Autocast state captured in a forward pass, to re-enter in a backward pass that recomputes.

Autograd runs the backward pass outside any autocast region, so code that recomputes forward work
there (reversible layers, activations recomputed instead of stored) must restore the forward's
settings itself, as `torch.utils.checkpoint` does; otherwise it recomputes in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["autocast_from", "autocast_state"]


def autocast_state(device: torch.device) -> list[dict[str, Any]]:
    """The autocast settings in force for `device` (and the CPU): arguments of `torch.autocast`."""
    types = [device.type] if device.type == "cpu" else [device.type, "cpu"]
    return [
        dict(
            device_type=t,
            enabled=torch.is_autocast_enabled(t),
            dtype=torch.get_autocast_dtype(t),
            cache_enabled=torch.is_autocast_cache_enabled(),
        )
        for t in types
    ]


@contextlib.contextmanager
def autocast_from(state: list[dict[str, Any]]) -> Iterator[None]:
    """Run a block under the settings `autocast_state` captured."""
    with contextlib.ExitStack() as stack:
        for kwargs in state:
            stack.enter_context(torch.autocast(**kwargs))
        yield
