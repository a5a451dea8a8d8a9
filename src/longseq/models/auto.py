"""`AutoModel.from_pretrained(folder)`: pick the family and head from config.json."""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from ..checkpoints import read_config

#: model_type in config.json -> the longseq module that holds its classes
FAMILIES = {"longformer": "longformer", "big_bird": "bigbird", "reformer": "reformer"}
#: the class a folder with no `architectures` gets
BASE_CLASS = {"longformer": "LongformerModel", "big_bird": "BigBirdModel", "reformer": "ReformerModel"}


class AutoModel:
    """Loads any Longformer, BigBird or Reformer folder with the head its config names."""

    @staticmethod
    def class_for(config: dict[str, Any]) -> type:
        model_type = config.get("model_type")
        if model_type not in FAMILIES:
            raise ValueError(
                f"config.json has model_type {model_type!r}; longseq reads {sorted(FAMILIES)} "
                "(convert BERT / RoBERTa folders with longseq convert)"
            )
        module = importlib.import_module(f"longseq.models.{FAMILIES[model_type]}")
        names = config.get("architectures") or [BASE_CLASS[model_type]]
        for name in names:
            if hasattr(module, name):
                return getattr(module, name)
        raise ValueError(f"architectures {names} name no longseq class for {model_type}")

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        **config_overrides: Any,
    ) -> torch.nn.Module:
        model_class = cls.class_for(read_config(folder))
        return model_class.from_pretrained(folder, dtype=dtype, device=device, **config_overrides)
