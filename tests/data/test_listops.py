"""ListOps: LRA's rules, checked by an independent evaluator and an independent LRA-style generator."""

import os
import random
from functools import partial

import numpy as np
import pytest
import torch

from longseq.data import CLS_ID, PAD_ID, collate, listops

SMALL = {"min_length": 100, "max_length": 400, "max_depth": 6}


def parse_eval(tokens: list[str]) -> tuple[int, int, int, int]:
    """Independent evaluator: returns (value, depth of the deepest node, min args, max args)."""
    stack: list[tuple[str, list[int], int]] = []  # (op, arg values, depth of the op)
    result, deepest, min_args, max_args = None, 0, 10**9, 0
    for i, tok in enumerate(tokens):
        if tok == "]":
            op, args, _ = stack.pop()
            min_args, max_args = min(min_args, len(args)), max(max_args, len(args))
            value = {
                "[MIN": min,
                "[MAX": max,
                "[MED": lambda a: int(np.median(a)),
                "[SM": lambda a: int(np.sum(a) % 10),
            }[op](args)
        elif tok.startswith("["):
            stack.append((tok, [], len(stack) + 1))
            deepest = max(deepest, len(stack))
            continue
        else:
            value = int(tok)
            deepest = max(deepest, len(stack) + 1)
        if stack:
            stack[-1][1].append(value)
        else:
            assert result is None and i == len(tokens) - 1, "trailing tokens after the root expression"
            result = value
    assert result is not None and not stack, "unbalanced expression"
    return result, deepest, min_args, max_args


def lra_tree(depth: int, max_depth: int, max_args: int, rnd: random.Random):
    """LRA's generate_tree recursion (value with probability 0.75 below max depth), returning tokens."""
    if (rnd.random() if depth < max_depth else 1) > 0.25:
        return [str(rnd.choice(range(10)))]
    children = [lra_tree(depth + 1, max_depth, max_args, rnd) for _ in range(rnd.randint(2, max_args))]
    return [rnd.choice(listops.OPERATORS), *(t for c in children for t in c), "]"]


@pytest.mark.parametrize("cfg", [SMALL, {"min_length": 500, "max_length": 2000, "max_depth": 10}])
def test_rules_hold(cfg):
    n = 1500 if cfg is SMALL else 200
    samples = listops.generate(n, seed=3, **cfg)
    assert len(samples) == n
    for text, label in samples:
        tokens = text.split()
        assert cfg["min_length"] < len(tokens) < cfg["max_length"]  # LRA's length: tokens without parens
        value, deepest, lo, hi = parse_eval(tokens)
        assert label == value
        assert deepest <= cfg["max_depth"] and lo >= 2 and hi <= 10
    assert len({t for t, _ in samples}) == n


def test_same_distribution_as_lra_recursion():
    n = 4000
    ours = listops.generate_packed(n, seed=0, **SMALL)
    rnd, lengths, labels = random.Random(0), [], []
    while len(lengths) < n:
        tokens = lra_tree(1, SMALL["max_depth"], 10, rnd)
        if SMALL["min_length"] < len(tokens) < SMALL["max_length"]:
            lengths.append(len(tokens))
            labels.append(parse_eval(tokens)[0])
    ref_freq = np.bincount(labels, minlength=10) / n
    our_freq = np.bincount(ours.labels, minlength=10) / n
    assert np.abs(ref_freq - our_freq).max() < 0.04, (ref_freq, our_freq)
    assert abs(ours.lengths().mean() / np.mean(lengths) - 1) < 0.05


def test_class_balance_like_lra():
    freq = np.bincount(listops.generate_packed(3000, seed=1, **SMALL).labels, minlength=10) / 3000
    # MIN pulls towards 0 and MAX towards 9; every class is present (LRA: roughly 16-18% for 0 and 9).
    assert freq[0] > 0.13 and freq[9] > 0.13
    assert freq[1:9].min() > 0.04 and freq[1:9].max() < 0.12


def test_reproducible_and_prefix_stable():
    a = listops.generate(300, seed=7, **SMALL)
    assert a == listops.generate(300, seed=7, **SMALL)
    assert a != listops.generate(300, seed=8, **SMALL)
    assert listops.generate(100, seed=7, **SMALL) == a[:100]
    state = np.random.get_state()
    listops.generate(10, seed=7, **SMALL)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG is never touched


def test_splits_are_disjoint(tmp_path):
    splits = listops.load_splits(1000, 200, 200, seed=0, cache_dir=tmp_path, **SMALL)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1000, "valid": 200, "test": 200}
    texts = {k: {ds.text(i) for i in range(len(ds))} for k, ds in splits.items()}
    assert sum(len(t) for t in texts.values()) == 1400
    assert len(texts["train"] | texts["valid"] | texts["test"]) == 1400


def test_cache_hit_and_atomic_write(tmp_path, monkeypatch):
    kw = {"train": 300, "valid": 50, "test": 50, "seed": 2, "cache_dir": tmp_path, **SMALL}
    first = listops.load_splits(**kw)
    (path,) = tmp_path.iterdir()
    assert path.name == "listops_f1_seed2_train300_valid50_test50_len100-400_depth6_args10.npz"

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(listops, "generate_packed", fail)
    second = listops.load_splits(**kw)
    for k in first:
        assert np.array_equal(first[k].packed.offsets, second[k].packed.offsets)
        assert np.array_equal(first[k].packed.tokens, second[k].packed.tokens)
        assert np.array_equal(first[k].packed.labels, second[k].packed.labels)
    monkeypatch.undo()

    other = tmp_path / "other"

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        listops.load_splits(**{**kw, "cache_dir": other})
    assert os.listdir(other) == []  # neither the final name nor the temp file is left


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_CACHE", str(tmp_path))
    listops.load_splits(20, 5, 5, seed=0, **SMALL)
    assert len(list((tmp_path / "data").glob("listops_*.npz"))) == 1


def test_dataset_and_collate(tmp_path):
    ds = listops.load_splits(40, 0, 0, seed=0, use_cache=False, **SMALL)["train"]
    ids, label = ds[0]
    assert ids.dtype == torch.long and ids[0] == CLS_ID and 0 <= label < 10
    assert listops.encode(ds.text(0)) == ids.tolist()
    batch = [ds[i] for i in range(5)]
    out = collate(batch)
    lengths = [len(x) for x, _ in batch]
    assert out["input_ids"].shape == (5, max(lengths))
    assert out["attention_mask"].sum(1).tolist() == lengths
    assert (out["input_ids"][out["attention_mask"] == 0] == PAD_ID).all()
    assert out["labels"].tolist() == [y for _, y in batch]
    padded = partial(collate, pad_to_multiple_of=64)(batch)
    assert padded["input_ids"].shape[1] % 64 == 0 and padded["input_ids"].shape[1] >= max(lengths)
    assert torch.equal(padded["input_ids"][:, : max(lengths)], out["input_ids"])


def test_errors():
    with pytest.raises(ValueError, match="unknown token"):
        listops.encode("[MAX 1 ( 2 ]")
    with pytest.raises(ValueError, match="unreachable"):
        listops.generate(1, seed=0, min_length=500, max_length=2000, max_depth=3)
    with pytest.raises(ValueError, match="no length fits"):
        listops.generate(1, seed=0, min_length=10, max_length=11)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
