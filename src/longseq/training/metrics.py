"""Evaluation metrics: classification, SQuAD-style QA, and language-model perplexity / bits.

The functions take plain Python values or tensors and return floats. `classification_metrics` and
`token_classification_metrics` have the signature the Trainer's `metrics=` argument expects:
`metrics(predictions: list, labels: list) -> dict[str, float]`, one list item per eval batch.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

import torch

__all__ = [
    "accuracy",
    "bits_per_character",
    "bits_per_token",
    "classification_metrics",
    "exact_match",
    "macro_f1",
    "normalize_answer",
    "perplexity",
    "token_classification_metrics",
    "token_f1",
]


def _flat(x: torch.Tensor | Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(x).reshape(-1)


def accuracy(predictions: torch.Tensor | Sequence[int], labels: torch.Tensor | Sequence[int]) -> float:
    """Share of predictions equal to their labels (predicted class ids, not logits)."""
    p, y = _flat(predictions), _flat(labels)
    if p.shape != y.shape:
        raise ValueError(f"{p.numel()} predictions for {y.numel()} labels")
    if y.numel() == 0:
        raise ValueError("accuracy of no samples")
    return float((p == y).float().mean())


def macro_f1(
    predictions: torch.Tensor | Sequence[int],
    labels: torch.Tensor | Sequence[int],
    num_classes: int | None = None,
) -> float:
    """Unweighted mean of per-class F1 over the classes in labels or predictions (or `num_classes`).

    A class with no true and no predicted samples counts only when `num_classes` names it; its F1
    is then 0 (scikit-learn's `zero_division=0`).
    """
    p, y = _flat(predictions).long(), _flat(labels).long()
    if p.shape != y.shape:
        raise ValueError(f"{p.numel()} predictions for {y.numel()} labels")
    classes = range(num_classes) if num_classes is not None else sorted(set(y.tolist()) | set(p.tolist()))
    scores = []
    for c in classes:
        tp = int(((p == c) & (y == c)).sum())
        fp = int(((p == c) & (y != c)).sum())
        fn = int(((p != c) & (y == c)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    if not scores:
        raise ValueError("macro F1 of no samples")
    return sum(scores) / len(scores)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truths: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised ground truth (the best over several)."""
    truths = [truths] if isinstance(truths, str) else list(truths)
    return max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)


def token_f1(prediction: str, truths: str | Sequence[str]) -> float:
    """SQuAD token F1 of the normalised words (the best over several ground truths)."""
    truths = [truths] if isinstance(truths, str) else list(truths)

    def f1(pred: str, truth: str) -> float:
        p, t = normalize_answer(pred).split(), normalize_answer(truth).split()
        if not p or not t:  # SQuAD v2: both empty is a match, one empty is not
            return float(p == t)
        common = sum((Counter(p) & Counter(t)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(t)
        return 2 * precision * recall / (precision + recall)

    return max(f1(prediction, t) for t in truths)


def perplexity(mean_cross_entropy: float) -> float:
    """exp(mean cross entropy in nats per token)."""
    return math.exp(mean_cross_entropy)


def bits_per_token(mean_cross_entropy: float) -> float:
    """Mean cross entropy (nats per token) in bits per token."""
    return mean_cross_entropy / math.log(2)


def bits_per_character(
    mean_cross_entropy: float, num_tokens: int | None = None, num_characters: int | None = None
) -> float:
    """Bits per character: bits per token x tokens / characters (tokens = characters by default)."""
    if (num_tokens is None) != (num_characters is None):
        raise ValueError("give both num_tokens and num_characters, or neither")
    ratio = 1.0 if num_tokens is None else num_tokens / num_characters  # type: ignore[operator]
    return bits_per_token(mean_cross_entropy) * ratio


def classification_metrics(predictions: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float]:
    """Trainer metrics for sequence classification: per-batch logits (batch, classes) and labels (batch,)."""
    logits = torch.cat([p.reshape(-1, p.shape[-1]) for p in predictions])
    y = torch.cat([_flat(t) for t in labels])
    pred = logits.argmax(-1)
    return {"accuracy": accuracy(pred, y), "macro_f1": macro_f1(pred, y, num_classes=logits.shape[-1])}


def token_classification_metrics(
    predictions: list[torch.Tensor], labels: list[torch.Tensor]
) -> dict[str, float]:
    """As `classification_metrics` for per-token logits (batch, seq, classes); labels -100 are skipped."""
    pred = torch.cat([p.argmax(-1).reshape(-1) for p in predictions])
    y = torch.cat([_flat(t) for t in labels])
    keep = y != -100
    return {
        "accuracy": accuracy(pred[keep], y[keep]),
        "macro_f1": macro_f1(pred[keep], y[keep], num_classes=predictions[0].shape[-1]),
    }


def qa_span_metrics(
    predictions: list[tuple[torch.Tensor, torch.Tensor]],
    labels: list[tuple[torch.Tensor, torch.Tensor]],
    max_answer_tokens: int = 30,
) -> dict[str, float]:
    """Trainer metrics for extractive QA on token positions: exact match and F1 of the best span
    (start <= end < start + max_answer_tokens, by start + end logit) against the labelled span."""
    em, f1 = [], []
    for (start_logits, end_logits), (gold_s, gold_e) in zip(predictions, labels, strict=True):
        t = start_logits.shape[-1]
        # best end for each start within the allowed length: a sliding max over end logits
        ends = torch.nn.functional.pad(end_logits, (0, max_answer_tokens - 1), value=float("-inf"))
        window = ends.unfold(-1, max_answer_tokens, 1)[..., :t, :]  # (B, T, max_answer_tokens)
        best, offset = window.max(-1)
        s = (start_logits + best).argmax(-1)  # (B,)
        e = s + offset.gather(-1, s[:, None])[:, 0]
        for ps, pe, gs, ge in zip(
            s.tolist(), e.tolist(), _flat(gold_s).tolist(), _flat(gold_e).tolist(), strict=True
        ):
            em.append(float(ps == gs and pe == ge))
            overlap = max(0, min(pe, ge) - max(ps, gs) + 1)
            if overlap == 0:
                f1.append(0.0)
                continue
            p, r = overlap / (pe - ps + 1), overlap / (ge - gs + 1)
            f1.append(2 * p * r / (p + r))
    return {"exact_match": sum(em) / len(em), "f1": sum(f1) / len(f1)}
