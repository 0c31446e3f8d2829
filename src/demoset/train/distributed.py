"""Data-parallel training across processes (torch.distributed, launched by `torchrun`).

`torchrun --nproc_per_node N -m demoset.cli.main train ...` sets RANK, WORLD_SIZE and
LOCAL_RANK; `init_from_env` then joins the process group (NCCL when every process has a
GPU, gloo otherwise). Each process reads its own share of every batch stream; gradients are
averaged by DistributedDataParallel so all processes keep identical weights. Only rank 0
writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(use_cuda: bool = False) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if use_cuda and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def wrap_model(net: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `net` (which broadcasts rank 0's initial weights)."""
    if not info.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def any_rank(flag: bool, info: DistInfo, device: torch.device | None = None) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a stop request)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
