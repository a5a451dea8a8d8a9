"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.training.metrics import (
    accuracy,
    bits_per_character,
    bits_per_token,
    classification_metrics,
    exact_match,
    macro_f1,
    normalize_answer,
    perplexity,
    token_classification_metrics,
    token_f1,
)


def test_accuracy_and_macro_f1():
    pred, gold = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    # class 0: tp 1 fp 1 fn 1 -> 1/2; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 2 fp 1 fn 0 -> 4/5
    assert macro_f1(pred, gold) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    # a fourth class that never occurs counts as 0 only when named
    assert macro_f1(pred, gold, num_classes=4) == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 4)
    with pytest.raises(ValueError, match="predictions for"):
        accuracy([0, 1], [0])


def test_trainer_metric_functions():
    logits = [torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[5.0, 1.0]])]
    labels = [torch.tensor([0, 0]), torch.tensor([0])]
    out = classification_metrics(logits, labels)
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)  # class 0: tp 2 fn 1 -> 4/5; class 1: 0
    tok = [torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])]
    assert token_classification_metrics(tok, [torch.tensor([[0, -100, 0]])])["accuracy"] == pytest.approx(0.5)


def test_squad_normalisation_exact_match_and_f1():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple, a day") == "apple day"
    assert exact_match("the Eiffel Tower", ["Eiffel Tower.", "Paris"]) == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    # pred "big red dog" vs "red dog barked": common 2, precision 2/3, recall 2/3 -> 2/3
    assert token_f1("a big red dog", "the red dog barked") == pytest.approx(2 / 3)
    assert token_f1("red red", "red") == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated words count once each
    assert token_f1("x", ["nothing", "x y"]) == pytest.approx(2 * 1 * 0.5 / 1.5)  # best ground truth
    assert token_f1("", "") == 1.0 and token_f1("a", "b c") == 0.0


def test_perplexity_and_bits():
    ce = 2.0
    assert perplexity(ce) == pytest.approx(math.e**2)
    assert bits_per_token(math.log(2)) == pytest.approx(1.0)
    assert bits_per_character(ce) == pytest.approx(2.0 / math.log(2))
    # 100 tokens over 400 characters: each character carries a quarter of a token's bits
    assert bits_per_character(ce, num_tokens=100, num_characters=400) == pytest.approx(0.5 / math.log(2))
    with pytest.raises(ValueError, match="both"):
        bits_per_character(ce, num_tokens=3)
