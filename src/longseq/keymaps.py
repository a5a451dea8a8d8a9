"""Checkpoint key maps as data, and the checks that go with loading a state dict.

A key table is rows of `(longseq_pattern, hf_pattern)`, gpt-fast style: `{}` stands for a whole dotted
integer segment (a layer index, `layers.{}.attn.wq.weight`); `None` on one side drops the key on
purpose in that direction. Import these from `longseq.checkpoints`, which re-exports them.

    TABLE = (
        ("tok_emb.weight", "longformer.embeddings.word_embeddings.weight"),
        ("layers.{}.attn.wq.weight", "longformer.encoder.layer.{}.attention.self.query.weight"),
        (None, "longformer.embeddings.position_ids"),  # an old HF buffer: dropped on load
    )
    state = from_hf_keys(load_state_dict(folder), TABLE)
    check_keys(model.state_dict(), state, HF_IGNORED_UNEXPECTED)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "HF_IGNORED_UNEXPECTED",
    "LEGACY_RENAMES",
    "KeyTable",
    "apply_legacy_renames",
    "check_keys",
    "check_shapes",
    "from_hf_keys",
    "match_prefix",
    "to_hf_keys",
]

#: Unexpected keys HF skips for every model with a `position_ids` buffer (it used to be persistent).
HF_IGNORED_UNEXPECTED: tuple[str, ...] = (r"(^|\.)position_ids$",)
#: Renames HF applies to every checkpoint on load ("legacy" conversion): old TF-style LayerNorm names.
LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    ("LayerNorm.gamma", "LayerNorm.weight"),
    ("LayerNorm.beta", "LayerNorm.bias"),
)

StateDict = dict[str, torch.Tensor]
KeyTable = Sequence[tuple[str | None, str | None]]


_INDEX_SEGMENT = re.compile(r"(?<![^.])\d+(?![^.])")  # a whole dotted integer segment: "layer.3.x"
_PLACEHOLDER = re.compile(r"(?<![^.])\{\}(?![^.])")


def _compile(table: KeyTable, src: int) -> dict[str, str | None]:
    """{source pattern: target pattern or None} for one direction (src 0: longseq -> HF, 1: HF -> longseq)."""
    out: dict[str, str | None] = {}
    for row in table:
        if len(row) != 2 or row == (None, None):
            raise ValueError(f"key table row must be (longseq_pattern, hf_pattern), not both None: {row!r}")
        for pattern in row:
            if pattern is None:
                continue
            if _INDEX_SEGMENT.search(pattern) or len(_PLACEHOLDER.findall(pattern)) != pattern.count("{}"):
                raise ValueError(
                    f"key pattern {pattern!r}: write layer indices as whole '{{}}' segments only"
                )
        if None not in row and row[0].count("{}") != row[1].count("{}"):  # type: ignore[union-attr]
            raise ValueError(f"key table row {row!r}: both sides need the same number of '{{}}'")
        source, target = row[src], row[1 - src]
        if source is None:
            continue
        if source in out:
            raise ValueError(f"key table names {source!r} twice")
        out[source] = target
    return out


def _rename(state_dict: Mapping[str, torch.Tensor], table: KeyTable, src: int, strict: bool) -> StateDict:
    rules = _compile(table, src)
    out: StateDict = {}
    origin: dict[str, str] = {}
    unmapped = []
    for key, value in state_dict.items():
        pattern = _INDEX_SEGMENT.sub("{}", key)
        if pattern not in rules:
            unmapped.append(key)
            new: str | None = key
        elif (target := rules[pattern]) is None:
            continue  # dropped on purpose
        else:
            pieces = target.split("{}")
            indices = _INDEX_SEGMENT.findall(key)
            new = pieces[0] + "".join(i + p for i, p in zip(indices, pieces[1:], strict=True))
        if new in out:
            raise ValueError(f"keys {origin[new]!r} and {key!r} both map to {new!r}")
        out[new], origin[new] = value, key
    if strict and unmapped:
        raise ValueError(f"{len(unmapped)} keys match no row of the key table: {_listing(unmapped)}")
    return out


def to_hf_keys(state_dict: Mapping[str, torch.Tensor], table: KeyTable, *, strict: bool = False) -> StateDict:
    """Rename longseq keys to HF keys. Unmapped keys pass through unchanged (or raise, if `strict`)."""
    return _rename(state_dict, table, 0, strict)


def from_hf_keys(
    state_dict: Mapping[str, torch.Tensor], table: KeyTable, *, strict: bool = False
) -> StateDict:
    """Rename HF keys to longseq keys. Unmapped keys pass through unchanged (or raise, if `strict`)."""
    return _rename(state_dict, table, 1, strict)


def apply_legacy_renames(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """HF's load-time "legacy" renames (`LayerNorm.gamma` -> `LayerNorm.weight`, ...)."""
    out: StateDict = {}
    for key, value in state_dict.items():
        for old, new in LEGACY_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def match_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str, expected: Iterable[str]) -> StateDict:
    """HF's `base_model_prefix` rule: load a bare-model checkpoint into a model with a head, and back.

    If the model's keys start with `prefix.` and the checkpoint's do not, add it; if the checkpoint's
    do and the model's do not, strip it (head keys keep their names and show up as unexpected).
    """
    dot = prefix + "."
    model_has = any(k.startswith(dot) for k in expected)
    ckpt_has = any(k.startswith(dot) for k in state_dict)
    if model_has and not ckpt_has:
        return {dot + k: v for k, v in state_dict.items()}
    if ckpt_has and not model_has:
        return {k.removeprefix(dot): v for k, v in state_dict.items()}
    return dict(state_dict)


def check_keys(
    expected: Iterable[str],
    got: Iterable[str],
    ignorable_patterns: Iterable[str] = (),
    *,
    ignorable_missing: Iterable[str] = (),
) -> None:
    """Raise a ValueError listing missing and unexpected keys.

    Unexpected keys matching a regex of `ignorable_patterns` (HF's `_keys_to_ignore_on_load_unexpected`)
    only warn; missing keys matching `ignorable_missing` (`_keys_to_ignore_on_load_missing`) pass.
    """
    expected, got = set(expected), set(got)
    skip_unexpected = [re.compile(p) for p in ignorable_patterns]
    skip_missing = [re.compile(p) for p in ignorable_missing]
    missing = sorted(k for k in expected - got if not any(p.search(k) for p in skip_missing))
    unexpected = sorted(got - expected)
    ignored = [k for k in unexpected if any(p.search(k) for p in skip_unexpected)]
    unexpected = sorted(set(unexpected) - set(ignored))
    if ignored:
        warnings.warn(
            f"ignoring {len(ignored)} unexpected checkpoint keys: {_listing(ignored)}", stacklevel=2
        )
    if missing or unexpected:
        lines = ["checkpoint keys do not match the model:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {_listing(unexpected)}")
        raise ValueError("\n".join(lines))


def check_shapes(expected: Mapping[str, Any], got: Mapping[str, torch.Tensor]) -> None:
    """Raise a ValueError listing every shared key whose shape differs (`expected`: tensors or shapes)."""
    bad = []
    for key in sorted(expected.keys() & got.keys()):
        want = tuple(expected[key].shape if isinstance(expected[key], torch.Tensor) else expected[key])
        if tuple(got[key].shape) != want:
            bad.append(f"{key}: checkpoint {tuple(got[key].shape)}, model {want}")
    if bad:
        raise ValueError(f"checkpoint shapes do not match the model ({len(bad)}):\n  " + "\n  ".join(bad))


def _listing(keys: Sequence[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")
