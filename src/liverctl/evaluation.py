"""Evaluate predicted label maps against reference label maps, per case and region.

:func:`evaluate` takes two files or two folders (paired by file name without the image
suffix, see :func:`liverctl.pairing.pair_cases`), reads them as validated label maps and
scores every case and *region*: a named union of labels scored as one binary mask
(:mod:`liverctl.regions`), e.g. the LiTS liver = labels 1+2. Without regions every label
is its own region, named by its number (the per-label default). Per region it reports
:func:`liverctl.metrics.compute_metrics`, optionally the normalised surface Dice at
tolerances in mm (:mod:`liverctl.surface_dice`) and, for a tumour region, lesion
detection and tumour burden (:mod:`liverctl.lesions`). The result, an
:class:`~liverctl.evaluation_results.EvaluationResult`, holds the rows, summary
statistics, an optional paired comparison with a second method, and CSV/JSON.
:func:`evaluate_images` does the same for two in-memory :class:`~liverctl.io.Image` objects.

Nothing is dropped silently: a case whose prediction or reference is missing is an error
unless ``allow_missing=True``, and then it is listed in ``EvaluationResult.missing``;
an empty mask gets the fixed values documented in :mod:`liverctl.metrics` and is flagged
in the ``empty`` column. Things worth knowing (maps holding LiTS' labels 1 and 2 scored
per label, a region whose labels appear nowhere) are warned about once
(:class:`~liverctl.errors.LiverctlWarning`) and kept in ``EvaluationResult.notes``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy import ndimage as ndi

from liverctl.comparison import ComparisonRow, compare_rows
from liverctl.errors import ConfigError, GeometryError, LiverctlWarning
from liverctl.evaluation_results import STATISTICS, CaseRow, EvaluationResult, LesionRow, conventions, summarize
from liverctl.io import Image, check_same_grid, read_label
from liverctl.lesions import DEFAULT_MIN_DICE, check_lesion_options, detect_lesions, tumour_burden
from liverctl.metrics import check_conventions, metrics_from_crops
from liverctl.pairing import CasePair, check_pairs, pair_cases
from liverctl.progress import ProgressCallback
from liverctl.regions import (
    ORGAN_NAME,
    Region,
    lesion_labels,
    lits_hint,
    per_label_regions,
    region_mask,
    resolve_regions,
)
from liverctl.surface_dice import nsd_name, parse_tolerances
from liverctl.surface_dice import surface_dice_cropped as _nsd_cropped

__all__ = [
    "STATISTICS",
    "CasePair",
    "CaseRow",
    "ComparisonRow",
    "EvaluationResult",
    "LesionRow",
    "compare_rows",
    "conventions",
    "evaluate",
    "evaluate_images",
    "pair_cases",
    "parse_labels",
    "resample_to",
    "summarize",
]

RegionSpec = str | Mapping[str, Sequence[int]] | None
T = TypeVar("T")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Plan:
    """What to score: fixed regions, or one region per label (``labels``; ``None`` = all present)."""

    regions: list[Region] | None
    labels: list[int] | None
    lesion_set: frozenset[int] = frozenset()
    surface: str = "medpy"
    hd95: str = "pooled"
    nsd: tuple[float, ...] = ()
    connectivity: int = 26
    min_dice: float = DEFAULT_MIN_DICE

    def regions_for(self, seen: set[int]) -> list[Region]:
        if self.regions is not None:
            return self.regions
        return per_label_regions(self.labels if self.labels is not None else (seen or {1}), self.lesion_set)


def _plan(
    labels: str | Sequence[int] | None,
    regions: RegionSpec,
    pred_regions: RegionSpec,
    ref_regions: RegionSpec,
    lesions: str | Sequence[str] | None,
    surface: str,
    hd95: str,
    nsd: str | float | Sequence[float] | None,
    lesion_connectivity: int,
    lesion_min_dice: float,
) -> _Plan:
    check_conventions(surface, hd95)
    check_lesion_options(lesion_connectivity, lesion_min_dice)
    wanted = parse_labels(labels)
    resolved = resolve_regions(regions, pred=pred_regions, ref=ref_regions, lesions=lesions)
    if resolved is not None and wanted is not None:
        raise ConfigError("labels and regions exclude each other: name single labels as regions, e.g. tumour=2")
    return _Plan(
        regions=resolved,
        labels=wanted,
        lesion_set=frozenset(lesion_labels(lesions)) if resolved is None else frozenset(),
        surface=surface,
        hd95=hd95,
        nsd=tuple(parse_tolerances(nsd)) if nsd is not None else (),
        connectivity=lesion_connectivity,
        min_dice=float(lesion_min_dice),
    )


def parse_labels(labels: str | Sequence[int] | None) -> list[int] | None:
    """``"1,2"`` / ``[1, 2]`` -> ``[1, 2]``; ``None`` stays ``None`` (all labels present)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        parts = [p.strip() for p in labels.split(",") if p.strip()]
        try:
            out = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"labels must be comma-separated whole numbers such as 1,2; got {labels!r}") from None
    else:
        out = [int(v) for v in labels]
    if not out:
        raise ConfigError("no label given; use e.g. 1 or 1,2")
    if any(v < 1 or v > 65535 for v in out):
        raise ConfigError(f"labels must be between 1 and 65535 (0 is the background); got {labels}")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- grids


def resample_to(image: Image, reference: Image) -> Image:
    """Nearest-neighbour resampling of a label map onto ``reference``'s voxel grid."""
    import SimpleITK as sitk

    moving = image.to_sitk()
    target = sitk.Image([int(s) for s in reference.shape[::-1]], sitk.sitkUInt8)
    reference.geometry.apply_to(target)
    out = sitk.Resample(moving, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, moving.GetPixelID())
    return Image(sitk.GetArrayFromImage(out), reference.geometry)


def _grid(pred: Image, ref: Image, resample_pred: bool, pred_name: str, ref_name: str) -> Image:
    if pred.shape == ref.shape and pred.geometry.mismatch(ref.geometry) is None:
        return pred
    if resample_pred:
        return resample_to(pred, ref)
    try:
        check_same_grid(pred, ref, f"prediction {pred_name}", f"reference {ref_name}")
    except GeometryError as exc:
        raise GeometryError(f"{exc}; resample_pred / --resample-pred resamples the prediction") from None
    return pred  # pragma: no cover - check_same_grid raised


# --------------------------------------------------------------------------- one case


@dataclass
class _CaseScore:
    """The rows of one case, its lesions, and the labels present on each side."""

    case: str
    rows: list[CaseRow] = field(default_factory=list)
    lesions: list[LesionRow] = field(default_factory=list)
    seen_pred: set[int] = field(default_factory=set)
    seen_ref: set[int] = field(default_factory=set)


def _objects(array: np.ndarray) -> list[tuple[slice, ...] | None]:
    return ndi.find_objects(array) if array.size and array.max() > 0 else []


def _box(objects: list[tuple[slice, ...] | None], labels: Sequence[int]) -> tuple[slice, ...] | None:
    box = None
    for lab in labels:
        obj = objects[lab - 1] if lab <= len(objects) else None
        if obj is not None:
            box = (
                obj
                if box is None
                else tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, obj, strict=True))
            )
    return box


class _Side:
    """One label map with its per-label boxes: region masks cropped to a box."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.objects = _objects(array)
        self.seen = {i + 1 for i, obj in enumerate(self.objects) if obj is not None}

    def count(self, labels: Sequence[int]) -> int:
        box = _box(self.objects, labels)
        return 0 if box is None else int(np.count_nonzero(region_mask(self.array[box], labels)))


def _crops(pred: _Side, ref: _Side, region: Region) -> tuple[np.ndarray, np.ndarray]:
    bp, br = _box(pred.objects, region.pred_labels), _box(ref.objects, region.ref_labels)
    box = (
        bp
        if br is None
        else br
        if bp is None
        else tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(bp, br, strict=True))
    )
    if box is None:
        empty = np.zeros((0, 0, 0), bool)
        return empty, empty
    return region_mask(pred.array[box], region.pred_labels), region_mask(ref.array[box], region.ref_labels)


def _burden(side: _Side, tumour: Region, organ: Region, which: str) -> float:
    t_labels = tumour.pred_labels if which == "pred" else tumour.ref_labels
    o_labels = organ.pred_labels if which == "pred" else organ.ref_labels
    common = [v for v in t_labels if v in o_labels]
    return tumour_burden(side.count(t_labels), side.count(o_labels), side.count(common) if common else 0)


def _score_region(
    case: str, region: Region, p: np.ndarray, r: np.ndarray, n_voxels: int, sp: np.ndarray, plan: _Plan
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


def _score_case(case: str, pred: Image, ref: Image, plan: _Plan) -> _CaseScore:
    sp = np.asarray(ref.spacing_zyx, dtype=np.float64)
    p_side, r_side = _Side(pred.array), _Side(ref.array)
    out = _CaseScore(case, seen_pred=p_side.seen, seen_ref=r_side.seen)
    regions = plan.regions_for(p_side.seen | r_side.seen)
    organ = next((reg for reg in regions if reg.name == ORGAN_NAME), None)
    for region in regions:
        p, r = _crops(p_side, r_side, region)
        row, lesions = _score_region(case, region, p, r, pred.array.size, sp, plan)
        if region.lesions and organ is not None and organ is not region:
            b_pred, b_ref = _burden(p_side, region, organ, "pred"), _burden(r_side, region, organ, "ref")
            row.extra.update(burden_pred=b_pred, burden_ref=b_ref, burden_abs_diff=abs(b_pred - b_ref))
        out.rows.append(row)
        out.lesions.extend(lesions)
    return out


def _fill(scores: list[_CaseScore], regions: list[Region], plan: _Plan) -> None:
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


def _union_regions(scores: list[_CaseScore], plan: _Plan) -> list[Region]:
    if plan.regions is not None:
        return plan.regions
    seen = set().union(*(s.seen_pred | s.seen_ref for s in scores)) if scores else set()
    return plan.regions_for(seen)


def _notes(scores: list[_CaseScore], regions: list[Region], plan: _Plan) -> list[str]:
    seen_pred = set().union(*(s.seen_pred for s in scores)) if scores else set()
    seen_ref = set().union(*(s.seen_ref for s in scores)) if scores else set()
    notes: list[str] = []
    if plan.regions is None and plan.labels is None:
        hint = lits_hint(seen_pred | seen_ref)
        if hint:
            notes.append(hint)
    for region in regions:
        if not (set(region.pred_labels) & seen_pred) and not (set(region.ref_labels) & seen_ref):
            what = (
                f"region {region.name!r} ({region.labels_text})" if plan.regions is not None else f"label {region.name}"
            )
            notes.append(f"{what}: no such label in any prediction or reference; every case scores it as both empty")
    return notes


def _warn(notes: list[str]) -> None:
    for note in notes:
        warnings.warn(note, LiverctlWarning, stacklevel=4)


def _as_label_image(image: Image, what: str) -> Image:
    from liverctl.io import as_label_array

    if image.array.dtype in (np.uint8, np.uint16):  # unsigned 8/16-bit maps are valid as they are
        return image
    return Image(as_label_array(image.array, what), image.geometry)


def _result(scores: list[_CaseScore], others: list[_CaseScore] | None, plan: _Plan, **kw: object) -> EvaluationResult:
    regions = _union_regions(scores + (others or []), plan)
    _fill(scores, regions, plan)
    if others is not None:
        _fill(others, regions, plan)
    rows = [row for s in scores for row in s.rows]
    other_rows = [row for s in others for row in s.rows] if others is not None else None
    notes = _notes(scores + (others or []), regions, plan)
    _warn(notes)
    return EvaluationResult(
        rows,
        surface=plan.surface,
        hd95=plan.hd95,
        other_rows=other_rows,
        comparison=compare_rows(rows, other_rows) if other_rows is not None else None,
        regions=regions,
        lesion_rows=[les for s in scores for les in s.lesions],
        other_lesion_rows=[les for s in others for les in s.lesions] if others is not None else None,
        nsd=plan.nsd,
        lesion_connectivity=plan.connectivity,
        lesion_min_dice=plan.min_dice,
        notes=notes,
        **kw,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- public API


def evaluate_images(
    pred: Image,
    ref: Image,
    *,
    case: str = "case",
    labels: str | Sequence[int] | None = None,
    regions: RegionSpec = None,
    pred_regions: RegionSpec = None,
    ref_regions: RegionSpec = None,
    lesions: str | Sequence[str] | None = None,
    nsd: str | float | Sequence[float] | None = None,
    surface: str = "medpy",
    hd95: str = "pooled",
    lesion_connectivity: int = 26,
    lesion_min_dice: float = DEFAULT_MIN_DICE,
    resample_pred: bool = False,
) -> EvaluationResult:
    """Evaluate one in-memory prediction against its reference (label maps or masks).

    Takes the options of :func:`evaluate` that make sense for one pair; ``case`` names
    the case in the result rows. The prediction must lie on the reference grid unless
    ``resample_pred`` (nearest neighbour onto it).
    """
    plan = _plan(
        labels, regions, pred_regions, ref_regions, lesions, surface, hd95, nsd, lesion_connectivity, lesion_min_dice
    )
    pred, ref = _as_label_image(pred, "prediction"), _as_label_image(ref, "reference")
    pred = _grid(pred, ref, resample_pred, "prediction", "reference")
    return _result([_score_case(case, pred, ref, plan)], None, plan)


def _run(
    jobs: list[T], work: Callable[[T], _CaseScore], workers: int, progress: ProgressCallback | None
) -> list[_CaseScore]:
    total = len(jobs)
    if progress is not None:
        progress("evaluate", 0, total)
    results: list[_CaseScore] = []
    if workers == 1 or total == 1:
        for i, job in enumerate(jobs, start=1):
            results.append(work(job))
            if progress is not None:
                progress("evaluate", i, total)
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(work, job) for job in jobs]
        try:
            for i, fut in enumerate(futures, start=1):
                results.append(fut.result())
                if progress is not None:
                    progress("evaluate", i, total)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results


def _pairs(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    compare: str | os.PathLike[str] | None,
    allow_missing: bool,
) -> tuple[list[CasePair], list[CasePair], list[str]]:
    pairs, missing = pair_cases(pred, ref)
    check_pairs(pairs, missing, allow_missing, str(pred))
    other_pairs: list[CasePair] = []
    if compare is not None:
        other_pairs, other_missing = pair_cases(compare, ref)
        check_pairs(other_pairs, other_missing, allow_missing, str(compare))
        missing = missing + [f"{m} (compare)" for m in other_missing]
    if missing:
        warnings.warn(
            f"{len(missing)} case(s) left out for lack of a partner: {'; '.join(missing[:5])}"
            + (f"; and {len(missing) - 5} more" if len(missing) > 5 else ""),
            LiverctlWarning,
            stacklevel=3,
        )
    return pairs, other_pairs, missing


def evaluate(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    *,
    labels: str | Sequence[int] | None = None,
    regions: RegionSpec = None,
    pred_regions: RegionSpec = None,
    ref_regions: RegionSpec = None,
    lesions: str | Sequence[str] | None = None,
    nsd: str | float | Sequence[float] | None = None,
    surface: str = "medpy",
    hd95: str = "pooled",
    lesion_connectivity: int = 26,
    lesion_min_dice: float = DEFAULT_MIN_DICE,
    allow_missing: bool = False,
    resample_pred: bool = False,
    compare: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Evaluate predicted label maps against reference label maps.

    Args:
        pred: a prediction file, or a folder of them.
        ref: the reference file, or a folder of them (paired with ``pred`` by name:
            ``case_01.nii.gz`` with ``case_01.nii.gz`` or ``case_01.mha``).
        labels: labels to evaluate one by one (``[1, 2]`` or ``"1,2"``); ``None`` = every
            non-zero label present anywhere in the dataset. Excludes ``regions``.
        regions: named unions of labels, each scored as one mask, for both sides:
            ``"liver=1+2,tumour=2"``, ``{"liver": [1, 2]}`` or a preset (``"lits"``,
            ``"msd-liver"``, ``"totalseg"``); see :mod:`liverctl.regions`.
        pred_regions, ref_regions: the same for one side only, replacing the labels of the
            regions they name there (``pred_regions="liver=5"`` for a TotalSegmentator map).
        lesions: the regions that get lesion detection and tumour burden (names; ``"none"``);
            ``None`` = regions named tumour/tumor/lesion(s). In per-label scoring, labels.
        nsd: normalised surface Dice tolerances in mm (``"1,2"``, ``[1, 2]``, ``1``).
        surface: ``"medpy"`` (6-connected border, default) or ``"lits"`` (18-connected).
        hd95: ``"pooled"`` (MedPy, default) or ``"directed-max"`` (MONAI).
        lesion_connectivity: 6, 18 or 26 (default) for lesion components.
        lesion_min_dice: a reference lesion is detected above this Dice (0.2, LiTS).
        allow_missing: evaluate the complete pairs when some case lacks its prediction
            or reference (listed in ``missing`` and warned about); otherwise that is a
            :class:`~liverctl.errors.DatasetError`.
        resample_pred: resample a prediction whose grid differs from its reference onto
            the reference grid (nearest neighbour); otherwise a
            :class:`~liverctl.errors.GeometryError`.
        compare: a second method's predictions (file or folder, paired the same way);
            adds a paired t-test and a Wilcoxon test per region and metric.
        workers: cases evaluated in parallel (threads).
        progress: receives ``("evaluate", done, total)`` after each case.

    Raises:
        InputError, ImageFormatError, LabelError: a missing, unreadable, 2D/4D file or
            one holding non-label values.
        GeometryError, DatasetError, ConfigError: see above.
    """
    plan = _plan(
        labels, regions, pred_regions, ref_regions, lesions, surface, hd95, nsd, lesion_connectivity, lesion_min_dice
    )
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    pairs, other_pairs, missing = _pairs(pred, ref, compare, allow_missing)

    def work(pair: CasePair) -> _CaseScore:
        p_img, r_img = read_label(pair.pred), read_label(pair.ref)
        p_img = _grid(p_img, r_img, resample_pred, str(pair.pred), str(pair.ref))
        return _score_case(pair.case, p_img, r_img, plan)

    scores = _run(pairs + other_pairs, work, workers, progress)
    return _result(
        scores[: len(pairs)],
        scores[len(pairs) :] if compare is not None else None,
        plan,
        missing=missing,
        method=str(pred),
        other="" if compare is None else str(compare),
        reference=str(ref),
    )
