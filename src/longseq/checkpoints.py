"""Read and write Hugging Face model folders: weights, `config.json`, and checkpoint key maps.

Weights come from `model.safetensors`, sharded safetensors (`model.safetensors.index.json`), or the
legacy `pytorch_model.bin` (sharded or not), in that order of preference, as Hugging Face does. A
`.bin` is read only through `torch.load(weights_only=True)`: a checkpoint can never run code.

Writes are atomic: each file goes to a temp file in the same folder, then `os.replace`. A sharded
save writes every shard to a temp file first and renames them (index last) only once all are on disk.

The key maps and key checks (`to_hf_keys`, `from_hf_keys`, `check_keys`, ...) live in
`longseq.keymaps` and are re-exported here: models import both from `longseq.checkpoints`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .keymaps import (
    HF_IGNORED_UNEXPECTED,
    LEGACY_RENAMES,
    KeyTable,
    _listing,
    apply_legacy_renames,
    check_keys,
    check_shapes,
    from_hf_keys,
    match_prefix,
    to_hf_keys,
)

__all__ = [
    "CONFIG_NAME",
    "HF_IGNORED_UNEXPECTED",
    "LEGACY_RENAMES",
    "SAFE_WEIGHTS_INDEX_NAME",
    "SAFE_WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "KeyTable",
    "SaveResult",
    "apply_legacy_renames",
    "check_keys",
    "check_shapes",
    "from_hf_keys",
    "load_state_dict",
    "match_prefix",
    "read_config",
    "save_state_dict",
    "to_hf_keys",
    "write_config",
]

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
CONFIG_NAME = "config.json"
_WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
_METADATA = {"format": "pt"}  # what HF writes into every safetensors header
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

StateDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------- reading


def load_state_dict(folder: str | os.PathLike, device: str | torch.device = "cpu") -> StateDict:
    """All tensors of an HF model folder (or of one weights file), keyed by HF names."""
    path = Path(folder)
    if path.is_file():
        return _load_index(path, device) if path.name.endswith(".index.json") else _load_file(path, device)
    looked_for = ", ".join(_WEIGHT_FILES)
    if not path.is_dir():
        raise FileNotFoundError(f"No model folder at {path} (looked for a folder holding {looked_for})")
    for name in _WEIGHT_FILES:
        if (path / name).is_file():
            return load_state_dict(path / name, device)
    found = ", ".join(sorted(os.listdir(path))) or "nothing"
    raise FileNotFoundError(f"No weights in {path}: looked for {looked_for}; found {found}")


def _load_file(path: Path, device: str | torch.device) -> StateDict:
    if path.suffix == ".safetensors":
        return load_file(path, device=str(device))
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} holds pickled objects other than plain tensors; longseq refuses to run pickled "
            f"code (torch.load(weights_only=True) said: {reason}). Convert it with a tool you trust."
        ) from err
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a plain state dict (dict of name -> tensor): {type(obj).__name__}")
    return dict(obj)


def _load_index(index_path: Path, device: str | torch.device) -> StateDict:
    weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} has no 'weight_map' object")
    state: StateDict = {}
    for shard in dict.fromkeys(weight_map.values()):  # shard files in order of first mention
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise ValueError(f"{index_path} names a shard outside its folder: {shard!r}")
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise FileNotFoundError(f"{index_path} names shard {shard}, which is not in {index_path.parent}")
        state.update(_load_file(shard_path, device))
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise ValueError(f"{index_path}: {len(absent)} weight_map keys in no shard: {_listing(absent)}")
    return state


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The dict in `folder/config.json` (or in a given .json file), with HF's special floats decoded."""
    path = Path(folder)
    path = path if path.is_file() else path / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"No config at {path} (looked for {CONFIG_NAME})")
    return _decode_floats(json.loads(path.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class SaveResult:
    """What `save_state_dict` wrote, and which aliased tensors it dropped or cloned."""

    files: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # tied key -> the key kept in its place
    cloned: list[str] = field(default_factory=list)


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    folder: str | os.PathLike,
    max_shard_size: int | str | None = None,
    *,
    tied_keys: Mapping[str, str] | Iterable[str] | None = None,
) -> SaveResult:
    """Write `model.safetensors` (or shards and `model.safetensors.index.json`) atomically into `folder`.

    safetensors refuses tensors that share memory. Aliases named in `tied_keys` (HF's
    `_tied_weights_keys`: tied key -> source key, or just the tied keys) are dropped as HF drops them;
    any other aliased or overlapping tensor is cloned, with a warning naming it.
    `max_shard_size`: bytes, or a string like "5GB" / "200MiB"; None writes one file.
    """
    max_bytes = _parse_size(max_shard_size) if max_shard_size is not None else math.inf
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = SaveResult()
    tensors = _untie(dict(state_dict), set(tied_keys or ()), result)
    shards = _split(tensors, max_bytes)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    names = names if len(shards) > 1 else [SAFE_WEIGHTS_NAME]
    writes: list[tuple[Path, Callable[[Path], None]]] = []
    for name, keys in zip(names, shards, strict=True):
        shard = {k: tensors[k].contiguous() for k in keys}
        writes.append((folder / name, lambda tmp, shard=shard: save_file(shard, tmp, metadata=_METADATA)))
    if len(shards) > 1:
        numels = [t.numel() for t in tensors.values()]
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {
            "metadata": {"total_parameters": sum(numels), "total_size": size},
            "weight_map": {k: name for name, keys in zip(names, shards, strict=True) for k in keys},
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        writes.append((folder / SAFE_WEIGHTS_INDEX_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    _atomic_write_all(writes)
    result.files = [p.name for p, _ in writes]
    # Remove what the new files replace: a stale model.safetensors would shadow new shards.
    stale = {n for n in os.listdir(folder) if _SHARD_RE.fullmatch(n)} | {
        SAFE_WEIGHTS_NAME,
        SAFE_WEIGHTS_INDEX_NAME,
    }
    for name in stale - set(result.files):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    return result


def write_config(config: Mapping[str, Any], folder: str | os.PathLike) -> None:
    """Write `folder/config.json` atomically: indent 2, sorted keys, HF's encoding of inf / nan."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_encode_floats(dict(config)), indent=2, sort_keys=True) + "\n"
    _atomic_write_all([(folder / CONFIG_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))])


def _atomic_write_all(writes: Sequence[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every file to a temp file beside it, then rename them all; on failure leave the old files."""
    temps: list[Path] = []
    try:
        for path, write in writes:
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            temps.append(tmp)
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for (path, _), tmp in zip(writes, temps, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _untie(tensors: StateDict, tied: set[str], result: SaveResult) -> StateDict:
    """Drop declared tied aliases and clone undeclared ones, so that no two tensors share storage."""
    by_storage: dict[tuple[torch.device, int], list[str]] = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(t).__name__}, not a tensor")
        if t.numel() > 0:
            by_storage.setdefault((t.device, t.untyped_storage().data_ptr()), []).append(name)
    for names in by_storage.values():
        if len(names) < 2:
            continue
        views: dict[tuple, list[str]] = {}  # the same view of the storage -> its names
        for n in names:
            t = tensors[n]
            views.setdefault((t.data_ptr(), tuple(t.shape), t.stride(), t.dtype), []).append(n)
        for i, same in enumerate(views.values()):
            kept = next((n for n in same if n not in tied), same[0])
            for n in same:
                if n != kept and n in tied:
                    result.dropped[n] = kept
                    del tensors[n]
                elif n != kept or i > 0:  # undeclared alias, or another view of a storage already kept
                    tensors[n] = tensors[n].clone()
                    result.cloned.append(n)
    if result.cloned:
        warnings.warn(
            f"save_state_dict: cloned {len(result.cloned)} tensors that shared memory with another key but "
            f"are not declared tied: {_listing(result.cloned)}",
            stacklevel=3,
        )
    return tensors


def _split(tensors: StateDict, max_bytes: float) -> list[list[str]]:
    """Greedy shards in key order, like huggingface_hub: a tensor over the limit gets a shard of its own."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if nbytes > max_bytes:
            shards.insert(len(shards) - 1, [name])
            continue
        if size + nbytes > max_bytes and shards[-1]:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return [s for s in shards if s] or [[]]


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"max_shard_size must be bytes or a string like '5GB' or '200MiB', got {size!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


_FLOAT_TAGS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _encode_floats(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")}
    if isinstance(obj, dict):
        return {k: _encode_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode_floats(v) for v in obj]
    return obj


def _decode_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__float__"} and obj["__float__"] in _FLOAT_TAGS:
            return _FLOAT_TAGS[obj["__float__"]]
        return {k: _decode_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_floats(v) for v in obj]
    return obj
