"""Data-parallel training under torchrun: join the process group, wrap networks in DDP, finish.

One process (WORLD_SIZE unset or 1) is the plain case: no group, no wrapping, rank 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.tensors import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def ddp_wrapper(info: DistInfo) -> Callable[[nn.Module], nn.Module]:
    """What a training step wraps each forward module in: DDP under torchrun, nothing alone."""
    if info.world > 1:
        return lambda m: DistributedDataParallel(m)
    return lambda m: m


def barrier(info: DistInfo) -> None:
    """Wait for every process (rank 0 writes the run's files meanwhile)."""
    if info.world > 1:
        dist.barrier()


def is_main_process() -> bool:
    """Rank 0 (or no torchrun at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
