"""Safe loading of nnU-Net v2 checkpoints (``fold_N/checkpoint_final.pth``).

An nnU-Net checkpoint is a pickle written by ``nnUNetTrainer.save_checkpoint``: a dict with
``network_weights`` (the state dict), ``optimizer_state``, ``grad_scaler_state``, ``logging``
(lists of numpy float64 scalars), ``_best_ema``, ``current_epoch``, ``init_args`` (plans,
configuration, fold, dataset.json, ``torch.device``), ``trainer_name`` and
``inference_allowed_mirroring_axes``. nnU-Net itself unpickles it whole, which runs whatever
code a tampered file names.

:func:`load_checkpoint` never does: it checks the file's sha256 first (when one is expected),
then reads it with ``torch.load(weights_only=True)``, whose unpickler builds only tensors, plain
containers and the globals PyTorch allows, plus the minimal allowlist :data:`ALLOWED_GLOBALS`
(numpy scalars of numeric dtypes, which nnU-Net's training log holds). Anything else, e.g. an
instance of a custom class or a ``__reduce__`` that names ``os.system``, is refused with a
one-line :class:`~liverctl.errors.WeightsError` before any of it runs. The numpy scalars found
are checked to be numbers, and only the fields inference needs are returned.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import WeightsError

__all__ = ["ALLOWED_GLOBALS", "NnUNetCheckpoint", "load_checkpoint"]


def _numpy_globals() -> list[Any]:
    """numpy's scalar reconstructor (under its numpy 1 and numpy 2 names), ``numpy.dtype`` and
    the numeric dtype classes: what ``pickle`` needs for ``np.float64(0.5)`` and friends."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    allowed: list[Any] = [(scalar, name) for name in names]
    allowed.append(np.dtype)
    for kind in ("Float64", "Float32", "Float16", "Int64", "Int32", "Int16", "Int8", "UInt8", "Bool"):
        dtype_class = getattr(getattr(np, "dtypes", None), f"{kind}DType", None)
        if dtype_class is not None:
            allowed.append(dtype_class)
    return allowed


ALLOWED_GLOBALS: list[Any] = _numpy_globals()
"""Globals allowed beyond PyTorch's own ``weights_only`` set: numpy numeric scalars only."""


@dataclass(frozen=True)
class NnUNetCheckpoint:
    """What inference needs from one checkpoint.

    Attributes:
        path: the file.
        sha256: its sha256 (checked against the expected one before loading, when given).
        state_dict: the network weights.
        trainer_name: e.g. ``"nnUNetTrainer"``.
        configuration: ``init_args["configuration"]`` (``None`` when absent).
        fold: ``init_args["fold"]`` (``None`` when absent).
        mirror_axes: ``inference_allowed_mirroring_axes`` (``None``: no mirroring allowed).
    """

    path: Path
    sha256: str
    state_dict: dict[str, Any]
    trainer_name: str
    configuration: str | None
    fold: int | str | None
    mirror_axes: tuple[int, ...] | None


def _unsupported_global(message: str) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _torch_load(path: Path) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = _unsupported_global(str(exc))
        if culprit is None:
            first = " ".join(str(exc).split())[:200]
            raise WeightsError(f"{path}: refusing to load: not a plain nnU-Net checkpoint ({first})") from None
        raise WeightsError(
            f"{path}: refusing to load: the checkpoint holds a Python object of type {culprit}, "
            "which liverctl does not unpickle (only tensors, plain containers and numpy numbers)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({first})") from None


def _check_numbers(obj: Any, path: Path, depth: int = 0) -> None:
    """Refuse numpy scalars of non-numeric dtypes anywhere in the loaded object."""
    if depth > 32:
        raise WeightsError(f"{path}: refusing to load: the checkpoint nests containers more than 32 deep")
    if isinstance(obj, np.generic) and not isinstance(obj, np.number | np.bool_):
        raise WeightsError(f"{path}: refusing to load: a numpy value of dtype {obj.dtype} is not a number")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_numbers(key, path, depth + 1)
            _check_numbers(value, path, depth + 1)
    elif isinstance(obj, list | tuple | set):
        for value in obj:
            _check_numbers(value, path, depth + 1)


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Remove a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile) prefix that all keys share."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _mirror_axes(value: Any, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(a, int | np.integer) for a in value):
        raise WeightsError(f"{path}: inference_allowed_mirroring_axes must be a list of axes, not {value!r}")
    axes = tuple(int(a) for a in value)
    if any(not 0 <= a <= 2 for a in axes) or len(set(axes)) != len(axes):
        raise WeightsError(f"{path}: inference_allowed_mirroring_axes must be distinct axes 0-2, not {list(axes)}")
    return axes


def load_checkpoint(path: str | os.PathLike[str], expected_sha256: str | None = None) -> NnUNetCheckpoint:
    """Check and safely load one nnU-Net v2 checkpoint.

    Args:
        path: ``fold_N/checkpoint_final.pth`` (or another checkpoint name).
        expected_sha256: the pinned sha256; the file is hashed and compared *before* it is read
            as a pickle. ``None`` (a local results folder) hashes it for the report only.

    Raises:
        WeightsError: missing file, sha256 mismatch, a pickle holding objects other than
            tensors, plain containers and numpy numbers, or no usable ``network_weights``.
    """
    import torch

    from liverctl.weights import sha256_file

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"nnU-Net checkpoint not found: {p}")
    actual = sha256_file(p)
    if expected_sha256 and actual != expected_sha256.strip().lower():
        raise WeightsError(f"sha256 mismatch for {p}: got {actual}, expected {expected_sha256}; not loading it")
    obj = _torch_load(p)
    if not isinstance(obj, dict):
        raise WeightsError(f"{p}: holds {type(obj).__name__}, not an nnU-Net checkpoint (a dict)")
    _check_numbers(obj, p)
    weights = obj.get("network_weights")
    if not isinstance(weights, dict) or not weights:
        raise WeightsError(f"{p}: no 'network_weights' state dict; not an nnU-Net v2 checkpoint")
    bad = [k for k, v in weights.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{p}: network_weights entry {bad[0]!r} is not a tensor")
    trainer = obj.get("trainer_name", "")
    if not isinstance(trainer, str):
        raise WeightsError(f"{p}: trainer_name must be a string, not {type(trainer).__name__}")
    init_args = obj.get("init_args") if isinstance(obj.get("init_args"), dict) else {}
    configuration = init_args.get("configuration")
    fold = init_args.get("fold")
    return NnUNetCheckpoint(
        path=p,
        sha256=actual,
        state_dict=_strip_prefix(dict(weights)),
        trainer_name=trainer,
        configuration=configuration if isinstance(configuration, str) else None,
        fold=fold if isinstance(fold, int | str) and not isinstance(fold, bool) else None,
        mirror_axes=_mirror_axes(obj.get("inference_allowed_mirroring_axes"), p),
    )
