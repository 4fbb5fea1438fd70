"""nnU-Net v2's sliding-window prediction and its way back to the scan's grid.

Follows ``nnUNetPredictor`` 2.5.1 (``predict_from_raw_data.py``) step by step:

* the preprocessed volume is padded (constant 0, centred) to at least the patch size
  (``pad_nd_image``); windows start where ``compute_steps_for_sliding_window`` puts them for
  ``tile_step_size`` 0.5 and are visited x-, then y-, then z-major (the transposed axes);
* each window's logits are, with mirroring, the mean of the network's output on the window and
  on its flips along every non-empty combination of the checkpoint's
  ``inference_allowed_mirroring_axes``;
* they are weighted by ``compute_gaussian`` (sigma = patch / 8, scaled to a maximum of 10,
  zeros replaced by the smallest non-zero value) and accumulated **in float16**, as are the
  weights; the sum is divided by the weights;
* folds: the **logits** of each fold's whole sliding window are summed (float16) and divided
  by the number of folds (nnU-Net averages logits, not softmaxes);
* back to the scan (``convert_predicted_logits_to_segmentation_with_correct_shape``): the
  logits are resampled to the cropped shape (the plans' probability resampling, order 1),
  softmaxed in float32, arg-maxed, put back into the uncropped box (background probability 1
  outside it) and transposed back.

``exact=True`` does exactly that, with nnUNetPredictor's arithmetic **on the device it runs on**
(:func:`exact_precision`):

* on the **CPU** (and MPS): the network in float32, the window logits and their mirror mean in
  float32, multiplied by the float16 gaussian and summed into float16 arrays on the CPU: equal
  to nnUNetPredictor on the CPU (probabilities to float16 rounding, identical label maps);
* on **CUDA**: the network under float16 autocast (``torch.autocast("cuda")``, as nnU-Net
  does), the mirror mean in float16, and the float16 sums on the GPU
  (``perform_everything_on_device=True``): nnUNetPredictor's numbers on that GPU, not the CPU's
  (float16 network outputs differ from float32 ones by ~1e-3 in the logits). After an
  out-of-memory error the sums move to the CPU (``accumulate_on="cpu"``), as nnUNetPredictor's
  own fallback does, which changes nothing in the numbers. TF32 is left as torch's default
  there, as nnU-Net leaves it (it touches only the float32 ops autocast keeps).

``exact=False`` (the default of :class:`~liverctl.nnunet.model.NnUNetModel`) keeps the windows,
weights, mirroring and fold mean, but runs the network in the precision asked for (``auto``:
float32 on the CPU, float16 autocast on CUDA, as nnU-Net on each; ``fp32`` on CUDA is true
float32, TF32 off; ``bf16`` only when asked for, see :func:`liverctl.device.resolve_precision`),
accumulates in float16 as nnUNetPredictor does, where the network runs (on the GPU on CUDA,
like nnU-Net, with no blocking copy per window; float32 sums, used before, differed from
nnU-Net's by 2 liver voxels of a phantom scan, Dice 0.9998, and float16 by at most 1, Dice
0.99994), skips windows that hold only air (and, with the first pass of
:mod:`liverctl.nnunet.first_pass`, those outside the liver's box), and brings back only what the liver decision needs: the liver channels' logits,
and the max and the log-sum-exp of the other channels (for a model whose only other channel is
background, the same decision and probability nnU-Net computes).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from liverctl.device import synchronize
from liverctl.nnunet.plans import NnUNetPlans
from liverctl.nnunet.preprocess import Preprocessed
from liverctl.nnunet.resampling import resample

__all__ = [
    "WindowStats",
    "compute_gaussian",
    "compute_steps",
    "exact_precision",
    "export",
    "mirror_combinations",
    "predict_logits",
]

OUTSIDE_LOGIT = -100.0
"""Logit of non-background channels where only skipped (air) windows lie."""


@dataclass
class WindowStats:
    """What the sliding window did (for reports): windows run and skipped, per fold."""

    windows: int = 0
    skipped_windows: int = 0
    network_passes: int = 0
    network_seconds: float = 0.0
    precision: str = "fp32"
    steps: list[list[int]] = field(default_factory=list)
    accumulate_on: str = "device"
    tf32: bool = False


def compute_steps(image_size: Sequence[int], tile_size: Sequence[int], step: float) -> list[list[int]]:
    """nnU-Net's ``compute_steps_for_sliding_window``."""
    if not 0 < step <= 1:
        raise ValueError("step must be in (0, 1]")
    targets = [t * step for t in tile_size]
    counts = [int(np.ceil((i - k) / j)) + 1 for i, j, k in zip(image_size, targets, tile_size, strict=True)]
    steps = []
    for dim in range(len(tile_size)):
        top = image_size[dim] - tile_size[dim]
        actual = top / (counts[dim] - 1) if counts[dim] > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(counts[dim])])
    return steps


@lru_cache(maxsize=4)
def _gaussian(tile: tuple[int, ...], sigma_scale: float, value_scaling_factor: float) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(tile)
    tmp[tuple(i // 2 for i in tile)] = 1
    g = torch.from_numpy(gaussian_filter(tmp, [i * sigma_scale for i in tile], 0, mode="constant", cval=0))
    g /= torch.max(g) / value_scaling_factor
    return g


def compute_gaussian(
    tile: Sequence[int],
    sigma_scale: float = 1.0 / 8,
    value_scaling_factor: float = 10,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """nnU-Net's ``compute_gaussian`` importance map, in ``dtype``."""
    g = _gaussian(tuple(int(t) for t in tile), sigma_scale, value_scaling_factor).to(dtype=dtype)
    zero = g == 0
    if zero.any():
        g[zero] = torch.min(g[~zero])
    return g


def mirror_combinations(axes: Sequence[int] | None) -> list[tuple[int, ...]]:
    """Tensor dims (batch + channel first) of every flip nnU-Net adds, in its order."""
    if not axes:
        return []
    dims = [a + 2 for a in axes]
    return [c for i in range(len(dims)) for c in itertools.combinations(dims, i + 1)]


def _pad(data: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """acvl_utils' ``pad_nd_image(data, patch, "constant", {"value": 0}, return_slicer=True)``."""
    old = np.array(data.shape[1:])
    new = np.maximum(np.array(patch), old)
    below = (new - old) // 2
    above = (new - old) // 2 + (new - old) % 2
    revert = (slice(None), *[slice(int(b), int(n - a)) for b, n, a in zip(below, new, above, strict=True)])
    if not np.any(new - old):
        return data, revert
    flat = [int(v) for pair in zip(below[::-1], above[::-1], strict=True) for v in pair]
    return torch.nn.functional.pad(data, flat, mode="constant", value=0), revert


def _mirrored(network: torch.nn.Module, x: torch.Tensor, flips: list[tuple[int, ...]], exact: bool) -> torch.Tensor:
    """nnU-Net's ``_internal_maybe_mirror_and_predict`` (float32 sums)."""
    prediction = network(x)
    if not exact:
        prediction = prediction.float()
    for dims in flips:
        flipped = torch.flip(network(torch.flip(x, dims)), dims)
        prediction += flipped if exact else flipped.float()
    if flips:
        prediction /= len(flips) + 1
    return prediction


def _windows(
    shape: Sequence[int], patch: Sequence[int], step: float
) -> tuple[list[list[int]], list[tuple[slice, ...]]]:
    steps = compute_steps(shape, patch, step)
    slicers = [
        (slice(None), *[slice(s, s + p) for s, p in zip(start, patch, strict=True)])
        for start in itertools.product(*steps)
    ]
    return steps, slicers


def _sliding_window(
    data: torch.Tensor,
    network: torch.nn.Module,
    plans: NnUNetPlans,
    flips: list[tuple[int, ...]],
    device: torch.device,
    *,
    exact: bool,
    step: float,
    body: np.ndarray | None,
    stats: WindowStats,
) -> torch.Tensor:
    """Logits of one network over the whole (padded) volume, back on the unpadded volume (CPU).

    The sums live on ``stats.accumulate_on``'s device: ``"device"`` = where the network runs
    (nnUNetPredictor's ``perform_everything_on_device``: the padded input is moved there once and
    each window's logits are added without leaving it), ``"cpu"`` = each window's logits copied
    to the CPU (nnUNetPredictor's fallback after an out-of-memory error)."""
    patch = plans.patch_size
    padded, revert = _pad(data, patch)
    steps, slicers = _windows(padded.shape[1:], patch, step)
    stats.steps = steps
    k = plans.num_classes
    dtype = torch.float16  # nnUNetPredictor's accumulator, in both modes
    results = device if stats.accumulate_on == "device" else torch.device("cpu")
    padded = padded.to(results)
    logits = torch.zeros((k, *padded.shape[1:]), dtype=dtype, device=results)
    weights = torch.zeros(padded.shape[1:], dtype=dtype, device=results)
    gaussian = compute_gaussian(patch, dtype=dtype).to(results)
    inside = None
    if body is not None:
        inside = np.zeros(padded.shape[1:], dtype=bool)
        inside[revert[1:]] = body
    for sl in slicers:
        if inside is not None and not inside[sl[1:]].any():
            stats.skipped_windows += 1
            continue
        synchronize(device)
        t0 = time.perf_counter()
        x = padded[sl][None].to(device)
        prediction = _mirrored(network, x, flips, exact)[0].to(results)
        synchronize(device)
        stats.network_seconds += time.perf_counter() - t0
        stats.windows += 1
        stats.network_passes += len(flips) + 1
        prediction *= gaussian
        logits[sl] += prediction
        weights[sl[1:]] += gaussian
    return _normalise(logits, weights)[(slice(None), *revert[1:])].to("cpu")


def _normalise(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted sums divided by the summed weights; background where no window ran."""
    empty = weights == 0
    if empty.any():  # only where every window was skipped (air): background
        weights[empty] = 1
    logits /= weights
    if empty.any():
        logits[0][empty] = 0
        logits[1:, empty] = OUTSIDE_LOGIT
    if torch.any(torch.isinf(logits)):
        raise FloatingPointError("inf in the accumulated logits (float16 overflow)")
    return logits


def exact_precision(device: torch.device) -> str:
    """The precision of ``exact=True`` on ``device``: nnUNetPredictor's. It runs the network
    under float16 autocast on CUDA (``torch.autocast("cuda", enabled=True)``) and without
    autocast (float32) on the CPU and MPS."""
    return "fp16" if device.type == "cuda" else "fp32"


def predict_logits(
    pre: Preprocessed,
    networks: Sequence[torch.nn.Module],
    plans: NnUNetPlans,
    mirror_axes: Sequence[int] | None,
    device: torch.device,
    *,
    exact: bool = True,
    precision: str = "fp32",
    step: float = 0.5,
    accumulate_on: str = "device",
    region: tuple[slice, ...] | None = None,
) -> tuple[torch.Tensor, WindowStats]:
    """Fold-mean logits on the preprocessed grid (``(K, *pre.data.shape[1:])``, CPU).

    ``precision`` is the resolved precision (``"fp32"``, or ``"fp16"``/``"bf16"`` autocast; with
    ``exact`` it is :func:`exact_precision`'s, whatever is passed). ``exact`` adds float16 sums
    and every window. ``accumulate_on``: ``"device"`` (sums where the network runs) or ``"cpu"``.
    ``region`` (default mode): a box of the grid (:mod:`liverctl.nnunet.first_pass`); windows that
    touch no body voxel inside it are skipped and everything outside it is background.
    """
    from liverctl.device import autocast, device_guard, tf32_during_forward

    if accumulate_on not in ("device", "cpu"):
        raise ValueError(f"accumulate_on must be 'device' or 'cpu', got {accumulate_on!r}")
    flips = mirror_combinations(mirror_axes)
    data = torch.from_numpy(pre.data)
    body = None if exact else _within(pre.body, region, data.shape[1:])
    used = exact_precision(device) if exact else precision
    stats = WindowStats(precision=used, accumulate_on=accumulate_on, tf32=tf32_during_forward(device, used))
    prediction = None
    with torch.inference_mode(), device_guard(device), autocast(device, used):
        for network in networks:
            logits = _sliding_window(
                data, network, plans, flips, device, exact=exact, step=step, body=body, stats=stats
            )
            prediction = logits if prediction is None else prediction.add_(logits)
        assert prediction is not None
        if len(networks) > 1:
            prediction /= len(networks)
        if region is not None and not exact:
            outside = torch.ones(prediction.shape[1:], dtype=torch.bool)
            outside[region] = False
            prediction[0][outside] = 0
            prediction[1:, outside] = OUTSIDE_LOGIT
    return prediction, stats


def _within(body: np.ndarray | None, region: tuple[slice, ...] | None, shape: Sequence[int]) -> np.ndarray | None:
    """The body voxels inside ``region`` (all voxels of it without a body map)."""
    if region is None:
        return body
    inside = np.zeros(tuple(shape), dtype=bool)
    inside[region] = True
    return inside if body is None else body & inside


@dataclass
class Exported:
    """A prediction on the scan's array grid ((z, y, x), the scan's own order).

    ``labels``: uint8 label map (exact: every class; fast: the liver labels, 0 elsewhere).
    ``liver_probability``: float32 sum of the liver labels' softmax probabilities.
    ``probabilities``: all classes (``(K, z, y, x)`` float32), when asked for (exact only).
    """

    labels: np.ndarray
    liver_probability: np.ndarray
    probabilities: np.ndarray | None = None


def _uncrop(values: np.ndarray, pre: Preprocessed, fill: float, dtype: type) -> np.ndarray:
    out = np.full(pre.shape_before_cropping, fill, dtype=dtype)
    out[tuple(slice(lo, hi) for lo, hi in pre.bbox)] = values
    return out


def export(
    logits: torch.Tensor, pre: Preprocessed, plans: NnUNetPlans, *, exact: bool = True, probabilities: bool = False
) -> Exported:
    """Bring fold-mean logits back to the scan's grid (see the module docs)."""
    backward = list(plans.transpose_backward)
    liver = list(plans.liver_labels)
    if exact:
        arr = resample(
            logits.numpy(), pre.shape_after_cropping, plans.spacing, pre.spacing, plans.resampling_probabilities
        )
        probs = torch.softmax(torch.from_numpy(np.asarray(arr)).float(), 0)
        seg = probs.argmax(0).numpy().astype(np.uint8)
        labels = _uncrop(seg, pre, 0, np.uint8).transpose(backward)
        liver_p = _uncrop(probs[liver].sum(0).numpy(), pre, 0.0, np.float32).transpose(backward)
        full = None
        if probabilities:
            full = np.zeros((probs.shape[0], *pre.shape_before_cropping), dtype=np.float32)
            full[0] = 1
            full[(slice(None), *[slice(lo, hi) for lo, hi in pre.bbox])] = probs.numpy()
            full = full.transpose([0, *[b + 1 for b in backward]])
        return Exported(np.ascontiguousarray(labels), np.ascontiguousarray(liver_p), full)
    reduced = _reduce(logits.float(), liver)
    arr = resample(
        reduced.numpy(),
        pre.shape_after_cropping,
        plans.spacing,
        pre.spacing,
        plans.resampling_probabilities,
        exact=False,
    )
    arr = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    n_other = arr.shape[0] - len(liver)
    decision = torch.cat([arr[:1], arr[n_other:]]).argmax(0).numpy()  # 0: the largest other channel wins
    codes = np.array([0, *liver], dtype=np.uint8)
    seg = codes[decision]
    p = torch.softmax(torch.cat([arr[n_other - 1 : n_other], arr[n_other:]]), 0)  # log-sum-exp of the others
    liver_p = (1.0 - p[0]).numpy()
    labels = _uncrop(seg, pre, 0, np.uint8).transpose(backward)
    liver_p = _uncrop(liver_p, pre, 0.0, np.float32).transpose(backward)
    return Exported(np.ascontiguousarray(labels), np.ascontiguousarray(liver_p), None)


def _reduce(logits: torch.Tensor, liver: list[int]) -> torch.Tensor:
    """``[max of the other channels, (log-sum-exp of them,) liver channels...]``."""
    others = [c for c in range(logits.shape[0]) if c not in liver]
    rest = logits[others]
    head = [rest.amax(0)] if len(others) == 1 else [rest.amax(0), torch.logsumexp(rest, 0)]
    return torch.stack([*head, *logits[liver]])
