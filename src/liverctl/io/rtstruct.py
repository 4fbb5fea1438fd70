"""Liver masks as DICOM RT Structure Sets (RTSTRUCT) that reference their source series.

Radiotherapy planning systems read RTSTRUCT, not DICOM-SEG. :func:`write_rtstruct` writes one
structure set with a ROI "Liver" (the whole liver region, tumour included, as LiTS scores it)
and, for a liver + tumour label map (liver 1, tumour 2), a ROI "Tumour": each a set of closed
planar contours, one or more per source slice, in patient coordinates (mm), each contour
referencing the SOP instance of the slice it lies on; the structure set references the source
study, series and frame of reference.

Library choice (issue 22): rt-utils builds RTSTRUCTs on OpenCV (``opencv-python``, a large
binary dependency) and predates pydicom 3; highdicom, already liverctl's DICOM-SEG writer, has no
RTSTRUCT class. So the dataset is written with pydicom following the RT Structure Set IOD
(DICOM PS3.3 A.19), with highdicom's UID generator, and the contours come from scikit-image's
marching squares (:func:`skimage.measure.find_contours` at level 0.5: outer boundaries and
hole boundaries, which readers combine by the even-odd rule). Rasterising the contours back
onto the slice grid (pixel centres inside, even-odd) gives the mask again (Dice >= 0.98 on the
test series, usually 1.0).

It needs the optional ``highdicom`` and ``pydicom`` (``pip install 'liverctl[dicom]'``).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, InputError

__all__ = ["REQUIRED_UIDS", "check_available", "check_series", "contours_of", "rasterise", "write_rtstruct"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_COMPONENT = "1.2.840.10008.3.1.2.3.1"  # the SOP class RTReferencedStudySequence conventionally names
#: What a source series must carry for a structure set to reference it.
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
_COLOURS = {"Liver": [220, 120, 40], "Tumour": [240, 20, 60]}


def check_available() -> None:
    """Refuse ``--output-format rtstruct`` early when pydicom/highdicom are not installed."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--output-format rtstruct needs highdicom and pydicom: pip install 'liverctl[dicom]'"
        ) from None


def check_series(files: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse a series a structure set cannot reference (no SOP/Study/Series/Frame of Reference UID)."""
    import pydicom

    first = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    missing = [k for k in REQUIRED_UIDS if not first.get(k)]
    if missing:
        raise InputError(
            f"cannot write an RTSTRUCT for {Path(files[0]).parent}: the series has no {', '.join(missing)} "
            "to reference (anonymised too far?); use --output-format nii.gz"
        )


def contours_of(plane: np.ndarray) -> list[np.ndarray]:
    """The closed contours of a 2D binary plane, each an ``(n, 2)`` array of (row, column) in
    pixel units (pixel centres at integers), last point not repeated: outer boundaries and holes."""
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(plane, dtype=np.uint8), 1)
    out = []
    for contour in find_contours(padded, 0.5):
        contour = approximate_polygon(contour, tolerance=0.0)  # only points on a straight run: the same polygon
        points = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(points) >= 3:
            out.append(points - 1.0)
    return out


def rasterise(contours: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres lie inside ``contours`` ((row, column) polygons), by the even-odd
    rule (a scanline fill over every edge of every contour: holes and islands as readers draw them)."""
    height, width = shape
    polygons = [np.asarray(p, float) for p in contours if len(p) >= 3]
    if not polygons:
        return np.zeros(shape, dtype=bool)
    start = np.concatenate(polygons)
    stop = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    low, high = np.minimum(start[:, 0], stop[:, 0]), np.maximum(start[:, 0], stop[:, 0])
    edges = np.zeros((height, width + 1), dtype=np.int32)
    for row in range(max(0, int(np.ceil(low.min()))), min(height - 1, int(np.floor(high.max()))) + 1):
        hit = (low <= row) & (row < high)  # half-open: a vertex on the scanline counts once
        if not hit.any():
            continue
        a, b = start[hit], stop[hit]
        xs = np.sort(a[:, 1] + (row - a[:, 0]) / (b[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))
        first = np.clip(np.ceil(xs[0::2]), 0, width).astype(int)  # centres inside each pair of crossings
        last = np.clip(np.floor(xs[1::2]) + 1, 0, width).astype(int)
        np.add.at(edges[row], first, 1)
        np.add.at(edges[row], last, -1)
    return np.cumsum(edges, axis=1)[:, :width] > 0


def _affine(geometry: Any) -> tuple[np.ndarray, np.ndarray]:
    origin = np.asarray(geometry.origin, float)
    matrix = np.asarray(geometry.direction, float).reshape(3, 3) @ np.diag(np.asarray(geometry.spacing, float))
    return origin, matrix


def _slice_of(sources: Sequence[Any], files: Sequence[str | os.PathLike[str]], geometry: Any, n: int) -> dict[int, Any]:
    """Each plane ``k`` of the grid -> the source dataset lying on it."""
    from liverctl.io.dicom_seg import source_planes

    return dict(zip(source_planes(sources, files, geometry, n), sources, strict=True))


def _contour_items(region: np.ndarray, geometry: Any, slices: dict[int, Any]) -> list[Any]:
    """The ContourSequence items of one ROI: every contour of every plane, in patient mm."""
    from pydicom.dataset import Dataset

    origin, matrix = _affine(geometry)
    items = []
    for k in range(region.shape[0]):
        if not region[k].any():
            continue
        ds = slices[k]
        for points in contours_of(region[k]):
            ijk = np.column_stack([points[:, 1], points[:, 0], np.full(len(points), float(k))])  # (x=col, y=row, k)
            xyz = origin + ijk @ matrix.T
            image = Dataset()
            image.ReferencedSOPClassUID = ds.SOPClassUID
            image.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            item = Dataset()
            item.ContourImageSequence = [image]
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(xyz)
            item.ContourData = [f"{v:.4f}".rstrip("0").rstrip(".") for v in xyz.ravel()]
            items.append(item)
    return items


def _references(sources: Sequence[Any]) -> Any:
    """ReferencedFrameOfReferenceSequence: frame of reference -> study -> series -> every slice."""
    from pydicom.dataset import Dataset

    first = sources[0]
    images = []
    for ds in sources:
        image = Dataset()
        image.ReferencedSOPClassUID = ds.SOPClassUID
        image.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        images.append(image)
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = images
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_COMPONENT
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return [frame]


def _header(first: Any, description: str) -> Any:
    """Patient, study, RT series, equipment and SOP common modules (patient and study copied)."""
    import highdicom as hd
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian

    from liverctl import __version__

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = hd.UID()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian  # 4-byte lengths: a long ContourData stays DS, not UN
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    now = _dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, meta.MediaStorageSOPInstanceUID
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):  # fmt: skip
        setattr(ds, key, first.get(key, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = int(first.get("SeriesNumber") or 0) + 2000
    ds.SeriesDescription = description
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = "liverctl", "liverctl predict", __version__
    ds.StructureSetLabel = "liverctl"
    ds.StructureSetName = description[:64]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.StructureSetDate, ds.StructureSetTime
    return ds


def _roi(number: int, name: str, frame_uid: str, contours: list[Any]) -> tuple[Any, Any, Any]:
    """StructureSetROISequence, ROIContourSequence and RTROIObservationsSequence items of one ROI."""
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame_uid, name
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = "liverctl predict"
    contour = Dataset()
    contour.ROIDisplayColor = _COLOURS.get(name, [255, 255, 0])
    contour.ReferencedROINumber = number
    contour.ContourSequence = contours
    observation = Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = number, number
    observation.RTROIInterpretedType = "ORGAN" if name == "Liver" else ""
    observation.ROIInterpreter = ""
    return roi, contour, observation


def write_rtstruct(
    mask: np.ndarray,
    geometry: Any,
    files: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    description: str = "liverctl liver",
) -> Path:
    """Write ``mask`` (z, y, x on ``geometry``, the scan's grid: 0 background, >= 1 liver, 2
    tumour) as an RTSTRUCT referencing the DICOM series ``files``; atomically. Returns ``path``."""
    check_available()
    import pydicom

    from liverctl.io.files import atomic_path

    check_series(files)
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    labels = np.asarray(mask)
    if (int(sources[0].Rows), int(sources[0].Columns)) != labels.shape[1:]:
        raise InputError(f"mask planes {labels.shape[1:]} differ from the DICOM slices' rows x columns")
    slices = _slice_of(sources, files, geometry, labels.shape[0])
    regions = {"Liver": labels > 0, **({"Tumour": labels == 2} if (labels == 2).any() else {})}
    ds = _header(sources[0], description)
    ds.ReferencedFrameOfReferenceSequence = _references(sources)
    frame_uid = sources[0].FrameOfReferenceUID
    items = [_roi(i, name, frame_uid, _contour_items(region, geometry, slices)) for i, (name, region) in
             enumerate(regions.items(), start=1)]  # fmt: skip
    ds.StructureSetROISequence = [roi for roi, _, _ in items]
    ds.ROIContourSequence = [contour for _, contour, _ in items]
    ds.RTROIObservationsSequence = [observation for _, _, observation in items]
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return Path(path)
