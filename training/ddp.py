"""Distributed data parallel under `torchrun`: one process per device, NCCL on GPUs, gloo on CPUs.

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) training runs as a single process and every
helper here is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' is this process's GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but PyTorch sees no CUDA GPU; use device: cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> Distributed:
    """Join the torchrun process group when there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, device)


def all_reduce_mean(value: torch.Tensor, env: Distributed) -> torch.Tensor:
    if env.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return value


def all_gather_floats(value: float, env: Distributed) -> list[float]:
    """One number from every rank, in rank order."""
    if not env.enabled:
        return [value]
    # on the process's own device: NCCL takes CUDA tensors, gloo CPU ones
    mine = torch.tensor([value], dtype=torch.float64, device=env.device)
    gathered = [torch.zeros_like(mine) for _ in range(env.world_size)]
    dist.all_gather(gathered, mine)
    return [t.item() for t in gathered]


def shutdown(env: Distributed) -> None:
    """Leave the process group once every process has finished (after a success only: after an error the
    others may never arrive, and torchrun stops them)."""
    if env.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
