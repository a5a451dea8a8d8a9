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
        "ReformerModelWithLMHead",
    ],
)
def test_auto_model_loads_the_named_head(name: str, tmp_path) -> None:
    if name.startswith("Reformer"):
        config = transformers.ReformerConfig(
            vocab_size=40,
            hidden_size=16,
            num_attention_heads=2,
            attention_head_size=8,
            feed_forward_size=20,
            attn_layers=["local", "lsh"],
            axial_pos_shape=(4, 8),
            axial_pos_embds_dim=(8, 8),
            max_position_embeddings=32,
            is_decoder=True,
            local_attn_chunk_length=8,
            lsh_attn_chunk_length=8,
        )
        return _check_auto(name, config, tmp_path)
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
    _check_auto(name, config, tmp_path)


def _check_auto(name: str, config, tmp_path) -> None:
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
