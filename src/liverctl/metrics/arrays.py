"""Inputs of the metrics: masks as booleans, pairs of the same shape, spacings, bounding boxes.

Arrays are (z, y, x) and spacings ``spacing_zyx`` in mm, as everywhere in :mod:`liverctl.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liverctl.errors import GeometryError


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask != 0


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, r = _as_bool(pred), _as_bool(ref)
    if p.shape != r.shape:
        raise GeometryError(f"prediction shape {p.shape} differs from reference shape {r.shape} (z, y, x)")
    return p, r


def _spacing(spacing_zyx: Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing_zyx is None:
        return np.ones(ndim)
    sp = np.asarray(spacing_zyx, dtype=np.float64).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise GeometryError(f"spacing must hold {ndim} positive values, got {tuple(spacing_zyx)}")
    return sp


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every non-zero voxel of ``mask``, or ``None`` when it is empty
    (:func:`liverctl.spatial.bounding_box`, the one implementation)."""
    from liverctl.spatial import bounding_box as box_of

    return box_of(np.asarray(mask))


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))
