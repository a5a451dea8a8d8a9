"""Position embeddings: axial (Reformer's factorised table) and plain learned ones.

Both take position ids (batch, seq), each below `num_positions`, and return (batch, seq, hidden).
`check_length(seq)` gives the clear error for an input longer than the positions covered; models
call it on the real length (positions of padding are clamped by the model, never looked up beyond).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AxialPositionEmbeddings", "LearnedPositionEmbeddings"]


class AxialPositionEmbeddings(nn.Module):
    """Reformer's axial position embeddings, as Hugging Face's `AxialPositionEmbeddings`.

    The table of `prod(shape)` positions is factorised: axis i holds a weight of shape
    (1, .., shape[i], .., 1, dims[i]); position p = (i0, i1, ...) in row-major order gets the
    concatenation of each axis' row. Parameters are `weights.0`, `weights.1`, ... as in HF.

    Training mode (as HF): the whole table is built for every batch row and, with dropout > 0,
    `dropout2d` drops the whole slice of one index of the second axis, so the random numbers drawn
    are exactly Hugging Face's. HF requires the input length to equal `prod(shape)` in training; longseq
    takes the positions it needs from that table, so any length works.
    """

    def __init__(self, shape: tuple[int, ...], dims: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        if len(shape) != len(dims):
            raise ValueError(f"axial_pos_shape {shape} and axial_pos_embds_dim {dims} need the same length")
        if len(shape) < 2:
            raise ValueError(f"axial_pos_shape needs at least two axes, got {shape}")
        self.shape = tuple(int(s) for s in shape)
        self.dims = tuple(int(d) for d in dims)
        self.dropout = float(dropout)
        weights = []
        for axis, dim in enumerate(self.dims):
            ax_shape = [1] * len(self.shape)
            ax_shape[axis] = self.shape[axis]
            weights.append(nn.Parameter(torch.ones(*ax_shape, dim)))
        self.weights = nn.ParameterList(weights)

    @property
    def num_positions(self) -> int:
        return math.prod(self.shape)

    def check_length(self, seq: int) -> None:
        if seq > self.num_positions:
            raise ValueError(
                f"input has {seq} tokens but axial_pos_shape {self.shape} covers {self.num_positions} "
                "positions: shorten the input or use a config with a larger axial_pos_shape"
            )

    def table(self, batch: int) -> torch.Tensor:
        """The full table (batch, prod(shape), hidden), with HF's training-mode dropout."""
        grid = [w.expand(batch, *self.shape, w.shape[-1]) for w in self.weights]
        x = torch.cat(grid, dim=-1)  # (batch, s0, s1, ..., hidden)
        if self.training and self.dropout > 0:
            # HF: dropout2d over (batch, s1, s0, hidden): one index of axis 1 is dropped as a whole
            x = F.dropout2d(x.transpose(2, 1), p=self.dropout, training=True).transpose(2, 1)
        return x.reshape(batch, self.num_positions, -1)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        batch = position_ids.shape[0]
        if self.training:
            table = self.table(batch)  # (batch, P, hidden)
            return table.gather(1, position_ids[..., None].expand(-1, -1, table.shape[-1]))
        # evaluation: look each axis up separately, no (batch, P, hidden) table
        parts = []
        stride = self.num_positions
        for axis, w in enumerate(self.weights):
            stride //= self.shape[axis]
            idx = position_ids // stride
            if axis > 0:
                idx = idx % self.shape[axis]
            parts.append(F.embedding(idx, w.reshape(self.shape[axis], -1)))  # (batch, seq, dims[axis])
        return torch.cat(parts, dim=-1)


class LearnedPositionEmbeddings(nn.Module):
    """A learned table (Hugging Face's Reformer `PositionEmbeddings`: lookup, then dropout)."""

    def __init__(self, num_positions: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_positions, hidden)
        self.dropout = float(dropout)

    @property
    def num_positions(self) -> int:
        return self.embedding.num_embeddings

    def check_length(self, seq: int) -> None:
        if seq > self.num_positions:
            raise ValueError(
                f"input has {seq} tokens but the model has {self.num_positions} position embeddings "
                "(max_position_embeddings): shorten the input"
            )

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.embedding(position_ids), p=self.dropout, training=self.training)
