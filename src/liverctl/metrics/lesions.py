"""Lesion detection and tumour burden, as liver tumour papers (LiTS, H-DenseUNet) report them.

Definitions (stated in every output, see :func:`describe`):

* **Lesions** are the connected components of a tumour mask, with 26-connectivity by
  default (6 and 18 on request), on each side separately.
* A **reference lesion is detected** when the predicted components that overlap it, merged
  into one object, reach Dice > ``min_dice`` with it (0.2 by default, LiTS' criterion):
  ``Dice = 2 |L ∩ P| / (|L| + |P|)`` where ``P`` is the union of every predicted component
  sharing at least one voxel with ``L``. A lesion that two predicted components split is
  thus one detection, not a false positive.
* Counts: **TP** = detected reference lesions, **FN** = the others, **FP** = predicted
  components that belong to no detected lesion's merged set (one that overlaps a lesion
  only weakly, at Dice <= ``min_dice``, is a false positive and that lesion a miss).
  Recall = TP / (TP + FN), precision = TP / (TP + FP), F1 = 2 TP / (2 TP + FP + FN); a
  0/0 ratio is 1 when neither side has a lesion and 0 otherwise.
* **Per-lesion Dice**: each reference lesion against its merged predicted components
  (0 when none overlaps).
* **Tumour burden** = tumour volume / volume of liver ∪ tumour (the whole liver for LiTS
  labels, where liver = 1+2), on each side; the difference is reported as its absolute
  value. 0 when both are empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from liverctl.errors import ConfigError

__all__ = [
    "CONNECTIVITIES",
    "LesionDetection",
    "PooledDetection",
    "describe",
    "detect_lesions",
    "pool",
    "tumour_burden",
]

#: Connectivities accepted for lesion components (faces, + edges, + corners).
CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)
#: LiTS' detection criterion: Dice with the merged overlapping components above this.
DEFAULT_MIN_DICE = 0.2


def _ratio(num: int, den: int, none_at_all: bool) -> float:
    if den == 0:
        return 1.0 if none_at_all else 0.0
    return num / den


@dataclass(frozen=True)
class LesionDetection:
    """Lesion detection of one case (one tumour region).

    ``lesion_dice[i]``, ``ref_voxels[i]``, ``pred_voxels[i]`` and ``components[i]`` belong to
    reference lesion ``i + 1`` (components in raster order): its Dice with the merged
    predicted components overlapping it, its size, the size of that merged object, and
    how many predicted components it merges.
    """

    n_ref: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    lesion_dice: tuple[float, ...] = ()
    ref_voxels: tuple[int, ...] = ()
    pred_voxels: tuple[int, ...] = ()
    components: tuple[int, ...] = ()
    min_dice: float = DEFAULT_MIN_DICE

    @property
    def detected(self) -> tuple[bool, ...]:
        return tuple(d > self.min_dice for d in self.lesion_dice)

    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, self.n_ref == 0 and self.n_pred == 0)

    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, self.n_ref == 0 and self.n_pred == 0)

    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self.n_ref == 0 and self.n_pred == 0)

    def values(self) -> dict[str, float]:
        """The per-case columns: counts (ints), recall, precision, F1."""
        return {
            "lesions_ref": self.n_ref,
            "lesions_pred": self.n_pred,
            "lesions_tp": self.tp,
            "lesions_fp": self.fp,
            "lesions_fn": self.fn,
            "lesion_recall": self.recall(),
            "lesion_precision": self.precision(),
            "lesion_f1": self.f1(),
        }


def check_lesion_options(connectivity: int, min_dice: float) -> None:
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"lesion connectivity must be one of 6, 18, 26; got {connectivity}")
    if not 0.0 <= float(min_dice) < 1.0:
        raise ConfigError(f"the lesion detection Dice threshold must be in [0, 1); got {min_dice}")


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    import cc3d

    if not mask.any():
        return np.zeros(mask.shape, np.int64), 0
    labels, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    return labels.astype(np.int64, copy=False), int(n)


def detect_lesions(
    pred: np.ndarray, ref: np.ndarray, *, connectivity: int = 26, min_dice: float = DEFAULT_MIN_DICE
) -> LesionDetection:
    """Match predicted and reference lesions of one case; see the module docstring."""
    check_lesion_options(connectivity, min_dice)
    p, r = np.asarray(pred) != 0, np.asarray(ref) != 0
    lab_r, n_r = _components(r, connectivity)
    lab_p, n_p = _components(p, connectivity)
    size_r = np.bincount(lab_r.ravel(), minlength=n_r + 1) if n_r else np.zeros(1, np.int64)
    size_p = np.bincount(lab_p.ravel(), minlength=n_p + 1) if n_p else np.zeros(1, np.int64)
    both = (lab_r > 0) & (lab_p > 0)
    pairs, overlap = np.unique(lab_r[both] * (n_p + 1) + lab_p[both], return_counts=True)
    pair_r, pair_p = pairs // (n_p + 1), pairs % (n_p + 1)
    dice, merged, comps = [], [], []
    matched = np.zeros(n_p + 1, bool)
    for lesion in range(1, n_r + 1):
        sel = pair_r == lesion
        inter = int(overlap[sel].sum())
        merged_size = int(size_p[pair_p[sel]].sum())
        d = 2.0 * inter / (int(size_r[lesion]) + merged_size)
        if d > min_dice:
            matched[pair_p[sel]] = True
        dice.append(d)
        merged.append(merged_size)
        comps.append(int(sel.sum()))
    tp = sum(d > min_dice for d in dice)
    return LesionDetection(
        n_ref=n_r,
        n_pred=n_p,
        tp=tp,
        fp=n_p - int(matched[1:].sum()),
        fn=n_r - tp,
        lesion_dice=tuple(dice),
        ref_voxels=tuple(int(v) for v in size_r[1:]),
        pred_voxels=tuple(merged),
        components=tuple(comps),
        min_dice=float(min_dice),
    )


def tumour_burden(tumour_voxels: int, organ_voxels: int, overlap_voxels: int) -> float:
    """Tumour volume / volume of organ ∪ tumour (0 when both are empty), from voxel counts."""
    union = organ_voxels + tumour_voxels - overlap_voxels
    return 0.0 if union == 0 else tumour_voxels / union


@dataclass(frozen=True)
class PooledDetection:
    """Lesion detection pooled over cases: summed counts and the ratios of the sums."""

    n_ref: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    lesion_dice_mean: float
    n_cases: int

    def as_dict(self) -> dict[str, float | int]:
        none_at_all = self.n_ref == 0 and self.n_pred == 0
        return {
            "lesions_ref": self.n_ref,
            "lesions_pred": self.n_pred,
            "lesions_tp": self.tp,
            "lesions_fp": self.fp,
            "lesions_fn": self.fn,
            "lesion_recall": _ratio(self.tp, self.tp + self.fn, none_at_all),
            "lesion_precision": _ratio(self.tp, self.tp + self.fp, none_at_all),
            "lesion_f1": _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, none_at_all),
            "lesion_dice_mean": self.lesion_dice_mean,
            "cases": self.n_cases,
        }


def pool(detections: Iterable[LesionDetection]) -> PooledDetection:
    """Sum the counts of several cases; ``lesion_dice_mean`` over every reference lesion (NaN if none)."""
    items = list(detections)
    dice = [d for det in items for d in det.lesion_dice]
    return PooledDetection(
        n_ref=sum(d.n_ref for d in items),
        n_pred=sum(d.n_pred for d in items),
        tp=sum(d.tp for d in items),
        fp=sum(d.fp for d in items),
        fn=sum(d.fn for d in items),
        lesion_dice_mean=float(np.mean(dice)) if dice else float("nan"),
        n_cases=len(items),
    )


def describe(connectivity: int, min_dice: float, organ: str | None, names: Sequence[str] = ()) -> str:
    """The lesion conventions in words, for every output."""
    burden = (
        f"tumour burden = tumour / ({organ} ∪ tumour) volume per side, |pred - ref|"
        if organ
        else "no tumour burden (no region named liver)"
    )
    which = f"region {', '.join(names)}: " if names else ""
    return (
        f"{which}lesions = {connectivity}-connected components; a reference lesion is detected when the "
        f"predicted components overlapping it, merged, reach Dice > {min_dice:g}; FP = predicted components "
        f"in no detected lesion's merged set; {burden}"
    )
