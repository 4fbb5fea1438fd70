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

import SimpleITK as sitk

from liverctl.errors import ImageFormatError, InputError

if TYPE_CHECKING:
    from liverctl.io.image import Image

__all__ = ["DicomSeries", "list_dicom_series", "read_dicom_series"]


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


def _choose_series(folder: Path, series_uid: str | None) -> DicomSeries:
    found = list_dicom_series(folder)
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
    from liverctl.io.checks import itk_message, refuse_not_3d, require_volume
    from liverctl.io.image import Image

    folder = Path(folder)
    series = _choose_series(folder, series_uid)
    if series.n_slices < 2:
        raise ImageFormatError(f"DICOM series {series.label} in {folder} has a single slice; a 3D volume is needed")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(series.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {folder}: {itk_message(exc)}") from None
    return require_volume(Image.from_sitk(image) if image.GetDimension() == 3 else refuse_not_3d(image, folder), folder)
