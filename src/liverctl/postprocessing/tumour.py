"""Tumour in liver: :func:`remove_outside` drops tumour voxels that are not inside a liver.

A tumour voxel is kept only if its connected component of (liver ∪ tumour) holds at least
one liver voxel. :func:`tumour_in_liver` is the rule ``predict`` applies to liver + tumour
networks (H-DenseUNet's post-processing): tumour only inside the final, cleaned liver region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liverctl.errors import ConfigError
from liverctl.postprocessing.components import MaskLike, _check_connectivity, _components, _isin, _split, _wrap
from liverctl.spatial import bounding_box


def tumour_in_liver(liver_region: np.ndarray, tumour: np.ndarray, tumour_label: int = 2) -> np.ndarray:
    """The label map of a cleaned liver region (liver and tumour together, bool / 0-1) and a
    raw tumour decision: 1 in the region, ``tumour_label`` where the tumour lies inside it,
    0 elsewhere (tumour voxels outside the region are dropped)."""
    region = np.asarray(liver_region).astype(bool)
    tumour = np.asarray(tumour).astype(bool)
    if region.shape != tumour.shape:
        raise ConfigError(f"liver region {region.shape} and tumour {tumour.shape} differ in shape")
    out = region.astype(np.uint8)
    out[region & tumour] = tumour_label
    return out


def remove_outside(
    labels: MaskLike,
    inner_label: int = 2,
    container_labels: Sequence[int] = (1, 2),
    connectivity: int = 26,
) -> MaskLike:
    """Set to 0 the ``inner_label`` voxels (tumour) that lie outside every container (liver).

    The union of ``container_labels`` is split into connected components; ``inner_label``
    voxels in a component that holds no voxel of another container label are removed.
    With the defaults: tumour (2) is kept only where it is part of, or touches, a liver (1)
    region. Returns a copy of the same kind as the input; other labels are untouched.
    """
    connectivity = _check_connectivity(connectivity)
    array, geometry = _split(labels)
    out = array.copy()
    outer = [int(v) for v in container_labels if int(v) != int(inner_label)]
    inner = array == inner_label
    box = bounding_box(inner)
    if box is None:
        return _wrap(out, geometry)
    if not outer:
        raise ConfigError(f"container labels {tuple(container_labels)} hold no label besides {inner_label}")
    # Components of the container that reach the tumour's box may extend beyond it, so work
    # on the container's own bounding box.
    container = _isin(array, [*outer, int(inner_label)])
    cbox = bounding_box(container)
    assert cbox is not None
    sub = array[cbox]
    comp, _ = _components(container[cbox], connectivity)
    liver_components = np.unique(comp[_isin(sub, outer)])
    outside = (sub == inner_label) & ~np.isin(comp, liver_components)
    out[cbox][outside] = 0
    return _wrap(out, geometry)
