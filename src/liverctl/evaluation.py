"""Evaluate predicted masks against reference masks: pairing, per-case rows, summaries, statistics.

:func:`evaluate` takes two files or two folders (paired by file name without the image
suffix, see :func:`liverctl.io.image_stem`), reads them as validated label maps,
computes :func:`liverctl.metrics.label_metrics` for every case and label, and returns an
:class:`EvaluationResult` holding the per-case rows, summary statistics (mean, sample
standard deviation, median, min, max, and global Dice), an optional paired comparison
with a second method, and CSV/JSON serialisations. :func:`evaluate_images` does the same
for two in-memory :class:`~liverctl.io.Image` objects.

Nothing is dropped silently: a case whose prediction or reference is missing is an error
unless ``allow_missing=True``, and then it is listed in :attr:`EvaluationResult.missing`;
an empty mask gets the fixed values documented in :mod:`liverctl.metrics` and is flagged
in the ``empty`` column.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, DatasetError, GeometryError, InputError
from liverctl.io import IMAGE_SUFFIXES, Image, check_same_grid, image_stem, list_images, read_label
from liverctl.metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    PairMetrics,
    check_conventions,
    compute_metrics,
    label_metrics,
)
from liverctl.progress import ProgressCallback

#: Summary statistics, in report order.
STATISTICS: tuple[str, ...] = ("mean", "std", "median", "min", "max")

_EMPTY_NOTE = {
    "": "",
    "pred": "prediction empty",
    "ref": "reference empty",
    "both": "both empty",
}


@dataclass(frozen=True)
class CaseRow:
    """The metrics of one label of one case."""

    case: str
    label: int
    metrics: PairMetrics

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "label": self.label, **self.metrics.values(), "empty": self.metrics.empty}


@dataclass(frozen=True)
class ComparisonRow:
    """Paired tests of one metric of one label between two methods over the same cases.

    ``mean_diff`` is mean(method - other). The p-values are two-sided; with fewer than two
    pairs they are ``None``; when every difference is zero both tests report statistic 0
    and p = 1.
    """

    label: int
    metric: str
    n: int
    mean_method: float
    mean_other: float
    mean_diff: float
    t_statistic: float | None
    t_pvalue: float | None
    wilcoxon_statistic: float | None
    wilcoxon_pvalue: float | None
    better: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class EvaluationResult:
    """Per-case rows, summaries and (optionally) a comparison; see :func:`evaluate`.

    Attributes:
        rows: one :class:`CaseRow` per case and label, cases in name order.
        surface, hd95: the conventions used (see :mod:`liverctl.metrics`).
        missing: ``"<case>: no prediction"`` / ``"<case>: no reference"`` entries left
            out because ``allow_missing`` was set.
        other_rows: the rows of the ``compare`` method, when one was given.
        comparison: paired tests per label and metric, when ``compare`` was given.
        method, other, reference: what was evaluated (paths or names), for provenance.
    """

    rows: list[CaseRow]
    surface: str = "medpy"
    hd95: str = "pooled"
    missing: list[str] = field(default_factory=list)
    other_rows: list[CaseRow] | None = None
    comparison: list[ComparisonRow] | None = None
    method: str = ""
    other: str = ""
    reference: str = ""

    @property
    def labels(self) -> list[int]:
        return sorted({row.label for row in self.rows})

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(row.case for row in self.rows))

    def conventions(self) -> dict[str, str]:
        """Human-readable description of the conventions behind the numbers."""
        return conventions(self.surface, self.hd95)

    def values(self, metric: str, label: int) -> np.ndarray:
        """Per-case values of one metric for one label, in case order."""
        return np.array([getattr(r.metrics, metric) for r in self.rows if r.label == label], dtype=float)

    def summary(self) -> dict[int, dict[str, dict[str, float]]]:
        """``{label: {statistic: {metric: value}}}`` with :data:`STATISTICS` plus ``n``.

        ``std`` is the sample standard deviation (``ddof=1``; 0 for a single case).
        """
        out: dict[int, dict[str, dict[str, float]]] = {}
        for label in self.labels:
            stats = {name: summarize(self.values(name, label)) for name in METRIC_NAMES}
            out[label] = {s: {name: stats[name][s] for name in METRIC_NAMES} for s in (*STATISTICS, "n")}
        return out

    def dice_global(self, label: int) -> float:
        """Dice over the whole dataset: 2 ΣTP / (Σ|P| + Σ|G|) (1 when every mask is empty)."""
        rows = [r.metrics for r in self.rows if r.label == label]
        tp = sum(m.tp for m in rows)
        den = sum(m.n_pred + m.n_ref for m in rows)
        return 1.0 if den == 0 else 2.0 * tp / den

    def empty_counts(self, label: int) -> dict[str, int]:
        """How many cases of ``label`` had an empty prediction, reference or both."""
        flags = [r.metrics.empty for r in self.rows if r.label == label]
        return {k: flags.count(k) for k in ("pred", "ref", "both")}

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (non-finite numbers become ``None``)."""
        summary = self.summary()
        data: dict[str, Any] = {
            "method": self.method,
            "reference": self.reference,
            "conventions": self.conventions(),
            "metrics": list(METRIC_NAMES),
            "cases": [r.as_dict() for r in self.rows],
            "summary": {
                str(label): {
                    **summary[label],
                    "dice_per_case_mean": summary[label]["mean"]["dice"],
                    "dice_global": self.dice_global(label),
                    "empty_cases": self.empty_counts(label),
                }
                for label in self.labels
            },
            "missing": list(self.missing),
        }
        if self.comparison is not None:
            data["other"] = self.other
            data["other_cases"] = [r.as_dict() for r in self.other_rows or []]
            data["comparison"] = [c.as_dict() for c in self.comparison]
        return _finite(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_csv(self) -> str:
        """Per-case rows (``row=case``), then summary rows (``row=mean``, ``std``, ...,
        ``dice_global``) and, with a comparison, ``other_mean``, ``t_test_p`` and
        ``wilcoxon_p`` rows whose metric columns hold those values. Every row carries the
        conventions used, so CSVs of different runs can be concatenated safely."""
        buf = _io.StringIO()
        fields = ["row", "case", "label", *METRIC_NAMES, "empty", "surface", "hd95_convention"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        conv = {"surface": self.surface, "hd95_convention": self.hd95}

        def fmt(values: dict[str, Any]) -> dict[str, Any]:
            return {k: _csv_value(v) for k, v in values.items()}

        for r in self.rows:
            writer.writerow(fmt({"row": "case", **r.as_dict(), **conv}))
        summary = self.summary()
        for label in self.labels:
            for stat in STATISTICS:
                writer.writerow(fmt({"row": stat, "case": "", "label": label, **summary[label][stat], **conv}))
            writer.writerow(
                fmt({"row": "dice_global", "case": "", "label": label, "dice": self.dice_global(label), **conv})
            )
        if self.comparison is not None:
            for key, attr in (
                ("other_mean", "mean_other"),
                ("t_test_p", "t_pvalue"),
                ("wilcoxon_p", "wilcoxon_pvalue"),
            ):
                for label in self.labels:
                    vals = {c.metric: getattr(c, attr) for c in self.comparison if c.label == label}
                    writer.writerow(fmt({"row": key, "case": "", "label": label, **vals, **conv}))
        return buf.getvalue()


def conventions(surface: str, hd95: str) -> dict[str, str]:
    """Describe the conventions in words (used in every output)."""
    from liverctl.metrics import EMPTY_DISTANCE_MM, EMPTY_RVD

    surf = {
        "medpy": "medpy: border = mask minus its 6-connected erosion (MedPy 0.5.2)",
        "lits": "lits: border = mask minus its 18-connected erosion (LiTS scoring)",
    }[surface]
    h95 = {
        "pooled": "pooled: 95th percentile of both directed distance lists pooled (MedPy hd95)",
        "directed-max": "directed-max: larger of the two directed 95th percentiles (MONAI)",
    }[hd95]
    return {
        "surface": surf,
        "hd95": h95,
        "distances": "Euclidean, between border voxel centres, in mm using the voxel spacing; "
        "ASSD/RMSD/HD over the pooled two-way list",
        "rvd": "(|pred| - |ref|) / |ref|, signed",
        "volumes": "millilitres",
        "empty": f"both empty: Dice 1, distances 0; one empty: Dice 0, distances {EMPTY_DISTANCE_MM:g} mm, "
        f"RVD {EMPTY_RVD:g} when the reference is empty",
        "std": "sample standard deviation (ddof=1)",
    }


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, sample std (ddof=1, 0 for one value), median, min, max and n of ``values``."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "mean": float(np.mean(v)),
        "std": float(np.std(v, ddof=1)) if v.size > 1 else 0.0,
        "median": float(np.median(v)),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
        "n": int(v.size),
    }


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return repr(float(v)) if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    return v


# --------------------------------------------------------------------------- pairing


@dataclass(frozen=True)
class CasePair:
    """One case: its name, prediction path and reference path."""

    case: str
    pred: Path
    ref: Path


def pair_cases(pred: str | os.PathLike[str], ref: str | os.PathLike[str]) -> tuple[list[CasePair], list[str]]:
    """Pair two files, or the image files of two folders by name.

    Returns the pairs (sorted by case name) and the missing partners as
    ``"<case>: no prediction"`` / ``"<case>: no reference"``.
    """
    p, r = Path(pred), Path(ref)
    for path, what in ((p, "prediction"), (r, "reference")):
        if not path.exists():
            raise InputError(f"no such {what} file or folder: {path}")
    if p.is_dir() != r.is_dir():
        kind = "a folder" if p.is_dir() else "a file"
        raise InputError(f"prediction {p} is {kind} but reference {r} is not; give two files or two folders")
    if not p.is_dir():
        return [CasePair(image_stem(r), p, r)], []
    preds = {image_stem(f): f for f in list_images(p)}
    refs = {image_stem(f): f for f in list_images(r)}
    suffixes = ", ".join(IMAGE_SUFFIXES)
    if not refs:
        raise DatasetError(f"no image files ({suffixes}) in reference folder {r}")
    if not preds:
        raise DatasetError(f"no image files ({suffixes}) in prediction folder {p}")
    pairs = [CasePair(c, preds[c], refs[c]) for c in sorted(preds.keys() & refs.keys())]
    missing = [f"{c}: no prediction" for c in sorted(refs.keys() - preds.keys())]
    missing += [f"{c}: no reference" for c in sorted(preds.keys() - refs.keys())]
    return pairs, missing


def _check_missing(pairs: list[CasePair], missing: list[str], allow_missing: bool, where: str) -> None:
    if missing and not allow_missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} case(s) of {where} lack a partner ({shown}); "
            f"allow_missing / --allow-missing evaluates the {len(pairs)} complete pair(s)"
        )
    if not pairs:
        raise DatasetError(f"no prediction in {where} matches a reference by file name")


# --------------------------------------------------------------------------- reading


# --------------------------------------------------------------------------- per case


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


def _case_metrics(
    pred: Image,
    ref: Image,
    labels: Sequence[int] | None,
    surface: str,
    hd95: str,
    resample_pred: bool,
    pred_name: str = "prediction",
    ref_name: str = "reference",
) -> dict[int, PairMetrics]:
    pred = _grid(pred, ref, resample_pred, pred_name, ref_name)
    return label_metrics(pred.array, ref.array, ref.spacing_zyx, labels, surface=surface, hd95=hd95)  # type: ignore[arg-type]


def _rows(case: str, per_label: dict[int, PairMetrics]) -> list[CaseRow]:
    return [CaseRow(case, lab, m) for lab, m in sorted(per_label.items())]


def _fill_labels(results: list[tuple[str, dict[int, PairMetrics]]], labels: Sequence[int] | None) -> list[CaseRow]:
    """Rows for every case and label. A label of ``labels`` (or, when ``None``, seen in any
    case) that is absent from a case gets a both-empty row there, so no case drops out of
    that label's mean."""
    fill = list(labels) if labels is not None else sorted({lab for _, per in results for lab in per}) or [1]
    both_empty = compute_metrics(np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1), bool))
    rows: list[CaseRow] = []
    for case, per in results:
        for lab in fill:
            per.setdefault(lab, both_empty)
        rows.extend(_rows(case, per))
    return rows


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


# --------------------------------------------------------------------------- comparison


def compare_rows(
    rows: list[CaseRow], other_rows: list[CaseRow], metrics: Sequence[str] = METRIC_NAMES
) -> list[ComparisonRow]:
    """Paired t-test and Wilcoxon signed-rank test per label and metric over the cases both methods have."""
    from scipy import stats

    other = {(r.case, r.label): r.metrics for r in other_rows}
    out: list[ComparisonRow] = []
    for label in sorted({r.label for r in rows}):
        pairs = [(r.metrics, other[(r.case, label)]) for r in rows if r.label == label and (r.case, label) in other]
        for name in metrics:
            a = np.array([getattr(m, name) for m, _ in pairs], dtype=float)
            b = np.array([getattr(o, name) for _, o in pairs], dtype=float)
            n = int(a.size)
            t_stat = t_p = w_stat = w_p = None
            d = a - b
            if n >= 2 and not np.any(d):
                t_stat, t_p, w_stat, w_p = 0.0, 1.0, 0.0, 1.0
            elif n >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = stats.ttest_rel(a, b)
                    w = stats.wilcoxon(a, b)
                t_stat, t_p = float(t.statistic), float(t.pvalue)
                w_stat, w_p = float(w.statistic), float(w.pvalue)
            mean_a = float(a.mean()) if n else math.nan
            mean_b = float(b.mean()) if n else math.nan
            diff = mean_a - mean_b
            if name in HIGHER_IS_BETTER:
                better = "method" if diff > 0 else "other" if diff < 0 else "tie"
            elif name == "rvd":
                da, db = float(np.mean(np.abs(a))) if n else 0.0, float(np.mean(np.abs(b))) if n else 0.0
                better = "method" if da < db else "other" if da > db else "tie"
            elif name in ("pred_ml", "ref_ml"):
                better = ""
            else:
                better = "method" if diff < 0 else "other" if diff > 0 else "tie"
            out.append(ComparisonRow(label, name, n, mean_a, mean_b, diff, t_stat, t_p, w_stat, w_p, better))
    return out


# --------------------------------------------------------------------------- public API


def evaluate_images(
    pred: Image,
    ref: Image,
    *,
    case: str = "case",
    labels: str | Sequence[int] | None = None,
    surface: str = "medpy",
    hd95: str = "pooled",
    resample_pred: bool = False,
) -> EvaluationResult:
    """Evaluate one in-memory prediction against its reference (label maps or masks).

    Args:
        pred, ref: :class:`~liverctl.io.Image` label maps; the prediction must lie on the
            reference grid unless ``resample_pred`` (nearest neighbour onto it).
        case: the name of the case in the result rows.
        labels: labels to evaluate (``[1, 2]`` or ``"1,2"``); ``None`` = every non-zero
            label present in either map (label 1 if both are empty).
        surface, hd95: conventions, see :mod:`liverctl.metrics`.
    """
    check_conventions(surface, hd95)
    wanted = parse_labels(labels)
    from liverctl.io import as_label_array

    if pred.array.dtype not in (np.uint8, np.uint16):  # unsigned 8/16-bit maps are valid as they are
        pred = Image(as_label_array(pred.array, "prediction"), pred.geometry)
    if ref.array.dtype not in (np.uint8, np.uint16):
        ref = Image(as_label_array(ref.array, "reference"), ref.geometry)
    per = _case_metrics(pred, ref, wanted, surface, hd95, resample_pred)
    return EvaluationResult(_fill_labels([(case, per)], wanted), surface=surface, hd95=hd95)


def evaluate(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    *,
    labels: str | Sequence[int] | None = None,
    surface: str = "medpy",
    hd95: str = "pooled",
    allow_missing: bool = False,
    resample_pred: bool = False,
    compare: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> EvaluationResult:
    """Evaluate predicted masks against reference masks.

    Args:
        pred: a prediction file, or a folder of them.
        ref: the reference file, or a folder of them (paired with ``pred`` by name:
            ``case_01.nii.gz`` with ``case_01.nii.gz`` or ``case_01.mha``).
        labels: labels to evaluate (``[1, 2]`` or ``"1,2"``); ``None`` = every non-zero
            label present anywhere in the dataset. Every case gets a row per label.
        surface: ``"medpy"`` (6-connected border, default) or ``"lits"`` (18-connected).
        hd95: ``"pooled"`` (MedPy, default) or ``"directed-max"`` (MONAI).
        allow_missing: evaluate the complete pairs when some case lacks its prediction
            or reference (they are listed in :attr:`EvaluationResult.missing` and warned
            about); otherwise that is a :class:`~liverctl.errors.DatasetError`.
        resample_pred: resample a prediction whose grid differs from its reference onto
            the reference grid (nearest neighbour); otherwise that is a
            :class:`~liverctl.errors.GeometryError`.
        compare: a second method's predictions (file or folder, paired the same way);
            adds a paired t-test and a Wilcoxon test per label and metric.
        workers: cases evaluated in parallel (threads).
        progress: receives ``("evaluate", done, total)`` after each case.

    Raises:
        InputError, ImageFormatError, LabelError: a missing, unreadable, 2D/4D file or
            one holding non-label values.
        GeometryError, DatasetError, ConfigError: see above.
    """
    from liverctl.errors import LiverctlWarning

    check_conventions(surface, hd95)
    wanted = parse_labels(labels)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    pairs, missing = pair_cases(pred, ref)
    _check_missing(pairs, missing, allow_missing, str(pred))
    other_pairs: list[CasePair] = []
    if compare is not None:
        other_pairs, other_missing = pair_cases(compare, ref)
        _check_missing(other_pairs, other_missing, allow_missing, str(compare))
        missing = missing + [f"{m} (compare)" for m in other_missing]
    if missing:
        warnings.warn(
            f"{len(missing)} case(s) left out for lack of a partner: {'; '.join(missing[:5])}"
            + (f"; and {len(missing) - 5} more" if len(missing) > 5 else ""),
            LiverctlWarning,
            stacklevel=2,
        )

    jobs = [(p, "method") for p in pairs] + [(p, "other") for p in other_pairs]

    def run(job: tuple[CasePair, str]) -> tuple[str, dict[int, PairMetrics]]:
        pair, _ = job
        p_img, r_img = read_label(pair.pred), read_label(pair.ref)
        return pair.case, _case_metrics(
            p_img, r_img, wanted, surface, hd95, resample_pred, str(pair.pred), str(pair.ref)
        )

    results: list[tuple[str, dict[int, PairMetrics]]] = []
    total = len(jobs)
    if progress is not None:
        progress("evaluate", 0, total)
    if workers == 1 or total == 1:
        for i, job in enumerate(jobs, start=1):
            results.append(run(job))
            if progress is not None:
                progress("evaluate", i, total)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            try:
                for i, fut in enumerate(futures, start=1):
                    results.append(fut.result())
                    if progress is not None:
                        progress("evaluate", i, total)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    n_method = len(pairs)
    # One label set for both methods: the labels asked for, else every label seen anywhere.
    fill = wanted if wanted is not None else sorted({lab for _, per in results for lab in per}) or [1]
    rows = _fill_labels(results[:n_method], fill)
    other_rows = _fill_labels(results[n_method:], fill) if compare is not None else None
    comparison = compare_rows(rows, other_rows) if other_rows is not None else None
    return EvaluationResult(
        rows,
        surface=surface,
        hd95=hd95,
        missing=missing,
        other_rows=other_rows,
        comparison=comparison,
        method=str(pred),
        other="" if compare is None else str(compare),
        reference=str(ref),
    )
