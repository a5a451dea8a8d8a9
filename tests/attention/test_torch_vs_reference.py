"""The torch backend equals the dense float32 reference, forward and in gradients, for every pattern.

Property-based: hypothesis draws batch, heads, head_dim, pattern sizes, causal, dilation, global
tokens, padding (including rows with no real token at all) and lengths that are no multiple of the
window, block or chunk.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend
from longseq.attention.dense import dense_attention

ATOL = 1e-5
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True)


@st.composite
def shapes(draw: st.DrawFn, max_len: int = 70) -> dict:
    batch = draw(st.integers(1, 3))
    seq = draw(st.integers(1, max_len))
    lengths = [draw(st.integers(0, seq)) for _ in range(batch)]  # 0: a row with no real token
    return {
        "batch": batch,
        "heads": draw(st.integers(1, 3)),
        "seq": seq,
        "head_dim": draw(st.sampled_from([4, 8, 16])),
        "lengths": lengths,
        "padded": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def inputs(s: dict, shared_qk: bool = False):
    gen = torch.Generator().manual_seed(s["seed"])
    shape = (s["batch"], s["heads"], s["seq"], s["head_dim"])
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    if shared_qk:
        k = q
    padding = None
    if s["padded"]:
        padding = torch.arange(s["seq"])[None, :] < torch.tensor(s["lengths"])[:, None]
    grad = torch.randn(shape, generator=gen)
    return q, k, v, padding, grad, gen


def compare(q, k, v, pattern, grad, shared_qk: bool = False, **masks) -> None:
    """Forward and gradients of the torch backend against the reference."""
    results = []
    for backend in ("torch", "reference"):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, v)]
        ql, vl = leaves
        kl = ql if shared_qk else k.detach().clone().requires_grad_(True)
        out = attend(ql, kl, vl, pattern, backend=backend, **masks)
        (out * grad).sum().backward()
        grads = [ql.grad, vl.grad] + ([] if shared_qk else [kl.grad])
        results.append((out.detach(), grads))
    (out_t, grads_t), (out_r, grads_r) = results
    assert torch.isfinite(out_t).all() and all(torch.isfinite(g).all() for g in grads_t)
    torch.testing.assert_close(out_t, out_r, atol=ATOL, rtol=ATOL)
    for name, gt, gr in zip(("dq", "dv", "dk")[: len(grads_t)], grads_t, grads_r, strict=True):
        torch.testing.assert_close(gt, gr, atol=ATOL, rtol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
    padding = masks.get("padding_mask")
    if padding is not None:  # padded query rows give zeros
        assert (out_t * ~padding[:, None, :, None]).abs().max() == 0


@SETTINGS
@given(s=shapes(), causal=st.booleans())
def test_dense(s: dict, causal: bool) -> None:
    q, k, v, padding, grad, _ = inputs(s)
    compare(q, k, v, Dense(causal), grad, padding_mask=padding)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(s=shapes(), multiple=st.sampled_from([8, 64]))
def test_dense_padded_to_a_length_multiple(s: dict, multiple: int) -> None:
    """The CUDA path pads masked lengths up to a multiple (few shapes for cuDNN): same result."""
    s = {**s, "padded": True}
    q, k, v, padding, grad, _ = inputs(s)
    results = []
    for m in (multiple, None):
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        if m is None:
            out = attend(*leaves, Dense(False), padding_mask=padding, backend="reference")
        else:
            out = dense_attention(*leaves, False, padding, q.shape[-1] ** -0.5, length_multiple=m)
        (out * grad).sum().backward()
        results.append((out.detach(), [t.grad for t in leaves]))
    (out_p, grads_p), (out_r, grads_r) = results
    assert out_p.shape == out_r.shape
    torch.testing.assert_close(out_p, out_r, atol=ATOL, rtol=ATOL)
    for gp, gr in zip(grads_p, grads_r, strict=True):
        torch.testing.assert_close(gp, gr, atol=ATOL, rtol=ATOL)


@SETTINGS
@given(
    s=shapes(),
    half=st.integers(1, 12),
    causal=st.booleans(),
    dilation=st.one_of(st.integers(1, 3), st.just("per-head")),
    with_global=st.booleans(),
    global_rows=st.booleans(),
)
def test_sliding_window(
    s: dict, half: int, causal: bool, dilation: object, with_global: bool, global_rows: bool
) -> None:
    q, k, v, padding, grad, gen = inputs(s)
    if dilation == "per-head":
        dilation = tuple(int(d) for d in torch.randint(1, 4, (s["heads"],), generator=gen))
    pattern = SlidingWindow(2 * half, dilation=dilation, causal=causal, global_rows=global_rows)
    glob = None
    if with_global:
        glob = torch.rand(s["batch"], s["seq"], generator=gen) < 0.15
    compare(q, k, v, pattern, grad, padding_mask=padding, global_mask=glob)


@SETTINGS
@given(s=shapes(max_len=90), block=st.integers(1, 8), r=st.integers(0, 3), seed=st.integers(0, 1000))
def test_block_sparse(s: dict, block: int, r: int, seed: int) -> None:
    q, k, v, padding, grad, _ = inputs(s)
    compare(q, k, v, BlockSparse(block, r, seed=seed), grad, padding_mask=padding)


@SETTINGS
@given(s=shapes(max_len=90), block=st.integers(1, 6), r=st.integers(1, 3), per_head=st.booleans())
def test_block_sparse_explicit_plan_with_repeats(s: dict, block: int, r: int, per_head: bool) -> None:
    """An explicit plan may repeat blocks (Hugging Face's eval plan is all zeros): they count twice."""
    q, k, v, padding, grad, gen = inputs(s)
    nb = -(-s["seq"] // block)
    heads = (s["heads"],) if per_head else ()
    plan = torch.randint(0, nb, (*heads, nb, r), generator=gen)
    compare(q, k, v, BlockSparse(block, r, seed=plan), grad, padding_mask=padding)


@SETTINGS
@given(
    s=shapes(),
    chunk=st.integers(1, 12),
    before=st.integers(0, 2),
    after=st.integers(0, 2),
    causal=st.booleans(),
)
def test_local_chunks(s: dict, chunk: int, before: int, after: int, causal: bool) -> None:
    q, k, v, padding, grad, _ = inputs(s)
    compare(q, k, v, LocalChunks(chunk, before, after, causal), grad, padding_mask=padding)


@SETTINGS
@given(
    s=shapes(),
    hashes=st.integers(1, 3),
    buckets=st.one_of(
        st.sampled_from([2, 4, 8]), st.tuples(st.sampled_from([2, 4]), st.sampled_from([2, 4]))
    ),
    chunk=st.integers(1, 12),
    before=st.integers(0, 2),
    after=st.integers(0, 1),
    causal=st.booleans(),
)
def test_lsh(
    s: dict, hashes: int, buckets: object, chunk: int, before: int, after: int, causal: bool
) -> None:
    q, k, v, padding, grad, _ = inputs(s, shared_qk=True)
    pattern = LSH(hashes, buckets, chunk, before, after, causal, seed=s["seed"] % 1000)
    compare(q, q, v, pattern, grad, shared_qk=True, padding_mask=padding)


def test_fully_padded_batch_gives_zeros_and_finite_gradients() -> None:
    q, k, v = (torch.randn(2, 2, 40, 8, requires_grad=True) for _ in range(3))
    padding = torch.zeros(2, 40, dtype=torch.bool)
    for pattern in (SlidingWindow(8), BlockSparse(4, 1), LocalChunks(8), Dense(), Dense(True)):
        out = attend(q, k, v, pattern, padding_mask=padding, backend="torch")
        assert out.abs().max() == 0
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_block_sparse_dense_fallback_is_per_call() -> None:
    """Short inputs are dense, long ones sparse, with the same pattern object, in any order."""
    pattern = BlockSparse(4, 1)
    assert pattern.is_dense(28) and not pattern.is_dense(29)
    for n in (29, 20, 64, 12):
        q, k, v = (torch.randn(1, 2, n, 8) for _ in range(3))
        expected = attend(q, k, v, Dense() if n <= 28 else pattern, backend="reference")
        torch.testing.assert_close(attend(q, k, v, pattern, backend="torch"), expected, atol=ATOL, rtol=ATOL)
    assert not pattern.mask(64).all()
