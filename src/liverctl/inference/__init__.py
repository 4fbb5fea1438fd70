"""Sliding-window inference: windows, gaussian blending, mirror TTA, ensembles, body crop.

The engine runs any ``torch.nn.Module`` (or callable) that maps a batch of windows
``(B, C, z, y, x)`` to logits ``(B, K, z, y, x)`` over a whole volume in model space
(already resampled and normalised), and returns class probabilities (or logits) on that
volume's grid. It reproduces MONAI's ``sliding_window_inference`` exactly when its
shortcuts are off (:meth:`SlidingWindow.monai`), and by default computes less:

* **Body crop** (``crop_body``): windows cover only the bounding box of the body, found on
  the raw HU image (smoothed, ``> body_threshold_hu``, plus ``body_margin`` voxels). Voxels
  outside the box get background: probability 1 for channel 0, 0 for the others.
* **Adaptive windows** (``adaptive_roi``): along an axis where the (cropped) volume is
  smaller than the ROI, the window shrinks to the volume size rounded up to the model's
  ``min_input_multiple`` (MONAI pads a 30-slice scan to 96 slices); along longer axes the
  window size (a multiple of ``min_input_multiple``, between half the ROI and the ROI) is
  the one that minimises the voxels evaluated along that axis for the given overlap.

How it works, and what it costs in memory:

* Window placement, padding (constant ``pad_value``, centred, only where the volume is
  smaller than the window) and the gaussian importance map (sigma = ``sigma_scale`` x window
  size, clamped below at 1e-3) follow MONAI's ``dense_patch_slices`` and
  ``compute_importance_map``. Windows are visited in z-major order, ``batch_size`` per
  forward pass.
* Logits are accumulated (weighted by the importance map, in float32) in **z-slabs**: the
  z axis is cut at every window start and stop, and a slab is finished (divided by the summed
  weights, turned into probabilities, reduced to the requested outputs and copied out) as soon
  as no window left to run touches it. All K channels are kept only for the slabs under the
  current row of windows (at most one window height), so a 105-class model on a
  137x137x300 volume needs ~0.7 GB of accumulator instead of 2.4 GB, and the result is the
  same as accumulating everything (the averaging is per voxel).
* Probabilities are ``softmax`` (or ``sigmoid``) of the weighted mean of window logits, as
  MONAI's bundles compute them. Mirror TTA averages the logits of the flipped windows (as
  nnU-Net does); an ensemble averages the probabilities of its models.
* Outputs: the probabilities (or logits) of the ``channels`` asked for (all by default) and,
  with ``argmax=True``, the label map ``argmax`` over all K channels, computed per slab, so a
  105-channel full-resolution array is never held.

>>> import torch
>>> from liverctl.inference import SlidingWindow, sliding_window_inference
>>> net = torch.nn.Conv3d(1, 3, 3, padding=1)
>>> res = sliding_window_inference(torch.zeros(1, 20, 30, 40), net, SlidingWindow(roi=(16, 16, 16)), "cpu")
>>> res.probabilities.shape
(3, 20, 30, 40)

Modules, along the engine's steps: :mod:`~liverctl.inference.config` (:class:`SlidingWindow`,
:class:`InferenceResult`, :class:`InferenceStats`), :mod:`~liverctl.inference.body` (body crop),
:mod:`~liverctl.inference.windows` (window planning, importance map),
:mod:`~liverctl.inference.networks` (slice-wise 2D, pointwise head, mirror TTA),
:mod:`~liverctl.inference.accumulate` (the z-slab accumulator) and
:mod:`~liverctl.inference.engine` (:func:`predict_volume`). Axis order: (z, y, x) everywhere,
``roi`` included (a weights entry's window recipe, in (x, y, z), is converted by its caller:
:attr:`liverctl.weights.WindowRecipe.roi_zyx`).
"""

from __future__ import annotations

from liverctl.inference.body import crop_to_body, uncrop
from liverctl.inference.config import (
    DEFAULT_MIN_INPUT_MULTIPLE,
    OUTSIDE_LOGIT,
    Box,
    InferenceResult,
    InferenceStats,
    Predictor,
    SlidingWindow,
)
from liverctl.inference.engine import predict_volume, sliding_window_inference
from liverctl.inference.windows import Placement, importance_map, plan_axis, window_starts

__all__ = [
    "DEFAULT_MIN_INPUT_MULTIPLE",
    "OUTSIDE_LOGIT",
    "Box",
    "InferenceResult",
    "InferenceStats",
    "Placement",
    "Predictor",
    "SlidingWindow",
    "crop_to_body",
    "importance_map",
    "plan_axis",
    "predict_volume",
    "sliding_window_inference",
    "uncrop",
    "window_starts",
]
