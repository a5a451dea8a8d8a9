"""Shared pieces of the built-in tasks: packed storage, a torch Dataset, padding collate, disk cache."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from longseq.data.vocab import CLS_ID, PAD_ID

CACHE_FORMAT = 1  # bump when the layout of a cached file or a generator's draws change


def default_cache_dir() -> Path:
    """``$LONGSEQ_CACHE/data`` if the variable is set, else ``~/.cache/longseq/data``."""
    root = os.environ.get("LONGSEQ_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "longseq"
    return base / "data"


class Packed:
    """Variable-length id sequences stored flat: ``tokens[offsets[i]:offsets[i + 1]]`` is sample ``i``."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
        if offsets.ndim != 1 or len(offsets) != len(labels) + 1 or offsets[-1] != len(tokens):
            raise ValueError("offsets must have one entry more than labels and end at len(tokens)")
        self.tokens, self.offsets, self.labels = tokens, offsets.astype(np.int64), labels.astype(np.int64)

    @classmethod
    def from_lists(cls, seqs: Sequence[np.ndarray], labels: Sequence[int], dtype=np.uint8) -> Packed:
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        tokens = np.concatenate(seqs).astype(dtype) if len(seqs) else np.zeros(0, dtype)
        return cls(tokens, offsets, np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def seq(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def slice(self, start: int, stop: int) -> Packed:
        lo, hi = self.offsets[start], self.offsets[stop]
        return Packed(self.tokens[lo:hi], self.offsets[start : stop + 1] - lo, self.labels[start:stop])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class SequenceDataset(Dataset):
    """Yields ``(input_ids, label)``: ``input_ids`` is a LongTensor ``[CLS] tok_1 ... tok_n`` (CLS at 0)."""

    def __init__(self, packed: Packed, vocab_size: int, num_classes: int) -> None:
        self.packed, self.vocab_size, self.num_classes = packed, vocab_size, num_classes

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a data set of {len(self)} samples")
        i = i % len(self)
        seq = self.packed.seq(i)
        ids = torch.empty(len(seq) + 1, dtype=torch.long)
        ids[0] = CLS_ID
        ids[1:] = torch.from_numpy(seq.astype(np.int64))
        return ids, int(self.packed.labels[i])

    def lengths(self) -> np.ndarray:
        """Length of each sample in tokens, ``[CLS]`` included."""
        return self.packed.lengths() + 1


def collate(
    batch: Sequence[tuple[torch.Tensor, int]], pad_id: int = PAD_ID, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member (rounded up to ``pad_to_multiple_of``).

    Returns ``input_ids`` (B, T) long, ``attention_mask`` (B, T) long with 1 on real tokens and 0 on padding,
    and ``labels`` (B,) long. Use ``functools.partial(collate, pad_to_multiple_of=64)`` in a DataLoader.
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    lengths = [len(ids) for ids, _ in batch]
    t = max(lengths)
    if pad_to_multiple_of:
        t = -(-t // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(batch), t), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(batch), t), dtype=torch.long)  # (B, T)
    for b, ((ids, _), n) in enumerate(zip(batch, lengths, strict=True)):
        input_ids[b, :n] = ids
        attention_mask[b, :n] = 1
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.long)  # (B,)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def dedup(seqs: list[np.ndarray], labels: list[int], seen: set[bytes]) -> tuple[list[np.ndarray], list[int]]:
    """Keep the samples whose token sequence is not in ``seen`` (updated in place), in order."""
    keep_s, keep_l = [], []
    for s, y in zip(seqs, labels, strict=True):
        key = s.tobytes()
        if key not in seen:
            seen.add(key)
            keep_s.append(s)
            keep_l.append(y)
    return keep_s, keep_l


def save_packed(path: Path, packed: Packed) -> None:
    """Write atomically: a temp file in the same folder, then ``os.replace``; no partial file on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, tokens=packed.tokens, offsets=packed.offsets, labels=packed.labels)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_packed(path: Path) -> Packed:
    with np.load(path) as z:
        return Packed(z["tokens"], z["offsets"], z["labels"])


def cached(path: Path | None, build) -> Packed:
    """Return the packed data at ``path`` if present, else ``build()`` it and save it there."""
    if path is not None and path.exists():
        return load_packed(path)
    packed = build()
    if path is not None:
        save_packed(path, packed)
    return packed


def split_packed(packed: Packed, sizes: dict[str, int]) -> dict[str, Packed]:
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = packed.slice(start, start + n)
        start += n
    return out


def check_sizes(**sizes: int) -> None:
    for name, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    if sum(sizes.values()) == 0:
        raise ValueError("all split sizes are 0: nothing to generate")
