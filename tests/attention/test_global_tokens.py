"""Global tokens are found once per mask tensor, and a changed mask is never served stale."""

from __future__ import annotations

import torch

from longseq.attention.global_tokens import GlobalTokens, global_tokens, read_rows, write_rows_


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
    assert t.g == 0 and t.idx.shape == (3, 0) and t.full


def test_rows_move_by_one_indexed_copy_only_when_every_slot_is_used() -> None:
    b, h, n, d = 2, 3, 11, 4
    glob = torch.zeros(b, n, dtype=torch.bool)
    glob[:, [2, 7]] = True
    full = global_tokens(glob, None)
    glob2 = glob.clone()
    glob2[0, 9] = True  # row 0 has three, row 1 two: a slot unused
    part = global_tokens(glob2, None)
    pad = torch.ones(b, n, dtype=torch.bool)
    pad[1, 7:] = False  # the padded token 7 is not global: row 1 has one
    padded = global_tokens(glob, pad)
    assert full.full and not part.full and not padded.full
    assert full.rows_place()[2].tolist() == [2, 7, n + 2, n + 7] and part.rows_place()[2] is None
    gen = torch.Generator().manual_seed(0)
    for tokens in (full, part, padded):
        values = torch.randn(b, h, tokens.g, d, generator=gen)
        seq = torch.randn(b, n, h, d, generator=gen).transpose(1, 2)  # sequence-major, as the kernels'
        heads = seq.contiguous()  # head-major: no flat rows, the indexed path
        idx, used, flat = tokens.rows_place()
        want = seq.clone()
        for i in range(b):
            for g in range(tokens.g):
                if used[i, g]:
                    want[i, :, idx[i, g]] = values[i, :, g]
        for x in (seq.clone(), heads.clone()):
            assert torch.equal(write_rows_(x, idx, used, values, flat), want)
            got = read_rows(x, idx, used, flat)
            assert got.shape == values.shape
            assert torch.equal(got, torch.where(used[:, None, :, None], values, 0))


def test_model_masks_are_the_same_tensors_for_the_same_inputs(monkeypatch) -> None:
    from longseq.attention.global_tokens import model_masks
    from longseq.models.configs import LongformerConfig
    from longseq.models.longformer import LongformerModel

    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    gam = torch.zeros(2, 12, dtype=torch.long)
    gam[:, 0] = 1
    gam[1, 10] = 1  # padded: not global
    pad, glob = model_masks(mask, gam, (2, 12), mask.device)
    assert pad.tolist() == mask.bool().tolist() and glob.tolist() == (gam.bool() & mask.bool()).tolist()
    assert model_masks(mask, gam, (2, 12), mask.device)[0] is pad  # same inputs: same objects
    assert model_masks(mask.clone(), gam, (2, 12), mask.device)[0] is not pad  # another tensor
    gam[0, 3] = 1  # in place: a new version, new masks
    again = model_masks(mask, gam, (2, 12), mask.device)
    assert again[1] is not glob and again[1][0, 3]
    assert model_masks(None, None, (1, 5), mask.device) == (None, None)  # all real: nothing to mask
    no_pad, only_glob = model_masks(None, gam, (2, 12), mask.device)
    assert no_pad is None and only_glob.tolist() == gam.bool().tolist()
    assert model_masks(None, gam, (2, 12), mask.device)[1] is only_glob

    # a Longformer reads its global tokens from the device once per mask, not once per forward
    reads = []
    original = GlobalTokens.of
    monkeypatch.setattr(GlobalTokens, "of", staticmethod(lambda glob: reads.append(1) or original(glob)))
    cfg = LongformerConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
        attention_window=[4, 4], max_position_embeddings=40,
    )  # fmt: skip
    model = LongformerModel(cfg).eval()
    ids = torch.randint(3, 30, (2, 12))
    first = model(input_ids=ids, attention_mask=mask, global_attention_mask=gam).last_hidden_state
    second = model(input_ids=ids, attention_mask=mask, global_attention_mask=gam).last_hidden_state
    assert len(reads) == 1 and torch.equal(first, second)
    gam[1, 2] = 1  # changed in place: read again, and the new global token changes the output
    third = model(input_ids=ids, attention_mask=mask, global_attention_mask=gam).last_hidden_state
    assert len(reads) == 2 and not torch.allclose(third[1], second[1])


def test_longformer_masks_under_torch_compile() -> None:
    """Traced by torch.compile, model_masks is plain tensor code (no cache): the same outputs."""
    from longseq.models.configs import LongformerConfig
    from longseq.models.longformer import LongformerModel

    torch.manual_seed(0)
    cfg = LongformerConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
        attention_window=[4], max_position_embeddings=40,
    )  # fmt: skip
    model = LongformerModel(cfg).eval()
    ids = torch.randint(3, 30, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    gam = torch.zeros(2, 12, dtype=torch.long)
    gam[:, 0] = 1
    want = model(input_ids=ids, attention_mask=mask, global_attention_mask=gam).last_hidden_state
    compiled = torch.compile(model, backend="aot_eager")
    got = compiled(input_ids=ids, attention_mask=mask, global_attention_mask=gam).last_hidden_state
    assert torch.allclose(got, want, atol=1e-6)
