"""Hole filling of binary masks: :func:`fill_holes`.

A *hole* is a connected component of the background (6-connectivity, the dual of the
26-connected foreground) that does not touch the border of the volume; background that
reaches the volume border is never a hole. ``slicewise=True`` fills 2D holes in each axial
(z) slice instead (4-connected background), which also closes vessels that enter the liver
from above or below.
"""

from __future__ import annotations

import cc3d
import numpy as np

from liverctl.postprocessing.components import MaskLike, _binary, _components, _split, _wrap
from liverctl.spatial import bounding_box


def fill_holes(mask: MaskLike, *, slicewise: bool = False) -> MaskLike:
    """Fill the holes of a binary mask.

    3D (default): a hole is a 6-connected background component that does not touch the
    border of the volume. ``slicewise=True``: the same in 2D, in each axial slice
    ``mask[z]``, with 4-connected background (a hole in a slice may be open in 3D).
    Returns a bool mask of the same kind as the input; it is always a superset of the
    input, and filling twice changes nothing.
    """
    array, geometry = _split(mask)
    binary = _binary(array)
    out = binary.copy()
    box = bounding_box(binary)
    if box is None:
        return _wrap(out, geometry)
    # Pad the bounding box by one background voxel: everything outside the box is
    # background connected to that pad (or is outside the volume), so background that
    # reaches a face of the box is "outside", exactly as in the full volume.
    padded = np.pad(binary[box], 1)
    if slicewise:
        filled = np.empty_like(padded)
        for z in range(padded.shape[0]):
            filled[z] = _fill_2d(padded[z])
    else:
        background, _ = _components(~padded, 6)
        filled = background != background[0, 0, 0]
    out[box] = filled[1:-1, 1:-1, 1:-1]
    return _wrap(out, geometry)


def _fill_2d(plane: np.ndarray) -> np.ndarray:
    if not plane.any():
        return plane
    background = cc3d.connected_components(~plane, connectivity=4, binary_image=True)
    return background != background[0, 0]
