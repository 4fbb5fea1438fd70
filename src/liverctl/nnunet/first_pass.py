"""Windows only where the liver can be, for nnU-Net results folders (the default mode).

The same idea as :mod:`liverctl.inference.liver_region` for MONAI bundles: a cheap first pass
finds a box that holds the liver, and the full pass evaluates nnU-Net's windows only where they
touch a body voxel inside it. The first pass is the first fold's network, without mirroring, on
the preprocessed volume at its own resolution (what the network was trained on; at half the
resolution the phantom test model called a fat-filled lower body liver), in patches that tile
the volume instead of overlapping by half: with five folds and eight mirrorings it costs about
1/320 of the full pass (1/64 with one fold). Voxels whose liver probability is at least half the
largest class probability form the box, widened by a quarter patch on every side
(:func:`liverctl.inference.liver_region.box_around`).

Every body voxel inside the box then receives exactly the windows, Gaussian weights and
mirrorings nnU-Net gives it, so its logits are the full run's; outside the box the prediction
is background. When the first pass finds no liver, nothing is skipped. It runs only where a
window could be skipped at all (:func:`liverctl.inference.liver_region.worth_it`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from liverctl.inference.liver_region import THRESHOLD, box_around, worth_it
from liverctl.nnunet.plans import NnUNetPlans
from liverctl.nnunet.predictor import predict_logits
from liverctl.nnunet.preprocess import Preprocessed

__all__ = ["liver_box"]


def liver_box(
    pre: Preprocessed, networks: Sequence[Any], plans: NnUNetPlans, device: torch.device, precision: str
) -> tuple[tuple[slice, slice, slice] | None, dict[str, Any] | None]:
    """The box (preprocessed grid, transposed axes) where the liver can be, and what the report
    records of the first pass; ``(None, None)`` when no first pass runs (nothing to skip, or no
    liver label), ``(None, info)`` when it ran and found no liver (evaluate everything)."""
    shape = pre.data.shape[1:]
    if not plans.liver_labels or not worth_it(shape, plans.patch_size):
        return None, None
    t0 = time.perf_counter()
    logits, stats = predict_logits(
        pre, list(networks)[:1], plans, None, device, exact=False, precision=precision, step=1.0
    )
    probabilities = torch.softmax(logits.float(), 0)
    liver = probabilities[list(plans.liver_labels)].sum(0)
    hits = (liver >= THRESHOLD * probabilities.max(0).values).numpy()
    box = box_around(hits, shape, plans.patch_size, factor=1)
    info = {
        "windows": int(stats.windows),
        "seconds": round(time.perf_counter() - t0, 3),
        "box_network_grid": None if box is None else [[s.start, s.stop] for s in box],
    }
    return box, info
