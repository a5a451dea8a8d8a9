"""Far key-value retrieval: a long-range task that local attention cannot solve and global, random-block
or hashed attention can.

A sample, as the model sees it (position 0 = ``[CLS]``, read by the classification head)::

    [CLS] q  k v  k v  k v ...  q a  ...  k v
     0    1  2 3  4 5           p p+1

- position 1 holds the query key ``q`` (one of ``n_keys`` key tokens ``k0 .. k{n_keys-1}``);
- then come ``P`` key-value pairs (a key token, then a digit 0-9); keys of the filler pairs are drawn
  uniformly from the keys other than ``q`` and their values uniformly from 0-9, independently of the label;
- exactly one pair, at key position ``p >= min_distance`` (uniform among the pairs that far out), has key
  ``q``; its value ``a`` is the label (10 classes, uniform).

Why it separates the attention patterns: every token within ``min_distance - 1`` positions of ``[CLS]``
is independent of the label, so a model whose information can travel at most ``R`` positions towards
``[CLS]`` is at chance (10%) when ``R < min_distance``. A sliding window of one-sided width ``w`` stacked
``L`` times gives ``R = L * w`` (Longformer without global tokens; BigBird without its global and random
blocks). Global attention on ``[CLS]`` / position 1 solves it in two layers: the value token picks up its
key from its left neighbour (local), then ``[CLS]``, holding ``q``, attends to the value whose key matches.
BigBird's global first block does the same; its random blocks alone hit the pair only by luck. LSH
attention (Reformer) hashes the query token and the planted key token, which share one embedding, into
the same bucket, so position 1 can read the pair wherever it is. Defaults: ``min_distance=512``, lengths
1024-2048; check ``L * w < min_distance`` for the local baseline you want at chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longseq.data.common import (
    CACHE_FORMAT,
    Packed,
    SequenceDataset,
    cached,
    check_sizes,
    collate,
    dedup,
    default_cache_dir,
    split_packed,
)
from longseq.data.vocab import Vocab

__all__ = ["NUM_CLASSES", "RetrievalDataset", "collate", "generate", "generate_packed", "load_splits"]
__all__ += ["make_vocab"]

NUM_CLASSES = 10
_DIGIT0 = 2  # ids: [PAD]=0, [CLS]=1, digits 2-11, keys from 12
_KEY0 = 12


def make_vocab(n_keys: int = 64) -> Vocab:
    """``[PAD]``, ``[CLS]``, digits ``0``-``9``, keys ``k0`` .. ``k{n_keys-1}``."""
    if n_keys < 2:
        raise ValueError(f"n_keys must be >= 2 (the query key plus at least one filler key), got {n_keys}")
    return Vocab([*(str(d) for d in range(10)), *(f"k{i}" for i in range(n_keys))])


def _check(min_length: int, max_length: int, min_distance: int, n_keys: int) -> tuple[int, int]:
    """Validate; return the (min, max) number of pairs."""
    make_vocab(n_keys)
    if min_distance < 2:
        raise ValueError(f"min_distance must be >= 2 (position 1 holds the query), got {min_distance}")
    p_lo, p_hi = max(1, (min_length - 1 + 1) // 2), (max_length - 1) // 2  # length = 1 + 2 * pairs
    if p_hi < p_lo:
        raise ValueError(f"no length 1 + 2 * pairs fits in [{min_length}, {max_length}]")
    if 2 + 2 * (p_lo - 1) < min_distance:
        raise ValueError(
            f"min_length={min_length} leaves no pair at position >= min_distance={min_distance}; "
            f"use min_length >= min_distance + 1"
        )
    return p_lo, p_hi


def generate_packed(
    n: int,
    seed: int,
    min_length: int = 1024,
    max_length: int = 2048,
    min_distance: int = 512,
    n_keys: int = 64,
) -> Packed:
    """``n`` distinct samples as packed ids without ``[CLS]`` (sample length = 1 + 2 * pairs tokens)."""
    check_sizes(n=n)
    p_lo, p_hi = _check(min_length, max_length, min_distance, n_keys)
    rng = np.random.default_rng(seed)
    first_far = max(0, -(-(min_distance - 2) // 2))  # first pair j whose key position 2 + 2j >= min_distance
    seqs: list[np.ndarray] = []
    labels: list[int] = []
    seen: set[bytes] = set()
    dtype = np.uint8 if _KEY0 + n_keys <= 256 else np.uint16
    while len(seqs) < n:
        pairs = int(rng.integers(p_lo, p_hi + 1))
        q = int(rng.integers(n_keys))
        keys = rng.integers(n_keys - 1, size=pairs)
        keys += keys >= q  # uniform over the keys other than q
        values = rng.integers(10, size=pairs)
        j = int(rng.integers(first_far, pairs))
        label = int(rng.integers(10))
        keys[j], values[j] = q, label
        seq = np.empty(1 + 2 * pairs, dtype=dtype)
        seq[0] = _KEY0 + q
        seq[1::2] = _KEY0 + keys
        seq[2::2] = _DIGIT0 + values
        new_s, new_l = dedup([seq], [label], seen)
        seqs += new_s
        labels += new_l
    return Packed.from_lists(seqs, labels, dtype=dtype)


def generate(
    n: int,
    seed: int,
    min_length: int = 1024,
    max_length: int = 2048,
    min_distance: int = 512,
    n_keys: int = 64,
) -> list[tuple[str, int]]:
    """``n`` distinct samples as ``(text, label)``, text like ``k5 k3 7 k9 0 ... k5 4 ...`` (no ``[CLS]``)."""
    packed = generate_packed(n, seed, min_length, max_length, min_distance, n_keys)
    vocab = make_vocab(n_keys)
    return [(" ".join(vocab.decode(packed.seq(i))), int(packed.labels[i])) for i in range(len(packed))]


class RetrievalDataset(SequenceDataset):
    """Yields ``(input_ids, label)``: ``[CLS] q k v k v ...`` as a LongTensor and the value of ``q``."""

    def __init__(self, packed: Packed, n_keys: int) -> None:
        self.vocab = make_vocab(n_keys)
        super().__init__(packed, vocab_size=len(self.vocab), num_classes=NUM_CLASSES)


def load_splits(
    train: int = 20000,
    valid: int = 2000,
    test: int = 2000,
    seed: int = 0,
    min_length: int = 1024,
    max_length: int = 2048,
    min_distance: int = 512,
    n_keys: int = 64,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> dict[str, RetrievalDataset]:
    """Train / valid / test splits from one deduplicated stream, cached under ``cache_dir``."""
    check_sizes(train=train, valid=valid, test=test)
    _check(min_length, max_length, min_distance, n_keys)
    path = None
    if use_cache:
        name = (
            f"retrieval_f{CACHE_FORMAT}_seed{seed}_train{train}_valid{valid}_test{test}"
            f"_len{min_length}-{max_length}_dist{min_distance}_keys{n_keys}.npz"
        )
        path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    total = train + valid + test
    packed = cached(path, lambda: generate_packed(total, seed, min_length, max_length, min_distance, n_keys))
    parts = split_packed(packed, {"train": train, "valid": valid, "test": test})
    return {k: RetrievalDataset(v, n_keys) for k, v in parts.items()}
