"""An image and where it lies: :class:`Image` and :class:`Geometry`.

An :class:`Image` is a 3D NumPy array in **(z, y, x)** order, as SimpleITK returns it,
plus its :class:`Geometry` (spacing, origin and direction, in ITK's **(x, y, z)**
physical order, millimetres, LPS). Every function in liverctl that takes or returns
voxels takes or returns an ``Image``, so the geometry never gets lost on the way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from liverctl.errors import GeometryError, ImageFormatError

# Tolerances used when deciding whether two geometries are "the same grid". NIfTI stores
# spacing and origin as float32, so values read back from a file differ from float64
# ones by ~1e-7 relative; anything below these bounds is far below a voxel.
SPACING_RTOL = 1e-5
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-5


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in patient space.

    Attributes are in ITK order: ``spacing`` and ``origin`` are (x, y, z) in mm,
    ``direction`` is the row-major 3x3 matrix whose columns are the x, y, z axis
    directions (LPS). Arrays are (z, y, x): use :attr:`spacing_zyx` with them.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ImageFormatError("geometry must be 3D (3 spacings, 3 origin values, 9 direction values)")
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ImageFormatError(f"voxel spacing must be positive and finite, got {self.spacing}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order (z, y, x), for use with NumPy arrays."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def ras_affine(self) -> np.ndarray:
        """The 4x4 voxel (x, y, z) index -> RAS mm affine of this grid (MONAI's and nibabel's
        convention; liverctl's own is LPS)."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Physical (x, y, z) mm coordinates of voxel indices given as (..., 3) in (z, y, x)."""
        idx_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin) + (idx_xyz * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) in (z, y, x) of physical (x, y, z) mm points."""
        matrix = self.direction_matrix * np.asarray(self.spacing)[None, :]  # index (x, y, z) -> mm
        offset = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin)
        return np.linalg.solve(matrix, offset.reshape(-1, 3).T).T.reshape(offset.shape)[..., ::-1]

    def mismatch(self, other: Geometry) -> str | None:
        """``None`` if both describe the same grid (within tolerance), else what differs."""
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            return f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            return f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}"
        return None

    def to_dict(self) -> dict[str, list[float]]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


@dataclass
class Image:
    """A 3D array in (z, y, x) order with the geometry that places it in the patient.

    ``stored_affine``: for a NIfTI file, the voxel (x, y, z) -> RAS affine exactly as nibabel
    reads it from the header (:func:`liverctl.io.nifti.nifti_affine`), which ``geometry`` matches
    to a few float32 ulps; MONAI-exact resampling starts from these bits. Kept by
    :meth:`with_array` (same grid), dropped by everything that makes a new grid.
    """

    array: np.ndarray
    geometry: Geometry
    stored_affine: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ImageFormatError(f"expected a 3D image, got an array of shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx

    @property
    def voxel_volume_ml(self) -> float:
        return self.geometry.voxel_volume_mm3 / 1000.0

    def with_array(self, array: np.ndarray) -> Image:
        """The same grid with other voxel values (e.g. a mask of this scan)."""
        if array.shape != self.array.shape:
            raise GeometryError(f"array shape {array.shape} does not match image shape {self.array.shape}")
        return Image(array, self.geometry, self.stored_affine)

    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        return self.geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Image:
        return cls(sitk.GetArrayFromImage(image), Geometry.from_sitk(image))


def check_same_grid(a: Image, b: Image, what_a: str = "prediction", what_b: str = "reference") -> None:
    """Raise :class:`~liverctl.errors.GeometryError` unless ``a`` and ``b`` share one voxel grid."""
    if a.shape != b.shape:
        raise GeometryError(f"{what_a} shape {a.shape[::-1]} differs from {what_b} shape {b.shape[::-1]} (x, y, z)")
    diff = a.geometry.mismatch(b.geometry)
    if diff is not None:
        raise GeometryError(f"{what_a} and {what_b} lie on different grids: {diff}")
