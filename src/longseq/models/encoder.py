"""The post-norm BERT-style encoder that Longformer and BigBird share.

Each layer: attention (a module that returns the mixed values, (batch, seq, hidden)), output
projection, residual, layer norm; feed-forward, residual, layer norm. The families differ only in
the attention module of each layer and in their embeddings' position rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers.act_linear import act_linear
from ..layers.activations import activation
from ..layers.embedding import embed
from ..layers.weight_cast import cast_linears, linear


class Embeddings(nn.Module):
    """Word + position + token type embeddings, layer norm, dropout.

    `roberta_positions`: positions count from padding_idx + 1 and skip padding tokens (RoBERTa /
    Longformer); otherwise positions are 0, 1, 2, ... (BERT / BigBird). `rescale`: multiply word
    embeddings by sqrt(hidden) (BigBird's `rescale_embeddings`). `dropout_first`: dropout before
    the layer norm (BigBird) instead of after it.
    """

    def __init__(
        self,
        vocab: int,
        hidden: int,
        max_positions: int,
        type_vocab: int,
        eps: float,
        dropout: float,
        pad_token_id: int,
        roberta_positions: bool,
        rescale: bool = False,
        dropout_first: bool = False,
    ) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden, padding_idx=pad_token_id)
        self.position = nn.Embedding(
            max_positions, hidden, padding_idx=pad_token_id if roberta_positions else None
        )
        self.token_type = nn.Embedding(type_vocab, hidden) if type_vocab > 0 else None
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.pad_token_id = pad_token_id
        self.roberta_positions = roberta_positions
        self.scale = math.sqrt(hidden) if rescale else 1.0
        self.dropout_first = dropout_first  # BigBird: dropout before the layer norm

    def position_ids(
        self, input_ids: torch.Tensor | None, batch: int, seq: int, device: torch.device
    ) -> torch.Tensor:
        if not self.roberta_positions:
            return torch.arange(seq, device=device).expand(batch, seq)
        if input_ids is None:  # embeddings given: no way to tell padding, count from padding_idx + 1
            return torch.arange(self.pad_token_id + 1, seq + self.pad_token_id + 1, device=device).expand(
                batch, seq
            )
        real = input_ids.ne(self.pad_token_id).int()
        return (torch.cumsum(real, dim=1) * real).long() + self.pad_token_id

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = embed(input_ids, self.word)
        batch, seq = inputs_embeds.shape[:2]
        if seq > self.position.num_embeddings - (self.pad_token_id + 1 if self.roberta_positions else 0):
            limit = self.position.num_embeddings - (self.pad_token_id + 1 if self.roberta_positions else 0)
            raise ValueError(
                f"input has {seq} tokens but the model has position embeddings for {limit}: "
                "shorten the input, or convert the model to a longer one (longseq convert)"
            )
        if position_ids is None:
            position_ids = self.position_ids(input_ids, batch, seq, inputs_embeds.device)
        words = inputs_embeds if self.scale == 1.0 else inputs_embeds * self.scale
        x = words + embed(position_ids, self.position)  # (batch, seq, hidden)
        if self.token_type is not None:
            if token_type_ids is None:  # every token of type 0, as HF's zeros: one row added to all
                x = x + self.token_type.weight[0]
            else:
                x = x + embed(token_type_ids, self.token_type)
        if self.dropout_first:
            return self.norm(self.dropout(x))  # (batch, seq, hidden)
        return self.dropout(self.norm(x))  # (batch, seq, hidden)


class EncoderLayer(nn.Module):
    """attention -> dense -> dropout -> +residual -> norm; ffn -> dropout -> +residual -> norm."""

    def __init__(
        self, attention: nn.Module, hidden: int, ffn: int, act: str, eps: float, dropout: float
    ) -> None:
        super().__init__()
        self.attention = attention
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, **attention_args: torch.Tensor | None) -> torch.Tensor:
        # under autocast the layer's weights are cast in one go, and their gradients come back in one
        # go when the layer's backward ends (so data-parallel training can reduce them while the
        # layers below run their backward)
        with cast_linears(self.linear_groups()):
            return self._forward(x, **attention_args)

    def _forward(self, x: torch.Tensor, **attention_args: torch.Tensor | None) -> torch.Tensor:
        # no local names for intermediates: each is freed as soon as nothing needs it (x is rebound,
        # so attn_norm's output is gone before ffn_norm's exists; the activation peak is there)
        a = self.attention(x, **attention_args)  # (batch, seq, hidden); attn_out keeps it anyway
        x = self.attn_norm(x + self.dropout(linear(a, self.attn_out)))
        # act_linear keeps ffn_in(x), not the activation of it
        x = x + self.dropout(act_linear(linear(x, self.ffn_in), self.act, self.ffn_out))
        return self.ffn_norm(x)

    def linear_groups(self) -> list[tuple[nn.Linear, ...]]:
        """The layer's Linear layers, in the groups they are used in (`cast_linears`)."""
        return [*_groups(self.attention), (self.attn_out,), (self.ffn_in,), (self.ffn_out,)]


class Encoder(nn.Module):
    """A stack of layers, with optional gradient checkpointing and all hidden states."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, output_hidden_states: bool = False, **attention_args: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        states: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                states.append(x)
            if self.gradient_checkpointing and self.training:
                run: Callable[..., torch.Tensor] = layer
                x = checkpoint(run, x, use_reentrant=False, **attention_args)
            else:
                x = layer(x, **attention_args)
        if output_hidden_states:
            states.append(x)
        return x, (tuple(states) if output_hidden_states else None)


def _groups(layer: nn.Module) -> list[tuple[nn.Linear, ...]]:
    """A module's `linear_groups()`, or none."""
    groups = getattr(layer, "linear_groups", None)
    return groups() if groups is not None else []


class Pooler(nn.Module):
    """dense + tanh on the first token."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))  # (batch, hidden)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, seq, heads * d) -> (batch, heads, seq, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seq, d) -> (batch, seq, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def check_unsupported(output_attentions: bool | None, head_mask: torch.Tensor | None) -> None:
    """Arguments of Hugging Face's forward that longseq refuses with a reason, never silently."""
    if output_attentions:
        raise ValueError(
            "output_attentions=True is not supported: longseq never builds attention probability "
            "matrices (that is what keeps it linear in memory); inspect a layer with "
            "longseq.attention.reference instead"
        )
    if head_mask is not None:
        raise ValueError("head_mask is not supported; prune heads by editing the weights instead")


def weight_and_bias(ours: str, theirs: str) -> list[tuple[str, str]]:
    """Key-table rows for a module's weight and bias."""
    return [(f"{ours}.weight", f"{theirs}.weight"), (f"{ours}.bias", f"{theirs}.bias")]


def bert_rows(attention: dict[str, str], pooler: bool) -> list[tuple[str, str]]:
    """Key-table rows of the BERT-style embeddings and encoder (`{}`: the layer index).

    attention: {our attention sub-module name: HF's name under `attention.self`}.
    """
    rows = [
        ("embeddings.word.weight", "embeddings.word_embeddings.weight"),
        ("embeddings.position.weight", "embeddings.position_embeddings.weight"),
        ("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
        *weight_and_bias("embeddings.norm", "embeddings.LayerNorm"),
    ]
    ours, hf = "encoder.layers.{}", "encoder.layer.{}"
    for name, hf_name in attention.items():
        rows += weight_and_bias(f"{ours}.attention.{name}", f"{hf}.attention.self.{hf_name}")
    rows += weight_and_bias(f"{ours}.attn_out", f"{hf}.attention.output.dense")
    rows += weight_and_bias(f"{ours}.attn_norm", f"{hf}.attention.output.LayerNorm")
    rows += weight_and_bias(f"{ours}.ffn_in", f"{hf}.intermediate.dense")
    rows += weight_and_bias(f"{ours}.ffn_out", f"{hf}.output.dense")
    rows += weight_and_bias(f"{ours}.ffn_norm", f"{hf}.output.LayerNorm")
    if pooler:
        rows += weight_and_bias("pooler.dense", "pooler.dense")
    return rows


def prefixed(rows: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """The same rows under a prefix on both sides (a base model inside a model with a head)."""
    return [(f"{prefix}.{a}", f"{prefix}.{b}") for a, b in rows]
