"""The body crop: the bounding box of the body in a CT volume, and putting values back around it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from liverctl.errors import InputError
from liverctl.inference.config import Box

__all__ = ["crop_to_body", "uncrop"]


def crop_to_body(
    hu: np.ndarray,
    threshold: float = -500.0,
    margin: int = 4,
    min_component_fraction: float = 0.01,
) -> Box | None:
    """Bounding box of the body in a CT volume, as slices (z, y, x).

    The image is smoothed with a 3x3x3 mean filter, thresholded at ``threshold`` HU, and
    connected components smaller than ``min_component_fraction`` of the largest one (noise,
    specks) are ignored; the box of the rest grows by ``margin`` voxels on every side
    (clipped to the volume). Returns ``None`` when nothing is above the threshold.
    """
    import cc3d

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise InputError(f"crop_to_body needs a 3D (z, y, x) array, got shape {hu.shape}")
    # 3x3x3 mean with edge replication (scipy's uniform_filter, mode "nearest"), in torch:
    # importing scipy.ndimage would cost more than the whole search
    t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None, None]
    with torch.inference_mode():
        smooth = torch.nn.functional.avg_pool3d(torch.nn.functional.pad(t, (1,) * 6, mode="replicate"), 3, stride=1)
    body = smooth[0, 0].numpy() > threshold
    del smooth, t
    if not body.any():
        return None
    labels, n = cc3d.connected_components(body, connectivity=6, return_N=True)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
        body = np.isin(labels, keep)
    del labels
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(body.any(axis=other))
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, hu.shape[axis])))
    return tuple(box)  # type: ignore[return-value]


def uncrop(
    values: np.ndarray,
    box: Box | None,
    full_shape: Sequence[int],
    fill: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Place ``values`` (``(C, *box shape)`` or ``box shape``) back into a ``full_shape`` grid.

    ``fill`` is the value outside the box, one per channel or one for all (for class
    probabilities: 1 for the background channel, 0 for the others).
    """
    values = np.asarray(values)
    full_shape = tuple(int(s) for s in full_shape)
    if box is None:
        return values
    channel_first = values.ndim == len(full_shape) + 1
    lead = values.shape[:1] if channel_first else ()
    out = np.empty(lead + full_shape, dtype=values.dtype)
    fills = np.broadcast_to(np.asarray(fill, dtype=values.dtype), lead or (1,))
    if channel_first:
        for c in range(lead[0]):
            out[c] = fills[c]
    else:
        out[...] = fills[0]
    out[(Ellipsis, *box)] = values
    return out
