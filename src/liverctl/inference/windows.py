"""Window planning: sizes and starts along each axis (MONAI's ``dense_patch_slices``), the
gaussian importance map (MONAI's ``compute_importance_map``), where each window's real voxels
lie, and which windows hold only air."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from liverctl.inference.config import Box

__all__ = ["Placement", "importance_map", "plan_axis", "window_starts"]


def importance_map(window: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """Weights of one window, as MONAI's ``compute_importance_map`` (float32, clamped >= 1e-3)."""
    if mode == "constant":
        return torch.ones(tuple(window), dtype=torch.float32)
    weights: torch.Tensor | None = None
    for i, size in enumerate(window):
        x = torch.arange(start=-(size - 1) / 2.0, end=(size - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (size * sigma_scale) ** 2))
        weights = x if i == 0 else weights.unsqueeze(-1) * x[(None,) * i]  # type: ignore[union-attr]
    assert weights is not None
    floor = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights, min=floor)


def _interval(size: int, window: int, overlap: float) -> int:
    """MONAI's scan interval along one axis (``size`` is the padded size)."""
    if window == size:
        return window
    return max(int(window * (1 - overlap)), 1)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Window starts along one axis of (padded) length ``size``, as MONAI's ``dense_patch_slices``."""
    window = min(window, size)
    step = _interval(size, window, overlap)
    n = 1
    for d in range(math.ceil(size / step)):
        if d * step + window >= size:
            n = d + 1
            break
    return [d * step - max(d * step + window - size, 0) for d in range(n)]


def plan_axis(size: int, roi: int, overlap: float, multiple: int, adaptive: bool = True) -> tuple[int, int]:
    """Window size and padded length along one axis: ``(window, padded_size)``.

    Without ``adaptive`` this is MONAI's rule (window = roi; pad to it when the volume is
    smaller). With it: a volume shorter than the roi gets one window of its size rounded up
    to ``multiple``; a longer one gets the window (a multiple of ``multiple`` between half the
    roi and the roi, or the roi itself) that minimises windows x window size, ties going to
    the larger window.
    """
    if not adaptive:
        return roi, max(size, roi)
    if size <= roi:
        window = max(math.ceil(size / multiple) * multiple, multiple)
        return window, max(window, size)
    candidates = {roi} | {w for w in range(multiple, roi + 1, multiple) if 2 * w >= roi}
    best = min(candidates, key=lambda w: (len(window_starts(size, w, overlap)) * w, -w))
    return best, size


Placement = tuple[tuple[slice, slice, slice], tuple[slice, slice, slice]]
"""Where a window's real (unpadded) part lies: ``(in the cropped volume, in the window)``."""


def _place(
    start: tuple[int, int, int], window: Sequence[int], pad_before: Sequence[int], crop_shape: Sequence[int]
) -> Placement:
    real, local = [], []
    for s, w, p, c in zip(start, window, pad_before, crop_shape, strict=True):
        r0, r1 = max(s - p, 0), min(s - p + w, c)
        real.append(slice(r0, r1))
        local.append(slice(r0 - (s - p), r1 - (s - p)))
    return tuple(real), tuple(local)  # type: ignore[return-value]


def _occupied(
    hu: np.ndarray,
    box: Box | None,
    grid: list[tuple[int, int, int]],
    window: Sequence[int],
    pad_before: Sequence[int],
    crop_shape: Sequence[int],
    threshold: float,
) -> list[tuple[int, int, int]]:
    """The windows of ``grid`` whose real voxels include one above ``threshold`` HU.

    A skipped window holds only air, so no voxel above the threshold is covered by it: every
    such voxel gets exactly the windows (and weights) it would get without skipping. With
    nothing above the threshold anywhere, the first window is kept.
    """
    body = (hu[box] if box is not None else hu) > threshold
    kept = [start for start in grid if body[_place(start, window, pad_before, crop_shape)[0]].any()]
    return kept or grid[:1]
