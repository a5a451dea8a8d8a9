"""A training step (forward + backward) captured once as a CUDA graph and replayed.

At batch 1 and long sequences a step is host-bound in eager mode: the GPU waits on Python for the
launches of a few hundred small kernels. A CUDA graph replays the step's kernels with no Python at
all. What that takes:
- Static shapes: each call's inputs are copied into the buffers the graph was captured with, so
  they must have the captured shapes and dtypes (pad to one length).
- Nothing the step reads on the host may change. Values read back to size tensors (the Longformer's
  global tokens, found once per mask) are fixed at capture: pass such tensors through the closure,
  not as call inputs, and build a new `GraphedStep` when they change.
- Autocast inside the step with `cache_enabled=False` (its weight cache does not survive a graph).

Each call overwrites the gradients (`.grad` of the parameters the step reaches) with this step's:
they are the graph's own buffers, put back on the parameters after every replay, so an optimizer's
`zero_grad(set_to_none=True)` between calls is harmless, and gradients are not accumulated across
calls. Dropout draws new masks on every replay (torch's generator is graph-aware).

On a CPU device (no graphs) the step runs eagerly with the same semantics, so code written against
`GraphedStep` runs anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class GraphMismatchError(RuntimeError):
    """A captured step whose replay does not give the eager step's gradients."""


def grad_mismatch(got: Sequence[torch.Tensor | None], want: Sequence[torch.Tensor | None]) -> float:
    """||got - want|| / ||want|| over all gradients together (a None is zeros; inf when one side is
    None and the other is not zero, or when want is all zero and got is not)."""
    num = den = 0.0
    for g, w in zip(got, want, strict=True):
        if g is None and w is None:
            continue
        if g is None or w is None:
            x = (w if g is None else g).float()
            num += float(x.square().sum())
            den += float(w.float().square().sum()) if w is not None else 0.0
            continue
        num += float((g.float() - w.float()).square().sum())
        den += float(w.float().square().sum())
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return (num / den) ** 0.5


class GraphedStep:
    """`step = GraphedStep(loss_fn, model, *example)`; then `loss = step(*inputs)` per batch.

    loss_fn(*inputs) -> a scalar loss tensor; the backward of it is part of the step. model: the
    module (or modules) whose parameters get gradients. example: tensors of the shapes and dtypes
    every call will pass, all on one device. warmup: eager steps run (on a side stream) before the
    capture; their gradients are dropped. verify: replay once on the example and compare the
    gradients with an eager step's (the same random draws): a model whose step does not replay
    faithfully (host-side state the graph cannot see) raises `GraphMismatchError` instead of
    training on wrong gradients. tolerance: of the relative error over all gradients together."""

    def __init__(
        self,
        loss_fn: Callable[..., torch.Tensor],
        model: nn.Module | Sequence[nn.Module],
        *example: torch.Tensor,
        warmup: int = 3,
        verify: bool = True,
        tolerance: float = 1e-2,
    ) -> None:
        if not example:
            raise ValueError("GraphedStep needs at least one example input (the tensors each call passes)")
        for i, x in enumerate(example):
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"example input {i} is a {type(x).__name__}; pass tensors (close over the rest)"
                )
        devices = {x.device for x in example}
        if len(devices) > 1:
            raise ValueError(f"example inputs lie on several devices ({sorted(map(str, devices))}); use one")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (the eager steps before capture), got {warmup}")
        self.loss_fn = loss_fn
        modules = [model] if isinstance(model, nn.Module) else list(model)
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.device = example[0].device
        self.graphed = self.device.type == "cuda"
        self.static = [x.detach().clone() for x in example]
        self._shapes = [(tuple(x.shape), x.dtype) for x in example]
        self.grads: list[torch.Tensor | None] = []
        self.loss: torch.Tensor | None = None
        if self.graphed:
            self._capture(warmup, tolerance if verify else None)

    def _capture(self, warmup: int, tolerance: float | None) -> None:
        saved = [p.grad for p in self.params]  # the caller's gradients, back after the capture
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):  # lazy state (plans, caches, cuBLAS workspaces) is built here
                for p in self.params:
                    p.grad = None
                self._check_loss(self.loss_fn(*self.static)).backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        seed = 20261201  # verify: the eager step and the replay draw from it; fork_rng restores the caller's
        eager: list[torch.Tensor | None] = []
        if tolerance is not None:  # the eager step before the capture (which may change the model's state)
            with torch.random.fork_rng(devices=[self.device]):
                torch.manual_seed(seed)
                for p in self.params:
                    p.grad = None
                self._check_loss(self.loss_fn(*self.static)).backward()
                eager = [p.grad for p in self.params]
        for p in self.params:
            p.grad = None
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                loss = self._check_loss(self.loss_fn(*self.static))
                loss.backward()
        except BaseException:  # not capturable (a host read, a host-to-device copy, ...)
            for p, g in zip(self.params, saved, strict=True):
                p.grad = g  # the caller's gradients as they were
            del self.graph
            raise
        self.loss = loss.detach()
        self.grads = [p.grad for p in self.params]  # the graph's buffers (None: not reached)
        for p, g in zip(self.params, saved, strict=True):
            p.grad = g
        if tolerance is None:
            return
        with torch.random.fork_rng(devices=[self.device]):
            torch.manual_seed(seed)
            self.graph.replay()
        err = grad_mismatch(self.grads, eager)
        del eager
        if not err <= tolerance:
            raise GraphMismatchError(
                f"the replayed step's gradients differ from the eager step's by {err:.3g} (relative, "
                f"over all of them; tolerance {tolerance}): this model's step does not replay as a CUDA "
                "graph (it keeps state on the host that the graph cannot see); train it eagerly"
            )

    @staticmethod
    def _check_loss(loss: torch.Tensor) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar loss tensor (one element)")
        return loss

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Copy inputs into the step's buffers, run the step; the parameters' .grad hold its
        gradients. Returns the loss (a new tensor, detached)."""
        if len(inputs) != len(self.static):
            raise ValueError(f"the step was built with {len(self.static)} inputs; got {len(inputs)}")
        for i, (x, (shape, dtype)) in enumerate(zip(inputs, self._shapes, strict=True)):
            if tuple(x.shape) != shape or x.dtype != dtype:
                raise ValueError(
                    f"input {i} has shape {tuple(x.shape)} and dtype {x.dtype}; the step was captured with "
                    f"{shape} and {dtype}: pad to the captured shape, or build a GraphedStep for this one"
                )
        if not self.graphed:
            for p in self.params:
                p.grad = None
            loss = self._check_loss(self.loss_fn(*inputs))
            loss.backward()
            return loss.detach()
        for buf, x in zip(self.static, inputs, strict=True):
            buf.copy_(x, non_blocking=True)
        self.graph.replay()
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g
        return self.loss.clone()  # type: ignore[union-attr]
