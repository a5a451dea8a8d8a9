"""BigBird's explicit plans are checked once per seed tensor, and a changed seed is never served stale."""

from __future__ import annotations

import pytest
import torch

from longseq.attention import BlockSparse


def test_explicit_plan_checked_once_and_rechecked_after_a_change() -> None:
    seed = torch.tensor([[1, 2], [3, 1], [2, 3], [1, 2]])  # HF's layout: num_blocks - 2 rows
    pattern = BlockSparse(16, 2, seed=seed)
    first = pattern.random_blocks(6)
    assert first is pattern.random_blocks(6)  # kept: no second range check (a device read)
    assert first[1:-1].tolist() == seed.tolist() and (first[[0, -1]] == -1).all()
    seed[0, 0] = 4  # in place: the version counter moves
    assert pattern.random_blocks(6)[1, 0] == 4
    seed[0, 0] = 9  # out of range for 6 blocks: refused again, not served from the cache
    with pytest.raises(ValueError, match="outside"):
        pattern.random_blocks(6)
    other = BlockSparse(16, 2, seed=seed.clone())  # an equal tensor, another object: its own entry
    with pytest.raises(ValueError, match="outside"):
        other.random_blocks(6)


def test_bigbird_layer_keeps_its_pattern_per_length_and_mode() -> None:
    from longseq.models.bigbird import BigBirdSelfAttention
    from longseq.models.configs import BigBirdConfig

    config = BigBirdConfig(
        hidden_size=32, num_attention_heads=2, block_size=16, num_random_blocks=2, max_position_embeddings=512
    )
    layer = BigBirdSelfAttention(config, seed=3)
    dev = torch.device("cpu")
    layer.eval()
    assert layer.pattern(400, dev) is layer.pattern(400, dev)
    assert layer.pattern(400, dev) is not layer.pattern(384, dev)
    layer.train()
    train = layer.pattern(400, dev)
    assert (
        train is layer.pattern(400, dev)
        and train is not layer._patterns[(400, False, False, False, "block_sparse", "cpu")]
    )
    assert isinstance(train.seed, torch.Tensor) and train.seed.dim() == 3  # HF's per-head train plan


def test_padding_converted_once_per_mask_and_again_after_a_change() -> None:
    from longseq.attention.kernels.patterns_gpu import _i8

    mask = torch.tensor([[True, True, False]])
    first = _i8(mask)
    assert first.dtype == torch.int8 and first.tolist() == [[[1, 1, 0]]]  # (b, 1, n): the kernels' form
    assert _i8(mask) is first  # the same mask: kept, as the same tensor object
    assert _i8(mask.clone()) is not first  # an equal tensor, another object
    mask[0, 2] = True  # in place: converted again
    assert _i8(mask).tolist() == [[[1, 1, 1]]]
