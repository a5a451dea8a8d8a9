"""Task heads and losses shared by every family (Hugging Face's layouts and loss rules)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.activations import activation


class ClassificationHead(nn.Module):
    """Sequence classification from the first token: dropout, dense, act, dropout, out_proj."""

    def __init__(self, in_dim: int, hidden: int, num_labels: int, dropout: float, act: str = "tanh") -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)
        self.act = activation(act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])  # (batch, in_dim): the <s> / [CLS] token
        x = self.dropout(self.act(self.dense(x)))
        return self.out_proj(x)  # (batch, num_labels)


class TokenClassificationHead(nn.Module):
    """Per-token labels: dropout, linear."""

    def __init__(self, in_dim: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_dim, num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states))  # (batch, seq, num_labels)


class SpanHead(nn.Module):
    """Extractive question answering: start and end logits per token."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(in_dim, 2)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.qa_outputs(hidden_states).split(1, dim=-1)
        return start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()  # (batch, seq) each


class MaskedLMHead(nn.Module):
    """BERT-style LM head: dense, act, layer norm, decoder to the vocabulary (tied to the embeddings)."""

    def __init__(self, hidden: int, vocab: int, act: str, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.act = activation(act)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden_states))))  # (batch, seq, vocab)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy over positions whose label is not -100."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
    )


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy: logits at t predict labels at t + 1 (-100 ignored)."""
    return masked_lm_loss(logits[:, :-1], labels[:, 1:])


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: object) -> torch.Tensor:
    """Hugging Face's rule: regression for 1 label, single-label for integer labels, else multi-label.

    Like Hugging Face, the problem type found is written into `config.problem_type`.
    """
    num_labels = logits.shape[-1]
    problem = getattr(config, "problem_type", None)
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
        config.problem_type = problem  # type: ignore[attr-defined]
    if problem == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze().float(), labels.squeeze().float())
        return F.mse_loss(logits.float(), labels.float())
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels).float(), labels.view(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    raise ValueError(
        f"problem_type {problem!r} is unknown: use regression, single_label_classification or "
        "multi_label_classification"
    )


def span_loss(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    start_positions: torch.Tensor,
    end_positions: torch.Tensor,
) -> torch.Tensor:
    """Mean of start and end cross entropy; positions outside the sequence are ignored (HF clamps them)."""
    if start_positions.dim() > 1:
        start_positions = start_positions.squeeze(-1)
    if end_positions.dim() > 1:
        end_positions = end_positions.squeeze(-1)
    ignored = start_logits.shape[1]
    start_positions = start_positions.clamp(0, ignored)
    end_positions = end_positions.clamp(0, ignored)
    start = F.cross_entropy(start_logits.float(), start_positions, ignore_index=ignored)
    end = F.cross_entropy(end_logits.float(), end_positions, ignore_index=ignored)
    return (start + end) / 2
