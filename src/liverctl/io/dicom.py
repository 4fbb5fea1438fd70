"""DICOM series folders: list the series a folder holds, choose one, read it as an Image.

:func:`list_dicom_series` finds the series of a folder (GDCM, not recursive), most slices
first; :func:`read_dicom_series` reads the one with the most slices, or the one asked for
(``--series UID``), refusing a tie. :func:`liverctl.io.read_image` calls it for a folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from liverctl.errors import ImageFormatError, InputError

if TYPE_CHECKING:
    from liverctl.io.image import Image

__all__ = ["DicomSeries", "is_dicom_file", "list_dicom_series", "read_dicom_series"]


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a DICOM folder."""

    uid: str
    files: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)

    @property
    def label(self) -> str:
        return self.uid or '<no SeriesInstanceUID> (--series "")'


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """A file with the DICOM preamble (``DICM`` at byte 128), or named ``*.dcm``."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """All DICOM series in ``folder`` (not recursive), most slices first."""
    folder = str(folder)
    reader = sitk.ImageSeriesReader()
    try:
        uids = reader.GetGDCMSeriesIDs(folder)
    except RuntimeError as exc:  # pragma: no cover - GDCM rarely raises here
        from liverctl.io.checks import itk_message

        raise InputError(f"cannot scan DICOM folder {folder}: {itk_message(exc)}") from None
    series = [DicomSeries(uid, tuple(reader.GetGDCMSeriesFileNames(folder, uid))) for uid in uids]
    return sorted(series, key=lambda s: (-s.n_slices, s.uid))


def _choose_series(folder: Path, series_uid: str | None, found: list[DicomSeries]) -> DicomSeries:
    if not found:
        raise InputError(f"no DICOM series and no image file in folder {folder}")
    if series_uid is not None:
        for s in found:
            if s.uid == series_uid:
                return s
        listing = "; ".join(f"{s.label} ({s.n_slices} slices)" for s in found)
        raise InputError(f"series {series_uid} not found in {folder}; available: {listing}")
    if len(found) > 1 and found[0].n_slices == found[1].n_slices:
        tied = [s for s in found if s.n_slices == found[0].n_slices]
        listing = "; ".join(f"{s.label} ({s.n_slices} slices)" for s in tied)
        raise InputError(
            f"{folder} holds several series with {found[0].n_slices} slices, choose one with --series UID: {listing}"
        )
    return found[0]


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Image:
    """Read one DICOM series: the one with the most slices, or ``series_uid``."""
    from liverctl.io.checks import from_sitk_checked, itk_message, refuse_not_3d, require_volume

    folder = Path(folder)
    found = list_dicom_series(folder)
    series = _choose_series(folder, series_uid, found)
    if series.n_slices < 2:
        raise ImageFormatError(f"DICOM series {series.label} in {folder} has a single slice; a 3D volume is needed")
    check_slices(folder, series, found)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {folder}: {itk_message(exc)}") from None
    if image.GetDimension() != 3:
        return refuse_not_3d(image, folder)
    return require_volume(from_sitk_checked(image, folder), folder)


SLICE_STEP_RTOL = 0.02
"""How far one slice step may differ from the series' median step (relative; plus 0.01 mm)."""


def _slice_header(path: str) -> tuple[list[float], list[float]] | None:
    """``(ImagePositionPatient, ImageOrientationPatient)`` of one slice; ``None`` if it has none.
    Raises ``RuntimeError`` if the file cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    try:
        ipp = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        iop = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
    except (RuntimeError, ValueError):
        return None
    return (ipp, iop) if len(ipp) == 3 and len(iop) == 6 else None


def _unreadable_slices(folder: Path, listed: set[str]) -> None:
    """Refuse a DICOM file of the folder that no series holds because it cannot be read (a
    truncated slice that GDCM leaves out of its series without a word)."""
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.name.upper() == "DICOMDIR" or str(f.resolve()) in listed:
            continue
        if not is_dicom_file(f):
            continue
        try:
            _slice_header(str(f))
        except RuntimeError:
            raise ImageFormatError(
                f"cannot read slice {f.name} of the DICOM series in {folder} (truncated or damaged); "
                "liverctl reads a series only whole: restore or remove that file"
            ) from None


def check_slices(folder: Path, series: DicomSeries, found: list[DicomSeries]) -> None:
    """Refuse a series that is not whole and evenly spaced: an unreadable slice in the folder, or
    slice positions (along the slice normal) with a gap, a repeat or an uneven step. ITK would
    read such a series with one averaged spacing, every slice after the gap misplaced."""
    listed = {str(Path(f).resolve()) for s in found for f in s.files}
    _unreadable_slices(folder, listed)
    headers = []
    for f in series.files:
        try:
            headers.append(_slice_header(f))
        except RuntimeError:
            raise ImageFormatError(f"cannot read slice {Path(f).name} of the DICOM series in {folder}") from None
    if any(h is None for h in headers):
        return  # no positions to check (ITK reads such a series as it is)
    iop = np.asarray(headers[0][1])  # type: ignore[index]
    normal = np.cross(iop[:3], iop[3:])
    z = np.asarray([np.dot(h[0], normal) for h in headers])  # type: ignore[index]
    order = np.argsort(z)
    steps = np.diff(z[order])
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > SLICE_STEP_RTOL * median + 0.01)
    if median <= 0 or bad.size:
        i = int(bad[0]) if bad.size else 0
        a, b = (Path(series.files[order[k]]).name for k in (i, i + 1))
        what = "at the same position" if steps[i] < 0.01 else f"{steps[i]:.3g} mm apart"
        raise ImageFormatError(
            f"DICOM series in {folder} is not evenly spaced: slices {a} and {b} are {what} where the others are "
            f"{median:.3g} mm (a missing or repeated slice?); liverctl reads only whole, evenly spaced series"
        )
