"""Segmentation metrics between a predicted and a reference mask.

Pure NumPy/SciPy, no I/O: every function takes boolean (or 0/non-0) arrays in
**(z, y, x)** order and, for anything in millimetres, ``spacing_zyx`` (use
:attr:`liverctl.io.Image.spacing_zyx`; ITK's ``GetSpacing()`` is x, y, z). The direction
matrix and origin never change a metric: distances are measured between voxel centres
on the voxel grid, scaled by the spacing.

Conventions (the libraries disagree, so they are named):

``surface="medpy"`` (default)
    The border of a mask is the mask minus its erosion with the 6-connected structuring
    element (``generate_binary_structure(3, 1)``), outside the volume counting as
    background, exactly as MedPy 0.5.2's ``__surface_distances``. Distances are exact
    Euclidean distances between border voxel centres, in mm.
``surface="lits"``
    As above with the 18-connected element (``generate_binary_structure(3, 2)``), the
    thicker border of the LiTS challenge scoring code.
``hd95="pooled"`` (default)
    95th percentile (NumPy's default linear interpolation) of the pooled list of both
    directed distance sets, as MedPy's ``hd95``.
``hd95="directed-max"``
    The larger of the two directed 95th percentiles (linear interpolation), as MONAI's
    ``compute_hausdorff_distance(..., percentile=95)``. DeepMind's ``surface-distance``
    aggregates the same way but over area-weighted surfels, so its values differ.

ASSD is the mean and RMSD the root mean square of the pooled list; HD is its maximum
(the same under every convention above).

Empty masks never produce NaN (the LiTS convention, made visible by
:attr:`PairMetrics.empty`):

* both empty: Dice = Jaccard = 1, VOE = RVD = 0, every distance 0;
* only one empty: Dice = Jaccard = 0, VOE = 1, every distance :data:`EMPTY_DISTANCE_MM`
  (9001 mm, LiTS' value); RVD with an empty reference is :data:`EMPTY_RVD`;
* any other 0/0 ratio (sensitivity with an empty reference, precision with an empty
  prediction) is 1 when both masks are empty and 0 otherwise; specificity with no
  background voxel at all is 1.

The fast path (:func:`compute_metrics`) crops both masks to the bounding box of their
union, pads one layer of background (which reproduces the volume-edge behaviour of an
erosion with ``border_value=0``), extracts both borders once, and measures each border
voxel that is not on the other border with a KD-tree on the other border's voxel
centres (in mm). The values equal MedPy's (full-volume ``distance_transform_edt``) to
rounding, about 1e-15 relative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from liverctl.errors import ConfigError, GeometryError

SurfaceConvention = Literal["medpy", "lits"]
HD95Convention = Literal["pooled", "directed-max"]

SURFACE_CONVENTIONS: tuple[str, ...] = ("medpy", "lits")
HD95_CONVENTIONS: tuple[str, ...] = ("pooled", "directed-max")

#: Surface distance (mm) reported when exactly one of the two masks is empty (LiTS' value).
EMPTY_DISTANCE_MM = 9001.0
#: Relative volume difference reported when the reference is empty and the prediction is not.
EMPTY_RVD = 9001.0

#: Metric names, in report order. Distances in mm, volumes in mL, the rest fractions.
METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "jaccard",
    "voe",
    "rvd",
    "assd",
    "rmsd",
    "hd",
    "hd95",
    "sensitivity",
    "specificity",
    "precision",
    "accuracy",
    "pred_ml",
    "ref_ml",
)
#: Metrics for which a larger value is better (for the others, smaller or closer to 0 is).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"dice", "jaccard", "sensitivity", "specificity", "precision", "accuracy"})

_CONNECTIVITY = {"medpy": 1, "lits": 2}


def check_conventions(surface: str, hd95: str) -> None:
    """Raise :class:`~liverctl.errors.ConfigError` for an unknown convention name."""
    if surface not in SURFACE_CONVENTIONS:
        raise ConfigError(f"unknown surface convention {surface!r}; choose one of {', '.join(SURFACE_CONVENTIONS)}")
    if hd95 not in HD95_CONVENTIONS:
        raise ConfigError(f"unknown HD95 convention {hd95!r}; choose one of {', '.join(HD95_CONVENTIONS)}")


# --------------------------------------------------------------------------- helpers


def _as_bool(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask != 0


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, r = _as_bool(pred), _as_bool(ref)
    if p.shape != r.shape:
        raise GeometryError(f"prediction shape {p.shape} differs from reference shape {r.shape} (z, y, x)")
    return p, r


def _spacing(spacing_zyx: Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing_zyx is None:
        return np.ones(ndim)
    sp = np.asarray(spacing_zyx, dtype=np.float64).reshape(-1)
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise GeometryError(f"spacing must hold {ndim} positive values, got {tuple(spacing_zyx)}")
    return sp


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every non-zero voxel of ``mask``, or ``None`` when it is empty
    (:func:`liverctl.spatial.bounding_box`, the one implementation)."""
    from liverctl.spatial import bounding_box as box_of

    return box_of(np.asarray(mask))


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- overlap


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


# --------------------------------------------------------------------------- surfaces


def _offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    structure = ndi.generate_binary_structure(ndim, connectivity)
    centre = (1,) * ndim
    return [tuple(int(i) - 1 for i in idx) for idx in zip(*np.nonzero(structure), strict=True) if idx != centre]


def _border_padded(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Border of a mask padded with one layer of background: mask XOR its erosion.

    Same voxels as ``mask ^ binary_erosion(mask, generate_binary_structure(ndim, c))``
    (``border_value=0``), computed with shifted views, in the unpadded shape.
    """
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    centre = mask[core]
    interior = centre.copy()
    for off in _offsets(mask.ndim, connectivity):
        view = tuple(slice(1 + o, mask.shape[a] - 1 + o) for a, o in enumerate(off))
        interior &= mask[view]
    return centre & ~interior


def border(mask: np.ndarray, surface: SurfaceConvention = "medpy") -> np.ndarray:
    """Border voxels of ``mask`` under a surface convention (``"medpy"``: 6-, ``"lits"``: 18-connected erosion).

    Voxels on the edge of the volume count as border (the outside is background).
    """
    check_conventions(surface, "pooled")
    mask = _as_bool(mask)
    return _border_padded(np.pad(mask, 1), _CONNECTIVITY[surface])


def _directed(from_border: np.ndarray, to_border: np.ndarray, to_tree: cKDTree | None, sp: np.ndarray) -> np.ndarray:
    """Distances (mm) from every voxel of ``from_border`` to the nearest voxel of ``to_border``."""
    n_from = int(np.count_nonzero(from_border))
    off = from_border & ~to_border
    coords = np.argwhere(off)
    out = np.zeros(n_from, dtype=np.float64)
    if coords.size:
        coords = coords.astype(np.float64)
        coords *= sp
        assert to_tree is not None
        out[n_from - len(coords) :] = to_tree.query(coords, k=1)[0]
    return out


def _tree(border_mask: np.ndarray, sp: np.ndarray) -> cKDTree:
    pts = np.argwhere(border_mask).astype(np.float64)
    pts *= sp
    return cKDTree(pts, leafsize=32, balanced_tree=False, compact_nodes=False)


@dataclass(frozen=True)
class SurfaceDistances:
    """Both directed lists of border-to-border distances (mm) of one mask pair.

    ``pred_to_ref`` holds one distance per prediction border voxel (to the nearest
    reference border voxel), ``ref_to_pred`` the reverse; the order of each list is not
    specified. When a mask is empty the lists are empty and the summary statistics
    follow the module's empty-mask rules.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_empty: bool
    ref_empty: bool
    surface: str = "medpy"

    def _empty_value(self) -> float | None:
        if self.pred_empty and self.ref_empty:
            return 0.0
        if self.pred_empty or self.ref_empty:
            return EMPTY_DISTANCE_MM
        return None

    @property
    def pooled(self) -> np.ndarray:
        """Both directed lists concatenated (MedPy's ``hstack``)."""
        return np.concatenate([self.pred_to_ref, self.ref_to_pred])

    def assd(self) -> float:
        """Average symmetric surface distance: mean of the pooled list."""
        empty = self._empty_value()
        return empty if empty is not None else float(np.mean(self.pooled))

    def rmsd(self) -> float:
        """Root mean square symmetric surface distance over the pooled list."""
        empty = self._empty_value()
        if empty is not None:
            return empty
        d = self.pooled
        return float(math.sqrt(np.dot(d, d) / d.size))

    def hd(self) -> float:
        """Hausdorff distance: the largest distance in either direction."""
        empty = self._empty_value()
        return empty if empty is not None else float(max(self.pred_to_ref.max(), self.ref_to_pred.max()))

    def hd95(self, convention: HD95Convention = "pooled") -> float:
        """95th-percentile Hausdorff distance, ``"pooled"`` (MedPy) or ``"directed-max"`` (MONAI)."""
        check_conventions(self.surface, convention)
        empty = self._empty_value()
        if empty is not None:
            return empty
        if convention == "pooled":
            return float(np.percentile(self.pooled, 95))
        return float(max(np.percentile(self.pred_to_ref, 95), np.percentile(self.ref_to_pred, 95)))


def _surface_distances_cropped(p: np.ndarray, r: np.ndarray, sp: np.ndarray, surface: str) -> SurfaceDistances:
    """Distances for masks that are already cropped to (a box holding) their union."""
    pred_empty, ref_empty = not p.any(), not r.any()
    if pred_empty or ref_empty:
        none = np.zeros(0)
        return SurfaceDistances(none, none, pred_empty, ref_empty, surface)
    connectivity = _CONNECTIVITY[surface]
    bp = _border_padded(np.pad(p, 1), connectivity)
    br = _border_padded(np.pad(r, 1), connectivity)
    tree_r = _tree(br, sp) if (bp & ~br).any() else None
    tree_p = _tree(bp, sp) if (br & ~bp).any() else None
    return SurfaceDistances(
        _directed(bp, br, tree_r, sp), _directed(br, bp, tree_p, sp), pred_empty, ref_empty, surface
    )


def surface_distances(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_zyx: Sequence[float] | None = None,
    *,
    surface: SurfaceConvention = "medpy",
) -> SurfaceDistances:
    """Border-to-border distances in mm in both directions, computed once per pair.

    Derive ASSD, RMSD, HD and HD95 from the result instead of calling the single-metric
    functions one by one (each of which recomputes it).
    """
    check_conventions(surface, "pooled")
    p, r = _pair(pred, ref)
    sp = _spacing(spacing_zyx, p.ndim)
    box = _union_box(bounding_box(p), bounding_box(r))
    if box is None:
        return SurfaceDistances(np.zeros(0), np.zeros(0), True, True, surface)
    return _surface_distances_cropped(p[box], r[box], sp, surface)


def assd(pred, ref, spacing_zyx=None, *, surface: SurfaceConvention = "medpy") -> float:
    """Average symmetric surface distance (mm), MedPy's ``assd`` under ``surface="medpy"``."""
    return surface_distances(pred, ref, spacing_zyx, surface=surface).assd()


def rmsd(pred, ref, spacing_zyx=None, *, surface: SurfaceConvention = "medpy") -> float:
    """Root mean square symmetric surface distance (mm)."""
    return surface_distances(pred, ref, spacing_zyx, surface=surface).rmsd()


def hausdorff(pred, ref, spacing_zyx=None, *, surface: SurfaceConvention = "medpy") -> float:
    """Hausdorff distance (mm), MedPy's ``hd``."""
    return surface_distances(pred, ref, spacing_zyx, surface=surface).hd()


def hd95(
    pred, ref, spacing_zyx=None, *, surface: SurfaceConvention = "medpy", convention: HD95Convention = "pooled"
) -> float:
    """95th-percentile Hausdorff distance (mm): MedPy's ``hd95`` (pooled) or MONAI's (directed-max)."""
    return surface_distances(pred, ref, spacing_zyx, surface=surface).hd95(convention)


# --------------------------------------------------------------------------- all at once


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
        pred, ref: masks of the same shape, (z, y, x); any non-zero voxel is foreground.
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
