"""Short to long: build a Longformer or BigBird folder from a BERT or RoBERTa one.

As the Longformer paper did with RoBERTa: the position embeddings are copied over and over up to
`max_length`, the query / key / value weights are copied into Longformer's global projections, and
the encoder and masked-LM head keep their weights. The result loads in longseq and in Hugging Face
transformers; on inputs shorter than the window it computes what the short model computed.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoints import load_state_dict, read_config, save_state_dict, write_config

FAMILIES = ("longformer", "bigbird")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "special_tokens_map.json",
    "added_tokens.json",
)
_SHARED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
)


def to_long(
    src_folder: str | os.PathLike,
    dst_folder: str | os.PathLike,
    family: str = "longformer",
    max_length: int = 4096,
    attention_window: int = 512,
    block_size: int = 64,
    num_random_blocks: int = 3,
) -> Path:
    """Write a long model converted from the BERT / RoBERTa folder `src_folder` into `dst_folder`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if family == "longformer" and (attention_window < 2 or attention_window % 2):
        raise ValueError(f"attention_window must be a positive even number, got {attention_window}")
    src = read_config(src_folder)
    kind = src.get("model_type")
    if kind not in ("bert", "roberta"):
        raise ValueError(f"{src_folder} holds a {kind!r} model; to_long converts 'bert' and 'roberta' models")
    state = _strip_prefix(load_state_dict(src_folder), kind)
    roberta = kind == "roberta"
    config: dict[str, Any] = {k: src[k] for k in _SHARED_FIELDS if k in src}
    has_mlm = any(k.startswith(("lm_head.", "cls.predictions.")) for k in state)
    if family == "longformer":
        config |= {"model_type": "longformer", "attention_window": attention_window}
        config["max_position_embeddings"] = max_length + src.get("pad_token_id", 0) + 1
        config["architectures"] = ["LongformerForMaskedLM" if has_mlm else "LongformerModel"]
        prefix, offset = "longformer", config.get("pad_token_id", 0) + 1
    else:
        config |= {
            "model_type": "big_bird",
            "attention_type": "block_sparse",
            "block_size": block_size,
            "num_random_blocks": num_random_blocks,
            "max_position_embeddings": max_length,
            "rescale_embeddings": False,
            "use_bias": True,
        }
        config["architectures"] = ["BigBirdForMaskedLM" if has_mlm else "BigBirdModel"]
        prefix, offset = "bert", 0
    old_offset = src.get("pad_token_id", 1) + 1 if roberta else 0
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(key, family)
        if new is None:
            continue
        if key == "embeddings.position_embeddings.weight":
            value = _repeat_positions(value, old_offset, offset, config["max_position_embeddings"])
        out[new if new.startswith(("lm_head.", "cls.")) else f"{prefix}.{new}"] = value
        if family == "longformer" and ".attention.self." in key:  # global projections start as local
            for name in ("query", "key", "value"):
                if f".attention.self.{name}." in key:
                    out[f"{prefix}.{new.replace(f'.self.{name}.', f'.self.{name}_global.')}"] = value.clone()
    if family == "bigbird" and "bert.pooler.weight" not in out:  # every BigBird head class has a pooler
        hidden = config["hidden_size"]
        gen = torch.Generator().manual_seed(0)
        std = float(config.get("initializer_range", 0.02))
        out["bert.pooler.weight"] = torch.randn(hidden, hidden, generator=gen) * std
        out["bert.pooler.bias"] = torch.zeros(hidden)
    dst = Path(dst_folder)
    save_state_dict(out, dst)
    write_config(config, dst)
    copy_tokenizer(Path(src_folder), dst, max_length)
    return dst


def _strip_prefix(state: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    dot = kind + "."
    return {k.removeprefix(dot): v for k, v in state.items()}


def _rename(key: str, family: str) -> str | None:
    """A BERT / RoBERTa key (no model prefix) under the target family's HF name; None drops it."""
    if key.startswith(("embeddings.", "encoder.")):
        return None if key.endswith("position_ids") else key
    if key.startswith("pooler."):  # BigBird's pooler is a bare Linear
        return key.replace("pooler.dense.", "pooler.") if family == "bigbird" else key
    mlm = {  # RoBERTa and BERT masked-LM heads to each family's names
        "lm_head.dense": ("lm_head.dense", "cls.predictions.transform.dense"),
        "lm_head.layer_norm": ("lm_head.layer_norm", "cls.predictions.transform.LayerNorm"),
        "lm_head.decoder": ("lm_head.decoder", "cls.predictions.decoder"),
        "lm_head.bias": ("lm_head.bias", "cls.predictions.bias"),
        "cls.predictions.transform.dense": ("lm_head.dense", "cls.predictions.transform.dense"),
        "cls.predictions.transform.LayerNorm": ("lm_head.layer_norm", "cls.predictions.transform.LayerNorm"),
        "cls.predictions.decoder": ("lm_head.decoder", "cls.predictions.decoder"),
        "cls.predictions.bias": ("lm_head.bias", "cls.predictions.bias"),
    }
    for old, names in mlm.items():
        if key == old or key.startswith(old + "."):
            return names[FAMILIES.index(family)] + key[len(old) :]
    warnings.warn(f"to_long drops {key}: task heads other than masked LM are not converted", stacklevel=3)
    return None


def _repeat_positions(old: torch.Tensor, old_offset: int, new_offset: int, rows: int) -> torch.Tensor:
    """Copy the learned positions over and over: new row new_offset + p = old row old_offset + p % span."""
    span = old.shape[0] - old_offset
    new = old.new_zeros(rows, old.shape[1])
    new[:new_offset] = old[:new_offset]  # reserved rows (RoBERTa's padding), kept
    positions = torch.arange(rows - new_offset)
    new[new_offset:] = old[old_offset + positions % span]
    return new


def copy_tokenizer(src: Path, dst: Path, max_length: int | None = None) -> None:
    """Copy a model folder's tokenizer files into `dst` (setting model_max_length when given)."""
    for name in _TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    config_path = src / "tokenizer_config.json"
    if config_path.exists():
        tok = json.loads(config_path.read_text())
        if max_length is not None:
            tok["model_max_length"] = max_length
        tmp = dst / "tokenizer_config.json.tmp"
        tmp.write_text(json.dumps(tok, indent=2))
        tmp.replace(dst / "tokenizer_config.json")
