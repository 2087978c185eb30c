"""Who this process is in a torchrun job, and setting the process group up and down.

One code path serves a CPU, one GPU and torchrun on several GPUs and nodes: with `WORLD_SIZE`
set, a process group is initialised (NCCL on CUDA, gloo on CPU); a single process is rank 0 of
a world of 1, so the trainers never ask whether they run distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..devices import resolve_device
from ..errors import TrainingSetupError


@dataclass(frozen=True)
class DistributedContext:
    """Who this process is in the job; a single process is rank 0 of a world of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def all_gather_object(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average of each value over all processes."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(keys, (tensor / self.world_size).tolist()))

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on at least one of them."""
        if not self.distributed:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def resolve_training_device(device: str, local_rank: int = 0) -> torch.device:
    """`auto`, `cpu` or `cuda` as this process's device (its local rank's GPU under torchrun)."""
    try:
        resolved = resolve_device(device)
    except RuntimeError:
        raise TrainingSetupError("device: cuda was requested but no CUDA device is available") from None
    return torch.device("cuda", local_rank) if resolved.type == "cuda" else resolved


def setup_distributed(device: str = "auto") -> DistributedContext:
    """The process group of a torchrun launch (WORLD_SIZE > 1), or a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=resolve_training_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    training_device = resolve_training_device(device, local_rank)
    if training_device.type == "cuda":
        torch.cuda.set_device(training_device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if training_device.type == "cuda" else "gloo")
    return DistributedContext(rank, local_rank, world_size, training_device)


def teardown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
