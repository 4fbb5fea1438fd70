"""Surface distances between two masks: borders, :class:`SurfaceDistances`, ASSD, RMSD, HD, HD95.

The border and HD95 conventions (``surface="medpy" | "lits"``, ``hd95="pooled" |
"directed-max"``) and the fast path (crop to the union's box, KD-tree on the other border)
are described in :mod:`liverctl.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from liverctl.metrics.arrays import _as_bool, _pair, _spacing, _union_box, bounding_box
from liverctl.metrics.conventions import (
    _CONNECTIVITY,
    EMPTY_DISTANCE_MM,
    HD95Convention,
    SurfaceConvention,
    check_conventions,
)


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
