"""Longformer: every class gives Hugging Face's outputs and gradients, and folders round-trip."""

from __future__ import annotations

import pytest
import torch
import transformers

from longseq.models import longformer as L
from longseq.models.configs import LongformerConfig

CLASSES = [
    "LongformerModel",
    "LongformerForMaskedLM",
    "LongformerForSequenceClassification",
    "LongformerForTokenClassification",
    "LongformerForQuestionAnswering",
    "LongformerForMultipleChoice",
]
OUTPUT_KEYS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits", "loss")
SEP, PAD = 2, 1


def hf_config(**changes) -> transformers.LongformerConfig:
    base = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        attention_window=[4, 6],
        max_position_embeddings=90,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        sep_token_id=SEP,
        pad_token_id=PAD,
        num_labels=2,
    )
    return transformers.LongformerConfig(**(base | changes))


def batch(seq: int = 23, rows: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Questions then contexts with three separators per row, the second row padded."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 60, (rows, seq), generator=gen)
    ids[:, 0] = 0
    mask = torch.ones(rows, seq, dtype=torch.long)
    lengths = [seq] + [seq - 5 - i for i in range(rows - 1)]
    for r, n in enumerate(lengths):
        ids[r, n:] = PAD
        mask[r, n:] = 0
        ids[r, [4 + r, 5 + r, n - 1]] = SEP
    return {"input_ids": ids, "attention_mask": mask}


def load_pair(name: str, tmp_path, config: transformers.LongformerConfig, seed: int = 0):
    torch.manual_seed(seed)
    hf = getattr(transformers, name)(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = getattr(L, name).from_pretrained(tmp_path / "hf")
    return hf, ours


def assert_same(a, b, real: torch.Tensor, atol: float = 1e-5) -> None:
    compared = 0
    for key in OUTPUT_KEYS:
        if key not in a:
            continue
        x, y = a[key], b[key]
        if x.dim() >= 2 and x.shape[:2] == real.shape:  # per-token outputs: real positions only
            x, y = x[real], y[real]
        torch.testing.assert_close(y, x, atol=atol, rtol=atol, msg=lambda m, k=key: f"{k}: {m}")
        compared += 1
    assert compared >= 1


@pytest.mark.parametrize("name", CLASSES)
def test_every_class_matches_hugging_face(name: str, tmp_path) -> None:
    hf, ours = load_pair(name, tmp_path, hf_config())
    inputs = batch(seq=23)
    real = inputs["attention_mask"].bool()
    if name == "LongformerForMultipleChoice":
        inputs = {k: torch.stack([v, v.flip(0)], 0) for k, v in inputs.items()}  # (batch, 2 choices, seq)
        inputs["labels"] = torch.tensor([0, 1])
        real = None
    elif name in ("LongformerModel", "LongformerForMaskedLM", "LongformerForTokenClassification"):
        glob = torch.zeros_like(inputs["input_ids"])
        glob[0, [0, 7, 22]] = 1  # different global tokens per row, one of them at the end
        glob[1, 3] = 1
        inputs["global_attention_mask"] = glob
    if name in ("LongformerForMaskedLM", "LongformerForTokenClassification"):
        inputs["labels"] = torch.randint(0, 2, inputs["input_ids"].shape).masked_fill(~real, -100)
    if name == "LongformerForSequenceClassification":
        inputs["labels"] = torch.tensor([1, 0])
    if name == "LongformerForQuestionAnswering":
        inputs |= {"start_positions": torch.tensor([8, 9]), "end_positions": torch.tensor([12, 30])}
    with torch.no_grad():
        a, b = hf(**inputs), ours(**inputs)
    if real is None:
        assert_same(a, b, torch.ones(1, 1, dtype=torch.bool))
    else:
        assert_same(a, b, real)


@pytest.mark.parametrize("seq", [1, 9, 40, 61])
def test_lengths_windows_and_no_global(seq: int, tmp_path) -> None:
    """Lengths not multiple of any window, per-layer windows, one row without global tokens."""
    hf, ours = load_pair("LongformerModel", tmp_path, hf_config(attention_window=[8, 4], num_hidden_layers=2))
    ids = torch.randint(3, 60, (2, seq))
    glob = torch.zeros(2, seq, dtype=torch.long)
    glob[0, 0] = 1
    with torch.no_grad():
        a = hf(input_ids=ids, global_attention_mask=glob)
        b = ours(input_ids=ids, global_attention_mask=glob)
    assert_same(a, b, torch.ones(2, seq, dtype=torch.bool))


def test_train_mode_gradients_match(tmp_path) -> None:
    hf, ours = load_pair("LongformerForMaskedLM", tmp_path, hf_config())
    hf.train()
    ours.train()
    inputs = batch(seq=31)
    real = inputs["attention_mask"].bool()
    inputs["labels"] = torch.randint(0, 60, real.shape).masked_fill(~real, -100)
    glob = torch.zeros_like(real, dtype=torch.long)
    glob[:, 0] = 1
    loss_hf = hf(**inputs, global_attention_mask=glob).loss
    loss_ours = ours(**inputs, global_attention_mask=glob).loss
    torch.testing.assert_close(loss_ours, loss_hf, atol=1e-5, rtol=1e-5)
    loss_hf.backward()
    loss_ours.backward()
    hf_grads = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    ours_grads = {
        k: v
        for k, v in _hf_named(ours, {k: p.grad for k, p in ours.named_parameters()}).items()
        if v is not None
    }
    tied = "longformer.embeddings.word_embeddings.weight"
    assert set(ours_grads) == set(hf_grads) and tied in hf_grads
    for key, g in hf_grads.items():  # relative, with a floor for gradients that are zero in exact math
        err = (ours_grads[key] - g).norm()
        assert err <= 1e-4 * g.norm() + 1e-6, (key, float(err), float(g.norm()))


def _hf_named(model, tensors: dict) -> dict:
    from longseq.checkpoints import to_hf_keys

    return to_hf_keys({k: v for k, v in tensors.items() if k not in model.tied_keys}, model.key_table)


@pytest.mark.parametrize("name", ["LongformerForMaskedLM", "LongformerForSequenceClassification"])
def test_round_trip_longseq_save_hugging_face_load(name: str, tmp_path) -> None:
    hf, ours = load_pair(name, tmp_path, hf_config(tie_word_embeddings=name.endswith("LM")))
    ours.save_pretrained(tmp_path / "ours")
    again = getattr(transformers, name).from_pretrained(tmp_path / "ours").eval()
    inputs = batch()
    with torch.no_grad():
        assert_same(hf(**inputs), again(**inputs), inputs["attention_mask"].bool(), atol=0)
    reloaded = getattr(L, name).from_pretrained(tmp_path / "ours")
    for (k, p), (_, q) in zip(ours.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(p, q), k


def test_untied_lm_head_uses_decoder_bias(tmp_path) -> None:
    hf, ours = load_pair("LongformerForMaskedLM", tmp_path, hf_config(tie_word_embeddings=False))
    with torch.no_grad():
        hf.lm_head.decoder.bias.normal_()
        hf.lm_head.decoder.weight.normal_()
    hf.save_pretrained(tmp_path / "untied")
    ours = L.LongformerForMaskedLM.from_pretrained(tmp_path / "untied")
    inputs = batch()
    with torch.no_grad():
        assert_same(hf(**inputs), ours(**inputs), inputs["attention_mask"].bool())
    ours.save_pretrained(tmp_path / "back")
    again = transformers.LongformerForMaskedLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert_same(hf(**inputs), again(**inputs), inputs["attention_mask"].bool(), atol=0)


def test_causal_dilated_windows_see_no_future(tmp_path) -> None:
    """longseq-only: per-layer and per-head dilation, causal windows (the paper's char-LM setting)."""
    config = LongformerConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        attention_window=[4, 8],
        attention_dilation=[[1, 1, 2, 2], [1, 2, 4, 8]],
        attention_causal=True,
        max_position_embeddings=100,
    )
    model = L.LongformerModel(config).eval()
    ids = torch.randint(3, 40, (1, 50))
    changed = ids.clone()
    changed[0, 30:] = torch.randint(3, 40, (20,))
    with torch.no_grad():
        a, b = model(input_ids=ids).last_hidden_state, model(input_ids=changed).last_hidden_state
    torch.testing.assert_close(a[:, :30], b[:, :30], atol=1e-6, rtol=1e-6)
    assert (a[:, 30:] - b[:, 30:]).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "dilated")
    back = L.LongformerModel.from_pretrained(tmp_path / "dilated")
    assert back.config.attention_dilation == [[1, 1, 2, 2], [1, 2, 4, 8]] and back.config.attention_causal
    assert back.encoder.layers[1].attention.pattern.dilation == (1, 2, 4, 8)


def test_bad_inputs_get_clear_errors(tmp_path) -> None:
    _, ours = load_pair("LongformerForQuestionAnswering", tmp_path, hf_config())
    with pytest.raises(ValueError, match="separator"):
        ours(input_ids=torch.randint(3, 60, (1, 12)))
    with pytest.raises(ValueError, match="output_attentions"):
        ours.longformer(input_ids=torch.randint(3, 60, (1, 12)), output_attentions=True)
    with pytest.raises(ValueError, match="position embeddings"):
        ours.longformer(input_ids=torch.randint(3, 60, (1, 200)))
    with pytest.raises(ValueError, match="exactly one"):
        ours.longformer()


def test_missing_and_unexpected_keys_are_listed(tmp_path) -> None:
    from longseq.checkpoints import load_state_dict, save_state_dict

    hf, _ = load_pair("LongformerModel", tmp_path, hf_config())
    state = load_state_dict(tmp_path / "hf")
    state.pop("longformer.encoder.layer.1.attention.self.key_global.weight", None)
    state.pop("encoder.layer.1.attention.self.key_global.weight", None)
    state["encoder.layer.9.surprise.weight"] = torch.zeros(1)
    save_state_dict(state, tmp_path / "broken")
    hf.config.save_pretrained(tmp_path / "broken")
    with pytest.raises(ValueError, match=r"missing \(1\).*key_global[\s\S]*unexpected \(1\).*surprise"):
        L.LongformerModel.from_pretrained(tmp_path / "broken")
