"""Every pattern compiles whole (fullgraph=True): no host synchronisation in the torch backend."""

from __future__ import annotations

import pytest
import torch

from longseq.attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend

PATTERNS = [
    Dense(causal=True),
    SlidingWindow(8, dilation=(1, 2)),
    BlockSparse(4, 1, seed=3),
    LocalChunks(8, 1, 1, causal=True),
    LSH(2, 4, 8, seed=5),
]


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: type(p).__name__)
def test_fullgraph_compile_matches_eager(pattern) -> None:
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 45, 16, generator=gen, requires_grad=True) for _ in range(3))
    if isinstance(pattern, LSH):
        k = q
    padding = torch.ones(2, 45, dtype=torch.bool)
    padding[1, 30:] = False
    compiled = torch.compile(attend, fullgraph=True)
    out = compiled(q, k, v, pattern, padding_mask=padding, backend="torch")
    grads = torch.autograd.grad(out.sum(), (q, v))
    expected = attend(q, k, v, pattern, padding_mask=padding, backend="torch")
    expected_grads = torch.autograd.grad(expected.sum(), (q, v))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_global_tokens_compile_with_one_documented_sync() -> None:
    """With global tokens the number of them is read once on the host: a graph break, still right."""
    torch._dynamo.reset()
    q, k, v = (torch.randn(1, 2, 40, 8) for _ in range(3))
    glob = torch.zeros(1, 40, dtype=torch.bool)
    glob[0, [0, 17]] = True
    pattern = SlidingWindow(6)
    out = torch.compile(attend, backend="aot_eager")(q, k, v, pattern, global_mask=glob, backend="torch")
    torch.testing.assert_close(out, attend(q, k, v, pattern, global_mask=glob, backend="reference"))
