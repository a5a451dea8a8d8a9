"""Keys for caches of values computed from a tensor (plans, global-token indices)."""

from __future__ import annotations

import torch


def tensor_key(t: torch.Tensor | None) -> tuple[int, int] | None:
    """(identity, version counter) of `t`; an in-place change moves the version. None for None, and
    for inference tensors, which keep no version counter (never cache those). A cache keyed by this
    must hold `t` itself (or compare it with `is`), so that a dead tensor's identity is not reused."""
    if t is None:
        return None
    try:
        return id(t), t._version
    except RuntimeError:
        return None
