"""Connected components of binary masks: :func:`largest_components` and the shared helpers.

:func:`largest_components` keeps the ``n`` largest connected components of a binary mask
(optionally only those of at least ``min_volume_ml`` millilitres), with 6-, 18- or
26-connectivity (26 by default: faces, edges and corners touch). The helpers here (cc3d
components, array/Image in and out) are shared by the other post-processing modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cc3d
import numpy as np

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.spatial import bounding_box

CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)


MaskLike = TypeVar("MaskLike", np.ndarray, Image)


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return int(connectivity)


def _split(mask: np.ndarray | Image) -> tuple[np.ndarray, Geometry | None]:
    if isinstance(mask, Image):
        return mask.array, mask.geometry
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ConfigError(f"expected a 3D (z, y, x) array, got shape {array.shape}")
    return array, None


def _wrap(array: np.ndarray, geometry: Geometry | None) -> Any:
    return array if geometry is None else Image(array, geometry)


def _binary(array: np.ndarray) -> np.ndarray:
    return array if array.dtype == bool else array != 0


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d connected components of a bool array, as (labels, number of components).

    cc3d 4.1 fails ("maximum length exception", printed to stdout) on 26-connected arrays
    with two axes of length 1; padding such (thin, hence cheap) arrays to length 2 with
    background avoids it without changing any component.
    """
    pad = [(0, 1) if s == 1 else (0, 0) for s in binary.shape]
    if any(p[1] for p in pad):
        labels, n = cc3d.connected_components(
            np.pad(binary, pad), connectivity=connectivity, binary_image=True, return_N=True
        )
        return labels[tuple(slice(0, s) for s in binary.shape)], int(n)
    labels, n = cc3d.connected_components(binary, connectivity=connectivity, binary_image=True, return_N=True)
    return labels, int(n)


def _isin(array: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``np.isin`` for a few label values, several times faster on large volumes."""
    values = [int(v) for v in values]
    if len(values) > 4:
        return np.isin(array, values)
    out = array == values[0]
    for v in values[1:]:
        out |= array == v
    return out


def _voxel_volume_ml(geometry: Geometry | None, spacing_zyx: Sequence[float] | None) -> float | None:
    if spacing_zyx is not None:
        spacing = tuple(float(s) for s in spacing_zyx)
        if len(spacing) != 3 or not all(s > 0 for s in spacing):
            raise ConfigError(f"spacing_zyx must be 3 positive values, got {spacing_zyx}")
        return float(np.prod(spacing)) / 1000.0
    if geometry is not None:
        return geometry.voxel_volume_mm3 / 1000.0
    return None


@dataclass(frozen=True)
class ComponentStats:
    """What :func:`largest_components` found and kept.

    ``sizes`` are the voxel counts of all components before filtering, largest first;
    ``kept`` is how many of them were kept. Volumes are ``None`` when no spacing was known.
    """

    sizes: tuple[int, ...]
    kept: int
    voxels_before: int
    voxels_after: int
    voxel_volume_ml: float | None = None

    @property
    def components_before(self) -> int:
        return len(self.sizes)

    @property
    def components_after(self) -> int:
        return self.kept

    @property
    def voxels_removed(self) -> int:
        return self.voxels_before - self.voxels_after


def largest_components(
    mask: MaskLike,
    n: int | None = 1,
    connectivity: int = 26,
    min_volume_ml: float | None = None,
    spacing_zyx: Sequence[float] | None = None,
) -> tuple[MaskLike, ComponentStats]:
    """Keep the ``n`` largest connected components of a binary mask.

    Parameters
    ----------
    mask
        3D array (z, y, x) or :class:`~liverctl.io.Image`; every non-zero voxel is foreground.
    n
        How many components to keep, largest first (``None``: all that pass
        ``min_volume_ml``). Ties in size are broken by component order (scan order).
    connectivity
        6 (faces), 18 (faces + edges) or 26 (faces + edges + corners).
    min_volume_ml
        Drop components smaller than this many millilitres before choosing the largest.
        Needs the voxel size: from the Image's geometry or ``spacing_zyx`` (mm, z, y, x).
    spacing_zyx
        Voxel spacing for a bare array (overrides the Image's geometry if both are given).

    Returns
    -------
    (mask, stats)
        A bool mask of the same kind as the input (an Image keeps its geometry) and a
        :class:`ComponentStats`.
    """
    connectivity = _check_connectivity(connectivity)
    if n is not None and n < 0:
        raise ConfigError(f"number of components to keep must be >= 0, got {n}")
    array, geometry = _split(mask)
    voxel_ml = _voxel_volume_ml(geometry, spacing_zyx)
    if min_volume_ml is not None:
        if min_volume_ml < 0:
            raise ConfigError(f"minimum component volume must be >= 0 mL, got {min_volume_ml}")
        if voxel_ml is None:
            raise ConfigError("a minimum volume in mL needs the voxel spacing: pass an Image or spacing_zyx")
    binary = _binary(array)
    out = np.zeros(binary.shape, dtype=bool)
    box = bounding_box(binary)
    if box is None:
        return _wrap(out, geometry), ComponentStats((), 0, 0, 0, voxel_ml)
    crop = binary[box]
    labels, n_found = _components(crop, connectivity)
    # Count over the foreground voxels only: much faster than a bincount of the whole label volume.
    counts = np.bincount(labels[crop], minlength=n_found + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    sizes = counts[order]
    chosen = order
    if min_volume_ml is not None:
        min_voxels = min_volume_ml / voxel_ml  # type: ignore[operator]
        chosen = chosen[sizes >= min_voxels * (1 - 1e-9)]
    if n is not None:
        chosen = chosen[:n]
    total = int(counts.sum())
    if chosen.size == n_found:
        out[box] = crop
        kept_voxels = total
    elif chosen.size:
        if chosen.size == 1:
            kept = labels == (chosen[0] + 1)
        else:
            lut = np.zeros(n_found + 1, dtype=bool)
            lut[chosen + 1] = True
            kept = lut[labels]
        out[box] = kept
        kept_voxels = int(counts[chosen].sum())
    else:
        kept_voxels = 0
    stats = ComponentStats(tuple(int(s) for s in sizes), int(chosen.size), total, kept_voxels, voxel_ml)
    return _wrap(out, geometry), stats
