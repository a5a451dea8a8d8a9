"""embed(): nn.Embedding's output and gradients, with a backward of one index_add_."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from longseq.layers.embedding import embed


@pytest.mark.parametrize("padding_idx", [None, 1])
@pytest.mark.parametrize("shape", [(2, 37), (53,)])
def test_gradients_equal_nn_embedding(padding_idx: int | None, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    table = nn.Embedding(11, 6, padding_idx=padding_idx)
    ids = torch.randint(0, 11, shape)  # repeats, and the padding id among them
    ids.view(-1)[:3] = 1
    go = torch.randn(*shape, 6)
    out = embed(ids, table)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_EmbedBackward"
    (g,) = torch.autograd.grad((out * go).sum(), [table.weight])
    want_out = table(ids)
    (want,) = torch.autograd.grad((want_out * go).sum(), [table.weight])
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-6)
    if padding_idx is not None:
        assert g[padding_idx].abs().max() == 0 and want[padding_idx].abs().max() == 0


def test_plain_embedding_where_the_fast_backward_does_not_apply() -> None:
    table = nn.Embedding(5, 3, padding_idx=0)
    ids = torch.tensor([[0, 1, 1, 4]])
    with torch.no_grad():
        assert embed(ids, table).grad_fn is None
    table.weight.requires_grad_(False)
    assert embed(ids, table).grad_fn is None
    table.weight.requires_grad_(True)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:  # torch's own backward, which is deterministic
        assert type(embed(ids, table).grad_fn).__name__ == "EmbeddingBackward0"
    finally:
        torch.use_deterministic_algorithms(was)
    assert type(embed(ids, nn.Embedding(5, 3, scale_grad_by_freq=True)).grad_fn).__name__ != "_EmbedBackward"


def test_second_use_accumulates() -> None:
    """A table used twice in one graph (tied weights) gets both gradients."""
    torch.manual_seed(1)
    table = nn.Embedding(7, 4)
    a, b = torch.randint(0, 7, (9,)), torch.randint(0, 7, (5,))
    (g,) = torch.autograd.grad(embed(a, table).sum() + 2 * embed(b, table).sum(), [table.weight])
    want = torch.zeros(7, 4)
    want.index_add_(0, a, torch.ones(9, 4)).index_add_(0, b, 2 * torch.ones(5, 4))
    torch.testing.assert_close(g, want)
