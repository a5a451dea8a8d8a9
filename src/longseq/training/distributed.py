"""torchrun support: process group from the environment, DDP / FSDP2 wrapping, full state dicts.

Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment) the
trainer joins a process group: NCCL on CUDA, gloo on CPU. Without those variables it is one process
and nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..models.encoder import EncoderLayer

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on CPU, rank 0 at least
_LOAD_FULL = StateDictOptions(full_state_dict=True)  # every rank passes the whole state


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device | None = None) -> DistInfo:
    """Join the torchrun process group if the environment names one (and it is not joined yet).

    `device`: None picks `cuda:LOCAL_RANK` when CUDA is available, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def wrap(model: nn.Module, strategy: str, info: DistInfo) -> nn.Module:
    """The module to train: the model itself (one process), DDP, or the model sharded by FSDP2.

    FSDP2 (`fully_shard`) shards each encoder layer, then the root (embeddings, heads, the rest).
    Models without `EncoderLayer`s (Reformer) are sharded at the root only.
    """
    if not info.distributed:
        return model
    if strategy in ("auto", "ddp"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        # find_unused_parameters: e.g. Longformer's global projections are idle without global tokens
        return DDP(model, device_ids=ids, find_unused_parameters=True)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for module in model.modules():
            if isinstance(module, EncoderLayer):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown strategy {strategy!r}")


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def unwrap(module: nn.Module) -> nn.Module:
    """The user's model inside a DDP wrapper (FSDP2 modifies the model in place: itself)."""
    return module.module if hasattr(module, "module") and isinstance(module.module, nn.Module) else module


@contextlib.contextmanager
def gradient_sync(module: nn.Module, sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter of accumulation micro-steps (`sync` False)."""
    if sync or not dist.is_initialized():
        yield
    elif is_fsdp(module):
        module.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)  # type: ignore[operator]
    elif hasattr(module, "no_sync"):
        with module.no_sync():
            yield
    else:
        yield


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict, on CPU, user key names (a collective under FSDP: every rank calls it)."""
    return get_model_state_dict(module, options=_FULL)


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state keyed by parameter names (a collective under FSDP)."""
    return get_optimizer_state_dict(module, optimizer, options=_FULL)


def load_full_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
) -> None:
    """Load whole (unsharded) states, as `full_*_state` returned them, on every rank."""
    set_model_state_dict(module, model_state, options=_LOAD_FULL)
    # strict=False: parameters that never had a gradient (an unused pooler) have no optimizer state
    set_optimizer_state_dict(
        module, optimizer, optim_state, options=StateDictOptions(full_state_dict=True, strict=False)
    )


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """`[obj of rank 0, obj of rank 1, ...]` (just `[obj]` in one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def to_local(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (the norm clip_grad_norm_ returns under FSDP2)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
