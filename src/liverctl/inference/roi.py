"""The cascade at predict time (H-DenseUNet, ``docs/studies/hdenseunet.md``): :func:`predict_in_roi`.

For networks with a coarse liver-ROI stage (``hdenseunet_cascade``,
:mod:`liverctl.models.hdenseunet_cascade`):

1. each network's ``coarse`` stage sees the whole volume and gives its liver box
   (:meth:`~liverctl.models.hdenseunet_cascade.HDenseUNetCascade.roi`, margin included);
   an ensemble uses the union of its members' boxes;
2. the box is intersected with the body box (when the window config crops to the body);
3. :func:`~liverctl.inference.predict_volume` runs the fine networks on that box only and
   pastes the result back into the full grid: outside the box every voxel is background.

When no coarse stage finds a liver, the fine networks see the whole (body) volume, so a
coarse miss cannot by itself empty the segmentation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from liverctl.inference.body import crop_to_body
from liverctl.inference.config import InferenceResult, SlidingWindow
from liverctl.inference.engine import predict_volume

__all__ = ["coarse_roi", "has_coarse_stage", "predict_in_roi"]

Box = tuple[slice, slice, slice]


def has_coarse_stage(models: Sequence[Any]) -> bool:
    """Whether the networks carry a coarse liver-ROI stage (all of them must)."""
    return bool(models) and all(hasattr(m, "coarse") and hasattr(m, "roi") for m in models)


def coarse_roi(models: Sequence[Any], volume: np.ndarray, device: torch.device | str = "cpu") -> Box | None:
    """The union of the networks' coarse liver boxes on ``volume`` ((C,) z, y, x), or ``None``."""
    vol = torch.as_tensor(np.ascontiguousarray(volume, np.float32))
    vol = (vol[None] if vol.ndim == 3 else vol)[None].to(device)
    boxes = []
    for m in models:
        was_training = m.training
        m.eval()
        try:
            box = m.roi(vol)
        finally:
            m.train(was_training)
        if box is not None:
            boxes.append(box)
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))  # type: ignore[return-value]


def predict_in_roi(
    volume: np.ndarray,
    models: Sequence[Any],
    config: SlidingWindow,
    device: torch.device | str,
    *,
    hu: np.ndarray | None = None,
    progress: Any = None,
) -> InferenceResult:
    """:func:`~liverctl.inference.predict_volume` of the fine networks inside the coarse
    networks' liver box (module docs); the result is on ``volume``'s full grid."""
    shape = tuple(np.shape(volume)[-3:])
    roi = coarse_roi(models, volume, device)
    if config.crop_body and hu is not None:
        body = crop_to_body(hu, config.body_threshold_hu, config.body_margin)
        if roi is None:
            roi = body
        elif body is not None:
            roi = tuple(slice(max(r.start, b.start), min(r.stop, b.stop)) for r, b in zip(roi, body, strict=True))  # type: ignore[assignment]
            if any(s.stop <= s.start for s in roi):  # the coarse box lies outside the body
                roi = body
    if roi is None or any(s.stop <= s.start for s in roi):
        roi = tuple(slice(0, n) for n in shape)  # type: ignore[assignment]
    return predict_volume(
        volume,
        list(models),
        dataclasses.replace(config, crop_body=True),
        device,
        hu=hu,
        body_box=roi,
        progress=progress,
    )
