"""What every image reader checks and how it words ITK's errors: one line, a 3D volume of at
least two slices along each axis, and one geometry verdict whatever the format.

The geometry verdict (:func:`check_header_spacing` before ITK reads a file, :func:`check_geometry`
after every reader, DICOM series included): a voxel spacing that is zero, negative or not finite
*as the file stores it* is refused (ITK reads NIfTI ``pixdim`` 0 as 1.0 mm and a negative
``pixdim`` or MetaImage ``ElementSpacing`` as a flip, without a word), and so are direction
cosines that are not orthonormal (a sheared or singular ``TransformMatrix`` / ``space
directions``): the same verdict for NIfTI, NRRD, MetaImage and DICOM. :func:`check_grid_size`
refuses, before any allocation, a resampled grid no CT needs (a 1000 mm spacing resampled to
1.5 mm asks for terabytes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from liverctl.errors import GeometryError, ImageFormatError, InputError
from liverctl.io.image import Geometry, Image

MAX_VOXELS = 2**31
"""The most voxels of a grid liverctl resamples onto (8 GiB as float32; a 512 x 512 x 1000 CT at
1 mm is 2.6e8)."""

ORTHONORMAL_ATOL = 1e-3
"""How far ``D^T D`` may lie from the identity (float32 headers round at ~1e-7)."""


def itk_message(exc: BaseException) -> str:
    """The informative part of an ITK exception, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    for ln in lines:
        if ln.startswith("sitk::ERROR:"):
            return ln[len("sitk::ERROR:") :].strip()
    for ln in reversed(lines):
        if not ln.startswith(("sitk::ERROR", "/")):
            return ln
    return lines[-1] if lines else type(exc).__name__


def refuse_not_3d(image: sitk.Image, path: Path) -> Image:
    size = "x".join(str(s) for s in image.GetSize())
    raise ImageFormatError(f"{path} is a {image.GetDimension()}D image ({size}); liverctl needs a 3D volume")


def require_volume(image: Image, path: Path) -> Image:
    if min(image.shape) < 2:
        size = "x".join(str(s) for s in image.shape[::-1])
        raise ImageFormatError(f"{path} has a single slice ({size}); liverctl needs a 3D volume")
    return image


def _fmt_xyz(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ") mm (x, y, z)"


def _refuse_spacing(path: Path, spacing: Sequence[float], where: str) -> None:
    if len(spacing) >= 3 and not all(math.isfinite(v) and v > 0 for v in spacing[:3]):
        raise ImageFormatError(
            f"{path}: voxel spacing {_fmt_xyz(spacing[:3])} in its {where}; "
            "spacing must be positive and finite (fix the header, liverctl does not guess it)"
        )


def _text_header(path: Path) -> dict[str, str]:
    """The ``key = value`` (MetaImage) or ``key: value`` (NRRD) fields of a text header."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        match = re.match(r"^([A-Za-z][A-Za-z0-9 _]*?)\s*(?:=|:)\s*(.*)$", line)
        if match:
            fields.setdefault(match.group(1).strip().lower(), match.group(2).strip())
        if line.lower().startswith("elementdatafile") or (not line and path.suffix.lower() == ".nrrd"):
            break
    return fields


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in re.findall(r"[^\s(),]+", text) if v.lower() != "none"]
    except ValueError:
        return []


_FIELD_NAMES = {
    "elementspacing": "ElementSpacing",
    "elementsize": "ElementSize",
    "spacings": "spacings",
    "transformmatrix": "TransformMatrix",
    "rotation": "Rotation",
    "orientation": "Orientation",
}


def check_header_spacing(path: Path, suffix: str | None) -> None:
    """Refuse a file whose header stores a spacing ITK would replace or flip, or a singular or
    sheared MetaImage matrix (before ITK reads it: ITK's own words are not one clear line)."""
    from liverctl.io.nifti import nifti_pixdim

    try:
        if suffix in (".nii", ".nii.gz"):
            pixdim = nifti_pixdim(path)
            if pixdim is not None:
                _refuse_spacing(path, pixdim, "NIfTI header (pixdim)")
            return
        if suffix not in (".mha", ".mhd", ".nrrd", ".nhdr"):
            return
        fields = _text_header(path)
    except OSError:
        return  # ITK says what is wrong with the file
    for key in ("elementspacing", "elementsize", "spacings"):
        if key in fields:
            _refuse_spacing(path, _numbers(fields[key]), f"header ({_FIELD_NAMES[key]})")
            break
    for key in ("transformmatrix", "rotation", "orientation"):
        values = _numbers(fields.get(key, ""))
        if len(values) == 9:
            _refuse_direction(path, np.asarray(values).reshape(3, 3), f"its header's {_FIELD_NAMES[key]}")
            break
    _refuse_missing_data_file(path, fields.get("elementdatafile") or fields.get("data file") or fields.get("datafile"))


def _refuse_missing_data_file(path: Path, name: str | None) -> None:
    """A detached header (``.mhd``, ``.nhdr``) whose data file is not there: one line of our own
    before ITK prints its own on stderr."""
    if not name or name.upper() in ("LOCAL", "LIST") or "%" in name or " " in name.strip():
        return
    data = Path(name) if Path(name).is_absolute() else path.parent / name
    if not data.is_file():
        raise InputError(f"cannot read {path}: its data file {data.name} is missing (it must lie beside the header)")


def _refuse_direction(path: Path, matrix: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(matrix)) or not np.allclose(matrix.T @ matrix, np.eye(3), atol=ORTHONORMAL_ATOL):
        kind = "singular" if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-6 else "sheared"
        raise ImageFormatError(
            f"{path}: the axis directions in {where} are {kind} (not orthonormal); "
            "liverctl reads only grids with perpendicular axes"
        )


def check_geometry(geometry: Geometry, path: Path) -> None:
    """The verdict every reader gives after reading: positive, finite spacing and orthonormal
    axis directions."""
    _refuse_spacing(path, geometry.spacing, "geometry")
    _refuse_direction(path, geometry.direction_matrix, "its geometry")


def from_sitk_checked(image: sitk.Image, path: Path) -> Image:
    """:meth:`Image.from_sitk` with the geometry verdict (:func:`check_geometry`) worded for ``path``."""
    spacing = tuple(image.GetSpacing())
    _refuse_spacing(path, spacing, "geometry")
    result = Image.from_sitk(image)
    check_geometry(result.geometry, path)
    return result


def check_grid_size(shape_zyx: Sequence[int], spacing_xyz: Sequence[float], what: str = "the resampled grid") -> None:
    """Refuse, before allocating it, a grid of more than :data:`MAX_VOXELS` voxels."""
    voxels = math.prod(int(n) for n in shape_zyx)
    if voxels > MAX_VOXELS:
        size = " x ".join(str(int(n)) for n in shape_zyx[::-1])
        raise GeometryError(
            f"{what} would be {size} voxels (x, y, z) at {_fmt_xyz(spacing_xyz)}, {voxels:.2g} voxels: "
            "more than any CT needs; check the scan's voxel spacing"
        )
