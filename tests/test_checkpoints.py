"""HF folders in and out: safetensors, shards, .bin (weights only), atomic writes, tied tensors, key maps."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from longseq import checkpoints  # noqa: E402
from longseq.checkpoints import (  # noqa: E402
    HF_IGNORED_UNEXPECTED,
    apply_legacy_renames,
    check_keys,
    check_shapes,
    from_hf_keys,
    load_state_dict,
    match_prefix,
    read_config,
    save_state_dict,
    to_hf_keys,
    write_config,
)

TINY = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=48,
)


def _equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def longformer():
    torch.manual_seed(0)
    config = transformers.LongformerConfig(**TINY, attention_window=4)
    return transformers.LongformerForMaskedLM(config).eval()


def _saved_by_hf(model):
    """What HF writes for `model`: its state dict less the tied keys."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return {k: v for k, v in model.state_dict().items() if k not in tied}


# ------------------------------------------------------------------------------------------ reading


def test_reads_hf_safetensors(longformer, tmp_path):
    longformer.save_pretrained(tmp_path)
    _equal(load_state_dict(tmp_path), _saved_by_hf(longformer))
    assert read_config(tmp_path)["model_type"] == "longformer"


def test_reads_hf_shards(tmp_path):
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY))
    model.save_pretrained(tmp_path, max_shard_size="8KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    _equal(load_state_dict(tmp_path), _saved_by_hf(model))


def test_reads_bin_and_sharded_bin(longformer, tmp_path):
    state = _saved_by_hf(longformer)
    torch.save(state, tmp_path / "pytorch_model.bin")
    _equal(load_state_dict(tmp_path), state)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
    for name, part in halves.items():
        torch.save({k: state[k] for k in part}, sharded / name)
    weight_map = {k: name for name, part in halves.items() for k in part}
    (sharded / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    _equal(load_state_dict(sharded), state)


def test_prefers_safetensors_like_hf(longformer, tmp_path):
    longformer.save_pretrained(tmp_path)
    torch.save({"other": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    assert "other" not in load_state_dict(tmp_path)


class _Payload:
    """Unpickling this creates a file: the kind of code a .bin can smuggle in."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_refuses_pickled_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(2), "evil": _Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin.*refuses to run pickled code"):
        load_state_dict(tmp_path)
    assert not marker.exists()

    # a raw (non-zip) pickle is refused the same way
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "pytorch_model.bin").write_bytes(pickle.dumps({"evil": _Payload(marker)}))
    with pytest.raises(ValueError, match="refuses to run pickled code"):
        load_state_dict(raw)
    assert not marker.exists()

    # control: the payload is real, an unsafe load would have run it
    control = tmp_path / "control"
    torch.save({"evil": _Payload(control)}, tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)
    assert control.exists()


def test_refuses_bin_that_is_no_state_dict(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="not a plain state dict"):
        load_state_dict(tmp_path)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.*pytorch_model\.bin"):
        load_state_dict(tmp_path / "nope")
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"looked for model\.safetensors.*found README\.md"):
        load_state_dict(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        read_config(tmp_path)


def test_index_naming_a_missing_shard(tmp_path):
    save_state_dict({"a": torch.zeros(100), "b": torch.ones(100)}, tmp_path, max_shard_size=500)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors"):
        load_state_dict(tmp_path)


# ------------------------------------------------------------------------------------------ writing


def test_safetensors_round_trip(tmp_path):
    state = {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "i64": torch.arange(7),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "strided": torch.randn(4, 6)[:, ::2],  # not contiguous
    }
    result = save_state_dict(state, tmp_path / "out")
    assert result.files == ["model.safetensors"] and not result.dropped and not result.cloned
    _equal(load_state_dict(tmp_path / "out"), {k: v.contiguous() for k, v in state.items()})
    from safetensors import safe_open

    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_shards_round_trip_and_hf_reads_them(longformer, tmp_path):
    state = _saved_by_hf(longformer)
    result = save_state_dict(state, tmp_path, max_shard_size="10KB", tied_keys=longformer._tied_weights_keys)
    assert len(result.files) > 3 and result.files[-1] == "model.safetensors.index.json"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    _equal(load_state_dict(tmp_path), state)

    longformer.config.save_pretrained(tmp_path)
    reloaded = transformers.LongformerForMaskedLM.from_pretrained(tmp_path)
    _equal(reloaded.state_dict(), longformer.state_dict())


def test_tied_tensors_like_hf(longformer, tmp_path):
    """Saving the full state dict with HF's tied keys writes exactly what HF writes."""
    result = save_state_dict(
        longformer.state_dict(), tmp_path / "ours", tied_keys=longformer._tied_weights_keys
    )
    assert result.dropped == {
        "lm_head.decoder.weight": "longformer.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }
    longformer.save_pretrained(tmp_path / "hf")
    _equal(load_state_dict(tmp_path / "ours"), load_state_dict(tmp_path / "hf"))


def test_undeclared_aliases_are_cloned(tmp_path):
    base = torch.arange(10.0)
    state = {"a": base, "b": base, "first": base[:5], "second": base[5:], "own": torch.ones(2)}
    with pytest.warns(UserWarning, match="cloned 3 tensors.*b, first, second"):
        result = save_state_dict(state, tmp_path)
    assert sorted(result.cloned) == ["b", "first", "second"]
    _equal(load_state_dict(tmp_path), {k: v.clone() for k, v in state.items()})


def test_resave_replaces_stale_files(tmp_path):
    state = {"a": torch.zeros(100), "b": torch.ones(100), "c": torch.full((100,), 2.0)}
    save_state_dict(state, tmp_path)
    save_state_dict(state, tmp_path, max_shard_size=500)  # shards must not hide behind the old single file
    assert not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) == 3
    save_state_dict({"a": torch.zeros(1)}, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    _equal(load_state_dict(tmp_path), {"a": torch.zeros(1)})


def test_failed_write_leaves_old_files(tmp_path, monkeypatch):
    old = {"w": torch.ones(3)}
    save_state_dict(old, tmp_path)
    write_config({"model_type": "x"}, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_state_dict({"w": torch.zeros(3)}, tmp_path)
    with pytest.raises(OSError, match="disk full"):  # sharded: no shard is renamed before all are written
        save_state_dict({"w": torch.zeros(300), "v": torch.zeros(300)}, tmp_path, max_shard_size=1000)
    monkeypatch.undo()

    def bad_json(*args, **kwargs):
        raise TypeError("not serializable")

    monkeypatch.setattr(checkpoints.json, "dumps", bad_json)
    with pytest.raises(TypeError):
        write_config({"model_type": "y"}, tmp_path)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files, nothing replaced
    _equal(load_state_dict(tmp_path), old)


def test_config_io(tmp_path):
    write_config({"b": 1, "a": [1, 2], "x": float("inf"), "n": float("nan")}, tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert text.startswith('{\n  "a": [') and '"x": {\n    "__float__": "Infinity"' in text
    got = read_config(tmp_path)
    assert got["x"] == float("inf") and got["n"] != got["n"] and got["b"] == 1


def test_bad_shard_size(tmp_path):
    with pytest.raises(ValueError, match="max_shard_size"):
        save_state_dict({}, tmp_path / "out", max_shard_size="lots")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ key maps

TABLE = (
    ("tok_emb.weight", "model.embeddings.word_embeddings.weight"),
    ("layers.{}.attn.wq.weight", "model.encoder.layer.{}.attention.self.query.weight"),
    ("layers.{}.ffn.{}.weight", "model.encoder.layer.{}.mlp.{}.dense.weight"),
    ("rope_cache", None),  # longseq-only buffer, never saved
    (None, "model.embeddings.position_ids"),  # old HF buffer, dropped on load
)


def test_key_map_round_trip():
    ours = {
        "tok_emb.weight": torch.zeros(1),
        "layers.0.attn.wq.weight": torch.zeros(2),
        "layers.11.attn.wq.weight": torch.zeros(3),
        "layers.3.ffn.1.weight": torch.zeros(4),
        "rope_cache": torch.zeros(5),
    }
    hf = to_hf_keys(ours, TABLE, strict=True)
    assert sorted(hf) == [
        "model.embeddings.word_embeddings.weight",
        "model.encoder.layer.0.attention.self.query.weight",
        "model.encoder.layer.11.attention.self.query.weight",
        "model.encoder.layer.3.mlp.1.dense.weight",
    ]
    hf["model.embeddings.position_ids"] = torch.arange(3)
    back = from_hf_keys(hf, TABLE, strict=True)
    assert back == {k: v for k, v in ours.items() if k != "rope_cache"}


def test_key_map_unmapped_and_bad_tables():
    state = {"tok_emb.weight": torch.zeros(1), "stray.0.x": torch.zeros(1)}
    assert "stray.0.x" in to_hf_keys(state, TABLE)  # passes through, for check_keys to report
    with pytest.raises(ValueError, match=r"match no row.*stray\.0\.x"):
        to_hf_keys(state, TABLE, strict=True)
    with pytest.raises(ValueError, match="same number"):
        to_hf_keys({}, [("a.{}.w", "b.w")])
    with pytest.raises(ValueError, match="whole"):
        to_hf_keys({}, [("a.0.w", "b.0.w")])
    with pytest.raises(ValueError, match="twice"):
        from_hf_keys({}, [("a", "x"), ("b", "x")])
    with pytest.raises(ValueError, match="both map to"):
        to_hf_keys({"a": torch.zeros(1), "b": torch.zeros(1)}, [("a", "b")])


def test_check_keys_lists_missing_and_unexpected():
    expected = ["a", "b", "c", "decoder.weight"]
    with pytest.raises(ValueError, match=r"missing \(2\): b, c\n  unexpected \(1\): z"):
        check_keys(expected, ["a", "z", "decoder.weight"])
    with pytest.warns(UserWarning, match="ignoring 1 unexpected.*embeddings.position_ids"):
        check_keys(
            expected,
            ["a", "b", "c", "embeddings.position_ids"],
            HF_IGNORED_UNEXPECTED,
            ignorable_missing=[r"^decoder\."],
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_keys(expected, expected)
    with pytest.raises(ValueError, match=r"a: checkpoint \(2,\), model \(3,\)"):
        check_shapes({"a": (3,), "b": torch.zeros(1)}, {"a": torch.zeros(2), "b": torch.zeros(1)})


def test_prefix_and_legacy_renames():
    model_keys = ["longformer.embeddings.w", "lm_head.bias"]
    bare = {"embeddings.w": torch.zeros(1)}
    assert list(match_prefix(bare, "longformer", model_keys)) == ["longformer.embeddings.w"]
    full = {"longformer.embeddings.w": torch.zeros(1), "lm_head.bias": torch.zeros(1)}
    assert list(match_prefix(full, "longformer", ["embeddings.w"])) == ["embeddings.w", "lm_head.bias"]
    assert list(match_prefix(full, "longformer", model_keys)) == list(full)
    old = {"bert.LayerNorm.gamma": torch.zeros(1), "bert.LayerNorm.beta": torch.zeros(1)}
    assert list(apply_legacy_renames(old)) == ["bert.LayerNorm.weight", "bert.LayerNorm.bias"]
