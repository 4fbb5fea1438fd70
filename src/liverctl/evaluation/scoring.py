"""Scoring one case: every region of a prediction/reference pair of label maps.

:func:`score_case` finds each label's bounding box once per map (``find_objects``), crops
both maps to the union of a region's boxes, and computes there the metrics of
:mod:`liverctl.metrics` (bitwise equal to :func:`~liverctl.metrics.compute_metrics` on the
whole masks), the NSD of :mod:`liverctl.metrics.surface_dice` and, for a lesion region, lesion
detection and tumour burden (:mod:`liverctl.metrics.lesions`). :func:`fill_regions`,
:func:`dataset_regions` and :func:`dataset_notes` work on the scores of a whole dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from liverctl.evaluation.regions import ORGAN_NAME, Region, lits_hint, per_label_regions, region_mask
from liverctl.evaluation.results import CaseRow, LesionRow
from liverctl.io import Image
from liverctl.metrics import bounding_box, metrics_from_crops
from liverctl.metrics.lesions import DEFAULT_MIN_DICE, detect_lesions, tumour_burden
from liverctl.metrics.surface_dice import nsd_name
from liverctl.metrics.surface_dice import surface_dice_cropped as _nsd_cropped

__all__ = ["CaseScore", "ScoringPlan", "dataset_notes", "dataset_regions", "fill_regions", "score_case"]


@dataclass(frozen=True)
class ScoringPlan:
    """What to score and how: fixed regions, or one region per label (``labels``; ``None`` = all
    present), with the conventions, NSD tolerances and lesion settings."""

    regions: list[Region] | None
    labels: list[int] | None
    lesion_set: frozenset[int] = frozenset()
    surface: str = "medpy"
    hd95: str = "pooled"
    nsd: tuple[float, ...] = ()
    connectivity: int = 26
    min_dice: float = DEFAULT_MIN_DICE

    @property
    def n_labels(self) -> int:
        """How many distinct labels the fixed regions or labels name (0 when discovered)."""
        if self.regions is not None:
            return len({v for r in self.regions for v in (*r.pred_labels, *r.ref_labels)})
        return len(self.labels or [])

    def regions_for(self, seen: set[int]) -> list[Region]:
        if self.regions is not None:
            return self.regions
        return per_label_regions(self.labels if self.labels is not None else (seen or {1}), self.lesion_set)


@dataclass
class CaseScore:
    """The rows of one case, its lesions, the labels present on each side (when discovered)
    and, per region, whether its prediction and reference masks are non-empty."""

    case: str
    rows: list[CaseRow] = field(default_factory=list)
    lesions: list[LesionRow] = field(default_factory=list)
    seen_pred: set[int] = field(default_factory=set)
    seen_ref: set[int] = field(default_factory=set)
    present: dict[str, tuple[bool, bool]] = field(default_factory=dict)


def _objects(array: np.ndarray) -> list[tuple[slice, ...] | None]:
    return ndi.find_objects(array) if array.size and array.max() > 0 else []


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _box(objects: list[tuple[slice, ...] | None], labels: Sequence[int]) -> tuple[slice, ...] | None:
    """The union of the boxes of ``labels`` (``None`` when none is present)."""
    box = None
    for lab in labels:
        box = _union(box, objects[lab - 1] if lab <= len(objects) else None)
    return box


class _Side:
    """One label map and how to crop a region's mask out of it.

    With ``objects`` (per-label boxes from one ``find_objects`` pass: needed to discover the
    labels, and cheaper than one full pass per region when there are many labels) a region's
    box is the union of its labels' boxes; otherwise its full mask is built once and cropped
    to its bounding box, as :func:`~liverctl.metrics.compute_metrics` does.
    """

    def __init__(self, array: np.ndarray, objects: bool) -> None:
        self.array = array
        self.objects = _objects(array) if objects else None
        self.seen = {i + 1 for i, obj in enumerate(self.objects or []) if obj is not None}

    def mask_and_box(self, labels: Sequence[int]) -> tuple[np.ndarray | None, tuple[slice, ...] | None]:
        if self.objects is not None:
            return None, _box(self.objects, labels)
        full = region_mask(self.array, labels)
        return full, bounding_box(full)

    def count(self, labels: Sequence[int]) -> int:
        full, box = self.mask_and_box(labels)
        if box is None:
            return 0
        return int(np.count_nonzero(full if full is not None else region_mask(self.array[box], labels)))


def _crops(pred: _Side, ref: _Side, region: Region) -> tuple[np.ndarray, np.ndarray]:
    full_p, box_p = pred.mask_and_box(region.pred_labels)
    full_r, box_r = ref.mask_and_box(region.ref_labels)
    box = _union(box_p, box_r)
    if box is None:
        empty = np.zeros((0, 0, 0), bool)
        return empty, empty
    p = full_p[box] if full_p is not None else region_mask(pred.array[box], region.pred_labels)
    r = full_r[box] if full_r is not None else region_mask(ref.array[box], region.ref_labels)
    return p, r


def _burden(side: _Side, tumour: Region, organ: Region, which: str) -> float:
    t_labels = tumour.pred_labels if which == "pred" else tumour.ref_labels
    o_labels = organ.pred_labels if which == "pred" else organ.ref_labels
    common = [v for v in t_labels if v in o_labels]
    return tumour_burden(side.count(t_labels), side.count(o_labels), side.count(common) if common else 0)


def _score_region(
    case: str, region: Region, p: np.ndarray, r: np.ndarray, n_voxels: int, sp: np.ndarray, plan: ScoringPlan
) -> tuple[CaseRow, list[LesionRow]]:
    metrics = metrics_from_crops(p, r, n_voxels, sp, plan.surface, plan.hd95)
    extra: dict[str, float] = {}
    if plan.nsd:
        extra.update(zip((nsd_name(t) for t in plan.nsd), _nsd_cropped(p, r, sp, plan.nsd), strict=True))
    lesions: list[LesionRow] = []
    if region.lesions:
        det = detect_lesions(p, r, connectivity=plan.connectivity, min_dice=plan.min_dice)
        extra.update(det.values())
        ml = float(np.prod(sp)) / 1000.0
        lesions = [
            LesionRow(
                case,
                region.name,
                i + 1,
                det.ref_voxels[i] * ml,
                det.pred_voxels[i] * ml,
                d,
                d > plan.min_dice,
                det.components[i],
            )
            for i, d in enumerate(det.lesion_dice)
        ]
    return CaseRow(case, region.name, metrics, region.pred_labels, region.ref_labels, extra), lesions


def score_case(case: str, pred: Image, ref: Image, plan: ScoringPlan) -> CaseScore:
    sp = np.asarray(ref.spacing_zyx, dtype=np.float64)
    objects = (plan.regions is None and plan.labels is None) or plan.n_labels > 4
    p_side, r_side = _Side(pred.array, objects), _Side(ref.array, objects)
    out = CaseScore(case, seen_pred=p_side.seen, seen_ref=r_side.seen)
    regions = plan.regions_for(p_side.seen | r_side.seen)
    organ = next((reg for reg in regions if reg.name == ORGAN_NAME), None)
    for region in regions:
        p, r = _crops(p_side, r_side, region)
        row, lesions = _score_region(case, region, p, r, pred.array.size, sp, plan)
        out.present[region.name] = (bool(p.any()), bool(r.any()))
        if region.lesions and organ is not None and organ is not region:
            b_pred, b_ref = _burden(p_side, region, organ, "pred"), _burden(r_side, region, organ, "ref")
            row.extra.update(burden_pred=b_pred, burden_ref=b_ref, burden_abs_diff=abs(b_pred - b_ref))
        out.rows.append(row)
        out.lesions.extend(lesions)
    return out


def fill_regions(scores: list[CaseScore], regions: list[Region], plan: ScoringPlan) -> None:
    """Give every case a row for every region (both-empty where the case lacks the label), in region order."""
    tiny = np.zeros((1, 1, 1), bool)
    sp = np.ones(3)
    template: dict[str, CaseRow] = {}
    for score in scores:
        have = {row.region: row for row in score.rows}
        for region in regions:
            if region.name not in have:
                if region.name not in template:
                    template[region.name] = _score_region("", region, tiny, tiny, 1, sp, plan)[0]
                t = template[region.name]
                have[region.name] = CaseRow(
                    score.case, region.name, t.metrics, t.pred_labels, t.ref_labels, dict(t.extra)
                )
        score.rows = [have[region.name] for region in regions]


def dataset_regions(scores: list[CaseScore], plan: ScoringPlan) -> list[Region]:
    if plan.regions is not None:
        return plan.regions
    seen = set().union(*(s.seen_pred | s.seen_ref for s in scores)) if scores else set()
    return plan.regions_for(seen)


def dataset_notes(scores: list[CaseScore], regions: list[Region], plan: ScoringPlan) -> list[str]:
    seen_pred = set().union(*(s.seen_pred for s in scores)) if scores else set()
    seen_ref = set().union(*(s.seen_ref for s in scores)) if scores else set()
    notes: list[str] = []
    if plan.regions is None and plan.labels is None:
        hint = lits_hint(seen_pred | seen_ref)
        if hint:
            notes.append(hint)
    for region in regions:
        if not any(any(s.present.get(region.name, (False, False))) for s in scores):
            what = (
                f"region {region.name!r} ({region.labels_text})" if plan.regions is not None else f"label {region.name}"
            )
            notes.append(f"{what}: no such label in any prediction or reference; every case scores it as both empty")
    return notes
