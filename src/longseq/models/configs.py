"""Model configs: flat dataclasses that read and write Hugging Face `config.json` by the same names.

Field names and defaults are those of transformers 5.x (`LongformerConfig`, `BigBirdConfig`,
`ReformerConfig` and the `PreTrainedConfig` fields these models use). Fields we do not know are
kept in `extra` and written back. `to_dict()` writes what HF's `save_pretrained` writes: every model
field, and the generic `PreTrainedConfig` fields only where they differ from HF's defaults.

    cfg = LongformerConfig.from_pretrained("allenai/longformer-base-4096")  # a local folder
    cfg.attention_window = 256
    cfg.save_pretrained(out_dir)
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch

from ..checkpoints import read_config, write_config

__all__ = ["BigBirdConfig", "HFConfig", "LongformerConfig", "ReformerConfig"]

C = TypeVar("C", bound="HFConfig")


def _labels(n: int) -> tuple[dict[int, str], dict[str, int]]:
    id2label = {i: f"LABEL_{i}" for i in range(n)}
    return id2label, {v: k for k, v in id2label.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {(str(k) if isinstance(k, int) else k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class HFConfig:
    """The `PreTrainedConfig` fields these models use, and the config.json round trip."""

    model_type: ClassVar[str] = ""
    #: longseq-only fields: written to config.json only when they differ from their default
    longseq_fields: ClassVar[tuple[str, ...]] = ()

    architectures: list[str] | None = None
    num_labels: int = 2  # never written: HF derives it from id2label
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None  # "regression" | "single_label_classification" | "multi_label_..."
    dtype: str | None = None  # "float32", "float16", ...; read from "dtype" or the older "torch_dtype"
    chunk_size_feed_forward: int = 0
    is_encoder_decoder: bool = False
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    transformers_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # unknown config.json fields, written back

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):
            self.dtype = str(self.dtype).removeprefix("torch.")
        if self.id2label is None:
            self.id2label, default_label2id = _labels(self.num_labels)
            self.label2id = default_label2id if self.label2id is None else self.label2id
        else:
            self.id2label = {int(k): v for k, v in self.id2label.items()}  # JSON keys are strings
            if self.num_labels not in (2, len(self.id2label)):  # 2: the default, not a choice
                warnings.warn(f"num_labels={self.num_labels} != len(id2label); using id2label", stacklevel=3)
            self.num_labels = len(self.id2label)
        self.__dict__["_ready"] = True

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if not self.__dict__.get("_ready"):
            return
        if name == "num_labels" and len(self.id2label or {}) != value:  # HF's num_labels setter
            self.__dict__["id2label"], self.__dict__["label2id"] = _labels(value)
        elif name == "id2label" and value is not None:
            self.__dict__["id2label"] = {int(k): v for k, v in value.items()}
            self.__dict__["num_labels"] = len(value)

    # ------------------------------------------------------------------------------------ dicts

    @classmethod
    def from_dict(cls: type[C], config: Mapping[str, Any]) -> C:
        """Build from a config.json dict; unknown keys land in `extra`."""
        d = copy.deepcopy(dict(config))
        model_type = d.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            warnings.warn(f"reading a {model_type!r} config as {cls.__name__}", stacklevel=2)
        if "torch_dtype" in d:  # transformers < 5 wrote torch_dtype; HF keeps dtype if both are set
            legacy = d.pop("torch_dtype")
            d["dtype"] = d.get("dtype") if d.get("dtype") is not None else legacy
        if d.get("id2label") is not None and d.get("num_labels", len(d["id2label"])) != len(d["id2label"]):
            warnings.warn(
                f"num_labels={d['num_labels']} disagrees with id2label; using id2label", stacklevel=2
            )
            del d["num_labels"]
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """The config.json dict HF's `save_pretrained` writes (`full`: every field, defaults too)."""
        base_defaults = {f.name: f.default for f in dataclasses.fields(HFConfig)}
        base_defaults["id2label"], base_defaults["label2id"] = _labels(2)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "num_labels"):
                continue
            if not full and f.name in self.longseq_fields and value == f.default:
                continue
            if not full and f.name in base_defaults and value == base_defaults[f.name]:
                continue
            out[f.name] = value
        out.update(self.extra)
        out["model_type"] = self.model_type
        return _jsonable(copy.deepcopy(out))

    @classmethod
    def from_pretrained(cls: type[C], folder: str | os.PathLike) -> C:
        """Read `folder/config.json`."""
        return cls.from_dict(read_config(folder))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `folder/config.json` (atomically)."""
        write_config(self.to_dict(), folder)


@dataclass(kw_only=True)
class LongformerConfig(HFConfig):
    """transformers' `LongformerConfig` (allenai/longformer-base-4096 style)."""

    model_type: ClassVar[str] = "longformer"
    longseq_fields: ClassVar[tuple[str, ...]] = ("attention_dilation", "attention_causal")

    attention_window: int | list[int] = 512  # an int for all layers, or one (even) value per layer
    sep_token_id: int | None = 2
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    onnx_export: bool = False
    tie_word_embeddings: bool = True

    # longseq-only (HF ignores them): written to config.json only when set.
    attention_dilation: int | list[int] | list[list[int]] | None = None  # None = 1; per layer / layer x head
    attention_causal: bool = False  # each token sees only its window's past half

    def layer_windows(self) -> list[int]:
        """The attention window of each layer, checked as HF checks it (positive, even)."""
        w = self.attention_window
        windows = [w] * self.num_hidden_layers if isinstance(w, int) else list(w)
        if len(windows) != self.num_hidden_layers:
            raise ValueError(
                f"attention_window has {len(windows)} values for {self.num_hidden_layers} layers"
            )
        for i, size in enumerate(windows):
            if size <= 0 or size % 2:
                raise ValueError(f"attention_window of layer {i} must be positive and even, got {size}")
        return windows

    def layer_dilations(self) -> list[list[int]]:
        """The dilation of each head of each layer: (num_hidden_layers, num_attention_heads)."""
        layers, heads, d = self.num_hidden_layers, self.num_attention_heads, self.attention_dilation
        d = 1 if d is None else d
        per_layer = [d] * layers if isinstance(d, int) else list(d)
        if len(per_layer) != layers:
            raise ValueError(f"attention_dilation has {len(per_layer)} values for {layers} layers")
        out = [[x] * heads if isinstance(x, int) else list(x) for x in per_layer]
        for i, row in enumerate(out):
            if len(row) != heads or any(x < 1 for x in row):
                raise ValueError(f"attention_dilation of layer {i} must be {heads} values >= 1, got {row}")
        return out


@dataclass(kw_only=True)
class BigBirdConfig(HFConfig):
    """transformers' `BigBirdConfig` (google/bigbird-roberta-base style)."""

    model_type: ClassVar[str] = "big_bird"

    vocab_size: int = 50358
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 4096
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    sep_token_id: int | None = 66
    attention_type: str = "block_sparse"  # or "original_full"
    use_bias: bool = True
    rescale_embeddings: bool = False
    block_size: int = 64
    num_random_blocks: int = 3
    classifier_dropout: float | None = None
    is_decoder: bool = False
    add_cross_attention: bool = False
    tie_word_embeddings: bool = True


@dataclass(kw_only=True)
class ReformerConfig(HFConfig):
    """transformers' `ReformerConfig` (google/reformer-crime-and-punishment style).

    `num_hidden_layers` defaults to `len(attn_layers)`; like HF, a value given (or read from
    config.json) wins, and HF then builds that many layers (all of one type if `attn_layers` has one).
    """

    model_type: ClassVar[str] = "reformer"

    attention_head_size: int = 64
    attn_layers: tuple[str, ...] = ("local", "lsh", "local", "lsh", "local", "lsh")  # "local" | "lsh"
    axial_norm_std: float = 1.0
    axial_pos_embds: bool = True
    axial_pos_shape: tuple[int, ...] = (64, 64)  # product = the training sequence length
    axial_pos_embds_dim: tuple[int, ...] = (64, 192)  # sum = hidden_size
    chunk_size_lm_head: int = 0
    eos_token_id: int | list[int] | None = 2
    feed_forward_size: int = 512
    hash_seed: int | None = None
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.05
    hidden_size: int = 256
    initializer_range: float = 0.02
    is_decoder: bool = False
    layer_norm_eps: float = 1e-12
    local_num_chunks_before: int = 1
    local_num_chunks_after: int = 0
    local_attention_probs_dropout_prob: float = 0.05
    local_attn_chunk_length: int = 64
    lsh_attn_chunk_length: int | None = 64
    lsh_attention_probs_dropout_prob: float | None = 0.0
    lsh_num_chunks_before: int | None = 1
    lsh_num_chunks_after: int | None = 0
    max_position_embeddings: int = 4096
    num_attention_heads: int = 12
    num_buckets: int | list[int] | None = None  # None: HF picks 2 * seq_len // chunk_length at run time
    num_hashes: int = 1
    vocab_size: int = 320
    tie_word_embeddings: bool = False
    use_cache: bool = True
    classifier_dropout: float | None = None
    bos_token_id: int | None = None
    pad_token_id: int | None = 0
    num_hidden_layers: int | None = None  # None: len(attn_layers)

    def __post_init__(self) -> None:
        if self.num_hidden_layers is None:
            self.num_hidden_layers = len(self.attn_layers)
        self.attn_layers = tuple(self.attn_layers)
        self.axial_pos_shape = tuple(self.axial_pos_shape)
        self.axial_pos_embds_dim = tuple(self.axial_pos_embds_dim)
        if isinstance(self.num_buckets, tuple):
            self.num_buckets = list(self.num_buckets)
        super().__post_init__()
