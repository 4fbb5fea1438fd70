"""Post-processing of label maps: connected components, hole filling, tumour-in-liver.

The three building blocks work on a NumPy array in (z, y, x) order or on an
:class:`~liverctl.io.Image`, and return the same kind of object they were given:

- :func:`largest_components` keeps the ``n`` largest connected components of a binary
  mask (optionally only those of at least ``min_volume_ml`` millilitres), with 6-, 18- or
  26-connectivity (26 by default: faces, edges and corners touch).
- :func:`fill_holes` fills the holes of a binary mask. A *hole* is a connected component
  of the background (6-connectivity, the dual of the 26-connected foreground) that does
  not touch the border of the volume; background that reaches the volume border is never
  a hole. ``slicewise=True`` fills 2D holes in each axial (z) slice instead (4-connected
  background), which also closes vessels that enter the liver from above or below.
- :func:`remove_outside` sets to 0 the tumour voxels that are not inside a liver: a
  tumour voxel is kept only if its connected component of (liver ∪ tumour) holds at
  least one liver voxel.

:func:`postprocess` applies a :class:`PostprocessConfig` (per-label rules plus the
tumour-in-liver rule) to an Image, an array, a mask file or a folder of mask files, and
reports components, voxels and volumes before and after, per label.
:func:`clean_liver_mask` is the clean-up ``predict`` applies to its raw liver prediction.
Nothing here imports torch.

Modules: :mod:`~liverctl.postprocessing.components`, :mod:`~liverctl.postprocessing.holes`,
:mod:`~liverctl.postprocessing.tumour` (the building blocks), :mod:`~liverctl.postprocessing.config`
(rules and presets), :mod:`~liverctl.postprocessing.pipeline` (:func:`postprocess`, reports).
"""

from __future__ import annotations

from liverctl.postprocessing.components import CONNECTIVITIES, ComponentStats, largest_components
from liverctl.postprocessing.config import PRESETS, LabelRule, PostprocessConfig, parse_keep
from liverctl.postprocessing.holes import fill_holes
from liverctl.postprocessing.pipeline import CaseReport, LabelReport, clean_liver_mask, postprocess, postprocess_image
from liverctl.postprocessing.tumour import remove_outside, tumour_in_liver

__all__ = [
    "CONNECTIVITIES",
    "PRESETS",
    "CaseReport",
    "ComponentStats",
    "LabelReport",
    "LabelRule",
    "PostprocessConfig",
    "clean_liver_mask",
    "fill_holes",
    "largest_components",
    "parse_keep",
    "postprocess",
    "postprocess_image",
    "remove_outside",
    "tumour_in_liver",
]
