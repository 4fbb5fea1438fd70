"""Every metric of a mask pair at once: :class:`PairMetrics`, :func:`compute_metrics`, :func:`label_metrics`.

The surface distances are computed once per pair, on the crop to the union's bounding box
(:mod:`liverctl.metrics`, "The fast path").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from liverctl.errors import ConfigError, GeometryError
from liverctl.metrics.arrays import _pair, _spacing, _union_box, bounding_box
from liverctl.metrics.conventions import METRIC_NAMES, HD95Convention, SurfaceConvention, check_conventions
from liverctl.metrics.distances import _surface_distances_cropped
from liverctl.metrics.overlap import Confusion


@dataclass(frozen=True)
class PairMetrics:
    """Every metric of one prediction/reference pair (one label), see :data:`METRIC_NAMES`.

    ``empty`` says which mask was empty (``""``, ``"pred"``, ``"ref"``, ``"both"``), so
    that the fixed values used then stay visible; ``tp``/``n_pred``/``n_ref`` are voxel
    counts (for global Dice over a dataset).
    """

    dice: float
    jaccard: float
    voe: float
    rvd: float
    assd: float
    rmsd: float
    hd: float
    hd95: float
    sensitivity: float
    specificity: float
    precision: float
    accuracy: float
    pred_ml: float
    ref_ml: float
    empty: str
    tp: int
    n_pred: int
    n_ref: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def values(self) -> dict[str, float]:
        """The metrics of :data:`METRIC_NAMES` only."""
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}


def metrics_from_crops(
    p: np.ndarray, r: np.ndarray, n_voxels: int, sp: np.ndarray, surface: str, hd95: str
) -> PairMetrics:
    """:func:`compute_metrics` of two boolean crops that hold every foreground voxel of both masks.

    ``n_voxels`` is the size of the whole volume (for the true negatives), ``sp`` the
    spacing as a float64 array; the conventions are not checked again.
    """
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    tp = int(np.count_nonzero(p & r)) if n_p and n_r else 0
    conf = Confusion(tp=tp, fp=n_p - tp, fn=n_r - tp, tn=n_voxels - n_p - n_r + tp)
    dist = _surface_distances_cropped(p, r, sp, surface)
    voxel_ml = float(np.prod(sp)) / 1000.0
    return PairMetrics(
        dice=conf.dice(),
        jaccard=conf.jaccard(),
        voe=conf.voe(),
        rvd=conf.rvd(),
        assd=dist.assd(),
        rmsd=dist.rmsd(),
        hd=dist.hd(),
        hd95=dist.hd95(hd95),  # type: ignore[arg-type]
        sensitivity=conf.sensitivity(),
        specificity=conf.specificity(),
        precision=conf.precision(),
        accuracy=conf.accuracy(),
        pred_ml=n_p * voxel_ml,
        ref_ml=n_r * voxel_ml,
        empty=conf.empty,
        tp=tp,
        n_pred=n_p,
        n_ref=n_r,
    )


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_zyx: Sequence[float] | None = None,
    *,
    surface: SurfaceConvention = "medpy",
    hd95: HD95Convention = "pooled",
) -> PairMetrics:
    """All metrics of one binary pair, computing the surface distances once.

    Args:
        pred: mask, (z, y, x); any non-zero voxel is foreground.
        ref: reference mask of the same shape; any non-zero voxel is foreground.
        spacing_zyx: voxel spacing in mm in array order (``Image.spacing_zyx``); 1 mm if ``None``.
        surface: border convention, ``"medpy"`` (6-connected) or ``"lits"`` (18-connected).
        hd95: ``"pooled"`` (MedPy) or ``"directed-max"`` (MONAI).
    """
    check_conventions(surface, hd95)
    p, r = _pair(pred, ref)
    sp = _spacing(spacing_zyx, p.ndim)
    box = _union_box(bounding_box(p), bounding_box(r))
    if box is None:
        box = tuple(slice(0, 0) for _ in range(p.ndim))
    return metrics_from_crops(p[box], r[box], p.size, sp, surface, hd95)


def label_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_zyx: Sequence[float] | None = None,
    labels: Iterable[int] | None = None,
    *,
    surface: SurfaceConvention = "medpy",
    hd95: HD95Convention = "pooled",
) -> dict[int, PairMetrics]:
    """:func:`compute_metrics` for each label of two integer label maps.

    ``labels=None`` means every non-zero label present in either map. A label absent
    from both maps gets the both-empty result (Dice 1, distances 0).
    """
    check_conventions(surface, hd95)
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise GeometryError(f"prediction shape {pred.shape} differs from reference shape {ref.shape} (z, y, x)")
    sp = _spacing(spacing_zyx, pred.ndim)
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    labels = [int(v) for v in labels]
    result: dict[int, PairMetrics] = {}
    if any(lab < 1 for lab in labels):
        raise ConfigError(f"labels must be positive integers (0 is the background), got {labels}")
    if len(labels) > 4 and np.issubdtype(pred.dtype, np.integer) and np.issubdtype(ref.dtype, np.integer):
        # One pass over each map finds every label's box; then work on the crops only.
        obj_p = ndi.find_objects(pred, max_label=max(labels))
        obj_r = ndi.find_objects(ref, max_label=max(labels))
        for lab in labels:
            box = _union_box(obj_p[lab - 1], obj_r[lab - 1])
            if box is None:
                box = tuple(slice(0, 0) for _ in range(pred.ndim))
            result[lab] = metrics_from_crops(pred[box] == lab, ref[box] == lab, pred.size, sp, surface, hd95)
        return result
    for lab in labels:
        result[lab] = compute_metrics(pred == lab, ref == lab, sp, surface=surface, hd95=hd95)
    return result
