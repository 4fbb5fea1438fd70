"""Liver masks as DICOM Segmentation objects (DICOM-SEG) that reference their source series.

:func:`write_dicom_seg` writes a binary SEG with one segment (SCT "Liver", automatic, algorithm
"liverctl") with ``highdicom``: one frame per source slice, in the source slices' own plane
positions, so that a viewer overlays it on the series it came from. It needs the optional
``highdicom`` and ``pydicom`` (``pip install 'liverctl[dicom]'``): :func:`check_available` says
so in one line before any work.

The mask comes on the scan's grid as SimpleITK read the series (array z, y, x); each source
slice is matched to its plane ``k`` of that grid by its ImagePositionPatient, so the frames
follow the source files whatever order they lie in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, GeometryError, InputError

__all__ = ["INSTALL_HINT", "check_available", "series_files", "write_dicom_seg"]

INSTALL_HINT = "pip install 'liverctl[dicom]' (highdicom, pydicom)"


def check_available() -> None:
    """Refuse ``--output-format dicom-seg`` early when ``highdicom`` is not installed."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise ConfigError(f"--output-format dicom-seg needs highdicom and pydicom: {INSTALL_HINT}") from None


def series_files(scan: str | os.PathLike[str], series_uid: str | None = None) -> list[str]:
    """The files of the DICOM series that ``scan`` (a series folder, or one file of a series) stands for."""
    from liverctl.io.dicom import _choose_series, list_dicom_series

    p = Path(scan)
    if p.is_file():
        target = str(p.resolve())
        for s in list_dicom_series(p.parent):
            if any(str(Path(f).resolve()) == target for f in s.files):
                return list(s.files)
        return [str(p)]
    return list(_choose_series(p, series_uid, list_dicom_series(p)).files)


def _plane_index(ds: Any, origin: np.ndarray, inverse: np.ndarray, n: int, source: str) -> int:
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    ijk = inverse @ (position - origin)
    k = round(float(ijk[2]))
    if abs(ijk[0]) > 0.5 or abs(ijk[1]) > 0.5 or abs(ijk[2] - k) > 0.1 or not 0 <= k < n:
        raise GeometryError(f"DICOM slice {source} does not lie on a plane of the segmented grid")
    return k


def source_planes(sources: Sequence[Any], files: Sequence[str | os.PathLike[str]], geometry: Any, n: int) -> list[int]:
    """The plane ``k`` (z index of an ``n``-plane grid on ``geometry``) each source slice lies on, in the
    order of ``sources``; a :class:`~liverctl.errors.GeometryError` for a slice that lies on none. DICOM-SEG
    and RTSTRUCT both place their frames and contours with it."""
    origin = np.asarray(geometry.origin, float)
    affine = np.asarray(geometry.direction, float).reshape(3, 3) @ np.diag(np.asarray(geometry.spacing, float))
    inverse = np.linalg.inv(affine)
    return [_plane_index(ds, origin, inverse, n, str(f)) for ds, f in zip(sources, files, strict=True)]


def write_dicom_seg(
    mask: np.ndarray,
    geometry: Any,
    files: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    label: str = "liver",
    description: str = "liverctl liver",
) -> Path:
    """Write ``mask`` (z, y, x, on ``geometry``: the scan's grid) as a DICOM-SEG referencing ``files``."""
    check_available()
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from liverctl import __version__
    from liverctl.io.files import atomic_path

    sources = [pydicom.dcmread(str(f)) for f in files]
    missing = [
        k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not sources[0].get(k)
    ]
    if missing:
        raise InputError(
            f"cannot write a DICOM-SEG for {Path(files[0]).parent}: the series has no {', '.join(missing)} "
            "to reference (anonymised too far?); use --output-format nii.gz"
        )
    array = np.asarray(mask) > 0
    planes = source_planes(sources, files, geometry, array.shape[0])
    if (int(sources[0].Rows), int(sources[0].Columns)) != array.shape[1:]:
        raise GeometryError(f"mask planes {array.shape[1:]} differ from the DICOM slices' rows x columns")
    frames = np.stack([array[k] for k in planes]).astype(np.uint8)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="liverctl", version=__version__, family=codes.cid7162.ArtificialIntelligence
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="liverctl",
        manufacturer_model_name="liverctl predict",
        software_versions=__version__,
        device_serial_number="0",
        series_description=description,
        omit_empty_frames=False,
    )
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return Path(path)
