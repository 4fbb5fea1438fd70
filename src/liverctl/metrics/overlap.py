"""Overlap and volume metrics from voxel counts: :class:`Confusion`, Dice, Jaccard, VOE, RVD, ...

Empty masks follow the rules of :mod:`liverctl.metrics` (never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from liverctl.metrics.arrays import _as_bool, _pair, _spacing
from liverctl.metrics.conventions import EMPTY_RVD


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of a prediction against a reference."""

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, pred: np.ndarray, ref: np.ndarray) -> Confusion:
        p, r = _pair(pred, ref)
        n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
        tp = int(np.count_nonzero(p & r)) if n_p and n_r else 0
        return cls(tp=tp, fp=n_p - tp, fn=n_r - tp, tn=p.size - n_p - n_r + tp)

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        return self.tp + self.fn

    @property
    def both_empty(self) -> bool:
        return self.n_pred == 0 and self.n_ref == 0

    @property
    def empty(self) -> str:
        """``""``, ``"pred"``, ``"ref"`` or ``"both"``: which mask is empty."""
        if self.both_empty:
            return "both"
        if self.n_pred == 0:
            return "pred"
        return "ref" if self.n_ref == 0 else ""

    def dice(self) -> float:
        return _ratio(2 * self.tp, self.n_pred + self.n_ref, self.both_empty)

    def jaccard(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn, self.both_empty)

    def voe(self) -> float:
        return 1.0 - self.jaccard()

    def rvd(self) -> float:
        if self.n_ref == 0:
            return 0.0 if self.n_pred == 0 else EMPTY_RVD
        return (self.n_pred - self.n_ref) / self.n_ref

    def sensitivity(self) -> float:
        return _ratio(self.tp, self.n_ref, self.both_empty)

    def specificity(self) -> float:
        return _ratio(self.tn, self.tn + self.fp, True)

    def precision(self) -> float:
        return _ratio(self.tp, self.n_pred, self.both_empty)

    def accuracy(self) -> float:
        total = self.tp + self.fp + self.fn + self.tn
        return _ratio(self.tp + self.tn, total, True)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P∩G| / (|P|+|G|); 1 when both are empty."""
    return Confusion.of(pred, ref).dice()


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index |P∩G| / |P∪G|; 1 when both are empty."""
    return Confusion.of(pred, ref).jaccard()


def voe(pred: np.ndarray, ref: np.ndarray) -> float:
    """Volumetric overlap error 1 - Jaccard (a fraction; SLIVER07 reports it in percent)."""
    return Confusion.of(pred, ref).voe()


def rvd(pred: np.ndarray, ref: np.ndarray) -> float:
    """Relative volume difference (|P| - |G|) / |G|, signed: negative when the prediction is smaller.

    MedPy's ``ravd(result, reference)`` with the same argument order. (The LiTS scoring
    code calls ``ravd(reference, prediction)``, which flips the sign and the denominator.)
    0 when both are empty, :data:`EMPTY_RVD` when only the reference is.
    """
    return Confusion.of(pred, ref).rvd()


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True positive rate (recall) |P∩G| / |G|."""
    return Confusion.of(pred, ref).sensitivity()


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """True negative rate |¬P∩¬G| / |¬G|."""
    return Confusion.of(pred, ref).specificity()


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Positive predictive value |P∩G| / |P|."""
    return Confusion.of(pred, ref).precision()


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    """Fraction of voxels labelled correctly (dominated by the background in CT)."""
    return Confusion.of(pred, ref).accuracy()


def volume_ml(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Volume of the non-zero voxels in millilitres (spacing in mm)."""
    mask = _as_bool(mask)
    return float(np.count_nonzero(mask)) * float(np.prod(_spacing(spacing_zyx, mask.ndim))) / 1000.0
