"""The attention core computes exactly what Hugging Face's attention modules compute.

Each test builds a small, seeded Hugging Face attention module (Reformer `LSHSelfAttention` and
`LocalSelfAttention`, Longformer `LongformerSelfAttention`, BigBird `BigBirdBlockSparseAttention`
and `BigBirdSelfAttention`), projects random hidden states with the module's own q/k/v weights, calls
`attend` with the matching pattern on both the "torch" and the "reference" backends, and compares
with the module's output (which is taken before any output projection) at real positions: the
largest absolute difference must be <= 1e-5 in float32. Hugging Face needs lengths that are a
multiple of its chunk, window or block and marks padding through its own masks; where a case has
a shorter real length, `attend` gets the unpadded sequence and pads on its own.

transformers is a test-only oracle: nothing is downloaded, every module is built from a config.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BigBirdConfig, LongformerConfig, LongformerModel, ReformerConfig
from transformers.models.big_bird.modeling_big_bird import (
    BigBirdBlockSparseAttention,
    BigBirdModel,
    BigBirdSelfAttention,
)
from transformers.models.longformer.modeling_longformer import LongformerSelfAttention
from transformers.models.reformer.modeling_reformer import LocalSelfAttention, LSHSelfAttention

from longseq.attention import LSH, BlockSparse, LocalChunks, SlidingWindow, attend
from longseq.attention.lsh import hash_buckets

ATOL = 1e-5
BACKENDS = ("torch", "reference")
WEIGHT_STD = 0.3  # large enough for peaked (not near-uniform) attention, small enough for float32


# --------------------------------------------------------------------------------------------------
# helpers


def _init_weights(module: torch.nn.Module, seed: int) -> None:
    """Seeded normal weights (and biases) for every parameter of `module`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_STD)


def _hidden(batch: int, seq: int, hidden: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, seq, hidden, generator=torch.Generator().manual_seed(seed + 1000))


Spans = list[int | tuple[int, int]] | None


def _real(spans: Spans, batch: int, seq: int) -> torch.Tensor:
    """(batch, seq) bool real-token mask. spans[i] is an int (row i is real on its first spans[i]
    positions: padding on the right) or (start, stop) (real on start .. stop - 1); None: all real."""
    if spans is None:
        return torch.ones(batch, seq, dtype=torch.bool)
    pos = torch.arange(seq)
    rows = [(0, s) if isinstance(s, int) else s for s in spans]
    return torch.stack([(pos >= start) & (pos < stop) for start, stop in rows])


def _unpadded(real: torch.Tensor) -> int:
    """The length attend gets: up to the last real token of any row (attend pads the rest itself,
    Hugging Face needs a multiple of its chunk, window or block)."""
    return int(real.any(0).nonzero().max()) + 1


def _project(hidden: torch.Tensor, layer: torch.nn.Linear, heads: int) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, heads, seq, head_dim) with the layer's weights."""
    return _split(F.linear(hidden, layer.weight, layer.bias), heads)


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _max_diff(ours: torch.Tensor, theirs: torch.Tensor, rows: torch.Tensor) -> float:
    """Largest |ours - theirs| over the query rows where `rows` is True.

    ours (batch, heads, n, d); theirs (batch, heads, N, d) with N >= n (Hugging Face's padded length);
    rows (batch, n), or (batch, heads, n) to choose rows per head.
    """
    assert torch.isfinite(ours).all()
    assert rows.any(), "no row to compare"
    theirs = theirs[:, :, : ours.shape[2]].to(ours.dtype)
    if rows.dim() == 2:
        rows = rows[:, None, :].expand(-1, ours.shape[1], -1)
    diff = (ours - theirs).abs().amax(dim=-1)  # (batch, heads, n)
    return diff[rows].max().item()


def _check(ours: torch.Tensor, theirs: torch.Tensor, rows: torch.Tensor, label: str) -> None:
    diff = _max_diff(ours, theirs, rows)
    print(f"{label}: max abs diff {diff:.3g}")
    assert diff <= ATOL, f"{label}: max abs diff {diff} > {ATOL}"


def _padding_mask(real: torch.Tensor, n: int) -> torch.Tensor | None:
    """attend's padding_mask for its length n, or None when every token is real."""
    return None if real.all() else real[:, :n]


# --------------------------------------------------------------------------------------------------
# Reformer LSH attention

LSH_CASES = {
    # id: (num_hashes, num_buckets, chunk_length, chunks_before, chunks_after, causal, seq, spans)
    "1hash": (1, 4, 4, 1, 0, False, 32, None),
    "3hashes": (3, 8, 4, 1, 0, False, 32, None),
    "3hashes-causal": (3, 4, 4, 1, 0, True, 32, None),
    "pair-buckets": (2, (2, 4), 4, 1, 0, False, 32, None),
    "pair-buckets-3hashes-causal": (3, (4, 2), 8, 1, 0, True, 48, None),
    "before0-after0": (2, 4, 4, 0, 0, False, 24, None),
    "before2-after1": (2, 4, 4, 2, 1, False, 24, None),
    "few-chunks-counted-twice": (1, 2, 4, 1, 1, False, 8, None),
    "padding": (3, 4, 4, 1, 0, False, 32, [32, 21]),
    "padding-causal-unpadded-length": (2, (2, 2), 4, 1, 1, True, 32, [29, 17]),
    "left-and-inner-padding": (2, 4, 4, 1, 0, False, 32, [(5, 32), (3, 26)]),
    "left-padding-causal": (3, (2, 4), 8, 1, 1, True, 32, [(7, 32), 32]),
    "one-chunk-dense": (3, 4, 16, 1, 0, False, 12, [12, 7]),
    "one-chunk-dense-causal": (2, 4, 16, 1, 0, True, 16, [16, 9]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(LSH_CASES), ids=list(LSH_CASES))
def test_reformer_lsh_self_attention(case: str, backend: str) -> None:
    """LSHSelfAttention with `hash_seed`: same buckets, same output.

    A query that sees no other key in any round (causal: the first tokens) attends to itself. Hugging
    Face gets there through its self-mask value -1e5, and in float32 its log-sum-exps near -1e5 are
    rounded to steps of 2**-7: its output there is the token's value times a factor off 1 by a few
    1e-3. Those rows are compared with Hugging Face replayed in float64 on the same buckets (where the
    rounding is gone); every other row also with the float32 output as is.
    """
    num_hashes, num_buckets, chunk, before, after, causal, seq, spans = LSH_CASES[case]
    batch, heads, head_dim, hidden_size, hash_seed = 2, 2, 8, 16, 17
    config = ReformerConfig(
        hidden_size=hidden_size,
        num_attention_heads=heads,
        attention_head_size=head_dim,
        num_hashes=num_hashes,
        num_buckets=list(num_buckets) if isinstance(num_buckets, tuple) else num_buckets,
        lsh_attn_chunk_length=chunk,
        lsh_num_chunks_before=before,
        lsh_num_chunks_after=after,
        lsh_attention_probs_dropout_prob=0.0,
        hash_seed=hash_seed,
        is_decoder=causal,
        max_position_embeddings=64,
    )
    module = LSHSelfAttention(config, layer_idx=0).eval()
    _init_weights(module, seed=seq + num_hashes)
    hidden = _hidden(batch, seq, hidden_size, seed=seq)
    real = _real(spans, batch, seq)
    attention_mask = None if real.all() else real.long()
    with torch.no_grad():
        hf = module(hidden, attention_mask=attention_mask)
        # the same module in float64, on the float32 run's buckets (None on the one-chunk path)
        module64 = copy.deepcopy(module).double()
        hf64 = module64(hidden.double(), attention_mask=attention_mask, buckets=hf.buckets)
    theirs = _split(hf.hidden_states, heads)
    theirs64 = _split(hf64.hidden_states, heads)
    v64 = _project(hidden.double(), module64.value, heads)
    own_value = (theirs64 - v64).abs().amax(-1) <= 1e-9  # (batch, heads, seq): nothing else was visible

    qk = _project(hidden, module.query_key, heads)
    v = _project(hidden, module.value, heads)
    pattern = LSH(num_hashes, num_buckets, chunk, before, after, causal=causal, seed=hash_seed)
    n = _unpadded(real)
    padding = _padding_mask(real, n)
    qk_n = qk[:, :, :n]  # one tensor as both q and k
    ours = attend(qk_n, qk_n, v[:, :, :n], pattern, padding_mask=padding, backend=backend)

    if seq > chunk:  # the hashing itself: the same buckets as Hugging Face in every round
        offsets = torch.arange(num_hashes)[:, None] * (pattern.total_buckets + int(not real.all()))
        assert torch.equal(hf.buckets - offsets, hash_buckets(qk, pattern, real))
    rows = real[:, None, :n] & ~own_value[:, :, :n]
    _check(ours, theirs, rows, f"lsh[{case}, {backend}]")
    _check(ours, theirs64, real[:, :n], f"lsh[{case}, {backend}] vs float64 replay, all rows")
    if causal:
        assert own_value[:, :, 0].all()  # the first token sees nothing else
        own_rows = real[:, None, :n] & own_value[:, :, :n]
        print(
            f"  rows that see only themselves: {int(own_rows.sum())}, Hugging Face float32 off there by "
            f"{_max_diff(ours, theirs, own_rows):.3g}"
        )


# --------------------------------------------------------------------------------------------------
# Reformer local attention

LOCAL_CASES = {
    # id: (chunk_length, chunks_before, chunks_after, causal, seq, spans)
    "before1": (4, 1, 0, False, 16, None),
    "two-chunks-before1-after1": (4, 1, 1, False, 8, None),  # the other chunk counts twice
    "two-chunks-before1-after1-causal": (4, 1, 1, True, 8, None),
    "two-chunks-before2-causal": (4, 2, 0, True, 8, None),  # the own chunk counts twice
    "three-chunks-before2-after2": (4, 2, 2, False, 12, None),  # the neighbours count twice
    "before0-after0-padding": (8, 0, 0, False, 32, [32, 19]),
    "causal-padding-unpadded-length": (4, 1, 0, True, 32, [30, 13]),
    "before1-after1-padding": (4, 1, 1, False, 24, [24, 6]),
    "left-padding-causal": (4, 1, 0, True, 24, [(6, 24), (1, 19)]),
    "one-chunk-dense-padding": (16, 1, 0, False, 12, [12, 5]),
    "one-chunk-dense-causal-padding": (16, 1, 0, True, 16, [16, 10]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(LOCAL_CASES), ids=list(LOCAL_CASES))
def test_reformer_local_self_attention(case: str, backend: str) -> None:
    chunk, before, after, causal, seq, spans = LOCAL_CASES[case]
    batch, heads, head_dim, hidden_size = 2, 2, 8, 16
    config = ReformerConfig(
        hidden_size=hidden_size,
        num_attention_heads=heads,
        attention_head_size=head_dim,
        local_attn_chunk_length=chunk,
        local_num_chunks_before=before,
        local_num_chunks_after=after,
        local_attention_probs_dropout_prob=0.0,
        is_decoder=causal,
    )
    module = LocalSelfAttention(config, layer_idx=0).eval()
    _init_weights(module, seed=seq + chunk)
    hidden = _hidden(batch, seq, hidden_size, seed=seq)
    real = _real(spans, batch, seq)
    with torch.no_grad():
        hf = module(hidden, attention_mask=None if real.all() else real.long())
    theirs = _split(hf.hidden_states, heads)

    q = _project(hidden, module.query, heads)
    k = _project(hidden, module.key, heads)  # Hugging Face divides keys by sqrt(head_dim): the default scale
    v = _project(hidden, module.value, heads)
    n = _unpadded(real)
    pattern = LocalChunks(chunk, before, after, causal=causal)
    padding = _padding_mask(real, n)
    ours = attend(q[:, :, :n], k[:, :, :n], v[:, :, :n], pattern, padding_mask=padding, backend=backend)
    _check(ours, theirs, real[:, :n], f"local[{case}, {backend}]")


# --------------------------------------------------------------------------------------------------
# Longformer


def _longformer_layer_mask(real: torch.Tensor, glob: torch.Tensor) -> dict:
    """The keyword arguments LongformerModel gives each LongformerSelfAttention layer.

    LongformerModel merges the masks into 0 (padding) / 1 (local) / 2 (global), turns it into an
    additive mask (finfo.min for padding, 0 for local) and then writes finfo.max on global tokens;
    the encoder derives is_index_masked (< 0), is_index_global_attn (> 0) and is_global_attn.
    """
    merged = real.long() * (glob.long() + 1)
    finfo = torch.finfo(torch.float32)
    mask = torch.zeros(merged.shape, dtype=torch.float32)
    mask[merged == 0] = finfo.min
    mask[merged == 2] = finfo.max
    return {
        "attention_mask": mask,
        "is_index_masked": mask < 0,
        "is_index_global_attn": mask > 0,
        "is_global_attn": bool((mask > 0).any()),
    }


def test_longformer_layer_mask_matches_longformer_model() -> None:
    """The layer arguments built here are those LongformerModel passes to its self-attention."""
    config = LongformerConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        attention_window=[4],
        max_position_embeddings=64,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    model = LongformerModel(config, add_pooling_layer=False).eval()
    seen: dict = {}

    def capture(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        seen.update(kwargs)

    model.encoder.layer[0].attention.self.register_forward_pre_hook(capture, with_kwargs=True)
    ids = torch.randint(2, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    glob = torch.zeros(2, 12, dtype=torch.bool)
    glob[0, [3, 7]] = True
    glob[1, 0] = True
    real = _real([10, (2, 8)], 2, 12)  # the model pads 10 -> 12 (a multiple of the window)
    with torch.no_grad():
        model(ids, attention_mask=real[:, :10].long(), global_attention_mask=glob[:, :10].long())
    expected = _longformer_layer_mask(real, glob)
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(seen[name], value), name
        else:
            assert seen[name] == value, name


LONGFORMER_CASES = {
    # id: (attention_window, seq, spans, global positions per row or None)
    "window4": (4, 16, None, None),
    "window8-padding": (8, 32, [32, 27], None),
    "window6-padding": (6, 30, [30, 22], None),
    "window4-unpadded-length": (4, 12, [11, 7], None),
    "globals": (4, 24, [24, 19], [[0, 7], [3]]),
    "globals-edges": (8, 40, [37, 40], [[0, 1, 2, 36], [39]]),
    "globals-one-row-none-unpadded-length": (4, 12, [11, 7], [[5], []]),
    "globals-many": (16, 64, [64, 50], [[10, 20, 30, 40, 50, 60], [0]]),
    "globals-left-padding": (8, 32, [(5, 32), (2, 29)], [[5, 20], [28]]),
    "window-covers-all": (32, 32, [32, 20], [[3], [0]]),
}


# global weights "copied": query/key/value_global hold the local weights, so global rows follow
# attend's global_mask semantics; "distinct": their own weights, only non-global rows compared
LONGFORMER_PARAMS = [(case, "copied") for case in LONGFORMER_CASES] + [
    (case, "distinct") for case, spec in LONGFORMER_CASES.items() if spec[3] is not None
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("case", "global_weights"), LONGFORMER_PARAMS, ids=[f"{c}-{w}" for c, w in LONGFORMER_PARAMS]
)
def test_longformer_self_attention(case: str, global_weights: str, backend: str) -> None:
    window, seq, spans, globals_ = LONGFORMER_CASES[case]
    batch, heads, hidden_size = 2, 2, 16
    config = LongformerConfig(
        hidden_size=hidden_size,
        num_attention_heads=heads,
        attention_window=[window],
        attention_probs_dropout_prob=0.0,
    )
    module = LongformerSelfAttention(config, layer_id=0).eval()
    _init_weights(module, seed=seq + window)
    if global_weights == "copied":
        with torch.no_grad():
            for local, glob_layer in (
                (module.query, module.query_global),
                (module.key, module.key_global),
                (module.value, module.value_global),
            ):
                glob_layer.weight.copy_(local.weight)
                glob_layer.bias.copy_(local.bias)
    hidden = _hidden(batch, seq, hidden_size, seed=seq)
    real = _real(spans, batch, seq)
    glob = torch.zeros(batch, seq, dtype=torch.bool)
    for row, positions in enumerate(globals_ or []):
        glob[row, positions] = True
    glob &= real
    with torch.no_grad():
        hf = module(hidden, **_longformer_layer_mask(real, glob))[0]
    theirs = _split(hf, heads)

    q = _project(hidden, module.query, heads)
    k = _project(hidden, module.key, heads)
    v = _project(hidden, module.value, heads)
    n = _unpadded(real)
    ours = attend(
        q[:, :, :n],
        k[:, :, :n],
        v[:, :, :n],
        SlidingWindow(window=window),
        padding_mask=_padding_mask(real, n),
        global_mask=None if globals_ is None else glob[:, :n],
        backend=backend,
    )
    rows = real[:, :n]
    if global_weights == "distinct":
        # global rows use Hugging Face's separate global projections: compare every other row, and
        # make sure those global rows really differ (the separate weights are in use)
        global_rows = glob[:, :n]
        assert _max_diff(ours, theirs, global_rows) > 1e-3
        rows = rows & ~global_rows
    _check(ours, theirs, rows, f"longformer[{case}, {backend}, {global_weights}]")


# --------------------------------------------------------------------------------------------------
# BigBird


def _bigbird_config(
    block_size: int, r: int, heads: int, hidden_size: int, max_positions: int
) -> BigBirdConfig:
    return BigBirdConfig(
        hidden_size=hidden_size,
        num_attention_heads=heads,
        block_size=block_size,
        num_random_blocks=r,
        max_position_embeddings=max_positions,
        attention_type="block_sparse",
        attention_probs_dropout_prob=0.0,
        use_bias=True,
    )


def _hf_random_plan(module: BigBirdBlockSparseAttention, seq: int) -> torch.Tensor:
    """The per-head random plan (heads, num_blocks - 2, r) HF draws in training mode, re-drawn here
    with HF's own plan functions and numpy seeded with the layer seed, as its forward does."""
    bs, r, heads = module.block_size, module.num_random_blocks, module.num_attention_heads
    np.random.seed(module.seed)
    if seq in (1024, 3072, 4096):  # the plans of the paper
        plan = [
            module._bigbird_block_rand_mask(module.max_seqlen, module.max_seqlen, bs, bs, r, last_idx=1024)[
                : seq // bs - 2
            ]
            for _ in range(heads)
        ]
    else:
        plan_from_length, plan_num_rand_blocks = module._get_rand_attn_plan(seq, bs, r)
        plan = module._bigbird_block_rand_mask_with_head(
            from_seq_length=seq,
            to_seq_length=seq,
            from_block_size=bs,
            to_block_size=bs,
            num_heads=heads,
            plan_from_length=plan_from_length,
            plan_num_rand_blocks=plan_num_rand_blocks,
        )
    return torch.from_numpy(np.stack(plan)).long()


def _run_bigbird(
    block_size: int,
    r: int,
    seq: int,
    spans: Spans,
    train: bool,
    backend: str,
    label: str,
    heads: int = 2,
    hidden_size: int = 16,
    max_positions: int = 512,
) -> torch.Tensor:
    """Compare attend with BigBirdBlockSparseAttention; returns the random plan HF used."""
    batch = 2 if spans is not None else 1
    config = _bigbird_config(block_size, r, heads, hidden_size, max_positions)
    layer_seed = 7
    module = BigBirdBlockSparseAttention(config, seed=layer_seed).train(train)
    _init_weights(module, seed=seq + block_size + r)
    hidden = _hidden(batch, seq, hidden_size, seed=seq)
    real = _real(spans, batch, seq)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
        real.float(), block_size
    )

    seen: dict = {}
    original = module._create_rand_mask_from_inputs

    def spy(from_blocked_mask, to_blocked_mask, rand_attn, *args):  # records the plan HF uses
        seen["rand_attn"] = rand_attn.clone()
        return original(from_blocked_mask, to_blocked_mask, rand_attn, *args)

    module._create_rand_mask_from_inputs = spy
    with torch.no_grad():
        hf, _ = module(
            hidden,
            band_mask=band,
            from_mask=from_mask,
            to_mask=to_mask,
            from_blocked_mask=blocked,
            to_blocked_mask=blocked,
        )
    theirs = _split(hf, heads)
    used = seen["rand_attn"][0]  # (heads, num_blocks - 2, r), the same for every batch row
    num_blocks = seq // block_size
    if train:
        plan = _hf_random_plan(module, seq)
        assert torch.equal(plan, used)
        assert plan.shape == (heads, num_blocks - 2, r)
    else:
        plan = torch.zeros(num_blocks - 2, r, dtype=torch.long)  # HF's eval plan: no randomness
        assert torch.equal(used, plan.expand(heads, -1, -1))

    q = _project(hidden, module.query, heads)
    k = _project(hidden, module.key, heads)
    v = _project(hidden, module.value, heads)
    n = _unpadded(real)
    pattern = BlockSparse(block_size, r, seed=plan)
    assert not pattern.is_dense(n)
    padding = _padding_mask(real, n)
    ours = attend(q[:, :, :n], k[:, :, :n], v[:, :, :n], pattern, padding_mask=padding, backend=backend)
    _check(ours, theirs, real[:, :n], label)
    return plan


BIGBIRD_CASES = {
    # id: (block_size, num_random_blocks, seq, spans)
    "bs4-r1": (4, 1, 32, None),
    "bs4-r2-padding": (4, 2, 48, [48, 37]),
    "bs8-r3-padding-unpadded-length": (8, 3, 96, [90, 70]),
    "bs2-r1": (2, 1, 16, None),
    "bs4-r3-long": (4, 3, 128, [128, 77]),
    "bs4-r2-left-padding": (4, 2, 64, [(9, 64), (2, 50)]),
}


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(BIGBIRD_CASES), ids=list(BIGBIRD_CASES))
def test_bigbird_block_sparse_attention(case: str, backend: str, train: bool) -> None:
    block_size, r, seq, spans = BIGBIRD_CASES[case]
    mode = "train" if train else "eval"
    _run_bigbird(block_size, r, seq, spans, train, backend, f"bigbird[{case}, {backend}, {mode}]")


BIGBIRD_PAPER_CASES = {
    # id: (seq, max_position_embeddings, train, spans)
    "1024-train": (1024, 1024, True, [1024, 1000]),
    "3072-train": (3072, 4096, True, None),
    "4096-train": (4096, 4096, True, None),
    "1024-eval": (1024, 4096, False, None),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(BIGBIRD_PAPER_CASES), ids=list(BIGBIRD_PAPER_CASES))
def test_bigbird_block_sparse_attention_paper_lengths(case: str, backend: str) -> None:
    """Lengths 1024, 3072 and 4096: HF draws its plan with `_bigbird_block_rand_mask` (which may
    repeat window blocks: they count twice). Small heads keep the dense reference affordable."""
    seq, max_positions, train, spans = BIGBIRD_PAPER_CASES[case]
    block_size = 64
    plan = _run_bigbird(
        block_size,
        3,
        seq,
        spans,
        train,
        backend,
        f"bigbird-paper[{case}, {backend}]",
        heads=2,
        hidden_size=8,
        max_positions=max_positions,
    )
    if case == "1024-train":  # HF's last rows here may list a window block: it counts twice
        rows = torch.arange(1, seq // block_size - 1)[None, :, None]  # query block of each plan row
        assert ((plan - rows).abs() <= 1).any()


BIGBIRD_DENSE_CASES = {
    # id: (block_size, num_random_blocks, seq, spans): seq <= (5 + 2 r) * block_size
    "at-threshold-padding": (4, 2, 36, [36, 20]),
    "short": (4, 1, 10, None),
    "short-padding": (8, 3, 50, [50, 3]),
    "short-left-padding": (4, 1, 24, [(3, 24), (20, 24)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(BIGBIRD_DENSE_CASES), ids=list(BIGBIRD_DENSE_CASES))
def test_bigbird_short_inputs_are_full_attention(case: str, backend: str) -> None:
    """Up to (5 + 2 r) * block_size tokens BigBirdModel switches to 'original_full' attention
    (BigBirdSelfAttention with an additive padding mask): BlockSparse is dense there too."""
    block_size, r, seq, spans = BIGBIRD_DENSE_CASES[case]
    batch, heads, hidden_size = 2, 2, 16
    config = _bigbird_config(block_size, r, heads, hidden_size, 512)
    module = BigBirdSelfAttention(config).eval()
    _init_weights(module, seed=seq)
    hidden = _hidden(batch, seq, hidden_size, seed=seq)
    real = _real(spans, batch, seq)
    additive = torch.zeros(batch, 1, 1, seq).masked_fill(
        ~real[:, None, None, :], torch.finfo(torch.float32).min
    )
    with torch.no_grad():
        hf, _ = module(hidden, attention_mask=additive)
    theirs = _split(hf, heads)

    q = _project(hidden, module.query, heads)
    k = _project(hidden, module.key, heads)
    v = _project(hidden, module.value, heads)
    pattern = BlockSparse(block_size, r, seed=0)
    assert pattern.is_dense(seq)
    ours = attend(q, k, v, pattern, padding_mask=_padding_mask(real, seq), backend=backend)
    _check(ours, theirs, real, f"bigbird-dense[{case}, {backend}]")
