"""The liver z-crop of ``docs/studies/he2021.md``: first/last liver slice widened by a margin in mm.

The *liver region* of a label map is every voxel whose label is in ``liver_labels``;
``liver_labels=None`` (the default) means every label >= 1, so that a LiTS label map (liver 1,
tumour 2) gives the whole liver including its tumours. "z" is the first array axis (the
slice axis of an axial CT); its spacing is ``Geometry.spacing[2]``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from liverctl.errors import ConfigError, LiverctlWarning
from liverctl.io import Geometry, Image, check_same_grid

__all__ = ["crop_box", "crop_z", "liver_region", "liver_z_crop", "liver_z_range", "slab_of"]


def liver_region(label: Image | np.ndarray, liver_labels: Sequence[int] | None = None) -> np.ndarray:
    """Boolean liver mask of a label map: labels in ``liver_labels``, or every label >= 1 when ``None``."""
    array = label.array if isinstance(label, Image) else np.asarray(label)
    if liver_labels is None:
        return array > 0
    return np.isin(array, np.asarray(list(liver_labels)))


def slab_of(mask: np.ndarray, spacing_z: float, margin_mm: float) -> tuple[int, int] | None:
    """Half-open slice range ``(z0, z1)`` from the first to the last slice of ``mask`` that
    holds a voxel, widened by ``ceil(margin_mm / spacing_z)`` slices on each side and bounded
    by the volume; ``None`` for an empty mask. ``margin_mm`` is not checked here."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    if slices.size == 0:
        return None
    margin = math.ceil(margin_mm / spacing_z - 1e-9)
    return max(0, int(slices[0]) - margin), min(mask.shape[0], int(slices[-1]) + 1 + margin)


def liver_z_range(
    label: Image, margin_mm: float = 60.0, *, liver_labels: Sequence[int] | None = None
) -> tuple[int, int] | None:
    """Half-open slice range ``(z0, z1)`` from the first to the last liver slice, widened by
    ``margin_mm`` on each side and bounded by the volume; ``None`` if there is no liver.

    The margin in slices is ``ceil(margin_mm / spacing_z)`` (at least the margin asked for).
    """
    if not math.isfinite(margin_mm) or margin_mm < 0:
        raise ConfigError(f"crop margin must be 0 or more mm, got {margin_mm}")
    return slab_of(liver_region(label, liver_labels), label.geometry.spacing[2], margin_mm)


def crop_z(image: Image, z0: int, z1: int) -> Image:
    """Slices ``z0 <= z < z1`` of ``image`` (a copy), with the origin moved to slice ``z0``."""
    if not 0 <= z0 < z1 <= image.shape[0]:
        raise ConfigError(f"invalid z crop {z0}..{z1} for an image with {image.shape[0]} slices")
    origin = image.geometry.index_to_physical(np.array([z0, 0, 0]))
    geometry = Geometry(image.geometry.spacing, tuple(origin), image.geometry.direction)
    return Image(np.ascontiguousarray(image.array[z0:z1]), geometry)


def crop_box(image: Image, box: Sequence[slice]) -> Image:
    """The (z, y, x) box ``box`` of ``image`` (a copy), with the origin moved to the box's first voxel."""
    starts = [int(b.start or 0) for b in box]
    stops = [int(n if b.stop is None else b.stop) for b, n in zip(box, image.shape, strict=True)]
    if not all(0 <= a < b <= n for a, b, n in zip(starts, stops, image.shape, strict=True)):
        raise ConfigError(
            f"invalid crop box {list(zip(starts, stops, strict=True))} for an image of shape {image.shape}"
        )
    origin = image.geometry.index_to_physical(np.array(starts))
    geometry = Geometry(image.geometry.spacing, tuple(origin), image.geometry.direction)
    window = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
    return Image(np.ascontiguousarray(image.array[window]), geometry)


def liver_z_crop(
    image: Image, label: Image, margin_mm: float = 60.0, *, liver_labels: Sequence[int] | None = None
) -> tuple[Image, Image, tuple[int, int]]:
    """Crop ``image`` and ``label`` in z to the liver widened by ``margin_mm``.

    The first step of ``docs/studies/he2021.md``.

    Returns ``(image, label, (z0, z1))`` with ``z0 <= z < z1`` the kept source slices. A label
    map without liver voxels keeps the whole z range and warns (:class:`LiverctlWarning`).
    """
    check_same_grid(image, label, "image", "label")
    z_range = liver_z_range(label, margin_mm, liver_labels=liver_labels)
    if z_range is None:
        warnings.warn("label map has no liver voxels; keeping the whole z range", LiverctlWarning, stacklevel=2)
        z_range = (0, image.shape[0])
    return crop_z(image, *z_range), crop_z(label, *z_range), z_range
