"""Activations by Hugging Face's names equal HF's own (the oracle), and keep little for backward."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.activations import ACT2FN  # noqa: E402

from longseq.layers.activations import ACTIVATIONS, activation  # noqa: E402


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_equals_hf(name: str) -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    x = x.float().requires_grad_(True)
    ours = activation(name)(x)
    hf = ACT2FN[name](x)
    torch.testing.assert_close(ours, hf, atol=1e-6, rtol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_hf,) = torch.autograd.grad(hf.sum(), x)
    torch.testing.assert_close(g_ours, g_hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"])
def test_keeps_only_its_input_for_backward(name: str) -> None:
    """One fused op: BigBird's default gelu_new kept four input-sized tensors when written out."""
    x = torch.randn(64, 256, requires_grad=True)
    saved: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        activation(name)(x)
    assert saved == {x.untyped_storage().data_ptr()}
