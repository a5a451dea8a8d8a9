"""AutoModel picks the family and head from config.json."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import longseq
from longseq import AutoModel


@pytest.mark.parametrize(
    "name",
    [
        "LongformerModel",
        "LongformerForSequenceClassification",
        "LongformerForQuestionAnswering",
        "BigBirdModel",
        "BigBirdForPreTraining",
    ],
)
def test_auto_model_loads_the_named_head(name: str, tmp_path) -> None:
    family = transformers.LongformerConfig if name.startswith("Longformer") else transformers.BigBirdConfig
    config = family(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=20,
        attention_window=4,
        max_position_embeddings=40,
    )
    torch.manual_seed(0)
    getattr(transformers, name)(config).save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path, dtype="bfloat16")
    assert type(model) is getattr(longseq, name)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_auto_model_refuses_unknown_folders(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        AutoModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        AutoModel.from_pretrained(tmp_path / "missing")
