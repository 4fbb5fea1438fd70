"""The result of an evaluation: per-case rows per region, lesions, summaries, CSV and JSON.

:class:`EvaluationResult` is what :func:`liverctl.evaluation.evaluate` returns. Rows are
keyed by case and *region* (a named union of labels, :mod:`liverctl.evaluation.regions`; in the
default per-label scoring a region is named by its label number, ``"1"``), and every row
names the labels it scored on each side.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverctl.evaluation.comparison import ComparisonRow
from liverctl.evaluation.regions import Region
from liverctl.jsonsafe import json_safe
from liverctl.metrics import METRIC_NAMES, PairMetrics
from liverctl.metrics.lesions import PooledDetection

__all__ = ["STATISTICS", "CaseRow", "EvaluationResult", "LesionRow", "conventions", "summarize"]

#: Summary statistics, in report order.
STATISTICS: tuple[str, ...] = ("mean", "std", "median", "min", "max")


def _join(labels: tuple[int, ...]) -> str:
    return "+".join(str(v) for v in labels)


@dataclass(frozen=True)
class CaseRow:
    """The metrics of one region of one case.

    ``metrics`` holds the metrics of :data:`liverctl.metrics.METRIC_NAMES`; ``extra`` the
    NSD at each tolerance (``nsd_1mm``, ...) and, for a lesion region, the lesion counts,
    recall/precision/F1 and tumour burden (see :mod:`liverctl.metrics.lesions`).
    """

    case: str
    region: str
    metrics: PairMetrics
    pred_labels: tuple[int, ...] = ()
    ref_labels: tuple[int, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> int | None:
        """The label when the region is one label on both sides (per-label scoring), else ``None``."""
        if len(self.ref_labels) == 1 and self.pred_labels == self.ref_labels:
            return self.ref_labels[0]
        return None

    def values(self) -> dict[str, float]:
        """Every metric of the row: :data:`~liverctl.metrics.METRIC_NAMES`, then the extra ones."""
        return {**self.metrics.values(), **self.extra}

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "region": self.region,
            "ref_labels": list(self.ref_labels),
            "pred_labels": list(self.pred_labels),
            **self.values(),
            "empty": self.metrics.empty,
        }


@dataclass(frozen=True)
class LesionRow:
    """One reference lesion: its size, the merged predicted components overlapping it, Dice, detection."""

    case: str
    region: str
    lesion: int
    ref_ml: float
    pred_ml: float
    dice: float
    detected: bool
    components: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _ByRegion(dict):
    """A dict keyed by region name that also answers to a label number (``summary()[1]``)."""

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, int | np.integer) and str(int(key)) in self:
            return self[str(int(key))]
        raise KeyError(key)


@dataclass
class EvaluationResult:
    """Per-case rows, lesions, summaries and (optionally) a comparison; see :func:`liverctl.evaluation.evaluate`.

    Attributes:
        rows: one :class:`CaseRow` per case and region, cases in name order.
        regions: the regions scored (name, labels per side, lesion detection or not).
        lesion_rows: one :class:`LesionRow` per reference lesion of each lesion region.
        surface, hd95: the conventions used (see :mod:`liverctl.metrics`).
        nsd: the NSD tolerances (mm), empty when NSD was not asked for.
        lesion_connectivity, lesion_min_dice: the lesion detection settings.
        missing: ``"<case>: no prediction"`` / ``"<case>: no reference"`` entries left
            out because ``allow_missing`` was set.
        notes: things the user should know (the LiTS liver hint, regions whose labels
            appear nowhere); the CLI prints each once on stderr.
        other_rows, other_lesion_rows: the rows of the ``compare`` method, when one was given.
        comparison: paired tests per region and metric, when ``compare`` was given.
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
    regions: list[Region] = field(default_factory=list)
    lesion_rows: list[LesionRow] = field(default_factory=list)
    other_lesion_rows: list[LesionRow] | None = None
    nsd: tuple[float, ...] = ()
    lesion_connectivity: int = 26
    lesion_min_dice: float = 0.2
    notes: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------- access

    @property
    def region_names(self) -> list[str]:
        return list(dict.fromkeys(row.region for row in self.rows))

    @property
    def labels(self) -> list[int] | list[str]:
        """The region names, as numbers in per-label scoring (``[1, 2]``)."""
        names = self.region_names
        return [int(n) for n in names] if all(n.isdigit() for n in names) else names

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(row.case for row in self.rows))

    def region(self, name: str | int) -> Region:
        key = str(name)
        for reg in self.regions:
            if reg.name == key:
                return reg
        raise KeyError(name)

    def metric_names(self, region: str | int) -> list[str]:
        """The metrics the rows of ``region`` carry, in report order."""
        rows = self._rows(region)
        return list(rows[0].values()) if rows else list(METRIC_NAMES)

    def _rows(self, region: str | int, rows: list[CaseRow] | None = None) -> list[CaseRow]:
        key = str(region)
        return [r for r in (self.rows if rows is None else rows) if r.region == key]

    def values(self, metric: str, region: str | int) -> np.ndarray:
        """Per-case values of one metric for one region, in case order."""
        return np.array([r.values()[metric] for r in self._rows(region)], dtype=float)

    def conventions(self) -> dict[str, str]:
        """Human-readable description of the conventions behind the numbers."""
        return conventions(self.surface, self.hd95, self.nsd, self._lesion_text())

    def _lesion_text(self) -> str | None:
        from liverctl.evaluation.regions import ORGAN_NAME
        from liverctl.metrics.lesions import describe

        names = [r.name for r in self.regions if r.lesions]
        if not names:
            return None
        organ = ORGAN_NAME if any(r.name == ORGAN_NAME for r in self.regions) else None
        return describe(self.lesion_connectivity, self.lesion_min_dice, organ, names)

    # ----------------------------------------------------------------- summaries

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{region: {statistic: {metric: value}}}`` with :data:`STATISTICS` plus ``n``.

        ``std`` is the sample standard deviation (``ddof=1``; 0 for a single case). A label
        number also works as the key in per-label scoring (``summary()[1]``).
        """
        out = _ByRegion()
        for region in self.region_names:
            names = self.metric_names(region)
            stats = {name: summarize(self.values(name, region)) for name in names}
            out[region] = {s: {name: stats[name][s] for name in names} for s in (*STATISTICS, "n")}
        return out

    def dice_global(self, region: str | int) -> float:
        """Dice over the whole dataset: 2 ΣTP / (Σ|P| + Σ|G|) (1 when every mask is empty)."""
        rows = [r.metrics for r in self._rows(region)]
        tp = sum(m.tp for m in rows)
        den = sum(m.n_pred + m.n_ref for m in rows)
        return 1.0 if den == 0 else 2.0 * tp / den

    def empty_counts(self, region: str | int) -> dict[str, int]:
        """How many cases of ``region`` had an empty prediction, reference or both."""
        flags = [r.metrics.empty for r in self._rows(region)]
        return {k: flags.count(k) for k in ("pred", "ref", "both")}

    def lesion_summary(self, region: str | int) -> dict[str, float | int] | None:
        """Lesion detection pooled over the cases (summed counts, ratios of the sums, mean
        per-lesion Dice) and, with a liver region, the tumour burden's mean absolute,
        root-mean-square and largest error; ``None`` for a region without lesion detection."""
        rows = self._rows(region)
        if not rows or "lesions_tp" not in rows[0].extra:
            return None
        dice = [les.dice for les in self.lesion_rows if les.region == str(region)]

        def total(key: str) -> int:
            return int(sum(r.extra[key] for r in rows))

        pooled = PooledDetection(
            n_ref=total("lesions_ref"),
            n_pred=total("lesions_pred"),
            tp=total("lesions_tp"),
            fp=total("lesions_fp"),
            fn=total("lesions_fn"),
            lesion_dice_mean=float(np.mean(dice)) if dice else math.nan,
            n_cases=len(rows),
        ).as_dict()
        if "burden_abs_diff" in rows[0].extra:
            err = np.array([r.extra["burden_abs_diff"] for r in rows])
            pooled["burden_mae"] = float(err.mean())
            pooled["burden_rmse"] = float(math.sqrt(float(np.mean(err**2))))
            pooled["burden_max_error"] = float(err.max())
        return pooled

    # ----------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (non-finite numbers become ``None``)."""
        summary = self.summary()
        data: dict[str, Any] = {
            "method": self.method,
            "reference": self.reference,
            "conventions": self.conventions(),
            "metrics": list(dict.fromkeys(m for region in self.region_names for m in self.metric_names(region))),
            "regions": [r.as_dict() for r in self.regions],
            "cases": [r.as_dict() for r in self.rows],
            "lesions": [les.as_dict() for les in self.lesion_rows],
            "summary": {region: self._summary_entry(region, summary[region]) for region in self.region_names},
            "missing": list(self.missing),
            "notes": list(self.notes),
        }
        if self.comparison is not None:
            data["other"] = self.other
            data["other_cases"] = [r.as_dict() for r in self.other_rows or []]
            data["other_lesions"] = [les.as_dict() for les in self.other_lesion_rows or []]
            data["comparison"] = [c.as_dict() for c in self.comparison]
        return json_safe(data)

    def _summary_entry(self, region: str, stats: dict[str, Any]) -> dict[str, Any]:
        reg = next((r for r in self.regions if r.name == region), None)
        entry = {
            "ref_labels": list(reg.ref_labels) if reg else [],
            "pred_labels": list(reg.pred_labels) if reg else [],
            **stats,
            "dice_per_case_mean": stats["mean"]["dice"],
            "dice_global": self.dice_global(region),
            "empty_cases": self.empty_counts(region),
        }
        lesions = self.lesion_summary(region)
        if lesions is not None:
            entry["lesion_detection"] = lesions
        return entry

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def to_csv(self) -> str:
        """Per-case rows (``row=case``), per-lesion rows (``row=lesion``), then summary rows
        (``row=mean``, ``std``, ..., ``dice_global``; ``pooled`` for lesion detection) and,
        with a comparison, ``other_mean``, ``t_test_p`` and ``wilcoxon_p`` rows whose metric
        columns hold those values. Every row names its region and labels and carries the
        conventions used, so CSVs of different runs can be concatenated safely."""
        buf = _io.StringIO()
        lines = list(self._csv_lines())
        metrics = list(dict.fromkeys(k for line in lines for k in line if k not in _CSV_FIXED))
        fields = [*_CSV_HEAD, *metrics, "detected", "empty", "surface", "hd95_convention"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        conv = {"surface": self.surface, "hd95_convention": self.hd95}
        for line in lines:
            writer.writerow({k: _csv_value(v) for k, v in {**line, **conv}.items()})
        return buf.getvalue()

    def _csv_lines(self) -> Any:
        labels = {
            r.name: {"ref_labels": _join(r.ref_labels), "pred_labels": _join(r.pred_labels)} for r in self.regions
        }

        def head(row: str, case: str, region: str) -> dict[str, Any]:
            return {"row": row, "case": case, "region": region, **labels.get(region, {})}

        for r in self.rows:
            yield {**head("case", r.case, r.region), **r.values(), "empty": r.metrics.empty}
        for les in self.lesion_rows:
            yield {
                **head("lesion", les.case, les.region),
                "lesion": les.lesion,
                "dice": les.dice,
                "pred_ml": les.pred_ml,
                "ref_ml": les.ref_ml,
                "detected": int(les.detected),
            }
        summary = self.summary()
        for region in self.region_names:
            for stat in STATISTICS:
                yield {**head(stat, "", region), **summary[region][stat]}
            yield {**head("dice_global", "", region), "dice": self.dice_global(region)}
            pooled = self.lesion_summary(region)
            if pooled is not None:
                yield {**head("pooled", "", region), **{k: v for k, v in pooled.items() if k != "cases"}}
        if self.comparison is not None:
            for key, attr in (
                ("other_mean", "mean_other"),
                ("t_test_p", "t_pvalue"),
                ("wilcoxon_p", "wilcoxon_pvalue"),
            ):
                for region in self.region_names:
                    vals = {c.metric: getattr(c, attr) for c in self.comparison if c.region == region}
                    yield {**head(key, "", region), **vals}


_CSV_HEAD = ("row", "case", "region", "ref_labels", "pred_labels", "lesion")
_CSV_FIXED = frozenset({*_CSV_HEAD, "detected", "empty"})


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float | np.floating):
        return repr(float(v)) if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    return v


def conventions(
    surface: str, hd95: str, nsd: tuple[float, ...] | list[float] = (), lesions: str | None = None
) -> dict[str, str]:
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
    out = {
        "surface": surf,
        "hd95": h95,
        "distances": "Euclidean, between border voxel centres, in mm using the voxel spacing; "
        "ASSD/RMSD/HD over the pooled two-way list",
        "rvd": "(|pred| - |ref|) / |ref|, signed",
        "volumes": "millilitres",
        "empty": f"both empty: Dice 1, distances 0; one empty: Dice 0, distances {EMPTY_DISTANCE_MM:g} mm, "
        f"RVD {EMPTY_RVD:g} when the reference is empty",
        "std": "sample standard deviation (ddof=1)",
        "regions": "each region = the union of its labels, scored as one binary mask",
    }
    if nsd:
        tols = ", ".join(f"{t:g}" for t in nsd)
        out["nsd"] = (
            f"normalised surface Dice at {tols} mm: area-weighted voxel-corner surfels (DeepMind surface-distance), "
            "on the voxel grid; both empty 1, one empty 0"
        )
    if lesions:
        out["lesions"] = lesions
    return out


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
