"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled
objects): ``model`` (state dict), ``optimizer``, ``scheduler`` (or ``None``), ``scaler``
(or ``None``), ``config`` (:meth:`TrainConfig.to_dict`), ``epoch`` and
``iteration_in_epoch`` (where to continue), ``global_iteration``, ``epoch_sums`` and
``epoch_counts`` (the running means of the unfinished epoch), ``epoch_losses`` (mean
training loss of every finished epoch), ``log`` (the CSV rows so far), ``best_metric``,
``best_epoch``, ``skipped``, ``finished`` and ``stop_reason``; each recipe adds its own
parts (a second network, a discriminator, more optimizers; :mod:`liverctl.training.run`).

No random-generator state needs saving: every random choice of iteration ``g`` (patches,
augmentation, dropout) comes from generators seeded with ``(seed, rank, g)``, so a resumed
run continues exactly as if it had never stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from liverctl.errors import ConfigError
from liverctl.io import atomic_path

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        ConfigError: missing or unreadable checkpoint (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError for damaged files
        from liverctl.weights.resolve import load_failure_reason

        raise ConfigError(f"{path}: unreadable checkpoint ({load_failure_reason(exc)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(f"{path}: not a liverctl training checkpoint")
    return state
