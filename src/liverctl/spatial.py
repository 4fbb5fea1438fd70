"""Geometry of images: resampling, orientation and bounding boxes.

Everything here takes and returns :class:`~liverctl.io.Image` objects (array in (z, y, x)
order + geometry) or plain arrays, and knows nothing of datasets or models, so that the
dataset pipeline (:mod:`liverctl.preprocessing`), ``predict`` (:mod:`liverctl.predict`) and
the post-processing (:mod:`liverctl.postprocessing`) share one implementation:

- :func:`resample` / :func:`resample_to_reference`: SimpleITK resampling (linear or cubic
  B-spline for images, nearest neighbour for label maps), :func:`resampled_grid` the grid
  :func:`resample` produces.
- :func:`reorient` / :func:`orientation_of`: axis permutation/flip to a named orientation
  ("RAS", "LPS", ...) and back, without interpolation.
- :func:`bounding_box`: the box (slices) of a mask's voxels, optionally grown by a margin.

Conventions. Spacings given to or returned by this module are in ITK's **(x, y, z)**
order, in mm, like :attr:`Geometry.spacing`; array shapes and boxes are **(z, y, x)**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.io.checks import check_grid_size

__all__ = [
    "INTERPOLATORS",
    "bounding_box",
    "interpolation_order",
    "orientation_of",
    "reorient",
    "resample",
    "resample_to_reference",
    "resampled_grid",
    "xyz_text",
]

#: Interpolator names and the B-spline order they stand for.
INTERPOLATORS: dict[str, int] = {"nearest": 0, "linear": 1, "bspline": 3, "spline": 3}


_SITK_INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}


# --------------------------------------------------------------------------- resampling


def xyz_text(values_zyx: Sequence[int | float]) -> str:
    """Array-order (z, y, x) values as users give them, ``X,Y,Z`` (messages about ``--patch``,
    ``--shape``...): ``(16, 64, 48)`` -> ``"48,64,16"``."""
    return ",".join(f"{v:g}" for v in reversed(tuple(values_zyx)))


def interpolation_order(interpolator: str | int) -> int:
    """B-spline order (0 nearest, 1 linear, 3 cubic) of an interpolator name or order."""
    if isinstance(interpolator, str):
        key = interpolator.strip().lower()
        if key.isdigit():
            return interpolation_order(int(key))
        if key not in INTERPOLATORS:
            raise ConfigError(f"unknown interpolator {interpolator!r}: use one of {', '.join(INTERPOLATORS)} or 0/1/3")
        return INTERPOLATORS[key]
    order = int(interpolator)
    if order not in _SITK_INTERPOLATORS:
        raise ConfigError(f"interpolation order must be 0 (nearest), 1 (linear) or 3 (cubic B-spline), got {order}")
    return order


def resampled_grid(
    geometry: Geometry, shape_zyx: Sequence[int], spacing_xyz: Sequence[float]
) -> tuple[Geometry, tuple[int, int, int]]:
    """The grid :func:`resample` produces: ``(geometry, shape (z, y, x))``.

    The new size along each axis is ``round(n * s / s')`` (at least 1) and the new grid is
    centred on the same physical point as the old one, so the field of view is kept (up
    to rounding) and a structure keeps its centroid. Direction is unchanged.
    """
    old = np.asarray(geometry.spacing, dtype=float)
    new = np.asarray([float(v) for v in spacing_xyz], dtype=float)
    if new.shape != (3,) or not np.all(np.isfinite(new) & (new > 0)):
        raise ConfigError(f"invalid target spacing {tuple(spacing_xyz)}: need 3 positive numbers (x, y, z) in mm")
    size = np.asarray(shape_zyx, dtype=float)[::-1]
    new_size = np.maximum(1, np.floor(size * old / new + 0.5)).astype(int)
    check_grid_size(new_size[::-1], new)  # before any allocation
    direction = geometry.direction_matrix
    centre = np.asarray(geometry.origin) + direction @ ((size - 1) / 2 * old)
    origin = centre - direction @ ((new_size - 1) / 2 * new)
    out = Geometry(tuple(new), tuple(origin), geometry.direction)
    return out, (int(new_size[2]), int(new_size[1]), int(new_size[0]))


def _resample_sitk(
    image: Image,
    geometry: Geometry,
    shape_zyx: Sequence[int],
    order: int,
    default_value: float | None,
    *,
    extrapolate_nearest: bool = False,
) -> Image:
    """Resample onto ``geometry``; outside the input, ``default_value`` (see :func:`resample`), or
    the nearest input voxel's value with ``extrapolate_nearest``."""
    if default_value is None:
        default_value = 0.0 if order == 0 or image.array.size == 0 else float(image.array.min())
    source = image.to_sitk()
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing(geometry.spacing)
    f.SetOutputOrigin(geometry.origin)
    f.SetOutputDirection(geometry.direction)
    f.SetSize([int(shape_zyx[2]), int(shape_zyx[1]), int(shape_zyx[0])])
    f.SetInterpolator(_SITK_INTERPOLATORS[order])
    f.SetDefaultPixelValue(float(default_value))
    f.SetUseNearestNeighborExtrapolator(extrapolate_nearest)
    f.SetOutputPixelType(source.GetPixelID() if order == 0 else sitk.sitkFloat32)
    result = f.Execute(source)
    del source
    return Image(sitk.GetArrayFromImage(result), Geometry.from_sitk(result))


def resample(
    image: Image,
    spacing_xyz: Sequence[float],
    *,
    interpolator: str | int = "linear",
    default_value: float | None = None,
) -> Image:
    """Resample ``image`` to a new voxel spacing.

    Args:
        image: the image (intensities or labels).
        spacing_xyz: target spacing in mm, **(x, y, z)** order (as ``Geometry.spacing``).
        interpolator: ``"linear"`` (1) or ``"bspline"`` (3) for intensities, which give
            float32; ``"nearest"`` (0) for label maps, which keeps the voxel type and
            only ever produces values present in the input.
        default_value: value of output voxels that fall outside the input; default 0 for
            nearest, the image minimum otherwise (air for a CT).

    Returns:
        The resampled image on the grid described by :func:`resampled_grid` (same
        direction, same centre, extent kept up to rounding to whole voxels).
    """
    order = interpolation_order(interpolator)
    geometry, shape = resampled_grid(image.geometry, image.shape, spacing_xyz)
    return _resample_sitk(image, geometry, shape, order, default_value)


def resample_to_reference(
    image: Image,
    reference: Image | Geometry,
    shape_zyx: Sequence[int] | None = None,
    *,
    interpolator: str | int = "linear",
    default_value: float | None = None,
    support_only: bool = False,
) -> Image:
    """Resample ``image`` onto the grid of ``reference`` (an Image, or a Geometry + shape).

    Use it to bring a prediction made on a preprocessed grid back to the scan's own grid
    (``interpolator="nearest"`` for label maps).

    ``support_only=True`` (needs ``default_value``) resamples only the box of the reference
    grid within reach of the image's voxels that differ from ``default_value`` (their bounding
    box grown by one voxel, the reach of nearest and linear interpolation; B-spline resamples
    everything) and fills the rest with ``default_value``: the same result for a small object
    such as a liver mask in a large scan, at a fraction of the work.
    """
    order = interpolation_order(interpolator)
    if isinstance(reference, Image):
        geometry, shape = reference.geometry, reference.shape
    else:
        if shape_zyx is None:
            raise ConfigError("resample_to_reference needs the reference shape (z, y, x) with a Geometry")
        geometry, shape = reference, tuple(int(s) for s in shape_zyx)
    if not support_only or order > 1:
        return _resample_sitk(image, geometry, shape, order, default_value)
    if default_value is None:
        raise ConfigError("support_only needs the default_value of voxels outside the support")
    src = bounding_box(image.array != default_value, margin=1)
    dtype = image.array.dtype if order == 0 else np.float32
    if src is None:
        return Image(np.full(shape, default_value, dtype=dtype), geometry)
    lo = np.array([s.start for s in src], dtype=float)
    hi = np.array([s.stop - 1 for s in src], dtype=float)
    corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    reach = geometry.physical_to_index(image.geometry.index_to_physical(corners))
    start = np.maximum(np.floor(reach.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 2, shape)
    if np.any(stop <= start):
        return Image(np.full(shape, default_value, dtype=dtype), geometry)
    if np.all(start == 0) and np.all(stop == np.asarray(shape)):  # the support reaches everywhere
        return _resample_sitk(image, geometry, shape, order, default_value)
    part = Image(
        np.ascontiguousarray(image.array[src]),
        replace(image.geometry, origin=tuple(float(v) for v in image.geometry.index_to_physical(lo))),
    )
    sub = replace(geometry, origin=tuple(float(v) for v in geometry.index_to_physical(start.astype(float))))
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    values = _resample_sitk(part, sub, tuple(b.stop - b.start for b in box), order, default_value).array
    out = np.full(shape, default_value, dtype=values.dtype)
    out[box] = values
    return Image(out, geometry)


# --------------------------------------------------------------------------- bounding boxes


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The box (one slice per axis) of ``mask``'s non-zero voxels, or ``None`` if it has none.

    ``margin`` grows the box by that many voxels on every side, clipped to the array (a box
    never starts below 0 nor ends past the array's shape). Works for any number of axes.
    Each axis is reduced on the crop found so far, so the full volume is read only once.
    """
    if margin < 0:
        raise ConfigError(f"a bounding box margin must be 0 or more voxels, got {margin}")
    box: list[slice] = []
    sub = mask
    for axis in range(mask.ndim):
        idx = np.flatnonzero(sub.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
        sub = sub[(slice(None),) * axis + (box[axis],)]
    if margin:
        box = [slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, mask.shape, strict=True)]
    return tuple(box)


# --------------------------------------------------------------------------- orientation


def _check_orientation(code: str) -> str:
    text = str(code).strip().upper()
    axes = [{"R", "L"}, {"A", "P"}, {"S", "I"}]
    if len(text) != 3 or any(sum(ch in pair for ch in text) != 1 for pair in axes):
        raise ConfigError(f"invalid orientation {code!r}: use three letters, one of R/L, A/P, S/I each (e.g. RAS)")
    return text


def orientation_of(geometry: Geometry | Image) -> str:
    """The three-letter orientation code (DICOM convention, e.g. ``"LPS"`` for identity
    direction: the letter is where each voxel axis points) closest to a direction."""
    g = geometry.geometry if isinstance(geometry, Image) else geometry
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(g.direction)


def reorient(image: Image, orientation: str = "RAS") -> Image:
    """Permute and flip the voxel axes so that they point as ``orientation`` says.

    No interpolation: every voxel keeps its value and its physical position (the
    geometry is changed accordingly). ``orientation`` uses the DICOM convention of
    ``sitk.DICOMOrient`` (``"LPS"`` = identity direction; NIfTI's "RAS+" world is
    ``"RAS"``). Undo with ``reorient(result, orientation_of(image))``.
    """
    code = _check_orientation(orientation)
    result = sitk.DICOMOrient(image.to_sitk(), code)
    out = Image.from_sitk(result)
    if image.array.dtype == bool:
        out = Image(out.array.astype(bool), out.geometry)
    return out
