"""Evaluate predicted label maps against reference label maps, per case and region.

:func:`evaluate` takes two files or two folders (paired by file name without the image
suffix, see :func:`liverctl.evaluation.pairing.pair_cases`), reads them as validated label maps and
scores every case and *region*: a named union of labels scored as one binary mask
(:mod:`liverctl.evaluation.regions`), e.g. the LiTS liver = labels 1+2. Without regions every label
is its own region, named by its number (the per-label default). Per region it reports
:func:`liverctl.metrics.compute_metrics`, optionally the normalised surface Dice at
tolerances in mm (:mod:`liverctl.metrics.surface_dice`) and, for a tumour region, lesion
detection and tumour burden (:mod:`liverctl.metrics.lesions`). The result, an
:class:`~liverctl.evaluation.results.EvaluationResult`, holds the rows, summary
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
from typing import TypeVar

import numpy as np

from liverctl.errors import ConfigError, GeometryError, LiverctlWarning
from liverctl.evaluation.comparison import compare_rows
from liverctl.evaluation.pairing import CasePair, check_pairs, pair_cases
from liverctl.evaluation.regions import lesion_labels, resolve_regions
from liverctl.evaluation.results import EvaluationResult
from liverctl.evaluation.scoring import CaseScore, ScoringPlan, dataset_notes, dataset_regions, fill_regions, score_case
from liverctl.io import Image, check_same_grid, read_label
from liverctl.metrics import check_conventions
from liverctl.metrics.lesions import DEFAULT_MIN_DICE, check_lesion_options
from liverctl.metrics.surface_dice import parse_tolerances
from liverctl.progress import ProgressCallback

__all__ = ["evaluate", "evaluate_images", "parse_labels", "resample_to"]

RegionSpec = str | Mapping[str, Sequence[int]] | None
T = TypeVar("T")


# --------------------------------------------------------------------------- options


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
) -> ScoringPlan:
    check_conventions(surface, hd95)
    check_lesion_options(lesion_connectivity, lesion_min_dice)
    wanted = parse_labels(labels)
    resolved = resolve_regions(regions, pred=pred_regions, ref=ref_regions, lesions=lesions)
    if resolved is not None and wanted is not None:
        raise ConfigError("labels and regions exclude each other: name single labels as regions, e.g. tumour=2")
    return ScoringPlan(
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


def _warn(notes: list[str]) -> None:
    for note in notes:
        warnings.warn(note, LiverctlWarning, stacklevel=4)


def _as_label_image(image: Image, what: str) -> Image:
    from liverctl.io import as_label_array

    if image.array.dtype in (np.uint8, np.uint16):  # unsigned 8/16-bit maps are valid as they are
        return image
    return Image(as_label_array(image.array, what), image.geometry)


def _result(
    scores: list[CaseScore], others: list[CaseScore] | None, plan: ScoringPlan, **kw: object
) -> EvaluationResult:
    regions = dataset_regions(scores + (others or []), plan)
    fill_regions(scores, regions, plan)
    if others is not None:
        fill_regions(others, regions, plan)
    rows = [row for s in scores for row in s.rows]
    other_rows = [row for s in others for row in s.rows] if others is not None else None
    notes = dataset_notes(scores + (others or []), regions, plan)
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
    return _result([score_case(case, pred, ref, plan)], None, plan)


def _run(
    jobs: list[T], work: Callable[[T], CaseScore], workers: int, progress: ProgressCallback | None
) -> list[CaseScore]:
    total = len(jobs)
    if progress is not None:
        progress("evaluate", 0, total)
    results: list[CaseScore] = []
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
            ``"msd-liver"``, ``"totalseg"``); see :mod:`liverctl.evaluation.regions`.
        pred_regions: the same for the prediction only, replacing the labels of the regions it
            names there (``pred_regions="liver=5"`` for a TotalSegmentator map).
        ref_regions: the same for the reference only.
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

    def work(pair: CasePair) -> CaseScore:
        p_img, r_img = read_label(pair.pred), read_label(pair.ref)
        p_img = _grid(p_img, r_img, resample_pred, str(pair.pred), str(pair.ref))
        return score_case(pair.case, p_img, r_img, plan)

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
