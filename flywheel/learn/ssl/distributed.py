"""Training one model on several processes: the torchrun launch's process group, the DDP
wrapper, and averages over the processes (used by the SSL loop, flywheel.learn.ssl.loop)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun launch (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int
    size: int
    local_rank: int


def distributed_world() -> World | None:
    """The process group a launcher set up (torchrun's environment), joined on first call:
    NCCL on GPUs, gloo on CPUs. None in a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size < 2:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def ddp_model(model: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def mean_over_world(value: float, world: World | None) -> float:
    if world is None:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world.size
