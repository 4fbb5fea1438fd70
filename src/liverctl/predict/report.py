"""What ``predict`` reports for a scan: volumes, intensities, the box in mm, QC flags, summary CSV.

:func:`case_report` builds the JSON report of one segmentation (its QC flags from
:func:`_qc`); :func:`write_summary` writes one CSV row per case of a batch.
"""

from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverctl import __version__
from liverctl.io import Geometry, Image, write_text_atomic
from liverctl.io.ct import NO_BODY
from liverctl.spatial import bounding_box

if TYPE_CHECKING:
    from liverctl.predict.results import CaseResult

__all__ = [
    "LARGE_COMPONENT_ML",
    "LIVER_VOLUME_RANGE_ML",
    "SUMMARY_FIELDS",
    "case_report",
    "read_summary",
    "write_summary",
]

LARGE_COMPONENT_ML = 10.0
"""A component of the raw prediction at least this large, besides the largest, raises a QC flag."""


LIVER_VOLUME_RANGE_ML = (500.0, 5000.0)
"""Liver volumes outside this range raise a QC flag (adult livers are ~1.2-2.5 L)."""


SUMMARY_FIELDS = (
    "input",
    "mask",
    "status",
    "error",
    "liver_volume_ml",
    "tumour_volume_ml",
    "tumour_burden",
    "voxel_count",
    "hu_mean",
    "hu_std",
    "components_before_cleanup",
    "bbox_min_mm",
    "bbox_max_mm",
    "qc_flags",
    "model",
    "sha256",
    "seconds",
)


def case_report(
    image: Image,
    mask: Image,
    components: list[int],
    notes: list[str],
    stats: Any,
    seconds: float,
    body: bool,
    model: dict[str, Any],
    tumour_label: int | None = None,
) -> dict[str, Any]:
    """The report of one segmentation: ``mask`` on ``image``'s grid, the raw prediction's
    component sizes (voxels, largest first), the CT notes, the engine's
    :class:`~liverctl.inference.InferenceStats` and the model section.

    The liver volume is the whole organ (every non-zero label, as LiTS scores the liver). With
    ``tumour_label`` (models that segment tumours) the report adds ``tumour_volume_ml``,
    ``tumour_voxel_count`` and ``tumour_burden`` (tumour volume / liver volume; ``None`` without
    a liver)."""
    liver = mask.array > 0
    count = int(np.count_nonzero(liver))
    voxel_ml = image.voxel_volume_ml
    hu_values = image.array[liver].astype(np.float64) if count else np.empty(0)
    bbox = _bbox_mm(liver, image) if count else None
    qc = _qc(liver, count * voxel_ml, components, voxel_ml, notes, body, image.geometry)
    tumour: dict[str, Any] = {}
    if tumour_label is not None:
        n_tumour = int(np.count_nonzero(mask.array == tumour_label))
        tumour = {
            "tumour_volume_ml": round(n_tumour * voxel_ml, 3),
            "tumour_voxel_count": n_tumour,
            "tumour_burden": round(n_tumour / count, 6) if count else None,
        }
    return {
        "liver_volume_ml": round(count * voxel_ml, 3),
        "voxel_count": count,
        **tumour,
        "hu_mean": round(float(hu_values.mean()), 2) if count else None,
        "hu_std": round(float(hu_values.std()), 2) if count else None,
        "components_before_cleanup": len(components),
        "component_volumes_ml": [round(c * voxel_ml, 3) for c in components[:10]],
        "bounding_box_mm": bbox,
        "qc": qc,
        "model": model,
        "image": {
            "shape_xyz": list(image.shape[::-1]),
            "spacing_mm": list(image.geometry.spacing),
            "origin_mm": list(image.geometry.origin),
            "direction": list(image.geometry.direction),
        },
        "inference": {
            # resolved: "cuda:0 (NVIDIA H100 80GB HBM3)", "fp16"; tf32: TensorFloat-32 in the forward
            "device": stats.device,
            "precision": stats.precision,
            "tf32": bool(getattr(stats, "tf32", False)),
            "accumulate_on": getattr(stats, "accumulate_on", "device"),
            # every window the networks evaluated: grid windows x mirror passes (--tta) x ensemble members
            "windows": stats.evaluated_voxels // max(int(np.prod(stats.window)), 1),
            "grid_windows": stats.windows,
            "skipped_windows": stats.skipped_windows,
            "window_zyx": list(stats.window),
            "compute_amplification": round(stats.compute_amplification, 3),
            "network_seconds": round(stats.network_seconds, 3),
        },
        "seconds": round(seconds, 3),
        "liverctl_version": __version__,
    }


def _bbox_mm(mask: np.ndarray, image: Image) -> dict[str, list[float]]:
    """The voxel-corner box of a non-empty mask in patient coordinates (mm)."""
    box = bounding_box(mask)
    if box is None:
        raise ValueError("an empty mask has no bounding box")
    lo = np.array([s.start for s in box], dtype=float) - 0.5
    hi = np.array([s.stop - 1 for s in box], dtype=float) + 0.5
    corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    points = image.geometry.index_to_physical(corners)
    low, high = points.min(axis=0), points.max(axis=0)
    return {
        "min_mm": [round(float(v), 2) for v in low],
        "max_mm": [round(float(v), 2) for v in high],
        "size_mm": [round(float(v), 2) for v in high - low],
        "frame": "LPS patient coordinates (x, y, z) of the voxel-corner box",
    }


#: The patient side an array axis points to, by (LPS axis, sign of the direction cosine).
_SIDES = {
    (0, 1): "left",
    (0, -1): "right",
    (1, 1): "posterior",
    (1, -1): "anterior",
    (2, 1): "superior",
    (2, -1): "inferior",
}


def patient_edges(mask: np.ndarray, geometry: Geometry) -> dict[str, bool]:
    """Which edges of the scan ``mask`` (z, y, x) reaches, named in the patient's frame.

    Each array axis is matched to the patient axis its direction cosine is closest to (the
    direction matrix, LPS), so one anatomy stored in any axis order or orientation gets the same
    answer: ``{"superior", "inferior", "left", "right", "anterior", "posterior"} -> bool``.
    """
    direction = geometry.direction_matrix
    edges = dict.fromkeys(_SIDES.values(), False)
    for array_axis in range(3):
        column = direction[:, 2 - array_axis]  # array (z, y, x) = ITK (x, y, z) reversed
        patient = int(np.argmax(np.abs(column)))
        sign = 1 if column[patient] > 0 else -1
        edges[_SIDES[(patient, sign)]] |= bool(np.take(mask, -1, axis=array_axis).any())
        edges[_SIDES[(patient, -sign)]] |= bool(np.take(mask, 0, axis=array_axis).any())
    return edges


def _qc(
    liver: np.ndarray,
    volume_ml: float,
    components: list[int],
    voxel_ml: float,
    notes: list[str],
    body: bool = True,
    geometry: Geometry | None = None,
) -> dict[str, Any]:
    flags: list[str] = []
    messages = list(notes)
    if not body:
        flags.append("no_body")
        messages.append(f"{NO_BODY} in the scan: nothing to segment")
    touches: dict[str, bool] = {}
    if liver.any():
        touches = patient_edges(liver, geometry or Geometry((1.0, 1.0, 1.0)))
        for where in ("superior", "inferior"):
            if touches[where]:
                flags.append(f"touches_{where}")
        if any(touches[s] for s in ("left", "right", "anterior", "posterior")):
            flags.append("touches_side")
        if any(touches.values()):
            messages.append("the liver reaches the edge of the scan: the volume is a lower bound")
    else:
        flags.append("empty")
        messages.append("no liver found")
    large = [c for c in components[1:] if c * voxel_ml >= LARGE_COMPONENT_ML]
    if large:
        flags.append("multiple_large_components")
        messages.append(
            f"{len(large)} further component(s) of >= {LARGE_COMPONENT_ML:g} mL before cleanup "
            f"(largest {large[0] * voxel_ml:.0f} mL): check the mask"
        )
    lo, hi = LIVER_VOLUME_RANGE_ML
    if liver.any() and not lo <= volume_ml <= hi:
        flags.append("volume_out_of_range")
        messages.append(f"liver volume {volume_ml:.0f} mL outside {lo:.0f}-{hi:.0f} mL")
    if notes:
        flags.append("intensities_not_ct")
    return {
        "flags": flags,
        "touches": touches,
        "volume_is_lower_bound": bool(touches and any(touches.values())),
        "messages": messages,
    }


def _summary_row(case: CaseResult) -> dict[str, Any]:
    r = case.report or {}
    bbox = r.get("bounding_box_mm") or {}
    return {
        "input": case.input,
        "mask": str(case.mask) if case.mask else "",
        "status": "ok" if case.ok else "failed",
        "error": case.error or "",
        "liver_volume_ml": r.get("liver_volume_ml", ""),
        "tumour_volume_ml": _blank(r.get("tumour_volume_ml")),
        "tumour_burden": _blank(r.get("tumour_burden")),
        "voxel_count": r.get("voxel_count", ""),
        "hu_mean": r.get("hu_mean", ""),
        "hu_std": r.get("hu_std", ""),
        "components_before_cleanup": r.get("components_before_cleanup", ""),
        "bbox_min_mm": " ".join(str(v) for v in bbox.get("min_mm", [])),
        "bbox_max_mm": " ".join(str(v) for v in bbox.get("max_mm", [])),
        "qc_flags": " ".join((r.get("qc") or {}).get("flags", [])),
        "model": (r.get("model") or {}).get("name", ""),
        "sha256": (r.get("model") or {}).get("sha256", ""),
        "seconds": r.get("seconds", ""),
    }


def _blank(value: Any) -> Any:
    return "" if value is None else value


def write_summary(
    cases: Sequence[CaseResult], path: str | os.PathLike[str], others: Sequence[dict[str, str]] = ()
) -> Path:
    """One CSV row per case with the report's main fields (atomic write); ``others``: rows of
    other scans to keep (:func:`read_summary`), written first."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in others:
        writer.writerow({k: row.get(k, "") for k in SUMMARY_FIELDS})
    for case in cases:
        writer.writerow(_summary_row(case))
    return write_text_atomic(path, buffer.getvalue())


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a summary CSV :func:`write_summary` wrote (none if it is missing or unreadable)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    return [r for r in rows if isinstance(r.get("input"), str)]
