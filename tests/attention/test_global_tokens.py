"""Global tokens are found once per mask tensor, and a changed mask is never served stale."""

from __future__ import annotations

import torch

from longseq.attention.global_tokens import GlobalTokens, global_tokens


def test_positions_slots_and_counts() -> None:
    glob = torch.tensor([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    pad = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    t = global_tokens(glob, pad)
    assert t.g == 2  # the padded token 4 is not global
    assert t.idx.tolist() == [[1, 3], [0, 1]] and t.used.tolist() == [[True, True], [True, False]]
    vec = t.kernel_vectors()
    assert vec["cnt"].tolist() == [2, 1]
    assert vec["slot"].tolist() == [[-1, 0, -1, 1, -1], [0, -1, -1, -1, -1]]


def test_cache_by_identity_and_version() -> None:
    glob = torch.zeros(2, 9, dtype=torch.bool)
    glob[:, 0] = True
    first = global_tokens(glob, None)
    assert global_tokens(glob, None) is first  # same tensor, unchanged: no new host read
    assert global_tokens(glob.clone(), None) is not first  # another tensor
    glob[1, 4] = True  # in place: the version counter moves
    again = global_tokens(glob, None)
    assert again is not first and again.g == 2
    with torch.inference_mode():
        inf = torch.zeros(1, 4, dtype=torch.bool)
        inf[0, 2] = True
        assert global_tokens(inf, None).g == 1  # inference tensors have no version: not cached
        assert global_tokens(inf, None) is not global_tokens(inf, None)


def test_of_no_global_tokens() -> None:
    t = GlobalTokens.of(torch.zeros(3, 5, dtype=torch.bool))
    assert t.g == 0 and t.idx.shape == (3, 0)
