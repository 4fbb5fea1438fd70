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

Layout (split in issue 9; every name is still importable from ``liverctl.metrics``):
:mod:`~liverctl.metrics.conventions` (names, conventions, empty-mask values),
:mod:`~liverctl.metrics.arrays` (mask, spacing and box checks), :mod:`~liverctl.metrics.overlap`
(:class:`Confusion`, Dice ... accuracy, volumes), :mod:`~liverctl.metrics.distances` (borders,
:class:`SurfaceDistances`, ASSD, RMSD, HD, HD95) and :mod:`~liverctl.metrics.pairs`
(:class:`PairMetrics`, :func:`compute_metrics`, :func:`label_metrics`).
"""

from __future__ import annotations

from liverctl.metrics.arrays import bounding_box
from liverctl.metrics.conventions import (
    EMPTY_DISTANCE_MM,
    EMPTY_RVD,
    HD95_CONVENTIONS,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    SURFACE_CONVENTIONS,
    HD95Convention,
    SurfaceConvention,
    check_conventions,
)
from liverctl.metrics.distances import SurfaceDistances, assd, border, hausdorff, hd95, rmsd, surface_distances
from liverctl.metrics.overlap import (
    Confusion,
    accuracy,
    dice,
    jaccard,
    precision,
    rvd,
    sensitivity,
    specificity,
    voe,
    volume_ml,
)
from liverctl.metrics.pairs import PairMetrics, compute_metrics, label_metrics, metrics_from_crops

__all__ = [
    "EMPTY_DISTANCE_MM",
    "EMPTY_RVD",
    "HD95_CONVENTIONS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "SURFACE_CONVENTIONS",
    "Confusion",
    "HD95Convention",
    "PairMetrics",
    "SurfaceConvention",
    "SurfaceDistances",
    "accuracy",
    "assd",
    "border",
    "bounding_box",
    "check_conventions",
    "compute_metrics",
    "dice",
    "hausdorff",
    "hd95",
    "jaccard",
    "label_metrics",
    "metrics_from_crops",
    "precision",
    "rmsd",
    "rvd",
    "sensitivity",
    "specificity",
    "surface_distances",
    "voe",
    "volume_ml",
]
