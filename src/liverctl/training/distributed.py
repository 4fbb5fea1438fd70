"""Training on several processes with DistributedDataParallel (``torchrun``).

``torchrun --nproc_per_node=N -m liverctl train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` then joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU) and each process takes GPU
``LOCAL_RANK``. Every process draws its own batches (generators seeded with its rank), the
gradients are averaged by DDP, so the parameters stay identical on all ranks. Only rank 0
writes checkpoints, logs, plots and the exported model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from liverctl.device import set_current_device

__all__ = ["DistContext", "init_from_env", "world_from_env"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``; ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_mean(self, value: float, device: torch.device) -> float:
        """Mean of a float over all ranks (the value itself without DDP)."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def broadcast_float(self, value: float, device: torch.device) -> float:
        """Rank 0's value of a float on every rank."""
        if not self.enabled:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this context joined it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment ((0, 1, 0) without)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_from_env(device_type: str) -> DistContext:
    """Join the process group described by the environment; no-op for a single process.

    Args:
        device_type: ``"cuda"`` selects the ``nccl`` backend, anything else ``gloo``.
    """
    rank, world, local = world_from_env()
    if world <= 1:
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        set_current_device(torch.device("cuda", local))
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, True)
