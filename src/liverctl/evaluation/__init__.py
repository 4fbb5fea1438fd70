"""Evaluation: predicted label maps scored against references, per case and region.

=========================  =====================================================================
module                     concept
=========================  =====================================================================
:mod:`~.evaluate`          :func:`evaluate` (files or folders) and :func:`evaluate_images`
:mod:`~.options`           :class:`EvaluateOptions`: what is scored, by which conventions
:mod:`~.pairing`           which prediction goes with which reference
:mod:`~.regions`           named unions of labels scored as one mask (LiTS liver = 1 + 2)
:mod:`~.scoring`           one case's rows: metrics, surface Dice, lesions per region
:mod:`~.results`           :class:`EvaluationResult`: rows, summary statistics, CSV and JSON
:mod:`~.comparison`        a paired comparison with a second method
=========================  =====================================================================

The metrics themselves are in :mod:`liverctl.metrics`.
"""

from __future__ import annotations

from liverctl.evaluation.comparison import ComparisonRow, compare_rows
from liverctl.evaluation.evaluate import evaluate, evaluate_images, resample_to
from liverctl.evaluation.options import EvaluateOptions, parse_labels
from liverctl.evaluation.pairing import CasePair, pair_cases
from liverctl.evaluation.results import STATISTICS, CaseRow, EvaluationResult, LesionRow, conventions, summarize

__all__ = [
    "STATISTICS",
    "CasePair",
    "CaseRow",
    "ComparisonRow",
    "EvaluateOptions",
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
