"""The format of ``predict``'s masks: ``--output-format nii.gz|nrrd|mha|dicom-seg|rtstruct``.

Default (``None``): the input's own format for NIfTI, NRRD and MetaImage scans (``.nii`` ->
``.nii.gz``, ``.nhdr`` -> ``.nrrd``, ``.mhd`` -> ``.mha``: one compressed file each), NIfTI
(``.nii.gz``) for DICOM series, zipped series and DICOM files, because every liverctl command and
nnU-Net/TotalSegmentator read it. ``dicom-seg`` writes a DICOM Segmentation object beside the
NIfTI-free outputs (``<name>.dcm``) referencing the source series (:mod:`liverctl.io.dicom_seg`);
only DICOM inputs can have one. ``rtstruct`` writes an RT Structure Set (``<name>.rtstruct.dcm``,
:mod:`liverctl.io.rtstruct`) for radiotherapy planning systems, also from DICOM input only, whose
series must carry the UIDs it references (checked before the model is loaded). An ``-o FILE``
with a suffix decides the format itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from liverctl.errors import ConfigError
from liverctl.io import IMAGE_SUFFIXES, image_suffix

__all__ = ["FORMATS", "check_output_format", "dicom_suffix", "mask_stem", "mask_suffix"]

FORMATS = {"nii.gz": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha", "dicom-seg": ".dcm", "rtstruct": ".rtstruct.dcm"}
_DICOM_FORMATS = {
    "dicom-seg": "it references the source series",
    "rtstruct": "its contours reference the source slices",
}
_SAME = {".nii.gz": ".nii.gz", ".nii": ".nii.gz", ".nrrd": ".nrrd", ".nhdr": ".nrrd", ".mha": ".mha", ".mhd": ".mha"}


def _is_dicom(scan: Path) -> bool:
    return scan.is_dir() or image_suffix(scan) is None


def check_output_format(
    output_format: str | None, scans: Sequence[Path], output: str | os.PathLike[str] | None
) -> None:
    """Refuse, before any work, a format liverctl cannot write for these scans and this ``-o``."""
    if output_format is None:
        return
    if output_format not in FORMATS:
        raise ConfigError(f"unknown --output-format {output_format!r}: use one of {', '.join(FORMATS)}")
    if output is not None and not Path(output).is_dir():
        suffix = dicom_suffix(output) or image_suffix(output)
        if suffix is not None and suffix != FORMATS[output_format]:
            raise ConfigError(f"-o {output} has suffix {suffix} but --output-format is {output_format}")
    if output_format in _DICOM_FORMATS:
        not_dicom = [s for s in scans if not _is_dicom(s)]
        if not_dicom:
            raise ConfigError(
                f"--output-format {output_format} needs DICOM input ({_DICOM_FORMATS[output_format]}); "
                f"{not_dicom[0]} is a {image_suffix(not_dicom[0])} file"
            )
    if output_format == "dicom-seg":
        from liverctl.io.dicom_seg import check_available

        check_available()
    if output_format == "rtstruct":
        _check_rtstruct_sources(scans)


def _check_rtstruct_sources(scans: Sequence[Path]) -> None:
    """pydicom/highdicom installed, and each series carries the UIDs a structure set references."""
    from liverctl.errors import LiverctlError
    from liverctl.io.dicom_seg import series_files
    from liverctl.io.rtstruct import check_available, check_series

    check_available()
    for scan in scans:
        try:
            files = series_files(scan)
        except (LiverctlError, OSError):  # several series, a zip...: checked again when it is written
            continue
        if files:
            check_series(files)


def dicom_suffix(path: str | os.PathLike[str]) -> str | None:
    """``.rtstruct.dcm`` or ``.dcm`` when ``path`` ends so, else ``None``."""
    name = str(path).lower()
    return ".rtstruct.dcm" if name.endswith(".rtstruct.dcm") else ".dcm" if name.endswith(".dcm") else None


def mask_suffix(scan: Path, output_format: str | None) -> str:
    """The suffix of ``scan``'s mask (see the module docs)."""
    if output_format is not None:
        return FORMATS[output_format]
    return _SAME.get(image_suffix(scan) or "", ".nii.gz")


def mask_stem(path: str | os.PathLike[str]) -> str:
    """A mask's file name without its suffix (``.dcm`` included), for the report beside it."""
    name = Path(path).name
    for suffix in (*IMAGE_SUFFIXES, ".rtstruct.dcm", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
