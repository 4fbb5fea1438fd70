"""Paired comparison of two methods over the same cases: t-test and Wilcoxon per region and metric."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from liverctl.metrics import HIGHER_IS_BETTER

__all__ = ["ComparisonRow", "compare_rows", "direction"]

#: Metrics beyond :data:`liverctl.metrics.HIGHER_IS_BETTER` for which larger is better.
_HIGHER_EXTRA = frozenset({"lesion_recall", "lesion_precision", "lesion_f1", "lesions_tp"})
#: Metrics that describe a case rather than rate a method (no "better").
_NEUTRAL = frozenset({"pred_ml", "ref_ml", "burden_pred", "burden_ref", "lesions_ref", "lesions_pred"})


def direction(metric: str) -> str:
    """``"higher"``, ``"lower"``, ``"abs"`` (closer to 0 is better: RVD) or ``""`` (neutral)."""
    if metric in HIGHER_IS_BETTER or metric in _HIGHER_EXTRA or metric.startswith("nsd_"):
        return "higher"
    if metric == "rvd":
        return "abs"
    if metric in _NEUTRAL:
        return ""
    return "lower"


@dataclass(frozen=True)
class ComparisonRow:
    """Paired tests of one metric of one region between two methods over the same cases.

    ``mean_diff`` is mean(method - other). The p-values are two-sided; with fewer than two
    pairs they are ``None``; when every difference is zero both tests report statistic 0
    and p = 1.
    """

    region: str
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

    @property
    def label(self) -> str:
        """The region (named by its label number in per-label scoring); kept for older code."""
        return self.region

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _better(metric: str, a: np.ndarray, b: np.ndarray) -> str:
    way = direction(metric)
    if not way:
        return ""
    if way == "abs":
        da = float(np.mean(np.abs(a))) if a.size else 0.0
        db = float(np.mean(np.abs(b))) if b.size else 0.0
        return "method" if da < db else "other" if da > db else "tie"
    diff = (float(a.mean()) - float(b.mean())) if a.size else 0.0
    if way == "lower":
        diff = -diff
    return "method" if diff > 0 else "other" if diff < 0 else "tie"


def _tests(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None, float | None, float | None]:
    from scipy import stats

    if a.size < 2:
        return None, None, None, None
    if not np.any(a - b):
        return 0.0, 1.0, 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = stats.ttest_rel(a, b)
        w = stats.wilcoxon(a, b)
    return float(t.statistic), float(t.pvalue), float(w.statistic), float(w.pvalue)


def compare_rows(
    rows: Sequence[Any], other_rows: Sequence[Any], metrics: Sequence[str] | None = None
) -> list[ComparisonRow]:
    """Paired t-test and Wilcoxon signed-rank test per region and metric over the cases both methods have.

    ``rows`` / ``other_rows`` are :class:`~liverctl.evaluation.results.CaseRow` lists;
    ``metrics=None`` compares every metric the region's rows carry.
    """
    other = {(r.case, r.region): r.values() for r in other_rows}
    out: list[ComparisonRow] = []
    for region in dict.fromkeys(r.region for r in rows):
        mine = [r for r in rows if r.region == region and (r.case, region) in other]
        names = list(metrics) if metrics is not None else list(next(iter(mine)).values()) if mine else []
        for name in names:
            a = np.array([r.values()[name] for r in mine], dtype=float)
            b = np.array([other[(r.case, region)][name] for r in mine], dtype=float)
            t_stat, t_p, w_stat, w_p = _tests(a, b)
            mean_a = float(a.mean()) if a.size else math.nan
            mean_b = float(b.mean()) if b.size else math.nan
            out.append(
                ComparisonRow(
                    region,
                    name,
                    int(a.size),
                    mean_a,
                    mean_b,
                    mean_a - mean_b,
                    t_stat,
                    t_p,
                    w_stat,
                    w_p,
                    _better(name, a, b),
                )
            )
    return out
