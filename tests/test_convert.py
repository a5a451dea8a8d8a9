"""Short to long: converted models load in longseq and HF and compute what the short model did."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import longseq
from longseq.cli import main
from longseq.convert import to_long


def short_model(kind: str, tmp_path):
    torch.manual_seed(0)
    common = dict(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40
    )
    if kind == "roberta":
        config = transformers.RobertaConfig(max_position_embeddings=34, **common)
        model = transformers.RobertaForMaskedLM(config).eval()
    else:
        config = transformers.BertConfig(max_position_embeddings=32, **common)
        model = transformers.BertForMaskedLM(config).eval()
    folder = tmp_path / kind
    model.save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    return model, folder


@pytest.mark.parametrize("kind", ["roberta", "bert"])
@pytest.mark.parametrize("family", ["longformer", "bigbird"])
def test_converted_model_matches_the_short_one(kind: str, family: str, tmp_path) -> None:
    short, src = short_model(kind, tmp_path)
    dst = to_long(src, tmp_path / "long", family=family, max_length=200, attention_window=64, block_size=4)
    ids = torch.randint(3, 50, (2, 20))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 15:] = 0
    ids[1, 15:] = short.config.pad_token_id
    with torch.no_grad():
        expected = short(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ours = longseq.AutoModel.from_pretrained(dst)
        got = ours(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hf_long = transformers.AutoModelForMaskedLM.from_pretrained(dst).eval()
        hf_got = hf_long(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    last = expected.hidden_states[-1][real]
    torch.testing.assert_close(got.hidden_states[-1][real], last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.logits[real], expected.logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_got.logits[real], expected.logits[real], atol=1e-5, rtol=1e-5)
    assert json.loads((dst / "tokenizer_config.json").read_text())["model_max_length"] == 200


def test_positions_are_copied_over_and_over(tmp_path) -> None:
    short, src = short_model("roberta", tmp_path)
    dst = to_long(src, tmp_path / "long", family="longformer", max_length=100, attention_window=8)
    model = longseq.AutoModel.from_pretrained(dst)
    old = short.roberta.embeddings.position_embeddings.weight
    new = model.longformer.embeddings.position.weight
    assert new.shape[0] == 102
    torch.testing.assert_close(new[2:34], old[2:34])
    torch.testing.assert_close(new[34:66], old[2:34])
    layer = model.longformer.encoder.layers[0].attention
    torch.testing.assert_close(layer.query_global.weight, layer.query.weight)
    assert model.config.layer_windows() == [8, 8]


def test_cli_convert_and_bad_input(tmp_path, capsys) -> None:
    _, src = short_model("bert", tmp_path)
    assert main(["convert", str(src), str(tmp_path / "cli"), "--to", "bigbird", "--max-length", "96"]) == 0
    assert longseq.AutoModel.from_pretrained(tmp_path / "cli").config.max_position_embeddings == 96
    assert (
        main(["convert", str(src), str(tmp_path / "bad"), "--to", "longformer", "--attention-window", "7"])
        != 0
    )
    assert "attention_window" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "x")]) != 0
