"""What every longseq model class shares: Hugging Face folders in and out, weight tying, init."""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from ..checkpoints import (
    HF_IGNORED_UNEXPECTED,
    KeyTable,
    apply_legacy_renames,
    check_keys,
    check_shapes,
    from_hf_keys,
    load_state_dict,
    match_prefix,
    save_state_dict,
    to_hf_keys,
)
from .configs import HFConfig
from .outputs import ModelOutput

M = TypeVar("M", bound="LongseqPreTrainedModel")


class LongseqPreTrainedModel(nn.Module):
    """Base of the Hugging Face-named classes.

    Subclasses set `config_class`, `base_model_prefix` (HF's: "longformer", "bert", "reformer"),
    `key_table` (rows of (longseq key pattern, HF key pattern), `{}` for a layer index) and
    `tied_keys` ({longseq key: longseq key it is tied to}, used when the config ties embeddings).
    """

    config_class: ClassVar[type[HFConfig]] = HFConfig
    base_model_prefix: ClassVar[str] = ""
    key_table: ClassVar[KeyTable] = ()
    tied_keys: ClassVar[dict[str, str]] = {}
    #: regexes of HF keys that HF itself ignores when they are missing from a checkpoint
    ignorable_missing: ClassVar[tuple[str, ...]] = ()
    #: (HF's decoder bias key, HF's LM bias key): HF saves the decoder's bias under the second name
    #: when embeddings are tied, and both when they are not (the decoder's is then the one used)
    decoder_bias_alias: ClassVar[tuple[str, str] | None] = None
    # None: a training step may be captured as a CUDA graph (`training.graphs`); else why not
    cuda_graph_unsafe: ClassVar[str | None] = None

    def __init__(self, config: HFConfig) -> None:
        super().__init__()
        self.config = config

    # ------------------------------------------------------------------------------- weights

    def ties_embeddings(self) -> bool:
        return bool(self.tied_keys) and bool(getattr(self.config, "tie_word_embeddings", True))

    def tie_weights(self) -> None:
        """Share the tied parameters (the LM decoder and the word embeddings) as Hugging Face does."""
        if not self.ties_embeddings():
            return
        for target, source in self.tied_keys.items():
            *owner_path, name = target.split(".")
            owner = self.get_submodule(".".join(owner_path))
            setattr(owner, name, self.get_parameter(source))

    def init_weights(self) -> None:
        """Hugging Face's BERT-style init: normal(0, initializer_range), zero biases, unit norms."""
        std = float(getattr(self.config, "initializer_range", 0.02))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.tie_weights()

    def hf_state_dict(self, for_saving: bool = True) -> dict[str, torch.Tensor]:
        """The state dict under Hugging Face's key names, tied copies left out as HF saves them."""
        state = self.state_dict()
        if self.ties_embeddings():
            for target in self.tied_keys:
                state.pop(target, None)
        state = to_hf_keys(state, self.key_table, strict=True)
        return self.hf_save_fixups(state) if for_saving else state

    def hf_load_fixups(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Changes to an HF state dict before loading (aliases HF keeps)."""
        if self.decoder_bias_alias and self.decoder_bias_alias[0] in state:
            decoder, lm = self.decoder_bias_alias
            state = dict(state)
            state[lm] = state.pop(decoder)
        return state

    def hf_save_fixups(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Changes to the HF state dict before saving."""
        if self.decoder_bias_alias and not self.ties_embeddings():
            decoder, lm = self.decoder_bias_alias
            state[decoder] = state[lm].clone()
        return state

    def load_hf_state_dict(self, state: dict[str, torch.Tensor], allow_new_head: bool = False) -> None:
        """Load a state dict with Hugging Face's key names; a clear error lists missing / unexpected keys.

        `allow_new_head`: a task head missing from the checkpoint keeps its fresh initialisation and
        another head's weights in the checkpoint are left out, both named in a warning (fine-tuning a
        pretrained base model, as Hugging Face's "newly initialized" path).
        """
        expected = self.hf_state_dict(for_saving=False)
        state = match_prefix(apply_legacy_renames(state), self.base_model_prefix, expected)
        state = self.hf_load_fixups(state)
        new: list[str] = []
        if allow_new_head:
            base = self.base_model_prefix + "."
            new = sorted(k for k in expected if not k.startswith(base) and k not in state)
            dropped = sorted(k for k in state if not k.startswith(base) and k not in expected)
            if new or dropped:
                warnings.warn(
                    f"new task head, initialised fresh: {new}; checkpoint head weights left out: {dropped}",
                    stacklevel=3,
                )
            state = {k: v for k, v in state.items() if k not in dropped}
            expected = {k: v for k, v in expected.items() if k not in new}
        tied_hf = (
            set(to_hf_keys(dict.fromkeys(self.tied_keys), self.key_table))
            if self.ties_embeddings()
            else set()
        )
        state = {k: v for k, v in state.items() if k not in tied_hf}  # HF ignores saved tied copies too
        check_keys(expected, state, HF_IGNORED_UNEXPECTED, ignorable_missing=self.ignorable_missing)
        check_shapes(expected, state)
        state = {k: v for k, v in state.items() if k in expected}
        missing_ok = {k for k in expected if k not in state} | set(new)
        ours = from_hf_keys(state, self.key_table, strict=True)
        result = self.load_state_dict(ours, strict=False)
        left = {k for k in result.missing_keys if k not in self.tied_keys}
        hf_left = set(to_hf_keys(dict.fromkeys(left), self.key_table))
        if hf_left - missing_ok or result.unexpected_keys:
            raise ValueError(
                f"state dict did not load: missing {sorted(left)}, unexpected {result.unexpected_keys}"
            )
        self.tie_weights()

    # ------------------------------------------------------------------------------- folders

    @classmethod
    def from_pretrained(
        cls: type[M],
        folder: str | os.PathLike,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        **config_overrides: Any,
    ) -> M:
        """Load a Hugging Face-format folder (config.json + safetensors or .bin weights).

        `dtype`: the parameters' dtype (default float32; "auto" takes the config's `dtype`).
        `config_overrides`: config fields to change before the model is built (e.g. num_labels);
        `allow_new_head=True` lets a task head absent from the checkpoint start fresh (fine-tuning).
        """
        allow_new_head = bool(config_overrides.pop("allow_new_head", False))
        config = cls.config_class.from_pretrained(folder)
        for key, value in config_overrides.items():
            if not hasattr(config, key):
                raise ValueError(f"{cls.config_class.__name__} has no field {key!r}")
            setattr(config, key, value)
        model = cls(config)
        model.load_hf_state_dict(load_state_dict(folder), allow_new_head=allow_new_head)
        model.eval()
        if dtype == "auto":
            dtype = getattr(torch, config.dtype) if config.dtype else None
        elif isinstance(dtype, str):
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"dtype {dtype!r} is not a torch dtype (try 'float32', 'bfloat16', 'auto')")
            dtype = getattr(torch, dtype)
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str | None = None) -> None:
        """Write a folder that Hugging Face transformers (and longseq) load back."""
        self.config.architectures = [type(self).__name__]
        first = next(self.parameters(), None)
        if first is not None:
            self.config.dtype = str(first.dtype).removeprefix("torch.")
        state = {k: v.detach().contiguous() for k, v in self.hf_state_dict().items()}
        save_state_dict(state, folder, max_shard_size=max_shard_size)
        self.config.save_pretrained(folder)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def input_shape(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> tuple[int, int]:
    """(batch, seq) of the input, checking that exactly one of ids and embeddings is given."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("give exactly one of input_ids and inputs_embeds")
    shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]  # type: ignore[union-attr]
    if len(shape) != 2:
        raise ValueError(f"input_ids must have shape (batch, seq), got {tuple(shape)}")
    return shape[0], shape[1]


def finish_output(out: ModelOutput, return_dict: bool | None) -> Any:
    """The output object, or its tuple when return_dict is False (as Hugging Face)."""
    return out.to_tuple() if return_dict is False else out
