"""LRA ListOps generated locally with the rules of google-research/long-range-arena (data/listops.py).

Rules kept from LRA:
- operators ``[MIN``, ``[MAX``, ``[MED`` (``int(np.median(args))``: the mean of the two middle values,
  truncated, for an even count), ``[SM`` (sum mod 10); values 0-9; every operator closed by ``]``;
- a node at depth < ``max_depth`` (the root has depth 1) is an operator with probability 0.25, else a value;
  nodes at ``max_depth`` are values; an operator takes ``randint(2, max_args)`` arguments (inclusive);
- LRA's length counts operator, value and ``]`` tokens (``length = 2 + sum(child lengths)``), and a tree is
  kept when ``min_length < length < max_length`` (strict, LRA: 500 < length < 2000);
- all splits come from one deduplicated stream, cut into train / valid / test in order (LRA: 96k/2k/2k).

Tokens: LRA's ``to_string`` also writes ``(`` and ``)`` around every binary node of its internal tuple
encoding; they carry no information and are not tokens here. (LRA's own input pipeline used tfds'
``Tokenizer``, which drops all punctuation, so its models saw ``MAX 2 9`` with neither ``[`` nor ``]``;
we keep ``[MAX`` and ``]`` as S4 and later work do, which makes every expression unambiguous.)

Speed: trees are grown breadth-first, 4096 roots at a time, with numpy draws; values and lengths are
computed bottom-up with ``reduceat`` and the accepted trees are written in prefix order by one scatter
per level, so no Python code runs per node.
Draws come from ``np.random.default_rng(seed)`` only, never from a global RNG.
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

__all__ = ["NUM_CLASSES", "OPERATORS", "VOCAB", "ListOpsDataset", "collate", "encode", "generate"]
__all__ += ["generate_packed", "load_splits"]

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = Vocab([*OPERATORS, END, *(str(d) for d in range(10))])
NUM_CLASSES = 10
OPERATOR_P = 0.25  # LRA's VALUE_P: ``if random() > VALUE_P: value`` makes an operator the 0.25 branch
_OP0 = VOCAB.index[OPERATORS[0]]
_MIN, _MAX, _MED, _SM = (VOCAB.index[o] for o in OPERATORS)
_END = VOCAB.index[END]
_DIGIT0 = VOCAB.index["0"]
_BATCH = 4096  # roots per numpy batch; fixed so that generate(n) is a prefix of generate(n + k)


def encode(tokens: list[str] | str, add_cls: bool = True) -> list[int]:
    """ListOps tokens (a list, or one space-separated string) -> ids; ``[CLS]`` first unless ``add_cls``."""
    return VOCAB.encode(tokens, add_cls=add_cls)


def _max_tree_length(max_depth: int, max_args: int) -> int:
    length = 1  # a value at max_depth
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _check(min_length: int, max_length: int, max_depth: int, max_args: int) -> None:
    if max_depth < 1 or max_args < 2:
        raise ValueError(f"need max_depth >= 1 and max_args >= 2, got {max_depth} and {max_args}")
    if max_length - min_length < 2:
        raise ValueError(f"no length fits min_length < length < max_length for ({min_length}, {max_length})")
    if min_length + 1 > _max_tree_length(max_depth, max_args):
        raise ValueError(
            f"min_length={min_length} is unreachable: trees of max_depth={max_depth}, max_args={max_args} "
            f"have at most {_max_tree_length(max_depth, max_args)} tokens"
        )


def _grow(rng: np.random.Generator, max_depth: int, max_args: int) -> list[dict[str, np.ndarray]]:
    """Grow ``_BATCH`` trees level by level (root level first).

    Per level: ``tree`` (tree id of each node), ``sym`` (token id), ``nargs`` (0 for a value) and ``first``
    (index of the first child on the next level; the children of a level's operators are the whole next
    level, in order).
    """
    tree = np.arange(_BATCH)
    levels = []
    for depth in range(1, max_depth + 1):
        n = len(tree)
        if n == 0:
            break
        is_op = rng.random(n) <= OPERATOR_P if depth < max_depth else np.zeros(n, dtype=bool)
        digits = rng.integers(0, 10, n)
        nargs = np.where(is_op, rng.integers(2, max_args + 1, n), 0)
        ops = rng.integers(0, len(OPERATORS), n)
        sym = np.where(is_op, _OP0 + ops, _DIGIT0 + digits)
        levels.append({"tree": tree, "sym": sym, "nargs": nargs, "first": np.cumsum(nargs) - nargs})
        tree = np.repeat(tree, nargs)
    return levels


def _order_stat(cum: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The ``j``-th smallest (0-based) child value per operator from cumulative digit counts (ops, 10)."""
    return (cum <= j[:, None]).sum(1)


def _evaluate(levels: list[dict[str, np.ndarray]]) -> None:
    """Bottom-up: add ``value`` and ``length`` (tokens in the subtree) to every node of every level."""
    below: dict[str, np.ndarray] | None = None
    for lv in reversed(levels):
        sym, nargs = lv["sym"], lv["nargs"]
        value = sym - _DIGIT0
        length = np.ones(len(sym), dtype=np.int64)
        ops = np.flatnonzero(nargs)
        if len(ops):
            starts, k, s = lv["first"][ops], nargs[ops], sym[ops]
            cv, cl = below["value"], below["length"]
            length[ops] = 2 + np.add.reduceat(cl, starts)
            seg = np.repeat(np.arange(len(ops)), k)
            counts = np.bincount(seg * 10 + cv, minlength=10 * len(ops)).reshape(len(ops), 10)
            cum = counts.cumsum(1)  # (ops, 10): children with value <= v
            hi = _order_stat(cum, k // 2)
            med = np.where(k % 2 == 1, hi, (_order_stat(cum, k // 2 - 1) + hi) // 2)  # int(np.median(...))
            lo, top = np.minimum.reduceat(cv, starts), np.maximum.reduceat(cv, starts)
            sm = np.add.reduceat(cv, starts) % 10
            value[ops] = np.select([s == _MIN, s == _MAX, s == _SM], [lo, top, sm], med)
        lv["value"], lv["length"] = value, length
        below = lv


def _serialise(levels: list[dict[str, np.ndarray]], roots: np.ndarray) -> list[np.ndarray]:
    """Prefix-order token ids of the trees ``roots`` (top-down positions, then one scatter per level)."""
    rank = np.full(_BATCH, -1, dtype=np.int64)
    rank[roots] = np.arange(len(roots))
    sizes = levels[0]["length"][roots]
    offset = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros(int(offset[-1]), dtype=np.uint8)
    pos = np.zeros(_BATCH, dtype=np.int64)  # position of each node's first token within its tree
    for d, lv in enumerate(levels):
        r = rank[lv["tree"]]
        keep = r >= 0
        base = offset[r[keep]] + pos[keep]
        out[base] = lv["sym"][keep]
        is_op = lv["nargs"][keep] > 0
        out[base[is_op] + lv["length"][keep][is_op] - 1] = _END
        if d + 1 < len(levels):
            ops = np.flatnonzero(lv["nargs"])
            k = lv["nargs"][ops]
            cl = levels[d + 1]["length"]
            before = np.cumsum(cl) - cl  # exclusive prefix sum over the whole next level
            seg_start = np.repeat(lv["first"][ops], k)
            pos = np.repeat(pos[ops], k) + 1 + before - before[seg_start]
    return np.split(out, offset[1:-1])


def generate_packed(
    n: int, seed: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10
) -> Packed:
    """``n`` distinct accepted trees as packed token ids (no ``[CLS]``) and their values."""
    check_sizes(n=n)
    _check(min_length, max_length, max_depth, max_args)
    rng = np.random.default_rng(seed)
    seqs: list[np.ndarray] = []
    labels: list[int] = []
    seen: set[bytes] = set()
    empty_batches = 0
    while len(seqs) < n:
        levels = _grow(rng, max_depth, max_args)
        _evaluate(levels)
        length = levels[0]["length"]
        roots = np.flatnonzero((length > min_length) & (length < max_length))[: n - len(seqs)]
        empty_batches = 0 if len(roots) else empty_batches + 1
        if empty_batches >= 2000:
            raise ValueError(
                f"no tree with {min_length} < length < {max_length} in {2000 * _BATCH} tries "
                f"(max_depth={max_depth}, max_args={max_args}); widen the length bounds"
            )
        new_s, new_l = dedup(_serialise(levels, roots), levels[0]["value"][roots].tolist(), seen)
        seqs += new_s
        labels += new_l
    return Packed.from_lists(seqs, labels)


def generate(
    n: int, seed: int, min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10
) -> list[tuple[str, int]]:
    """``n`` distinct ListOps samples as ``(text, label)``; text is space-separated, e.g. ``[MAX 2 9 ]``."""
    packed = generate_packed(n, seed, min_length, max_length, max_depth, max_args)
    return [(" ".join(VOCAB.decode(packed.seq(i))), int(packed.labels[i])) for i in range(len(packed))]


class ListOpsDataset(SequenceDataset):
    """Yields ``(input_ids, label)`` with ``input_ids = [CLS] tokens...`` (LongTensor) and label in 0-9."""

    def __init__(self, packed: Packed) -> None:
        super().__init__(packed, vocab_size=len(VOCAB), num_classes=NUM_CLASSES)

    def text(self, i: int) -> str:
        return " ".join(VOCAB.decode(self.packed.seq(i)))


def load_splits(
    train: int = 96000,
    valid: int = 2000,
    test: int = 2000,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> dict[str, ListOpsDataset]:
    """Train / valid / test ListOps, deduplicated against each other, cached under ``cache_dir``.

    ``cache_dir`` defaults to :func:`longseq.data.common.default_cache_dir`; the file name holds every
    parameter, so a cache hit returns exactly the data that generation would give.
    """
    check_sizes(train=train, valid=valid, test=test)
    _check(min_length, max_length, max_depth, max_args)
    path = None
    if use_cache:
        name = (
            f"listops_f{CACHE_FORMAT}_seed{seed}_train{train}_valid{valid}_test{test}"
            f"_len{min_length}-{max_length}_depth{max_depth}_args{max_args}.npz"
        )
        path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / name
    total = train + valid + test
    packed = cached(path, lambda: generate_packed(total, seed, min_length, max_length, max_depth, max_args))
    parts = split_packed(packed, {"train": train, "valid": valid, "test": test})
    return {k: ListOpsDataset(v) for k, v in parts.items()}
