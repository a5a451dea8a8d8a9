"""Tiny models and data shared by the training tests (also imported by the distributed workers)."""

from __future__ import annotations

import torch

from longseq.models.configs import LongformerConfig
from longseq.models.longformer import LongformerForSequenceClassification

VOCAB, SEQ = 32, 24


def tiny_config(**overrides) -> LongformerConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        attention_window=4,
        max_position_embeddings=SEQ + 4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
    )
    fields.update(overrides)
    return LongformerConfig(**fields)


def tiny_model(seed: int = 0, **overrides) -> LongformerForSequenceClassification:
    torch.manual_seed(seed)
    return LongformerForSequenceClassification(tiny_config(**overrides))


class ToyData:
    """Fixed-length sequences whose label is (first token) mod 3: learnable, deterministic."""

    def __init__(self, n: int = 32, seed: int = 123) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(3, VOCAB, (n, SEQ), generator=g)
        self.ids[:, 0] = 0  # <s>
        self.labels = self.ids[:, 1] % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(SEQ, dtype=torch.long),
            "labels": self.labels[i],
        }


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
