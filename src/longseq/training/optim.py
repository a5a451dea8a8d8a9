"""AdamW with decay only on weight matrices, and warm-up + decay learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight matrices (decayed) and biases / norm parameters (not decayed).

    Decayed: weights of Linear-like modules. Not decayed: every bias, every parameter of a norm
    layer (LayerNorm, RMSNorm, BatchNorm, ...), every 1-D parameter. Embedding tables are decayed, as
    in Hugging Face's Trainer (which only exempts biases and norms). Shared parameters appear once.
    """
    norm_types: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    if hasattr(nn, "RMSNorm"):
        norm_types = (*norm_types, nn.RMSNorm)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_norm = isinstance(module, norm_types) or "norm" in type(module).__name__.lower()
            if name.endswith("bias") or is_norm or p.ndim < 2:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, config.weight_decay)`."""
    groups = param_groups(model, config.weight_decay)
    if not groups:
        raise ValueError("the model has no parameters that require gradients")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def lr_factor(config: TrainConfig, step: int) -> float:
    """Multiplier of `config.lr` for the update with 0-based index `step`.

    The values of transformers' `get_{linear,cosine,constant}_schedule_with_warmup`: `step /
    warmup_steps` during warm-up (so the very first update of a warm-up has lr 0, as in HF), then
    linear: `(max_steps - step) / (max_steps - warmup_steps)`; cosine: `0.5 * (1 + cos(pi *
    progress))`; constant: 1.
    """
    warm, total = config.warmup_steps, config.max_steps
    if step < warm:
        return step / max(1, warm)
    if config.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    if config.schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule {config.schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping `lr_factor`; its state dict holds only numbers (no pickled function)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step))
