"""Reversible residual layers (RevNet, as in Reformer and trax): activations are recomputed, not stored.

Each layer is a pair of functions (f, g) acting on two streams:

    Y1 = X1 + f(X2)          X2 = Y2 - g(Y1)
    Y2 = X2 + g(Y1)          X1 = Y1 - f(X2)

so the inputs of a layer can be rebuilt from its outputs. The forward pass keeps only the last
layer's outputs; the backward pass walks the layers in reverse, rebuilding each layer's inputs and
recomputing f and g with autograd for that one layer. Memory for activations is that of one layer,
whatever the depth.

Randomness. f and g may draw random numbers (dropout; LSH rotations without a seed). The forward
records the random state before every f and g call and the backward replays it (inside
`torch.random.fork_rng`, so the caller's random state is untouched), so the recomputation sees the
same dropout masks and rotations as the forward: gradients equal those of a plain autograd pass.
Hugging Face gets the same effect by reseeding the global generator with a fresh seed before every
f and g (`ReformerLayer._init_attention_seed`); longseq does not reseed anything.

Precision. The backward pass recomputes under the autocast state of the forward (as
`torch.utils.checkpoint` does): autograd runs backward outside any autocast region, so without this
the recomputation would run in float32, rebuild inputs that differ from the forward's, and on the GPU
take float32 matmuls (a 2x slower training step at LRA sizes, measured on an H200).

Parameter gradients are returned through autograd (the parameters are inputs of the Function), so
`torch.autograd.grad` and gradient hooks work, not only `loss.backward()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .autocast import autocast_from, autocast_state

__all__ = ["reversible_sequence"]

Pair = tuple[nn.Module, nn.Module]  # (f, g)
BeforeF = Callable[[int, torch.Tensor], None]


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cpu = torch.get_rng_state()
    dev = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return cpu, dev


@contextlib.contextmanager
def _replay(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> Iterator[None]:
    """Run a block from a recorded random state, leaving the global state as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def _plain(
    x1: torch.Tensor,
    x2: torch.Tensor,
    pairs: Sequence[Pair],
    f_kwargs: Mapping[str, Any],
    before_f: BeforeF | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    for i, (f, g) in enumerate(pairs):
        if before_f is not None:
            before_f(i, x2)
        x1 = x1 + f(x2, **f_kwargs)  # Y1
        x2 = x2 + g(x1)  # Y2
    return x1, x2


class _Reversible(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x1: torch.Tensor,
        x2: torch.Tensor,
        pairs: Sequence[Pair],
        f_kwargs: Mapping[str, Any],
        before_f: BeforeF | None,
        *params: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = x1.device
        states = []
        for i, (f, g) in enumerate(pairs):
            if before_f is not None:
                before_f(i, x2)
            f_state = _rng_state(device)
            x1 = x1 + f(x2, **f_kwargs)
            g_state = _rng_state(device)
            x2 = x2 + g(x1)
            states.append((f_state, g_state))
        ctx.save_for_backward(x1, x2)
        ctx.pairs, ctx.f_kwargs, ctx.states, ctx.params = pairs, f_kwargs, states, params
        ctx.autocast = autocast_state(device)
        return x1, x2

    @staticmethod
    def backward(ctx: Any, dy1: torch.Tensor, dy2: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y1, y2 = ctx.saved_tensors
        device = y1.device
        index = {id(p): i for i, p in enumerate(ctx.params)}
        grads: list[torch.Tensor | None] = [None] * len(ctx.params)

        def accumulate(ps: list[torch.Tensor], gs: Sequence[torch.Tensor | None]) -> None:
            for p, gr in zip(ps, gs, strict=True):
                if gr is not None:
                    j = index[id(p)]
                    grads[j] = gr if grads[j] is None else grads[j] + gr

        for (f, g), (f_state, g_state) in zip(reversed(ctx.pairs), reversed(ctx.states), strict=True):
            g_params = [p for p in g.parameters() if id(p) in index]
            f_params = [p for p in f.parameters() if id(p) in index]
            # g: rebuild X2 = Y2 - g(Y1), and push dY2 through g
            with torch.enable_grad(), _replay(g_state, device), autocast_from(ctx.autocast):
                y1_in = y1.detach().requires_grad_(True)
                gy = g(y1_in)
            d_y1, *d_g = torch.autograd.grad(gy, [y1_in, *g_params], dy2, allow_unused=True)
            accumulate(g_params, d_g)
            dy1 = dy1 + d_y1 if d_y1 is not None else dy1
            x2 = (y2 - gy).detach()
            del gy
            # f: rebuild X1 = Y1 - f(X2), and push dY1 (which includes g's share) through f
            with torch.enable_grad(), _replay(f_state, device), autocast_from(ctx.autocast):
                x2_in = x2.requires_grad_(True)
                fx = f(x2_in, **ctx.f_kwargs)
            d_x2, *d_f = torch.autograd.grad(fx, [x2_in, *f_params], dy1, allow_unused=True)
            accumulate(f_params, d_f)
            dy2 = dy2 + d_x2 if d_x2 is not None else dy2
            y1, y2 = (y1 - fx).detach(), x2.detach()
            del fx
        return (dy1, dy2, None, None, None, *grads)


def reversible_sequence(
    x1: torch.Tensor,
    x2: torch.Tensor,
    pairs: Sequence[Pair],
    f_kwargs: Mapping[str, Any] | None = None,
    *,
    recompute: bool = True,
    before_f: BeforeF | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run reversible layers: for each (f, g), Y1 = X1 + f(X2, **f_kwargs), Y2 = X2 + g(Y1).

    x1, x2: (batch, seq, hidden). Returns (Y1, Y2) of the last layer.
    `recompute`: when gradients are needed, keep no activations and recompute them in the backward
    pass (the point of reversible layers); False runs a plain autograd pass (a reference for tests).
    `before_f(i, X2)`: called in the forward pass before layer i's f (never during recomputation),
    e.g. to collect hidden states or caches.
    """
    kwargs = dict(f_kwargs or {})
    params: list[torch.Tensor] = []
    seen: set[int] = set()
    for f, g in pairs:
        for p in [*f.parameters(), *g.parameters()]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    needs_grad = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad or bool(params))
    if not needs_grad or not recompute:
        return _plain(x1, x2, pairs, kwargs, before_f)
    return _Reversible.apply(x1, x2, pairs, kwargs, before_f, *params)
