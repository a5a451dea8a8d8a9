"""Configs round trip through Hugging Face: HF writes, longseq reads and writes, HF reads the same."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from longseq.models.configs import BigBirdConfig, LongformerConfig, ReformerConfig  # noqa: E402

FAMILIES = {
    "longformer": (
        transformers.LongformerConfig,
        LongformerConfig,
        dict(
            attention_window=[8, 16, 32],
            num_hidden_layers=3,
            sep_token_id=5,
            pad_token_id=3,
            bos_token_id=4,
            eos_token_id=[6, 7],
            vocab_size=99,
            hidden_size=48,
            num_attention_heads=4,
            intermediate_size=96,
            hidden_act="gelu_new",
            hidden_dropout_prob=0.2,
            attention_probs_dropout_prob=0.3,
            max_position_embeddings=130,
            type_vocab_size=1,
            initializer_range=0.05,
            layer_norm_eps=1e-5,
            onnx_export=True,
            tie_word_embeddings=False,
        ),
    ),
    "big_bird": (
        transformers.BigBirdConfig,
        BigBirdConfig,
        dict(
            vocab_size=99,
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=96,
            hidden_act="gelu",
            hidden_dropout_prob=0.2,
            attention_probs_dropout_prob=0.3,
            max_position_embeddings=256,
            type_vocab_size=1,
            initializer_range=0.05,
            layer_norm_eps=1e-5,
            use_cache=False,
            pad_token_id=3,
            bos_token_id=4,
            eos_token_id=5,
            sep_token_id=6,
            attention_type="original_full",
            use_bias=False,
            rescale_embeddings=True,
            block_size=16,
            num_random_blocks=2,
            classifier_dropout=0.25,
            is_decoder=True,
            add_cross_attention=True,
            tie_word_embeddings=False,
        ),
    ),
    "reformer": (
        transformers.ReformerConfig,
        ReformerConfig,
        dict(
            attention_head_size=16,
            attn_layers=["lsh", "local", "lsh"],
            axial_norm_std=0.5,
            axial_pos_embds=False,
            axial_pos_shape=[8, 16],
            axial_pos_embds_dim=[16, 32],
            chunk_size_lm_head=4,
            eos_token_id=9,
            feed_forward_size=96,
            hash_seed=1234,
            hidden_act="gelu",
            hidden_dropout_prob=0.2,
            hidden_size=48,
            initializer_range=0.05,
            is_decoder=True,
            layer_norm_eps=1e-5,
            local_num_chunks_before=2,
            local_num_chunks_after=1,
            local_attention_probs_dropout_prob=0.3,
            local_attn_chunk_length=16,
            lsh_attn_chunk_length=32,
            lsh_attention_probs_dropout_prob=0.1,
            lsh_num_chunks_before=0,
            lsh_num_chunks_after=1,
            max_position_embeddings=128,
            num_attention_heads=3,
            num_buckets=[4, 8],
            num_hashes=2,
            vocab_size=99,
            tie_word_embeddings=True,
            use_cache=False,
            classifier_dropout=0.25,
            bos_token_id=1,
            pad_token_id=2,
        ),
    ),
}
# Generic PreTrainedConfig fields, all off their defaults, and a field neither library knows.
COMMON = dict(
    architectures=["SomethingForSequenceClassification"],
    id2label={0: "neg", 1: "neu", 2: "pos"},
    label2id={"neg": 0, "neu": 1, "pos": 2},
    problem_type="single_label_classification",
    dtype="bfloat16",
    chunk_size_feed_forward=16,
    is_encoder_decoder=True,
    output_hidden_states=True,
    output_attentions=True,
    return_dict=False,
    my_custom_field={"nested": [1, 2.5, "x"], "inf": math.inf},
)


def _norm(value):
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def _json(path):
    return json.loads((path / "config.json").read_text())


def _hf_dict(config):
    d = config.to_dict()
    d.pop("_name_or_path", None)
    return d


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_through_hf(family, tmp_path):
    hf_cls, ours_cls, values = FAMILIES[family]
    hf = hf_cls(**values, **COMMON)
    hf.save_pretrained(tmp_path / "hf")

    ours = ours_cls.from_pretrained(tmp_path / "hf")
    for f in dataclasses.fields(ours):
        if f.name not in ("extra", "transformers_version", "attention_dilation", "attention_causal"):
            assert _norm(getattr(ours, f.name)) == _norm(getattr(hf, f.name)), f.name
    assert ours.transformers_version == transformers.__version__
    assert ours.extra == {"my_custom_field": COMMON["my_custom_field"]}
    assert ours.id2label == {0: "neg", 1: "neu", 2: "pos"} and ours.num_labels == 3

    ours.save_pretrained(tmp_path / "ours")
    assert _json(tmp_path / "ours") == _json(tmp_path / "hf")  # byte-for-byte what HF wrote, as dicts
    back = hf_cls.from_pretrained(tmp_path / "ours")
    assert _hf_dict(back) == _hf_dict(hf)
    assert back.my_custom_field["inf"] == math.inf


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_equal_hf(family, tmp_path):
    hf_cls, ours_cls, _ = FAMILIES[family]
    hf, ours = json.loads(json.dumps(_hf_dict(hf_cls()))), ours_cls().to_dict(full=True)
    hf.pop("transformers_version")
    assert set(hf) <= set(ours), set(hf) - set(ours)
    for key in hf:
        assert ours[key] == hf[key], key
    assert set(ours) - set(hf) <= {"transformers_version", "attention_dilation", "attention_causal"}
    # and what each writes for a default config is the same
    hf_cls().save_pretrained(tmp_path / "hf")
    written = _json(tmp_path / "hf")
    written.pop("transformers_version")
    assert ours_cls().to_dict() == written


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_reads_our_config(family, tmp_path):
    hf_cls, ours_cls, values = FAMILIES[family]
    ours = ours_cls.from_dict({**values, **COMMON})
    ours.save_pretrained(tmp_path)
    hf = hf_cls.from_pretrained(tmp_path)
    for f in dataclasses.fields(ours):
        if f.name not in ("extra", "transformers_version", "attention_dilation", "attention_causal"):
            assert _norm(getattr(hf, f.name)) == _norm(getattr(ours, f.name)), f.name


def test_legacy_config_dict():
    """transformers 4.x wrote torch_dtype, string label ids, num_labels and fields 5.x dropped."""
    d = {
        "model_type": "longformer",
        "torch_dtype": "float16",
        "id2label": {"0": "a", "1": "b", "2": "c"},
        "label2id": {"a": 0, "b": 1, "c": 2},
        "num_labels": 3,
        "is_decoder": False,
        "gradient_checkpointing": False,
        "attention_window": [4, 4],
        "num_hidden_layers": 2,
    }
    ours = LongformerConfig.from_dict(d)
    hf = transformers.LongformerConfig.from_dict(d)
    assert ours.dtype == "float16" and hf.dtype == torch.float16
    assert ours.id2label == hf.id2label == {0: "a", 1: "b", 2: "c"}
    assert ours.num_labels == hf.num_labels == 3
    assert ours.extra == {"is_decoder": False, "gradient_checkpointing": False}
    out = ours.to_dict()
    assert "torch_dtype" not in out and out["dtype"] == "float16"
    assert out["id2label"] == {"0": "a", "1": "b", "2": "c"}


def test_num_labels_follows_hf():
    ours, hf = BigBirdConfig(), transformers.BigBirdConfig()
    assert ours.id2label == hf.id2label and ours.label2id == hf.label2id
    ours.num_labels = hf.num_labels = 5
    assert ours.id2label == hf.id2label and ours.label2id == hf.label2id
    assert "id2label" in ours.to_dict() and "num_labels" not in ours.to_dict()
    ours.id2label = {"0": "x"}
    assert ours.num_labels == 1 and ours.id2label == {0: "x"}
    assert BigBirdConfig(num_labels=4).id2label == transformers.BigBirdConfig(num_labels=4).id2label
    with pytest.warns(UserWarning, match="using id2label"):
        assert BigBirdConfig(num_labels=4, id2label={0: "a", 1: "b", 2: "c"}).num_labels == 3


def test_reformer_num_hidden_layers_like_hf():
    """len(attn_layers) by default; a num_hidden_layers read from config.json wins, as in HF."""
    for d in ({"attn_layers": ["lsh", "local"]}, {"attn_layers": ["lsh"], "num_hidden_layers": 4}):
        ours, hf = ReformerConfig.from_dict(d), transformers.ReformerConfig.from_dict(d)
        assert ours.num_hidden_layers == hf.num_hidden_layers == d.get("num_hidden_layers", 2)
        assert ours.to_dict()["num_hidden_layers"] == hf.to_dict()["num_hidden_layers"]
    for num_buckets in (None, 16, [4, 8]):
        assert ReformerConfig(num_buckets=num_buckets).to_dict()["num_buckets"] == num_buckets


def test_longseq_only_fields(tmp_path):
    assert "attention_dilation" not in LongformerConfig().to_dict()
    assert "attention_causal" not in LongformerConfig().to_dict()
    cfg = LongformerConfig(
        num_hidden_layers=2, num_attention_heads=2, attention_dilation=[[1, 2], 3], attention_causal=True
    )
    cfg.save_pretrained(tmp_path / "a")
    assert _json(tmp_path / "a")["attention_dilation"] == [[1, 2], 3]
    # HF keeps them as plain attributes and writes them back
    transformers.LongformerConfig.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    back = LongformerConfig.from_pretrained(tmp_path / "b")
    assert back.attention_dilation == [[1, 2], 3] and back.attention_causal is True
    assert back.layer_dilations() == [[1, 2], [3, 3]]
    assert LongformerConfig(num_hidden_layers=2, attention_window=8).layer_windows() == [8, 8]
    with pytest.raises(ValueError, match="even"):
        LongformerConfig(num_hidden_layers=2, attention_window=[8, 7]).layer_windows()
    with pytest.raises(ValueError, match="3 values for 2 layers"):
        LongformerConfig(num_hidden_layers=2, attention_dilation=[1, 1, 1]).layer_dilations()


def test_wrong_model_type_warns():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BigBirdConfig.from_dict({"model_type": "longformer"})
    assert any("longformer" in str(w.message) for w in caught)
