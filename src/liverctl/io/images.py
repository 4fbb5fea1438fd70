"""Reading and writing images with their geometry.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``) and DICOM series folders (:mod:`liverctl.io.dicom`). Writes are atomic:
the data goes to a temporary file beside the target, which is renamed over the target only
when complete, so an interrupted or failed write never leaves a half-written file. The checks
of NIfTI files that ITK's reader skips (truncation, hidden NaN) are in :mod:`liverctl.io.nifti`.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from liverctl.errors import GeometryError, ImageFormatError, InputError, LabelError
from liverctl.io.checks import check_header_spacing, from_sitk_checked, itk_message, refuse_not_3d, require_volume
from liverctl.io.dicom import read_dicom_series
from liverctl.io.files import IMAGE_SUFFIXES, atomic_path, image_stem, image_suffix
from liverctl.io.image import Geometry, Image
from liverctl.io.nifti import check_complete, has_nifti_header, nifti_has_nonfinite, stored_affine

# ITK prints warnings (e.g. about DICOM slice spacing) straight to stderr; the library
# must not print, and the CLI reports problems itself.
sitk.ProcessObject_SetGlobalWarningDisplay(False)


def _itk_read(path: Path) -> sitk.Image:
    """``sitk.ReadImage``, but of this very file.

    Asked for ``case.nii.gz``, ITK's NIfTI reader reads ``case.nii`` instead when one lies beside
    it (SimpleITK 2.5.7). Such a file is read through a link that stands alone in a temporary
    folder.
    """
    if image_suffix(path) == ".nii.gz" and path.with_name(image_stem(path) + ".nii").exists():
        with tempfile.TemporaryDirectory(prefix="liverctl-read-") as tmp:
            link = Path(tmp) / path.name
            link.symlink_to(path.absolute())
            return sitk.ReadImage(str(link))
    return sitk.ReadImage(str(path))


def _series_of_dicom_file(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM file that is one slice of a series of several, else ``None``."""
    from liverctl.io.inputs import _series_of_file, is_dicom_file

    if image_suffix(path) is not None or not is_dicom_file(path):
        return None
    uid, n, _ = _series_of_file(path)
    return uid if n >= 2 else None


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None, check_finite: bool = True) -> Image:
    """Read a 3D image file or a DICOM series folder.

    Raises :class:`~liverctl.errors.InputError` for a missing or unreadable path and
    :class:`~liverctl.errors.ImageFormatError` for a 2D, 4D or multi-component image and for
    one with NaN or infinite voxels (in every format: NIfTI's reader hides them as 0).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    if p.is_dir():
        return read_dicom_series(p, series_uid)
    if series_uid is not None:
        raise InputError(f"--series applies to DICOM folders, but {p} is a file")
    series = _series_of_dicom_file(p)
    if series is not None:  # one file of a DICOM series: the series
        return read_dicom_series(p.parent, series)
    check_header_spacing(p, image_suffix(p))
    header_first = has_nifti_header(p)
    if header_first:
        check_complete(p)  # before ITK allocates what a truncated header claims (and zero-fills it)
    try:
        image = _itk_read(p)
    except RuntimeError as exc:
        raise InputError(f"cannot read {p}: {itk_message(exc)}") from None
    if not header_first:
        check_complete(p)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageFormatError(
            f"{p} has {image.GetNumberOfComponentsPerPixel()} components per voxel; liverctl needs a scalar 3D volume"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        return refuse_not_3d(image, p)
    result = require_volume(from_sitk_checked(image, p), p)
    if check_finite:
        _check_finite(result, p)
    if image_suffix(p) in (".nii", ".nii.gz"):
        result.stored_affine = stored_affine(p, result.geometry)
    return result


def _check_finite(image: Image, path: Path, error: type[InputError] = ImageFormatError, what: str = "") -> None:
    """Refuse NaN or infinite voxels, also where the NIfTI reader hid them (as 0)."""
    if image_suffix(path) in (".nii", ".nii.gz"):
        try:
            bad = image.array.dtype.kind == "f" and nifti_has_nonfinite(path)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {path}: truncated or corrupt file ({exc})") from None
    else:
        bad = image.array.dtype.kind == "f" and not np.isfinite(image.array).all()
    if bad:
        raise error(f"{what}{path} holds NaN or infinite values")


def as_label_array(array: np.ndarray, source: str = "label map") -> np.ndarray:
    """Validate a label map and return it as the smallest unsigned integer type.

    Accepts any integer type and floats that hold whole numbers (some tools save masks as
    float32); rejects fractional, negative, NaN and too-large values with a
    :class:`~liverctl.errors.LabelError`.
    """
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise LabelError(f"{source} holds NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise LabelError(
                f"{source} holds fractional values (e.g. {_first_fraction(array):g}); a label map must hold whole numbers"
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise LabelError(f"{source} has unsupported voxel type {array.dtype}")
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0:
        raise LabelError(f"{source} holds negative values (min {lo:g}); labels must be 0 or positive")
    if hi > np.iinfo(np.uint16).max:
        raise LabelError(f"{source} holds label {hi:g}, more than liverctl supports (65535)")
    dtype = np.uint8 if hi <= 255 else np.uint16
    return array.astype(dtype, copy=array.dtype != dtype)


def _first_fraction(array: np.ndarray) -> float:
    flat = array.ravel()
    return float(flat[np.flatnonzero(flat != np.round(flat))[0]])


def read_label(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Image:
    """Read a label map (mask) and validate it with :func:`as_label_array`."""
    image = read_image(path, series_uid=series_uid, check_finite=False)
    if not Path(path).is_dir():
        _check_finite(image, Path(path), LabelError, "label map ")
    return Image(as_label_array(image.array, f"label map {path}"), image.geometry)


def write_image(image: Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``image`` atomically, format from the suffix, voxel type unchanged."""
    p = Path(path)
    if image_suffix(p) is None:
        raise InputError(f"unknown image format for {p}; use one of {', '.join(IMAGE_SUFFIXES)}")
    compress = compress and image_suffix(p) != ".nii"
    if image_suffix(p) in (".mhd", ".nhdr"):
        # Header + separate data file: write both under their final names in a temporary
        # folder beside the target, then move the data file(s) first and the header last.
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{p.name}.", dir=p.parent) as tmpdir:
            tmp = Path(tmpdir) / p.name
            try:
                sitk.WriteImage(image.to_sitk(), str(tmp), useCompression=compress)
            except RuntimeError as exc:
                raise InputError(f"cannot write {p}: {itk_message(exc)}") from None
            for f in sorted(Path(tmpdir).iterdir(), key=lambda f: f.name == p.name):
                os.replace(f, p.parent / f.name)
        return p
    with atomic_path(p) as tmp:
        try:
            sitk.WriteImage(image.to_sitk(), str(tmp), useCompression=compress)
        except RuntimeError as exc:
            raise InputError(f"cannot write {p}: {itk_message(exc)}") from None
    return p


def write_mask(mask: np.ndarray | Image, reference: Image | Geometry, path: str | os.PathLike[str]) -> Path:
    """Write a label map in exactly ``reference``'s grid, as uint8 (uint16 past 255 labels)."""
    array = mask.array if isinstance(mask, Image) else np.asarray(mask)
    geometry = reference.geometry if isinstance(reference, Image) else reference
    if isinstance(reference, Image) and array.shape != reference.shape:
        raise GeometryError(f"mask shape {array.shape} does not match the reference image shape {reference.shape}")
    return write_image(Image(as_label_array(array, "mask"), geometry), path)
