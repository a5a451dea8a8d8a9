"""Trainer checkpoints: `output_dir/checkpoint-<step>/`, written whole or not at all.

A checkpoint folder holds

    model.safetensors    the model's full state dict, longseq key names (`model.state_dict()`)
    trainer_state.pt     optimizer, scheduler, grad scaler, step, data position, RNG states of
                         every rank: tensors, dicts, lists, numbers and strings only, so that
                         `torch.load(weights_only=True)` reads it
    train_config.json    the TrainConfig of the run

It is built in a hidden temp folder beside its final place and renamed into place with
`os.replace`, so a crash mid-save leaves the previous checkpoints as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "trainer_state.pt"
CONFIG_NAME = "train_config.json"
_DIR_RE = re.compile(r"checkpoint-(\d+)")


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest (lowest step) first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _DIR_RE.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def _untied(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, each with its own memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[name] = t
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep_last: int = 0,
) -> Path:
    """Write `output_dir/checkpoint-<step>` atomically, then keep only the newest `keep_last` (0: all)."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}-{uuid.uuid4().hex}"
    old: Path | None = None
    try:
        tmp.mkdir()
        save_file(_untied(model_state), tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        torch.save(trainer_state, tmp / STATE_NAME)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        if final.exists():  # the same step saved again: move the old one aside, then replace it
            old = root / f".old-checkpoint-{step}-{uuid.uuid4().hex}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:  # the rename in failed: put the old one back
                with contextlib.suppress(OSError):
                    os.replace(old, final)
    if keep_last > 0:
        for stale in checkpoint_dirs(root)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the newest checkpoint in an output dir; a clear error if none."""
    p = Path(path)
    if (p / STATE_NAME).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint-<step> folder with {STATE_NAME} in {p}")
    return latest


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, trainer state) of a checkpoint folder; never runs pickled code."""
    p = resolve_checkpoint(path)
    weights = load_file(p / WEIGHTS_NAME, device="cpu")
    state = torch.load(p / STATE_NAME, map_location="cpu", weights_only=True)
    return weights, state
