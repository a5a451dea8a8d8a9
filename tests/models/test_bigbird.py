"""longseq's BigBird classes give Hugging Face's outputs, losses and gradients, from HF folders and back.

Every model is a small random-init Hugging Face model (transformers is a test-only oracle), saved with
`save_pretrained` and loaded with longseq's `from_pretrained`. Hugging Face pads to the block multiple
and computes other values at padded positions: outputs are compared at real positions only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as hf
from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

from longseq.checkpoints import to_hf_keys
from longseq.models import bigbird as lb

ATOL = 1e-5
GRAD_RTOL = 1e-4
VOCAB, SEP, PAD = 60, 3, 0
CLASSES = [
    "BigBirdModel",
    "BigBirdForMaskedLM",
    "BigBirdForCausalLM",
    "BigBirdForSequenceClassification",
    "BigBirdForTokenClassification",
    "BigBirdForQuestionAnswering",
    "BigBirdForMultipleChoice",
    "BigBirdForPreTraining",
]
# output fields compared, per class (hidden states and pooler for the base model)
FIELDS = {
    "BigBirdModel": ("last_hidden_state", "pooler_output"),
    "BigBirdForMaskedLM": ("loss", "logits"),
    "BigBirdForCausalLM": ("loss", "logits"),
    "BigBirdForSequenceClassification": ("loss", "logits"),
    "BigBirdForTokenClassification": ("loss", "logits"),
    "BigBirdForQuestionAnswering": ("loss", "start_logits", "end_logits"),
    "BigBirdForMultipleChoice": ("loss", "logits"),
    "BigBirdForPreTraining": ("loss", "prediction_logits", "seq_relationship_logits"),
}


def _config(**overrides: object) -> hf.BigBirdConfig:
    kw: dict = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=160,
        block_size=4,
        num_random_blocks=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.1,  # peaked attention: differences in the pattern show
        pad_token_id=PAD,
        sep_token_id=SEP,
        num_labels=3,
    )
    kw.update(overrides)
    return hf.BigBirdConfig(**kw)


def _pair(name: str, tmp_path: Path, seed: int = 0, **overrides: object) -> tuple:
    """A random-init HF model and longseq's load of its saved folder, both in eval mode."""
    torch.manual_seed(seed)
    theirs = getattr(hf, name)(_config(**overrides)).eval()
    folder = tmp_path / f"hf-{name}"
    theirs.save_pretrained(folder)
    ours = getattr(lb, name).from_pretrained(folder)
    return theirs, ours


def _inputs(name: str, seq: int, real: list[int] | None, seed: int = 1) -> tuple[dict, torch.Tensor]:
    """Model inputs with labels, and the (batch, seq) real-token mask."""
    gen = torch.Generator().manual_seed(seed + seq)
    batch = 2
    ids = torch.randint(4, VOCAB, (batch, seq), generator=gen)
    ids[:, 5] = SEP  # the question ends here (question answering)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if real is not None:
        for row, n in enumerate(real):
            mask[row, n:] = 0
            ids[row, n:] = PAD
    kw: dict = {"input_ids": ids, "attention_mask": mask}
    if real is not None or name == "BigBirdModel":
        kw["token_type_ids"] = (torch.arange(seq) >= seq // 2).long().expand(batch, -1)
    token_labels = torch.randint(0, VOCAB, (batch, seq), generator=gen).masked_fill(mask == 0, -100)
    if name in ("BigBirdForMaskedLM", "BigBirdForCausalLM"):
        kw["labels"] = token_labels
    elif name == "BigBirdForPreTraining":
        kw["labels"] = token_labels
        kw["next_sentence_label"] = torch.tensor([0, 1])
    elif name == "BigBirdForSequenceClassification":
        kw["labels"] = torch.tensor([2, 0])
    elif name == "BigBirdForTokenClassification":
        kw["labels"] = torch.where(token_labels >= 0, token_labels % 3, -100)
    elif name == "BigBirdForQuestionAnswering":
        kw["start_positions"], kw["end_positions"] = torch.tensor([9, 12]), torch.tensor([14, seq + 3])
        kw.pop("token_type_ids", None)  # derived from the question, as HF does
    elif name == "BigBirdForMultipleChoice":
        other = torch.where(ids >= 4, (ids + 7 - 4) % (VOCAB - 4) + 4, ids)  # another answer
        kw = {k: torch.stack([v, other if k == "input_ids" else v], 1) for k, v in kw.items()}
        kw["labels"] = torch.tensor([1, 0])
        return kw, mask
    return kw, mask


def _diff(ours: torch.Tensor, theirs: torch.Tensor, real: torch.Tensor, atol: float = 0.0) -> float:
    """max |ours - theirs| at real positions (tensors with a sequence dim are cut to ours' length).

    Where both are below -1e5 (question logits lowered by 1e6) the values are compared relative."""
    ours, theirs = ours.detach(), theirs.detach().to(ours.dtype)
    assert torch.isfinite(ours).all()
    if ours.dim() >= 2 and ours.shape[1] == real.shape[1] and ours.shape[0] == real.shape[0]:
        theirs = theirs[:, : ours.shape[1]]
        keep = real.bool()
        ours, theirs = ours[keep], theirs[keep]
    else:
        theirs = theirs.reshape(ours.shape)
    d = (ours - theirs).abs()
    lowered = (ours < -1e5) & (theirs < -1e5)
    return float(torch.where(lowered, d / 1e6, d).max())


def _compare(
    name: str, ours_out: object, theirs_out: object, real: torch.Tensor, label: str, skip: tuple = ()
) -> float:
    worst = 0.0
    for field in FIELDS[name]:
        if field in skip:
            continue
        a, b = getattr(ours_out, field), getattr(theirs_out, field)
        assert a is not None and b is not None, f"{label}: {field} missing"
        r = real if name != "BigBirdForMultipleChoice" else real.repeat_interleave(2, 0)
        d = _diff(a, b, r)
        worst = max(worst, d)
        assert d <= ATOL, f"{label}: {field} max abs diff {d}"
    print(f"{label}: max abs diff {worst:.3g}")
    return worst


# id: (config overrides, seq, real lengths of the two rows or None)
CASES = {
    "sparse-bs4-r1": ({}, 72, None),
    "sparse-bs4-r1-padding-ragged": ({}, 69, [69, 47]),
    "sparse-bs8-r2-ragged": ({"block_size": 8, "num_random_blocks": 2}, 131, [131, 90]),
    "sparse-rescale-nobias": ({"rescale_embeddings": True, "use_bias": False}, 61, [61, 40]),
    "dense-fallback-short": ({}, 22, [22, 15]),
    "original-full": ({"attention_type": "original_full"}, 70, [70, 44]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", CLASSES)
def test_eval_outputs_match_hf(name: str, case: str, tmp_path: Path) -> None:
    overrides, seq, real_lengths = CASES[case]
    if name == "BigBirdForCausalLM":
        overrides = {**overrides, "is_decoder": True, "attention_type": "original_full"}
    theirs, ours = _pair(name, tmp_path, **overrides)
    kw, real = _inputs(name, seq, real_lengths)
    with torch.no_grad():
        a = ours(**kw, output_hidden_states=True)
        b = theirs(**kw, output_hidden_states=True)
    # HF's full attention computes values for padded query rows, longseq's attention (like HF's own
    # block-sparse attention) gives zeros there. Only one loss reads padded positions: HF's span loss
    # takes its softmax over every position, padding included. There it differs by design.
    full = case.startswith(("dense", "original")) and real_lengths is not None
    skip = ("loss",) if full and name == "BigBirdForQuestionAnswering" else ()
    _compare(name, a, b, real, f"{name}[{case}]", skip)
    if skip:
        unpadded = {k: kw[k][:1, : real_lengths[0]] for k in ("input_ids", "attention_mask")}
        pos = {k: kw[k][:1] for k in ("start_positions", "end_positions")}
        with torch.no_grad():  # the first row has no padding: its loss agrees
            loss_ours, loss_hf = ours(**unpadded, **pos).loss, theirs(**unpadded, **pos).loss
        assert abs(float(loss_ours - loss_hf)) <= ATOL
    assert len(a.hidden_states) == len(b.hidden_states) == 3
    rows = real if name != "BigBirdForMultipleChoice" else real.repeat_interleave(2, 0)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert _diff(x, y, rows) <= ATOL
    assert not ours.training and ours.config.attention_type == theirs.config.attention_type


@pytest.mark.parametrize("case", ["sparse-bs4-r2", "original-full"])
def test_train_mode_outputs_and_gradients_match_hf(case: str, tmp_path: Path) -> None:
    """Train mode, all dropouts 0: HF draws its per-layer random plan (numpy seeded with the layer
    index); longseq draws the same plan without touching numpy's global RNG."""
    overrides = {"num_random_blocks": 2} if case != "original-full" else {"attention_type": "original_full"}
    theirs, ours = _pair("BigBirdForPreTraining", tmp_path, **overrides)
    theirs.train()
    ours.train()
    kw, real = _inputs("BigBirdForPreTraining", 77, [77, 58])
    np.random.seed(12345)
    before = np.random.get_state()[1].copy()
    a = ours(**kw)
    assert np.array_equal(np.random.get_state()[1], before), "longseq touched numpy's global RNG"
    b = theirs(**kw)
    worst = _compare("BigBirdForPreTraining", a, b, real, f"train[{case}]")
    a.loss.backward()
    b.loss.backward()
    ours_grads = to_hf_keys(
        {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}, ours.key_table
    )
    theirs_grads = {k: p.grad for k, p in theirs.named_parameters() if p.grad is not None}
    shared = ours_grads.keys() & theirs_grads.keys()
    assert len(shared) >= len(theirs_grads) - 1  # HF's tied decoder bias is one name of two
    worst_rel = 0.0
    for key in shared:
        g, h = ours_grads[key], theirs_grads[key]
        # key biases: their true gradient is 0 (a softmax ignores a shift per query row), both give
        # float32 noise there: an absolute floor of 1e-7
        rel = float((g - h).abs().max() / h.abs().max().clamp_min(1e-3))
        worst_rel = max(worst_rel, rel)
        assert (g - h).abs().max() <= GRAD_RTOL * h.abs().max() + 1e-7, f"{key}: gradient diff {rel}"
    print(f"train[{case}]: outputs {worst:.3g}, gradients relative {worst_rel:.3g} over {len(shared)}")


@pytest.mark.parametrize(
    ("seq", "block", "r", "heads", "max_positions", "seed"),
    [
        # lengths > (5 + 2r) * block only (shorter ones use full attention): HF's one-segment plan
        (72, 4, 1, 4, 160, 0),
        (100, 4, 3, 2, 160, 1),
        (64, 4, 2, 8, 160, 5),
        (136, 8, 2, 4, 512, 2),
        (1024, 16, 3, 2, 4096, 4),  # the paper's lengths: the old rule over max_positions
        (3072, 64, 2, 2, 4096, 7),
    ],
)
def test_random_plan_is_hfs(seq: int, block: int, r: int, heads: int, max_positions: int, seed: int) -> None:
    config = _config(block_size=block, num_random_blocks=r, num_attention_heads=heads)
    config.max_position_embeddings = max_positions
    module = BigBirdBlockSparseAttention(config, seed=seed).train()
    np.random.seed(seed)
    if seq in (1024, 3072, 4096):
        plan = [
            module._bigbird_block_rand_mask(max_positions, max_positions, block, block, r, last_idx=1024)[
                : seq // block - 2
            ]
            for _ in range(heads)
        ]
    else:
        lengths, counts = module._get_rand_attn_plan(seq, block, r)
        plan = module._bigbird_block_rand_mask_with_head(seq, seq, block, block, heads, lengths, counts)
    state = np.random.get_state()[1].copy()
    ours = lb.hf_random_plan(seq, block, r, heads, max_positions, seed)
    assert np.array_equal(np.random.get_state()[1], state)
    assert ours.shape == (heads, seq // block - 2, r)
    assert np.array_equal(ours, np.stack(plan))


def test_short_input_changes_nothing(tmp_path: Path) -> None:
    """HF issue 20031: a short input switches HF's model to full attention for good; longseq's stays."""
    theirs, ours = _pair("BigBirdForMaskedLM", tmp_path)
    fresh = lb.BigBirdForMaskedLM.from_pretrained(tmp_path / "hf-BigBirdForMaskedLM")
    long_kw, real = _inputs("BigBirdForMaskedLM", 72, None)
    short_kw, _ = _inputs("BigBirdForMaskedLM", 20, None)
    with torch.no_grad():
        expected = fresh(**long_kw).logits
        hf_long = theirs(**long_kw).logits
        ours(**short_kw)
        theirs(**short_kw)
        after = ours(**long_kw).logits
        hf_after = theirs(**long_kw).logits
    assert torch.equal(after, expected)
    assert ours.config.attention_type == "block_sparse" == ours.bert.attention_type
    assert _diff(after, hf_long, real) <= ATOL
    assert theirs.bert.attention_type == "original_full"  # HF's model changed itself
    assert _diff(hf_after, hf_long, real) > 1e-3  # and now gives other outputs for the same input


def test_causal_lm_is_causal_at_every_length(tmp_path: Path) -> None:
    """With is_decoder, longseq uses causal full attention. HF does too at short lengths (where it
    falls back to full attention), but its block-sparse attention ignores is_decoder: on long
    inputs HF's causal LM sees the future."""
    theirs, ours = _pair("BigBirdForCausalLM", tmp_path, is_decoder=True)
    kw, _ = _inputs("BigBirdForCausalLM", 72, None)
    kw.pop("labels")
    changed = {**kw, "input_ids": kw["input_ids"].clone()}
    changed["input_ids"][:, -1] = 7 + (changed["input_ids"][:, -1] == 7).long()
    with torch.no_grad():
        ours_a, ours_b = ours(**kw).logits, ours(**changed).logits
        hf_a, hf_b = theirs(**kw).logits, theirs(**changed).logits
    assert torch.equal(ours_a[:, :-1], ours_b[:, :-1])  # the last token changes nothing before it
    assert (hf_a[:, :-1] - hf_b[:, :-1]).abs().max() > 1e-3  # HF's block-sparse "decoder" leaks
    short_kw, real = _inputs("BigBirdForCausalLM", 24, [24, 17])
    with torch.no_grad():
        _compare("BigBirdForCausalLM", ours(**short_kw), theirs(**short_kw), real, "causal[short]")


def test_paper_random_plan_in_eval(tmp_path: Path) -> None:
    """paper_random_plan=True: eval uses random blocks (a fixed seeded plan), not HF's block 0 copies."""
    theirs, ours = _pair("BigBirdModel", tmp_path)
    paper = lb.BigBirdModel.from_pretrained(tmp_path / "hf-BigBirdModel")
    paper.set_paper_random_plan(True)
    kw, real = _inputs("BigBirdModel", 72, None)
    with torch.no_grad():
        a, b = paper(**kw).last_hidden_state, paper(**kw).last_hidden_state
        default = ours(**kw).last_hidden_state
    assert torch.equal(a, b)
    assert (a - default).abs().max() > 1e-3
    assert _diff(default, theirs(**kw).last_hidden_state, real) <= ATOL


@pytest.mark.parametrize("name", CLASSES)
def test_round_trip_to_hf(name: str, tmp_path: Path) -> None:
    """longseq save_pretrained -> HF from_pretrained: HF's outputs equal longseq's."""
    overrides = (
        {"is_decoder": True, "attention_type": "original_full"} if name == "BigBirdForCausalLM" else {}
    )
    _, ours = _pair(name, tmp_path, seed=3, **overrides)
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(hf, name).from_pretrained(tmp_path / "ours").eval()
    kw, real = _inputs(name, 69, [69, 50])
    with torch.no_grad():
        _compare(name, ours(**kw), back(**kw), real, f"round-trip[{name}]")
