"""Windows only where the liver can be: a cheap, conservative first pass (issue 24).

The defaults evaluate MONAI's window grid, but only the windows that can hold liver. Which those
are is decided by :func:`liver_region`: the same network on the same volume at half the
resolution (each axis halved by linear interpolation, so the pass has an eighth of the voxels;
its windows are fitted to the half-resolution volume, rounded up to the network's input
multiple, instead of padded to the full window), the voxels whose liver probability is at least
half the largest class probability (:data:`THRESHOLD`; an argmax needs it to be the largest),
the bounding box of that, brought back to the full grid
and widened by :data:`MARGIN` of a window on every side.

The full pass then treats everything outside that box as air (the engine's ``skip_empty``):
a window is evaluated when it touches a body voxel inside the box. Every body voxel of the box
therefore receives exactly the windows and weights MONAI gives it, so its probabilities are the
full run's; outside the box the liver decision is "no liver".

When the first pass can miss liver: a network that sees the half-resolution scan so
differently that its liver probability stays below half the winning class's on part of the
liver farther than the margin (a quarter window, 24 voxels of a 96^3 window: 72 mm at 3 mm) from everything it does
call liver. When it finds no liver at all, nothing is skipped (the full grid runs). The report's
``inference.first_pass`` holds the box (model-space voxels, z, y, x), the windows the first pass
ran and its seconds; ``windows`` / ``skipped_windows`` count the full grid's windows evaluated and
skipped (air and outside the box together).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

__all__ = ["MARGIN", "THRESHOLD", "box_around", "liver_region", "outside_as_air", "worth_it"]

THRESHOLD = 0.5
"""A coarse voxel may be liver where its liver probability is at least this fraction of the
largest class probability (argmax models: half of what it takes to win the argmax), or, for a
sigmoid model, above this times 0.5 (a quarter)."""
MARGIN = 0.25
"""Widening of the coarse box on every side, as a fraction of the window."""
FACTOR = 2
"""The first pass's voxels are this many of the full grid's along each axis."""
AIR = -1000.0
MIN_WINDOW = 16
"""No first pass for a network whose window is thinner than this along any axis."""


def _coarse(array: np.ndarray) -> np.ndarray:
    """``array`` (z, y, x) at half the resolution (linear, align_corners=False)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    size = [max(1, int(np.ceil(n / FACTOR))) for n in array.shape]
    return torch.nn.functional.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def worth_it(shape: Sequence[int], roi: Sequence[int]) -> bool:
    """Whether a first pass could skip a window of the grid: only where, along some axis, the
    volume is longer than a window by at least the smallest box with the margin on both sides
    (one coarse voxel and twice the margin: 50 voxels for a 96-voxel window). A box that small at
    the volume's very edge could skip a window of a shorter volume too, but a liver is not a voxel
    thick: an abdomen at 3 mm (122 x 101 x 112 voxels, 2 x 2 x 2 windows of 96) skips nothing, and
    there the pass would cost a quarter window for nothing (measured). Skipping the pass is always
    safe: every window is then evaluated.

    Never for a window thinner than :data:`MIN_WINDOW` along an axis (a 2D network's one-slice
    windows): its margin along that axis would be a voxel, and at half resolution a 2D network
    sees slices of half the size it was trained on (a PIPO-FAN model's box then cut liver off)."""
    if min(int(r) for r in roi) < MIN_WINDOW:
        return False
    return any(int(n) - int(r) >= FACTOR + 2 * int(np.ceil(MARGIN * int(r))) for n, r in zip(shape, roi, strict=True))


def liver_region(
    volume: np.ndarray,
    hu: np.ndarray,
    predictors: Sequence[Any],
    config: Any,
    device: Any,
    liver_channels: Sequence[int],
) -> tuple[tuple[slice, slice, slice] | None, dict[str, Any]]:
    """The box (engine axes, full grid) where the liver can be, or ``None`` (no liver found:
    evaluate everything), and what the report records of the first pass."""
    from liverctl.inference import predict_volume

    t0 = time.perf_counter()
    first = replace(
        config, channels=None if config.argmax else tuple(liver_channels), argmax=False, tta=False, adaptive_roi=True
    )
    result = predict_volume(_coarse(volume), list(predictors), first, device, hu=_coarse(hu))
    probability = np.sum([result.channel(c) for c in liver_channels], axis=0)
    if config.argmax:
        hits = probability >= THRESHOLD * result.probabilities.max(axis=0)
    else:
        hits = probability > THRESHOLD * 0.5
    info: dict[str, Any] = {"windows": int(result.stats.windows), "seconds": round(time.perf_counter() - t0, 3)}
    box = box_around(hits, volume.shape, config.roi)
    info["box"] = None if box is None else [[s.start, s.stop] for s in box]
    return box, info


def box_around(
    hits: np.ndarray, shape: Sequence[int], roi: Sequence[int], factor: int = FACTOR
) -> tuple[slice, slice, slice] | None:
    """The box on the full grid (``shape``) around the coarse voxels ``hits`` (each ``factor``
    full voxels along an axis), widened by :data:`MARGIN` of the window ``roi`` on every side;
    ``None`` when nothing was hit."""
    if not hits.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        found = np.flatnonzero(hits.any(axis=other))
        margin = int(np.ceil(MARGIN * roi[axis]))
        lo = max(0, int(found[0]) * factor - margin)
        hi = min(int(shape[axis]), (int(found[-1]) + 1) * factor + margin)
        box.append(slice(lo, hi))
    return box[0], box[1], box[2]


def outside_as_air(hu: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """``hu`` with every voxel outside ``box`` set to air: the engine's ``skip_empty`` then skips
    the windows that touch no body voxel inside the box, and only those."""
    out = np.full(hu.shape, AIR, dtype=np.float32)
    out[box] = hu[box]
    return out
