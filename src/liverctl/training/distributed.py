"""Training on several processes with DistributedDataParallel (``torchrun``).

``torchrun --nproc_per_node=N -m liverctl train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` then joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU) and each process takes GPU
``LOCAL_RANK``. Every process draws its own batches (generators seeded with its rank), the
gradients are averaged by DDP, so the parameters stay identical on all ranks. Only rank 0
writes checkpoints, logs, plots and the exported model.

Validation is shared (:meth:`DistContext.validate_shared`): each rank scores every
``world_size``-th validation case and the Dice sums and counts are all-reduced, so every rank
works for about 1/N of the time and none waits in a collective for longer than its own shard
(rank 0 validating alone, with the others blocked in an NCCL broadcast, hit NCCL's 10-minute
default timeout on a long validation).

A single process on ``cuda:N`` (no torchrun) makes GPU N the current device
(:func:`init_from_env` with the device), so pinned memory and library handles live there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

    def validate_shared(self, validate: Callable[..., float], data: Any, *args: Any, **kwargs: Any) -> float:
        """Mean validation score over all ranks, each rank scoring its shard of the cases.

        ``validate(data, *args, **kwargs)`` is a mean over ``data.val`` (lists of case names, one
        per dataset) that skips the cases ``data.is_bad(d, name)`` marks, as
        :func:`liverctl.training.common.validate_dice`; it is called with ``data`` restricted
        to this rank's cases (every ``world_size``-th of the dataset-ordered list). The means
        are weighted by the cases each rank scored and all-reduced: the same number on every
        rank, equal (to float rounding) to one process scoring every case; NaN without any.
        """
        if not self.enabled:
            return float(validate(data, *args, **kwargs))
        shard = _ValidationShard(data, self.rank, self.world_size)
        value = float(validate(shard, *args, **kwargs))
        scored = sum(1 for d, names in enumerate(shard.val) for n in names if not data.is_bad(d, n))
        device = _collective_device(args, kwargs)
        t = torch.tensor([value * scored if scored else 0.0, float(scored)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = (float(v) for v in t.tolist())
        return total / count if count else float("nan")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this context joined it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


class _ValidationShard:
    """``data`` with ``val`` cut to one rank's cases; everything else is ``data``'s."""

    def __init__(self, data: Any, rank: int, world_size: int) -> None:
        self._data = data
        cases = [(d, n) for d, names in enumerate(data.val) for n in names]
        mine = {case for i, case in enumerate(cases) if i % world_size == rank}
        self.val = [[n for n in names if (d, n) in mine] for d, names in enumerate(data.val)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)


def _collective_device(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device:
    """The device of the collective: the first ``torch.device`` among the validation arguments
    (NCCL reduces CUDA tensors), else the CPU (gloo)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.device):
            return value
    return torch.device("cpu")


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment ((0, 1, 0) without)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_from_env(device: str | torch.device) -> DistContext:
    """Join the process group described by the environment; for a single process, make a
    ``cuda:N`` device the current one (nothing else).

    Args:
        device: the training device (or its type): CUDA selects the ``nccl`` backend and GPU
            ``LOCAL_RANK``, anything else ``gloo``.
    """
    rank, world, local = world_from_env()
    device_type = device if isinstance(device, str) else device.type
    if world <= 1:
        if isinstance(device, torch.device):
            set_current_device(device)
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        set_current_device(torch.device("cuda", local))
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, True)
