"""Pattern definitions: masks, BigBird's random plan, and the errors bad arguments raise."""

from __future__ import annotations

import pytest
import torch

from longseq.attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend


def test_sliding_window_mask_matches_definition() -> None:
    n = 23
    for window, dilation, causal in [(4, 1, False), (6, 2, False), (4, 3, True), (2, 1, True)]:
        mask = SlidingWindow(window, dilation, causal).mask(n)
        for i in range(n):
            for j in range(n):
                reach = (window // 2) * dilation
                ok = (i - j) % dilation == 0 and (0 <= i - j <= reach if causal else abs(i - j) <= reach)
                assert bool(mask[i, j]) == ok, (window, dilation, causal, i, j)


def test_per_head_dilation_mask_has_one_slice_per_head() -> None:
    mask = SlidingWindow(4, dilation=(1, 2, 4)).mask(30)
    assert mask.shape == (3, 30, 30)
    torch.testing.assert_close(mask[1], SlidingWindow(4, 2).mask(30))


def test_local_chunks_mask_is_cyclic() -> None:
    mask = LocalChunks(4, chunks_before=1).mask(16)
    assert mask[0, 12:].all() and not mask[0, 4:12].any()  # the chunk before the first is the last
    assert not LocalChunks(4, causal=True).mask(16)[0, 12:].any()
    counts = LocalChunks(4, 1, 1).counts(8)  # two chunks: the other one is before and after
    assert counts[0, 4] == 2 and counts[0, 0] == 1


@pytest.mark.parametrize("num_blocks,r,seed", [(9, 2, 0), (16, 3, 7), (40, 3, 12345), (7, 1, 2)])
def test_seeded_plan_never_repeats_window_or_global_blocks(num_blocks: int, r: int, seed: int) -> None:
    pattern = BlockSparse(8, r, seed=seed)
    plan = pattern.random_blocks(num_blocks)
    assert plan.shape == (num_blocks, r) and plan.dtype == torch.int64
    assert (plan[0] == -1).all() and (plan[-1] == -1).all()
    for i in range(1, num_blocks - 1):
        row = plan[i].tolist()
        assert len(set(row)) == r
        assert not set(row) & {0, num_blocks - 1, i - 1, i, i + 1}
    torch.testing.assert_close(plan, BlockSparse(8, r, seed=seed).random_blocks(num_blocks))
    assert not torch.equal(plan, BlockSparse(8, r, seed=seed + 1).random_blocks(num_blocks))


def test_seeded_plan_covers_candidates_uniformly() -> None:
    """Over many seeds every candidate block is drawn about equally often."""
    hits = torch.zeros(20, dtype=torch.int64)
    for seed in range(400):
        plan = BlockSparse(8, 2, seed=seed).random_blocks(20)
        hits += torch.bincount(plan[10], minlength=20)
    candidates = [b for b in range(1, 19) if b not in (9, 10, 11)]
    expected = 800 / len(candidates)
    assert hits[[0, 9, 10, 11, 19]].sum() == 0
    assert (hits[candidates].float() - expected).abs().max() < 0.45 * expected


def test_explicit_plan_in_hugging_face_layout() -> None:
    plan = torch.zeros(10, 2, dtype=torch.long)  # HF's eval plan: num_blocks - 2 rows of zeros
    full = BlockSparse(4, 2, seed=plan).random_blocks(12)
    assert full.shape == (12, 2) and (full[1:-1] == 0).all() and (full[0] == -1).all()
    counts = BlockSparse(4, 2, seed=plan).counts(48)
    assert counts[12, 0] == 3  # block 0: once as global, twice more as "random"
    assert BlockSparse(4, 2, seed=plan) == BlockSparse(4, 2, seed=plan.clone())
    assert BlockSparse(4, 2, seed=plan) != BlockSparse(4, 2, seed=plan + 1)
    assert hash(BlockSparse(4, 2, seed=plan)) == hash(BlockSparse(4, 2, seed=plan.clone()))


def test_patterns_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SlidingWindow(4).window = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: SlidingWindow(5), "window"),
        (lambda: SlidingWindow(0), "window"),
        (lambda: SlidingWindow(-4), "window"),
        (lambda: SlidingWindow(4, dilation=0), "dilation"),
        (lambda: SlidingWindow(4, dilation=()), "dilation"),
        (lambda: BlockSparse(0, 2), "block_size"),
        (lambda: BlockSparse(4, -1), "num_random_blocks"),
        (lambda: BlockSparse(4, 2, seed=torch.zeros(3, 3, dtype=torch.long)), "seed"),
        (lambda: BlockSparse(4, 2, seed=1.5), "seed"),
        (lambda: LocalChunks(0), "chunk_length"),
        (lambda: LocalChunks(4, chunks_before=-1), "chunks_before"),
        (lambda: LSH(1, 3, 4), "num_buckets"),
        (lambda: LSH(1, (2, 4, 2), 4), "num_buckets"),
        (lambda: LSH(0, 4, 4), "num_hashes"),
    ],
)
def test_bad_pattern_arguments_name_the_argument(make, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make()


def _qkv(*shape: int, dtype: torch.dtype = torch.float32):
    return [torch.randn(*shape, dtype=dtype) for _ in range(3)]


def test_bad_call_arguments_name_the_argument() -> None:
    q, k, v = _qkv(2, 3, 20, 8)
    cases = [
        (dict(q=q[0]), "q"),
        (dict(k=k.double()), "dtype"),
        (dict(v=v[:, :2]), "heads"),
        (dict(k=k[..., :4]), "head_dim"),
        (dict(v=v[:, :, :10]), "seq"),
        (dict(padding_mask=torch.ones(2, 19, dtype=torch.bool)), "padding_mask"),
        (dict(padding_mask=torch.ones(2, 20)), "padding_mask"),
        (dict(global_mask=torch.ones(3, 20, dtype=torch.bool)), "global_mask"),
        (dict(pattern=LocalChunks(4), global_mask=torch.ones(2, 20, dtype=torch.bool)), "global_mask"),
        (dict(pattern=SlidingWindow(4, dilation=(1, 2))), "dilation"),
        (dict(pattern="sliding"), "pattern"),
        (dict(backend="cuda-magic"), "backend"),
        (dict(pattern=LSH(1, 4, 4)), "same tensor"),
        (dict(pattern=Dense(causal=True), q=q[:, :, :5]), "seq"),
        (dict(pattern=BlockSparse(2, 1, seed=torch.zeros(4, 1, 1, dtype=torch.long))), "seed"),
    ]
    for change, name in cases:
        args = dict(q=q, k=k, v=v, pattern=SlidingWindow(4), backend="torch") | change
        with pytest.raises(ValueError, match=name):
            attend(
                args.pop("q"),
                args.pop("k"),
                args.pop("v"),
                args.pop("pattern"),
                **args,
            )


def test_integer_masks_are_taken_as_bool() -> None:
    q, k, v = _qkv(1, 2, 12, 8)
    pad = torch.tensor([[1] * 9 + [0] * 3])
    out = attend(q, k, v, Dense(), padding_mask=pad, backend="torch")
    torch.testing.assert_close(out, attend(q, k, v, Dense(), padding_mask=pad.bool(), backend="reference"))


def test_dense_takes_queries_of_another_length() -> None:
    q = torch.randn(1, 2, 5, 8)
    k, v = torch.randn(1, 2, 30, 8), torch.randn(1, 2, 30, 8)
    torch.testing.assert_close(
        attend(q, k, v, Dense(), backend="torch"), attend(q, k, v, Dense(), backend="reference")
    )


def test_bfloat16_error_within_twice_torch_own_bfloat16_math() -> None:
    """bf16 inputs: error against the fp32 reference at most 2x that of plain bf16 dense math."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 300, 32, generator=gen) for _ in range(3))
    for pattern in (SlidingWindow(32, 2), BlockSparse(16, 2), LocalChunks(32), LSH(2, 8, 32, seed=1)):
        kk = q if isinstance(pattern, LSH) else k
        exact = attend(q, kk, v, pattern, backend="reference")
        low = [t.bfloat16() for t in (q, kk, v)]
        if isinstance(pattern, LSH):
            low[1] = low[0]
            qk = low[0].float()
            exact = attend(qk, qk, low[2].float(), pattern, backend="reference")
        ours = attend(*low, pattern, backend="torch").float()
        plain = _bf16_dense_math(low, pattern)
        err, base = (ours - exact).abs().max(), (plain - exact).abs().max()
        assert err <= 2 * base + 1e-3, (pattern, float(err), float(base))


def _bf16_dense_math(low, pattern) -> torch.Tensor:
    """PyTorch's own bf16 attention under the same counts (scores and softmax in bf16)."""
    q, k, v = low
    n, d = q.shape[2], q.shape[3]
    if isinstance(pattern, LSH):
        return attend(q, k, v, pattern, backend="reference").float()  # no dense equivalent
    counts = pattern.counts(n)
    scores = (q @ k.transpose(-1, -2)) * d**-0.5 + counts.float().log().bfloat16()
    return (torch.softmax(scores, -1) @ v).float()


def test_global_rows_false_keeps_only_the_global_columns() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 20, 4) for _ in range(3))
    glob = torch.zeros(1, 20, dtype=torch.bool)
    glob[0, 10] = True
    both = attend(q, k, v, SlidingWindow(2), global_mask=glob, backend="reference")
    keys = attend(q, k, v, SlidingWindow(2, global_rows=False), global_mask=glob, backend="reference")
    plain = attend(q, k, v, SlidingWindow(2), backend="reference")
    assert torch.allclose(both[:, :, :10], keys[:, :, :10]) and torch.allclose(
        both[:, :, 11:], keys[:, :, 11:]
    )
    assert torch.allclose(keys[:, :, 10], plain[:, :, 10])  # the global row sees its window only
    assert not torch.allclose(both[:, :, 10], keys[:, :, 10])  # where the symmetric pattern sees all
