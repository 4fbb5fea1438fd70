"""Preprocessing of CT scans: resampling, orientation, intensity recipes, fingerprint, plan.

Each step is a plain function that takes and returns an :class:`~liverctl.io.Image`
(array in (z, y, x) order + geometry), so it can be called alone:

- :func:`resample` / :func:`resample_to_reference`: SimpleITK resampling (linear or cubic
  B-spline for images, nearest neighbour for label maps).
- :func:`reorient` / :func:`orientation_of`: axis permutation/flip to a named orientation
  ("RAS", "LPS", ...) and back, without interpolation.
- :func:`window`, :func:`zscore`: intensity recipes (HU presets of the published methods).
- :func:`liver_z_crop`: the liver z-crop of METHODS.md section 1 (first/last liver slice
  widened by a margin in mm, bounded by the volume).
- :func:`fingerprint` -> :func:`plan` -> :func:`preprocess`: nnU-Net's sequence for a whole
  dataset; :func:`apply_plan` redoes a plan's intensity/spacing recipe on a new scan, and
  :func:`load_preprocessed` reads :func:`preprocess`'s output folder back.

Conventions. Spacings given to or returned by this module are in ITK's **(x, y, z)**
order, in mm, like :attr:`Geometry.spacing`; array shapes are **(z, y, x)**. "z" is the
third voxel axis of the image (the slice axis of an axial CT). The *liver region* of a
label map is every voxel whose label is in ``liver_labels``; ``liver_labels=None`` (the
default) means every label >= 1, so that a LiTS label map (liver 1, tumour 2) gives the
whole liver including its tumours.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from liverctl import __version__
from liverctl.ct import NO_BODY, has_body, read_ct
from liverctl.datasets import Case, Dataset, discover_dataset
from liverctl.errors import ConfigError, DatasetError, GeometryError, InputError, LiverctlError, LiverctlWarning
from liverctl.io import Geometry, Image, atomic_path, check_same_grid, read_label, write_text_atomic
from liverctl.manifest import check_new_or_owned_folder
from liverctl.progress import ProgressCallback

# --------------------------------------------------------------------------- constants

#: HU windows of the published methods (METHODS.md): name -> (low, high) or None.
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "liver": (-200.0, 250.0),  # H-DenseUNet
    "abdomen": (0.0, 400.0),  # SD-Net
    "sdnet": (0.0, 400.0),
    "pipofan": (-200.0, 200.0),  # PIPO-FAN
    "none": None,
}

#: Interpolator names and the B-spline order they stand for.
INTERPOLATORS: dict[str, int] = {"nearest": 0, "linear": 1, "bspline": 3, "spline": 3}

_SITK_INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}

SPACING_RULES: tuple[str, ...] = ("median", "128-median")
NORMALIZATIONS: tuple[str, ...] = ("dataset", "image")

#: Side of the cube of the "128-median" rule (METHODS.md section 1).
MEDIAN_RULE_SIZE = 128

#: At most this many liver voxels per case are kept for the dataset percentiles.
SAMPLES_PER_CASE = 10_000

_FILES = ("fingerprint.json", "fingerprint_samples.npz", "plan.json", "cases.json")


# --------------------------------------------------------------------------- spacing / resampling


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


def parse_spacing(spec: str | Sequence[float]) -> str | tuple[float, float, float]:
    """A spacing rule name (``"median"``, ``"128-median"``) or an (x, y, z) spacing in mm.

    Accepts a sequence of 3 numbers, a string ``"X,Y,Z"``, or one number for isotropic.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in SPACING_RULES:
            return text
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"invalid spacing {spec!r}: use 'median', '128-median', one number or X,Y,Z in mm"
            ) from None
    else:
        values = [float(v) for v in spec]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"invalid spacing {spec!r}: need 3 positive numbers (x, y, z) in mm")
    return (values[0], values[1], values[2])


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
) -> Image:
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
    src = _support_box(image.array != default_value, margin=1)
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


def _support_box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice] | None:
    """Bounding box (slices) of ``mask``'s true voxels grown by ``margin``, or ``None`` if empty."""
    box = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if idx.size == 0:
            return None
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


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


# --------------------------------------------------------------------------- intensities


def resolve_window(spec: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``(low, high)`` in HU for a preset name, a ``"LO,HI"`` string or a pair; ``None`` for no window."""
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in WINDOW_PRESETS:
            return WINDOW_PRESETS[key]
        try:
            values = [float(p) for p in key.replace("..", ",").split(",")]
        except ValueError:
            raise ConfigError(
                f"unknown window {spec!r}: use one of {', '.join(WINDOW_PRESETS)} or LO,HI in HU"
            ) from None
    else:
        values = [float(v) for v in spec]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ConfigError(f"invalid window {spec!r}: need two numbers LO,HI with LO < HI")
    return (values[0], values[1])


def window_name(spec: str | Sequence[float] | None) -> str:
    """The preset name of a window spec, or ``"LO,HI"``; ``"none"`` for no window."""
    bounds = resolve_window(spec)
    if isinstance(spec, str) and spec.strip().lower() in WINDOW_PRESETS:
        return spec.strip().lower()
    return "none" if bounds is None else f"{bounds[0]:g},{bounds[1]:g}"


def window(image: Image, preset: str | Sequence[float] | None) -> Image:
    """Clip intensities to a HU window (preset name, ``"LO,HI"`` or a pair); float32 result.

    Presets: ``liver`` -200..250 (H-DenseUNet), ``abdomen``/``sdnet`` 0..400 (SD-Net),
    ``pipofan`` -200..200 (PIPO-FAN), ``none`` (no clipping).
    """
    bounds = resolve_window(preset)
    array = image.array.astype(np.float32, copy=True)
    if bounds is not None:
        np.clip(array, bounds[0], bounds[1], out=array)
    return Image(array, image.geometry)


def zscore(image: Image, mean: float, std: float) -> Image:
    """``(image - mean) / std`` as float32 (``std`` must be positive)."""
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise ConfigError(f"z-score needs a finite mean and a positive std, got mean {mean} and std {std}")
    array = image.array.astype(np.float32, copy=True)
    array -= np.float32(mean)
    array /= np.float32(std)
    return Image(array, image.geometry)


# --------------------------------------------------------------------------- liver crop


def liver_region(label: Image | np.ndarray, liver_labels: Sequence[int] | None = None) -> np.ndarray:
    """Boolean liver mask of a label map: labels in ``liver_labels``, or every label >= 1 when ``None``."""
    array = label.array if isinstance(label, Image) else np.asarray(label)
    if liver_labels is None:
        return array > 0
    return np.isin(array, np.asarray(list(liver_labels)))


def liver_z_range(
    label: Image, margin_mm: float = 60.0, *, liver_labels: Sequence[int] | None = None
) -> tuple[int, int] | None:
    """Half-open slice range ``(z0, z1)`` from the first to the last liver slice, widened by
    ``margin_mm`` on each side and bounded by the volume; ``None`` if there is no liver.

    The margin in slices is ``ceil(margin_mm / spacing_z)`` (at least the margin asked for).
    """
    if not math.isfinite(margin_mm) or margin_mm < 0:
        raise ConfigError(f"crop margin must be 0 or more mm, got {margin_mm}")
    slices = np.flatnonzero(liver_region(label, liver_labels).any(axis=(1, 2)))
    if slices.size == 0:
        return None
    margin = math.ceil(margin_mm / label.geometry.spacing[2] - 1e-9)
    return max(0, int(slices[0]) - margin), min(label.shape[0], int(slices[-1]) + 1 + margin)


def crop_z(image: Image, z0: int, z1: int) -> Image:
    """Slices ``z0 <= z < z1`` of ``image`` (a copy), with the origin moved to slice ``z0``."""
    if not 0 <= z0 < z1 <= image.shape[0]:
        raise ConfigError(f"invalid z crop {z0}..{z1} for an image with {image.shape[0]} slices")
    origin = image.geometry.index_to_physical(np.array([z0, 0, 0]))
    geometry = Geometry(image.geometry.spacing, tuple(origin), image.geometry.direction)
    return Image(np.ascontiguousarray(image.array[z0:z1]), geometry)


def liver_z_crop(
    image: Image, label: Image, margin_mm: float = 60.0, *, liver_labels: Sequence[int] | None = None
) -> tuple[Image, Image, tuple[int, int]]:
    """Crop ``image`` and ``label`` in z to the liver widened by ``margin_mm`` (METHODS.md §1, step 1).

    Returns ``(image, label, (z0, z1))`` with ``z0 <= z < z1`` the kept source slices. A label
    map without liver voxels keeps the whole z range and warns (:class:`LiverctlWarning`).
    """
    check_same_grid(image, label, "image", "label")
    z_range = liver_z_range(label, margin_mm, liver_labels=liver_labels)
    if z_range is None:
        warnings.warn("label map has no liver voxels; keeping the whole z range", LiverctlWarning, stacklevel=2)
        z_range = (0, image.shape[0])
    return crop_z(image, *z_range), crop_z(label, *z_range), z_range


# --------------------------------------------------------------------------- target spacing


def spacing_for_shape(
    spacing_xyz: Sequence[float], shape_zyx: Sequence[int], size: int = MEDIAN_RULE_SIZE
) -> tuple[float, float, float]:
    """The (x, y, z) spacing at which a volume of ``shape_zyx`` voxels becomes ``size`` voxels per axis."""
    n = np.asarray(shape_zyx, dtype=float)[::-1]
    s = np.asarray(spacing_xyz, dtype=float) * n / float(size)
    return (float(s[0]), float(s[1]), float(s[2]))


def target_spacing(
    spacings_xyz: Sequence[Sequence[float]],
    shapes_zyx: Sequence[Sequence[int]],
    rule: str | Sequence[float] = "128-median",
) -> tuple[float, float, float]:
    """Target spacing (x, y, z) of a dataset.

    ``"median"``: per-axis median of the cases' spacings (nnU-Net's basic rule).
    ``"128-median"``: per-axis median of the spacings that make each (cropped) case 128^3
    voxels (METHODS.md §1, step 2). A sequence of 3 numbers is returned as given.
    """
    parsed = parse_spacing(rule) if not isinstance(rule, str) or rule.strip().lower() not in SPACING_RULES else rule
    if not isinstance(parsed, str):
        return parsed
    if len(spacings_xyz) == 0:
        raise DatasetError("cannot compute a target spacing without cases")
    if parsed == "median":
        values = np.asarray(spacings_xyz, dtype=float)
    else:
        values = np.asarray([spacing_for_shape(s, n) for s, n in zip(spacings_xyz, shapes_zyx, strict=True)])
    med = np.median(values, axis=0)
    return (float(med[0]), float(med[1]), float(med[2]))


_compute_target_spacing = target_spacing  # plan() has an argument of that name

# --------------------------------------------------------------------------- fingerprint


@dataclass
class CaseFingerprint:
    """What :func:`fingerprint` learns about one case (shapes (z, y, x), spacing (x, y, z))."""

    name: str
    source_image: str
    source_label: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    crop: tuple[int, int]
    cropped_shape: tuple[int, int, int]
    liver_voxels: int
    label_values: list[int]
    intensity: dict[str, float] | None
    moments: tuple[int, float, float]  # (n, sum, sum of squares) of liver HU
    source_stat: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spacing"], d["shape"] = list(self.spacing), list(self.shape)
        d["crop"], d["cropped_shape"], d["moments"] = list(self.crop), list(self.cropped_shape), list(self.moments)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseFingerprint:
        return cls(
            name=d["name"],
            source_image=d["source_image"],
            source_label=d["source_label"],
            spacing=tuple(d["spacing"]),  # type: ignore[arg-type]
            shape=tuple(d["shape"]),  # type: ignore[arg-type]
            crop=tuple(d["crop"]),  # type: ignore[arg-type]
            cropped_shape=tuple(d["cropped_shape"]),  # type: ignore[arg-type]
            liver_voxels=int(d["liver_voxels"]),
            label_values=list(d["label_values"]),
            intensity=d["intensity"],
            moments=tuple(d["moments"]),  # type: ignore[arg-type]
            source_stat=dict(d.get("source_stat", {})),
        )


@dataclass
class Fingerprint:
    """Dataset fingerprint: per-case geometry and pooled liver intensity statistics.

    ``histograms`` holds, per case whose liver intensities are whole numbers (CT in HU),
    the count of liver voxels at each value (``array[0]`` = lowest value, ``array[1:]`` =
    counts): with them the dataset statistics are exact, with or without a window.
    ``samples`` holds, per case, up to ``samples_per_case`` liver intensities drawn at
    random (seeded by the case name, so reproducible), used for cases with fractional
    intensities. Both are saved in ``fingerprint_samples.npz``.
    """

    dataset: str
    layout: str
    crop_margin_mm: float | None
    liver_labels: list[int] | None
    samples_per_case: int
    cases: list[CaseFingerprint]
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    histograms: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def spacings(self) -> list[tuple[float, float, float]]:
        return [c.spacing for c in self.cases]

    @property
    def cropped_shapes(self) -> list[tuple[int, int, int]]:
        return [c.cropped_shape for c in self.cases]

    def liver_intensity(self, window_bounds: tuple[float, float] | None = None) -> dict[str, float] | None:
        """Pooled liver statistics over the dataset, after clipping to ``window_bounds`` if given.

        n, mean, std, min, max and the 0.5/99.5 percentiles (NumPy's linear method). Exact
        when every case has a histogram (integer intensities); otherwise mean and std are
        exact without a window and the rest comes from the samples. ``None`` without liver.
        """
        n = sum(c.moments[0] for c in self.cases)
        if n == 0:
            return None
        with_liver = [c for c in self.cases if c.moments[0] > 0]
        if all(c.name in self.histograms for c in with_liver):
            values, counts = _merge_histograms([self.histograms[c.name] for c in with_liver])
            if window_bounds is not None:
                values = np.clip(values, *window_bounds)
            mean = float(np.dot(values, counts) / n)
            std = math.sqrt(max(float(np.dot((values - mean) ** 2, counts) / n), 0.0))
            p_lo, p_hi = (_hist_percentile(values, counts, q) for q in (0.5, 99.5))
            lo, hi = float(values[counts > 0][0]), float(values[counts > 0][-1])
            n_samples = int(n)
        else:
            pooled = np.concatenate([self.samples[c.name] for c in with_liver if c.name in self.samples] or [[]])
            pooled = pooled.astype(np.float64)
            if window_bounds is None:
                mean = sum(c.moments[1] for c in self.cases) / n
                std = math.sqrt(max(sum(c.moments[2] for c in self.cases) / n - mean * mean, 0.0))
            else:
                pooled = np.clip(pooled, *window_bounds)
                mean, std = float(pooled.mean()), float(pooled.std())
            lo = min(c.intensity["min"] for c in with_liver if c.intensity)
            hi = max(c.intensity["max"] for c in with_liver if c.intensity)
            if window_bounds is not None:
                lo, hi = float(np.clip(lo, *window_bounds)), float(np.clip(hi, *window_bounds))
            p_lo, p_hi = np.percentile(pooled, [0.5, 99.5]) if pooled.size else (math.nan, math.nan)
            n_samples = int(pooled.size)
        return {
            "n_voxels": int(n),
            "n_samples": n_samples,
            "mean": float(mean),
            "std": float(std),
            "min": float(lo),
            "max": float(hi),
            "p0.5": float(p_lo),
            "p99.5": float(p_hi),
        }

    def to_dict(self) -> dict[str, Any]:
        spacings = np.asarray(self.spacings, dtype=float)
        shapes = np.asarray([c.shape for c in self.cases], dtype=float)
        return {
            "liverctl_version": __version__,
            "dataset": self.dataset,
            "layout": self.layout,
            "n_cases": len(self.cases),
            "crop_margin_mm": self.crop_margin_mm,
            "liver_labels": self.liver_labels,
            "samples_per_case": self.samples_per_case,
            "spacing": {
                "median": np.median(spacings, axis=0).tolist(),
                "min": spacings.min(axis=0).tolist(),
                "max": spacings.max(axis=0).tolist(),
                "128-median": list(target_spacing(self.spacings, self.cropped_shapes, "128-median")),
            },
            "shape": {"median": np.median(shapes, axis=0).tolist()},
            "cropped_shape": {"median": np.median(np.asarray(self.cropped_shapes, float), axis=0).tolist()},
            "liver_intensity": self.liver_intensity(),
            "cases": [c.to_dict() for c in self.cases],
        }

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any],
        samples: dict[str, np.ndarray] | None = None,
        histograms: dict[str, np.ndarray] | None = None,
    ) -> Fingerprint:
        return cls(
            dataset=d["dataset"],
            layout=d["layout"],
            crop_margin_mm=d["crop_margin_mm"],
            liver_labels=d["liver_labels"],
            samples_per_case=int(d["samples_per_case"]),
            cases=[CaseFingerprint.from_dict(c) for c in d["cases"]],
            samples=dict(samples or {}),
            histograms=dict(histograms or {}),
        )

    def save_arrays(self, path: str | os.PathLike[str]) -> None:
        """Write ``samples`` and ``histograms`` to an ``.npz`` file, atomically."""
        arrays = {f"samples__{k}": v for k, v in self.samples.items()}
        arrays.update({f"hist__{k}": v for k, v in self.histograms.items()})
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    @staticmethod
    def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(samples, histograms)`` from a file written by :meth:`save_arrays`."""
        samples: dict[str, np.ndarray] = {}
        histograms: dict[str, np.ndarray] = {}
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                kind, _, name = key.partition("__")
                (samples if kind == "samples" else histograms)[name] = npz[key]
        return samples, histograms


def _merge_histograms(hists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of the sum of histograms stored as ``[lowest value, counts...]``."""
    lo = min(int(h[0]) for h in hists)
    hi = max(int(h[0]) + h.size - 1 for h in hists)
    counts = np.zeros(hi - lo, dtype=np.int64)
    for h in hists:
        start = int(h[0]) - lo
        counts[start : start + h.size - 1] += h[1:]
    return np.arange(lo, hi, dtype=np.float64), counts


def _hist_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(expanded, q)`` (linear method) of a histogram with sorted ``values``."""
    n = int(counts.sum())
    position = q / 100.0 * (n - 1)
    below, frac = math.floor(position), position - math.floor(position)
    cum = np.cumsum(counts)
    v0 = values[np.searchsorted(cum, below, side="right")]
    v1 = values[np.searchsorted(cum, min(below + 1, n - 1), side="right")]
    return float(v0 + (v1 - v0) * frac)


def _source_stat(case: Case) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, path in (("image", case.image_path), ("label", case.label_path)):
        if path is not None and Path(path).is_file():
            st = Path(path).stat()
            out[f"{key}_bytes"], out[f"{key}_mtime_ns"] = int(st.st_size), int(st.st_mtime_ns)
    return out


def read_case(case: Case) -> tuple[Image, Image]:
    """Read and validate a labelled case: a CT scan in HU (:mod:`liverctl.ct`, the verdict
    ``predict`` gives) with a body, and a label map on the same grid."""
    if case.label_path is None:
        raise DatasetError(f"case {case.name} has no label map")
    try:
        image, _ = read_ct(case.image_path)
        if not has_body(image):
            raise DatasetError(f"image {Path(case.image_path).name} holds {NO_BODY}; remove it from the dataset")
        label = read_label(case.label_path)
        check_same_grid(image, label, f"image {Path(case.image_path).name}", f"label {Path(case.label_path).name}")
    except LiverctlError as exc:
        raise type(exc)(f"case {case.name}: {exc}") from None
    return image, label


def fingerprint_case(
    case: Case,
    *,
    crop_margin_mm: float | None = 60.0,
    liver_labels: Sequence[int] | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
) -> tuple[CaseFingerprint, np.ndarray, np.ndarray | None]:
    """Fingerprint one case: ``(CaseFingerprint, sampled liver intensities as float32, histogram)``.

    The histogram (``[lowest value, counts...]``, see :class:`Fingerprint`) is ``None`` when
    the liver intensities are not whole numbers.
    """
    image, label = read_case(case)
    mask = liver_region(label, liver_labels)
    counts = np.zeros(1, dtype=np.int64)
    for z in range(label.shape[0]):  # slice by slice: no int64 copy of the whole label map
        c = np.bincount(label.array[z].ravel())
        counts = np.pad(counts, (0, max(0, c.size - counts.size)))
        counts[: c.size] += c
    label_values = [int(v) for v in np.flatnonzero(counts)]
    del label
    values = image.array[mask]
    liver_voxels = int(values.size)
    if crop_margin_mm is None:
        crop = (0, image.shape[0])
    else:
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        if slices.size == 0:
            warnings.warn(
                f"case {case.name}: no liver voxels in {Path(case.label_path or '').name}; keeping the whole z range",
                LiverctlWarning,
                stacklevel=2,
            )
            crop = (0, image.shape[0])
        else:
            m = math.ceil(crop_margin_mm / image.geometry.spacing[2] - 1e-9)
            crop = (max(0, int(slices[0]) - m), min(image.shape[0], int(slices[-1]) + 1 + m))
    del mask
    intensity = None
    moments: tuple[int, float, float] = (0, 0.0, 0.0)
    if liver_voxels:
        v64 = values.astype(np.float64)
        moments = (liver_voxels, float(v64.sum()), float(np.dot(v64, v64)))
        p_lo, p_hi = np.percentile(v64, [0.5, 99.5])
        intensity = {
            "mean": float(v64.mean()),
            "std": float(v64.std()),
            "min": float(v64.min()),
            "max": float(v64.max()),
            "p0.5": float(p_lo),
            "p99.5": float(p_hi),
        }
        del v64
    histogram = None
    if liver_voxels and intensity is not None and intensity["max"] - intensity["min"] < 1_000_000:
        lowest = math.floor(intensity["min"])
        if np.issubdtype(values.dtype, np.integer):
            shifted = values.astype(np.int64) - lowest
        elif np.array_equal(values, np.round(values)):
            shifted = np.round(values).astype(np.int64) - lowest
        else:
            shifted = None
        if shifted is not None:
            histogram = np.concatenate([[lowest], np.bincount(shifted)]).astype(np.int64)
            del shifted
    rng = np.random.default_rng(zlib.crc32(case.name.encode("utf-8")))
    if values.size > samples_per_case:
        values = values[np.sort(rng.choice(values.size, size=samples_per_case, replace=False))]
    record = CaseFingerprint(
        name=case.name,
        source_image=str(case.image_path),
        source_label=str(case.label_path),
        spacing=image.geometry.spacing,
        shape=image.shape,
        crop=crop,
        cropped_shape=(crop[1] - crop[0], image.shape[1], image.shape[2]),
        liver_voxels=liver_voxels,
        label_values=label_values,
        intensity=intensity,
        moments=moments,
        source_stat=_source_stat(case),
    )
    return record, values.astype(np.float32), histogram


# --------------------------------------------------------------------------- parallel map


def _init_worker(threads: int) -> None:
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, threads))


def _call_capturing(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, LiverctlWarning)]


def _map_cases(
    func: Callable[..., Any],
    jobs: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    *,
    workers: int,
    progress: ProgressCallback | None,
    description: str,
) -> list[Any]:
    """Run ``func(*args, **kwargs)`` for each job, in order of the results, with ``workers`` processes."""
    total = len(jobs)
    results: list[Any] = [None] * total
    if progress is not None:
        progress(description, 0, total)

    def finish(i: int, value: tuple[Any, list[str]], done: int) -> None:
        results[i] = value[0]
        for message in value[1]:
            warnings.warn(message, LiverctlWarning, stacklevel=4)
        if progress is not None:
            progress(description, done, total)

    if workers <= 1 or total <= 1:
        for i, (args, kwargs) in enumerate(jobs):
            finish(i, _call_capturing(func, args, kwargs), i + 1)
        return results
    n = min(workers, total)
    threads = max(1, (os.cpu_count() or 1) // n)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_init_worker, initargs=(threads,))
    try:
        pending = {pool.submit(_call_capturing, func, args, kwargs): i for i, (args, kwargs) in enumerate(jobs)}
        done = 0
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in finished:
                i = pending.pop(fut)
                value = fut.result()  # re-raises a worker's LiverctlError
                done += 1
                finish(i, value, done)
    except BrokenProcessPool:
        raise InputError("a worker process died (out of memory?); retry with fewer --workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def fingerprint(
    dataset: Dataset | str | os.PathLike[str],
    *,
    crop_margin_mm: float | None = 60.0,
    liver_labels: Sequence[int] | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> Fingerprint:
    """Read every case once: spacing, shape, liver z-crop and liver intensity statistics.

    Every case is validated here (3D image, valid label map on the image's grid), so
    :func:`preprocess` writes nothing for a dataset with a bad case.

    Args:
        dataset: a :class:`~liverctl.datasets.Dataset` or a dataset folder.
        crop_margin_mm: margin of the liver z-crop; ``None`` for no crop.
        liver_labels: labels that make up the liver region (``None``: every label >= 1).
        samples_per_case: liver intensities kept per case for the percentiles.
        workers: processes to use.
        progress: called as ``progress("fingerprint", done, total)``.
    """
    ds = dataset if isinstance(dataset, Dataset) else discover_dataset(dataset)
    if not ds.labelled:
        raise DatasetError(f"dataset {ds.name} has unlabelled cases; preprocessing for training needs label maps")
    labels_list = None if liver_labels is None else sorted({int(v) for v in liver_labels})
    jobs = [
        ((case,), {"crop_margin_mm": crop_margin_mm, "liver_labels": labels_list, "samples_per_case": samples_per_case})
        for case in ds.cases
    ]
    results = _map_cases(fingerprint_case, jobs, workers=workers, progress=progress, description="fingerprint")
    return Fingerprint(
        dataset=ds.name,
        layout=ds.layout,
        crop_margin_mm=crop_margin_mm,
        liver_labels=labels_list,
        samples_per_case=samples_per_case,
        cases=[r[0] for r in results],
        samples={r[0].name: r[1] for r in results},
        histograms={r[0].name: r[2] for r in results if r[2] is not None},
    )


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Everything needed to redo a preprocessing on a new scan (see :func:`apply_plan`).

    ``target_spacing`` is (x, y, z) mm. ``window`` is (low, high) HU or ``None``.
    ``normalization`` is ``"dataset"`` (z-score with ``mean``/``std`` of all the dataset's
    liver voxels, clipped to the window, at the scans' own resolution) or ``"image"`` (z-score with each image's own mean/std, over all
    its voxels after window and resampling, so it also works on an unlabelled scan).
    """

    dataset: str
    target_spacing: tuple[float, float, float]
    spacing_rule: str = "128-median"
    window: tuple[float, float] | None = None
    window_name: str = "none"
    normalization: str = "dataset"
    mean: float | None = None
    std: float | None = None
    crop: bool = True
    crop_margin_mm: float | None = 60.0
    liver_labels: list[int] | None = None
    image_order: int = 1
    label_order: int = 0
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0, "liver": 1})
    liverctl_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_spacing"] = list(self.target_spacing)
        d["window"] = None if self.window is None else list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["target_spacing"] = tuple(float(v) for v in d["target_spacing"])
        known["window"] = None if d.get("window") is None else tuple(float(v) for v in d["window"])
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        p = Path(path)
        try:
            return cls.from_json(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no such plan file: {p}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{p} is not a liverctl plan: {exc}") from None

    def differences(self, other: Plan) -> list[str]:
        """Names of the settings that differ from ``other`` (the version is ignored)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k != "liverctl_version" and a[k] != b.get(k)]


def plan(
    fingerprint: Fingerprint,
    *,
    target_spacing: str | Sequence[float] = "128-median",
    window: str | Sequence[float] | None = "none",
    normalization: str = "dataset",
    image_order: int | str = 1,
    labels: dict[str, int] | None = None,
) -> Plan:
    """Choose the preprocessing of a dataset from its fingerprint.

    The crop (margin, liver labels) is the one the fingerprint was made with.

    Args:
        fingerprint: from :func:`fingerprint`.
        target_spacing: ``"128-median"`` (METHODS.md §1), ``"median"`` or (x, y, z) mm.
        window: HU window preset or bounds (see :func:`window`).
        normalization: ``"dataset"`` or ``"image"`` (see :class:`Plan`).
        image_order: 1 (linear) or 3 (cubic B-spline) for the images; labels use nearest.
        labels: label name -> value to record (default background 0, liver 1).
    """
    rule = parse_spacing(target_spacing)
    spacing = _compute_target_spacing(fingerprint.spacings, fingerprint.cropped_shapes, rule)
    bounds = resolve_window(window)
    norm = str(normalization).strip().lower()
    if norm not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {normalization!r}: use 'dataset' or 'image'")
    order = interpolation_order(image_order)
    if order == 0:
        raise ConfigError("images need linear (1) or cubic (3) interpolation; nearest is for label maps")
    mean = std = None
    if norm == "dataset":
        stats = fingerprint.liver_intensity(bounds)
        if stats is None or not stats["std"] > 0:
            raise DatasetError(
                f"dataset {fingerprint.dataset} has no liver voxels with varying intensity to normalise with; "
                "use --normalization image"
            )
        mean, std = stats["mean"], stats["std"]
    return Plan(
        dataset=fingerprint.dataset,
        target_spacing=spacing,
        spacing_rule=rule if isinstance(rule, str) else "given",
        window=bounds,
        window_name=window_name(window),
        normalization=norm,
        mean=mean,
        std=std,
        crop=fingerprint.crop_margin_mm is not None,
        crop_margin_mm=fingerprint.crop_margin_mm,
        liver_labels=fingerprint.liver_labels,
        image_order=order,
        labels=dict(labels) if labels else {"background": 0, "liver": 1},
    )


def apply_plan(image: Image, plan: Plan) -> Image:
    """Apply a plan's intensity and spacing recipe to a scan (no crop: that needs a label).

    Steps, in this order: resample to ``plan.target_spacing`` (``plan.image_order``), clip
    to ``plan.window``, z-score (dataset mean/std, or the image's own). Result float32.
    Resampling first keeps the memory low (the int16 scan is never copied to float).
    """
    out = resample(image, plan.target_spacing, interpolator=plan.image_order)
    array = out.array
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    if plan.window is not None:
        np.clip(array, plan.window[0], plan.window[1], out=array)
    if plan.normalization == "dataset":
        if plan.mean is None or plan.std is None:
            raise ConfigError("plan with dataset normalization has no mean/std")
        mean, std = float(plan.mean), float(plan.std)
    else:
        mean, std = float(array.mean(dtype=np.float64)), float(array.std(dtype=np.float64))
        if not std > 0:
            std = 1.0
    if not std > 0:
        raise ConfigError(f"plan std must be positive, got {std}")
    array -= np.float32(mean)
    array /= np.float32(std)
    return Image(array, out.geometry)


# --------------------------------------------------------------------------- preprocess


@dataclass
class PreprocessResult:
    """What :func:`preprocess` did."""

    output: Path
    plan: Plan
    fingerprint: Fingerprint
    cases: list[dict[str, Any]]
    processed: list[str]
    skipped: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        stats = self.fingerprint.liver_intensity()
        shapes = np.asarray([c["shape"] for c in self.cases], dtype=float)
        return {
            "output": str(self.output),
            "dataset": self.plan.dataset,
            "layout": self.fingerprint.layout,
            "cases": len(self.cases),
            "processed": len(self.processed),
            "skipped": len(self.skipped),
            "target_spacing": list(self.plan.target_spacing),
            "spacing_rule": self.plan.spacing_rule,
            "window": None if self.plan.window is None else list(self.plan.window),
            "window_name": self.plan.window_name,
            "normalization": self.plan.normalization,
            "mean": self.plan.mean,
            "std": self.plan.std,
            "crop_margin_mm": self.plan.crop_margin_mm if self.plan.crop else None,
            "liver_intensity": stats,
            "median_shape": np.median(shapes, axis=0).tolist() if len(shapes) else None,
            "seconds": round(self.seconds, 2),
        }


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def preprocess_case(case: Case, plan: Plan, crop: tuple[int, int], output: str | os.PathLike[str]) -> dict[str, Any]:
    """Preprocess one case into ``output`` (images/, labels/, cases/<name>.json) and return its record."""
    out = Path(output)
    image, label = read_case(case)
    source_geometry, source_shape = image.geometry, image.shape
    if plan.crop:
        image, label = crop_z(image, *crop), crop_z(label, *crop)
    else:
        crop = (0, image.shape[0])
    result = apply_plan(image, plan)
    del image
    lab = resample_to_reference(label, result, interpolator="nearest")
    del label
    lab_array = lab.array.astype(np.uint8) if lab.array.dtype != np.uint8 and lab.array.max() <= 255 else lab.array
    record = {
        "name": case.name,
        "shape": list(result.shape),
        "geometry": result.geometry.to_dict(),
        "source_image": str(case.image_path),
        "source_label": str(case.label_path),
        "source_shape": list(source_shape),
        "source_geometry": source_geometry.to_dict(),
        "source_stat": _source_stat(case),
        "crop": list(crop),
        "foreground_voxels": int(np.count_nonzero(liver_region(lab_array, plan.liver_labels))),
    }
    image_path, label_path, record_path = _case_files(out, case.name)
    _save_npy(image_path, result.array)
    _save_npy(label_path, lab_array)
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _case_files(output: Path, name: str) -> list[Path]:
    """The files :func:`preprocess_case` writes for case ``name``, the record last."""
    return [output / "images" / f"{name}.npy", output / "labels" / f"{name}.npy", output / "cases" / f"{name}.json"]


def _case_done(output: Path, case: Case) -> dict[str, Any] | None:
    """The record of a case finished by an earlier run from the same, unchanged source files."""
    name = case.name
    record_path = output / "cases" / f"{name}.json"
    if not (record_path.is_file() and (output / "images" / f"{name}.npy").is_file()):
        return None
    if not (output / "labels" / f"{name}.npy").is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        record.get("source_image") == str(case.image_path)
        and record.get("source_label") == str(case.label_path)
        and record.get("source_stat") == _source_stat(case)
    )
    return record if same else None


def _reusable_fingerprint(
    output: Path, ds: Dataset, crop_margin_mm: float | None, liver_labels: list[int] | None
) -> Fingerprint | None:
    path, samples_path = output / "fingerprint.json", output / "fingerprint_samples.npz"
    if not (path.is_file() and samples_path.is_file()):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fp = Fingerprint.from_dict(data, *Fingerprint.load_arrays(samples_path))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if fp.crop_margin_mm != crop_margin_mm or fp.liver_labels != liver_labels:
        return None
    if [c.name for c in fp.cases] != [c.name for c in ds.cases]:
        return None
    for record, case in zip(fp.cases, ds.cases, strict=True):
        if record.source_image != str(case.image_path) or record.source_label != str(case.label_path):
            return None
        if record.source_stat != _source_stat(case) or case.name not in fp.samples:
            return None
    return fp


def _labels_with_observed(labels: dict[str, int], fp: Fingerprint) -> dict[str, int]:
    """The dataset's label names, plus ``label_N`` for values found in the label maps but not named."""
    out = dict(labels)
    named = set(out.values())
    for value in sorted({v for c in fp.cases for v in c.label_values} - named):
        out[f"label_{value}"] = value
    return out


def _check_output(output: Path, ds: Dataset) -> None:
    out = output.resolve()
    inputs = {ds.root.resolve()}
    for c in ds.cases:
        inputs.add(Path(c.image_path).resolve().parent)
        if c.label_path is not None:
            inputs.add(Path(c.label_path).resolve().parent)
    if out in inputs or any(p.is_relative_to(out) for p in inputs):
        raise InputError(f"output folder {output} would hold or replace the input dataset; choose another folder")
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} exists and is not a folder")


def preprocess(
    dataset: Dataset | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    target_spacing: str | Sequence[float] = "128-median",
    window: str | Sequence[float] | None = "none",
    normalization: str = "dataset",
    crop: bool = True,
    crop_margin_mm: float = 60.0,
    image_order: int | str = 1,
    liver_labels: Sequence[int] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> PreprocessResult:
    """Fingerprint, plan and preprocess a dataset into ``output`` (the folder ``train`` reads).

    Per case: liver z-crop (``crop_margin_mm``, unless ``crop=False``), resample to the
    target spacing, HU window, z-score (see :func:`apply_plan`); the label map is resampled
    with nearest neighbour onto the same grid. Output layout::

        output/fingerprint.json     dataset fingerprint (+ fingerprint_samples.npz)
        output/plan.json            the Plan (apply_plan redoes it on a new scan)
        output/cases.json           one record per case (shape, geometry, source, crop...)
        output/images/<name>.npy    float32 (z, y, x)
        output/labels/<name>.npy    uint8 (z, y, x), same grid
        output/cases/<name>.json    the case's record, written once its arrays are complete

    Every file is written atomically. Rerunning with the same options skips the finished
    cases (and reuses the fingerprint if no source file changed); a different plan in an
    existing output folder is an error unless ``overwrite=True``.
    """
    start = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else discover_dataset(dataset)
    out = Path(output)
    _check_output(out, ds)
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    margin = float(crop_margin_mm) if crop else None
    if margin is not None and (not math.isfinite(margin) or margin < 0):
        raise ConfigError(f"crop margin must be 0 or more mm, got {crop_margin_mm}")
    labels_list = None if liver_labels is None else sorted({int(v) for v in liver_labels})
    # validate options before the (long) fingerprint
    parse_spacing(target_spacing)
    resolve_window(window)
    if str(normalization).strip().lower() not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {normalization!r}: use 'dataset' or 'image'")
    if interpolation_order(image_order) == 0:
        raise ConfigError("images need linear (1) or cubic (3) interpolation; nearest is for label maps")

    manifest = check_new_or_owned_folder(out, "preprocess")
    targets = [out / name for name in _FILES] + [p for case in ds.cases for p in _case_files(out, case.name)]
    manifest.check_replaceable(targets)  # before any work: never replace a file liverctl did not write
    existing_plan: Plan | None = None
    if (out / "plan.json").is_file() and manifest.owns(out / "plan.json"):
        existing_plan = Plan.load(out / "plan.json")

    fp = None if overwrite else _reusable_fingerprint(out, ds, margin, labels_list)
    if fp is None:
        fp = fingerprint(ds, crop_margin_mm=margin, liver_labels=labels_list, workers=workers, progress=progress)
    new_plan = plan(
        fp,
        target_spacing=target_spacing,
        window=window,
        normalization=normalization,
        image_order=image_order,
        labels=_labels_with_observed(ds.labels, fp),
    )
    if existing_plan is not None and not overwrite:
        diff = new_plan.differences(existing_plan)
        if diff:
            raise ConfigError(
                f"{out} was preprocessed with another plan (different {', '.join(diff)}); "
                "use --overwrite or another output folder"
            )
    if overwrite:
        manifest.remove_owned()  # only what liverctl wrote here; the user's files stay

    out.mkdir(parents=True, exist_ok=True)
    top = [out / name for name in _FILES]
    manifest.claim(top, "preprocess")
    write_text_atomic(out / "fingerprint.json", json.dumps(fp.to_dict(), indent=2) + "\n")
    fp.save_arrays(out / "fingerprint_samples.npz")
    write_text_atomic(out / "plan.json", new_plan.to_json())
    manifest.record(top[:3])

    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    skipped: list[str] = []
    crops = {c.name: c.crop for c in fp.cases}
    for case in ds.cases:
        done = _case_done(out, case)
        if done is not None:
            records[case.name] = done
            skipped.append(case.name)
        else:
            todo.append(((case, new_plan, tuple(crops[case.name]), str(out)), {}))
    manifest.claim(p for args, _ in todo for p in _case_files(out, args[0].name))
    for record in _map_cases(preprocess_case, todo, workers=workers, progress=progress, description="preprocess"):
        records[record["name"]] = record
        manifest.record(_case_files(out, record["name"]))
    cases = [records[c.name] for c in ds.cases]
    write_text_atomic(out / "cases.json", json.dumps(cases, indent=2) + "\n")
    manifest.record([out / "cases.json"])
    return PreprocessResult(
        output=out,
        plan=new_plan,
        fingerprint=fp,
        cases=cases,
        processed=[args[0].name for args, _ in todo],
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- reading back


@dataclass
class PreprocessedDataset:
    """A folder written by :func:`preprocess`: ``plan``, ``fingerprint`` and one record per case."""

    folder: Path
    plan: Plan
    cases: list[dict[str, Any]]
    fingerprint: dict[str, Any] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.cases]

    def record(self, name: str) -> dict[str, Any]:
        for c in self.cases:
            if c["name"] == name:
                return c
        raise DatasetError(f"preprocessed dataset {self.folder} has no case named {name!r}")

    def load(self, name: str, mmap: bool = True) -> tuple[Image, Image]:
        """``(image, label)`` of a case; memory-mapped read-only arrays when ``mmap``."""
        rec = self.record(name)
        geometry = Geometry.from_dict(rec["geometry"])
        mode = "r" if mmap else None
        arrays = []
        for sub in ("images", "labels"):
            path = self.folder / sub / f"{name}.npy"
            try:
                arrays.append(np.load(path, mmap_mode=mode, allow_pickle=False))
            except FileNotFoundError:
                raise InputError(f"missing preprocessed file {path}; rerun liverctl preprocess") from None
            except ValueError as exc:
                raise InputError(f"cannot read {path}: {exc}") from None
        image, label = arrays
        if tuple(image.shape) != tuple(rec["shape"]) or image.shape != label.shape:
            raise GeometryError(f"case {name}: array shapes {image.shape}/{label.shape} differ from {rec['shape']}")
        return Image(image, geometry), Image(label, geometry)


def load_preprocessed(folder: str | os.PathLike[str]) -> PreprocessedDataset:
    """Open an output folder of :func:`preprocess` (no arrays are read until ``load``)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"no such preprocessed folder: {root}")
    if not (root / "plan.json").is_file():
        raise DatasetError(f"{root} is not a liverctl preprocess output (no plan.json)")
    if not (root / "cases.json").is_file():
        raise DatasetError(f"{root} is incomplete (no cases.json); rerun liverctl preprocess")
    plan_ = Plan.load(root / "plan.json")
    try:
        cases = json.loads((root / "cases.json").read_text(encoding="utf-8"))
        fp_path = root / "fingerprint.json"
        fp = json.loads(fp_path.read_text(encoding="utf-8")) if fp_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {root}: {exc}") from None
    return PreprocessedDataset(root, plan_, cases, fp)
