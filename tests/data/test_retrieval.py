"""Far retrieval: the answer is recoverable exactly, and invisible to anything that reads only near [CLS]."""

import os

import numpy as np
import pytest
import torch

from longseq.data import CLS_ID, collate, retrieval

CFG = {"min_length": 257, "max_length": 511, "min_distance": 128, "n_keys": 16}


def exact_solver(ids: list[int]) -> tuple[int, int]:
    """Read the query at position 1, find the pair with that key; return (answer, key position)."""
    q = ids[1]
    hits = [p for p in range(2, len(ids), 2) if ids[p] == q]
    assert len(hits) == 1, "the query key must occur in exactly one pair"
    return ids[hits[0] + 1] - 2, hits[0]  # digits have ids 2-11


def local_solver(ids: list[int], window: int, rng: np.random.Generator) -> int:
    """Read only positions 0..window: answer if the planted pair is visible, else guess a digit seen there."""
    seen = ids[: window + 1]
    q = seen[1]
    for p in range(2, len(seen) - 1, 2):
        if seen[p] == q:
            return seen[p + 1] - 2
    digits = [t - 2 for t in seen[3::2]]
    return int(rng.choice(digits)) if digits else int(rng.integers(10))


@pytest.fixture(scope="module")
def data():
    return retrieval.load_splits(2000, 0, 0, seed=0, use_cache=False, **CFG)["train"]


def test_layout_and_exact_solver(data):
    for i in range(len(data)):
        ids, label = data[i]
        ids = ids.tolist()
        assert ids[0] == CLS_ID and CFG["min_length"] <= len(ids) - 1 <= CFG["max_length"]
        answer, pos = exact_solver(ids)
        assert answer == label
        assert pos >= CFG["min_distance"]


def test_local_window_is_at_chance(data):
    rng = np.random.default_rng(0)
    labels = [data[i][1] for i in range(len(data))]
    for window in (16, CFG["min_distance"] - 1):
        preds = [local_solver(data[i][0].tolist(), window, rng) for i in range(len(data))]
        acc = np.mean(np.array(preds) == np.array(labels))
        assert 0.06 < acc < 0.14, (window, acc)  # chance is 0.10; 2000 samples give a std of 0.007
    full = [local_solver(data[i][0].tolist(), CFG["max_length"] + 1, rng) for i in range(len(data))]
    assert np.array_equal(full, labels)  # the same reader with a window covering the pair is exact


def test_class_balance(data):
    freq = np.bincount(data.packed.labels, minlength=10) / len(data)
    assert freq.min() > 0.07 and freq.max() < 0.13


def test_reproducible_and_distinct():
    a = retrieval.generate(50, seed=1, **CFG)
    assert a == retrieval.generate(50, seed=1, **CFG)
    assert a != retrieval.generate(50, seed=2, **CFG)
    assert all(text.split()[0].startswith("k") for text, _ in a)


def test_splits_cache_and_atomic_write(tmp_path, monkeypatch):
    kw = {"train": 200, "valid": 30, "test": 30, "seed": 4, "cache_dir": tmp_path, **CFG}
    first = retrieval.load_splits(**kw)
    keys = [first[k].packed.seq(i).tobytes() for k in first for i in range(len(first[k]))]
    assert len(set(keys)) == 260
    monkeypatch.setattr(retrieval, "generate_packed", lambda *a, **k: pytest.fail("cache not used"))
    second = retrieval.load_splits(**kw)
    for k in first:
        assert np.array_equal(first[k].packed.tokens, second[k].packed.tokens)
        assert np.array_equal(first[k].packed.labels, second[k].packed.labels)
    monkeypatch.undo()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        retrieval.load_splits(**{**kw, "cache_dir": tmp_path / "x"})
    assert os.listdir(tmp_path / "x") == []


def test_collate_and_vocab(data):
    out = collate([data[0], data[1]], pad_to_multiple_of=128)
    assert out["input_ids"].shape[1] % 128 == 0 and out["labels"].dtype == torch.long
    assert len(data.vocab) == data.vocab_size == 12 + CFG["n_keys"]
    big = retrieval.generate_packed(2, seed=0, min_length=20, max_length=30, min_distance=10, n_keys=300)
    assert big.tokens.dtype == np.uint16 and big.tokens.max() < 12 + 300


def test_config_errors():
    with pytest.raises(ValueError, match="min_distance"):
        retrieval.generate(1, seed=0, min_length=100, max_length=200, min_distance=300)
    with pytest.raises(ValueError, match="n_keys"):
        retrieval.generate(1, seed=0, n_keys=1)
    with pytest.raises(ValueError, match="non-negative"):
        retrieval.load_splits(train=-1, use_cache=False)
