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
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from liverctl.device import (
    autocast,
    prepare_network,
    resolve_device,
    resolve_precision,
    restore_layout,
    synchronize,
    to_device,
)
from liverctl.errors import ConfigError, InputError
from liverctl.progress import ProgressCallback

Box = tuple[slice, slice, slice]
Predictor = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_MIN_INPUT_MULTIPLE = 16
"""Window sizes are rounded to this when the model has no ``min_input_multiple`` attribute."""

OUTSIDE_LOGIT = -100.0

_FINISH_SLICES = 8
"""Logit given to foreground channels outside the body box when ``output="logits"``."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SlidingWindow:
    """How to slide a network over a volume. The defaults are MONAI's windows, air skipped.

    :meth:`monai` computes every window as MONAI does, in float32; :meth:`fast` adds the
    body crop and adaptive windows.

    Attributes:
        roi: largest window (z, y, x) in voxels of the model space.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        mode: ``"gaussian"`` (importance weighting, down-weights window borders) or ``"constant"``.
        sigma_scale: gaussian sigma as a fraction of the window size (MONAI's 0.125).
        batch_size: windows per forward pass; ``None`` = 4 on an accelerator, 1 on the CPU
            (on the CPU batching gains no speed, and each extra 96^3 window of a 105-class
            SegResNet costs several hundred MB: its logits alone take 371 MB).
        adaptive_roi: shrink windows to what the volume needs (see the module docs).
        min_input_multiple: window sizes are multiples of this when ``adaptive_roi``;
            ``None`` = the model's ``min_input_multiple`` attribute, else 16.
        crop_body: run only inside the body's bounding box (needs the raw HU image or a box).
        skip_empty: skip windows whose voxels are all at or below ``body_threshold_hu``
            (air; needs the raw HU image). Exact for every voxel of a window that holds body.
        pointwise_head: for a network whose last layer is a 1x1x1 convolution (it offers
            ``split_head()``, as SegResNet does), blend the windows' features and apply that
            layer once per voxel: the same result (a weighted mean commutes with a linear map)
            with 32 channels blended instead of 105 and the layer run once per voxel instead
            of once per window voxel.
        body_threshold_hu: HU above which a voxel is body (the body crop smooths first).
        body_margin: voxels added around the body box on every side.
        tta: mirror test-time augmentation: ``False``, ``True`` (all three axes: 8 passes)
            or a tuple of spatial axes (0 = z, 1 = y, 2 = x) to mirror along.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (see :mod:`liverctl.device`).
        output: ``"probabilities"`` or ``"logits"`` (the weighted mean window logits; for an
            ensemble, the mean over models).
        activation: ``"softmax"`` (channels are exclusive classes, channel 0 = background) or
            ``"sigmoid"`` (independent channels).
        channels: model channels to return (``None`` = all; ``()`` = none, only the label
            map of ``argmax``: no probabilities are computed, which saves a pass over all K).
        argmax: also return the label map (argmax over all channels).
        pad_value: value used to pad the volume where it is smaller than a window (MONAI: 0).
        padding_mode: ``"constant"`` (``pad_value``), ``"replicate"`` or ``"reflect"``, as
            MONAI's ``padding_mode`` (its whole-body bundle uses ``"replicate"``).
        accumulate_on: ``"device"`` (accumulate where the network runs) or ``"cpu"``.
    """

    roi: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    mode: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = 0.125
    batch_size: int | None = None
    adaptive_roi: bool = False
    min_input_multiple: int | None = None
    crop_body: bool = False
    skip_empty: bool = True
    pointwise_head: bool = True
    body_threshold_hu: float = -500.0
    body_margin: int = 4
    tta: bool | tuple[int, ...] = False
    precision: str = "auto"
    output: Literal["probabilities", "logits"] = "probabilities"
    activation: Literal["softmax", "sigmoid"] = "softmax"
    channels: tuple[int, ...] | None = None
    argmax: bool = False
    pad_value: float = 0.0
    padding_mode: Literal["constant", "replicate", "reflect"] = "constant"
    accumulate_on: Literal["device", "cpu"] = "device"

    @classmethod
    def monai(cls, **changes: Any) -> SlidingWindow:
        """MONAI's ``SlidingWindowInferer`` exactly: every window computed, float32."""
        base = {
            "adaptive_roi": False,
            "crop_body": False,
            "skip_empty": False,
            "pointwise_head": False,
            "precision": "fp32",
        }
        base.update(changes)
        return cls(**base)

    @classmethod
    def fast(cls, **changes: Any) -> SlidingWindow:
        """The fast path: body crop and adaptive windows (fewer voxels; windows of other
        content than MONAI's, which changes what per-window normalisation layers see)."""
        base = {"adaptive_roi": True, "crop_body": True}
        base.update(changes)
        return cls(**base)

    def __post_init__(self) -> None:
        roi = tuple(int(r) for r in (self.roi if isinstance(self.roi, Sequence) else (self.roi,) * 3))
        if len(roi) != 3 or any(r < 1 for r in roi):
            raise ConfigError(f"roi must be three positive sizes (z, y, x), got {self.roi}")
        object.__setattr__(self, "roi", roi)
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.mode not in ("gaussian", "constant"):
            raise ConfigError(f"mode must be 'gaussian' or 'constant', got {self.mode!r}")
        if self.sigma_scale <= 0:
            raise ConfigError(f"sigma_scale must be > 0, got {self.sigma_scale}")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.min_input_multiple is not None and int(self.min_input_multiple) < 1:
            raise ConfigError(f"min_input_multiple must be >= 1, got {self.min_input_multiple}")
        if int(self.body_margin) < 0:
            raise ConfigError(f"body_margin must be >= 0, got {self.body_margin}")
        if self.output not in ("probabilities", "logits"):
            raise ConfigError(f"output must be 'probabilities' or 'logits', got {self.output!r}")
        if self.activation not in ("softmax", "sigmoid"):
            raise ConfigError(f"activation must be 'softmax' or 'sigmoid', got {self.activation!r}")
        if self.padding_mode not in ("constant", "replicate", "reflect"):
            raise ConfigError(f"padding_mode must be constant, replicate or reflect, got {self.padding_mode!r}")
        if self.accumulate_on not in ("device", "cpu"):
            raise ConfigError(f"accumulate_on must be 'device' or 'cpu', got {self.accumulate_on!r}")
        if self.tta is True:
            object.__setattr__(self, "tta", (0, 1, 2))
        elif self.tta is False or self.tta is None:
            object.__setattr__(self, "tta", ())
        else:
            axes = tuple(sorted({int(a) for a in self.tta}))
            if any(a not in (0, 1, 2) for a in axes):
                raise ConfigError(f"tta axes must be among 0 (z), 1 (y), 2 (x), got {self.tta}")
            object.__setattr__(self, "tta", axes)
        if self.channels is not None:
            chans = tuple(int(c) for c in self.channels)
            if any(c < 0 for c in chans):
                raise ConfigError(f"channels must be non-negative channel indices, got {self.channels}")
            if not chans and not self.argmax:
                raise ConfigError("channels=() keeps no probabilities: it needs argmax=True")
            object.__setattr__(self, "channels", chans)
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"precision must be auto, fp32, fp16 or bf16, got {self.precision!r}")

    @property
    def flips(self) -> list[tuple[int, ...]]:
        """The mirror combinations run per window (``()`` = no flip), e.g. 8 for ``tta=True``."""
        axes: tuple[int, ...] = self.tta  # type: ignore[assignment]
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@dataclass(frozen=True)
class InferenceStats:
    """What one inference run computed, and how long it took.

    ``compute_amplification`` = voxels the network evaluated / voxels of the input volume
    (all windows, mirror passes and ensemble members counted); ``grid_amplification`` is the
    same for a single pass of a single model (the window grid alone). MONAI on a 30-slice
    122x101 scan with 96^3 windows: 4 windows, amplification 9.6. ``skipped_windows``: windows
    of the grid left out because they hold only air (``skip_empty``).
    """

    volume_shape: tuple[int, int, int]
    body_box: tuple[tuple[int, int], ...] | None
    cropped_shape: tuple[int, int, int]
    window: tuple[int, int, int]
    windows: int
    forward_passes: int
    evaluated_voxels: int
    grid_amplification: float
    compute_amplification: float
    network_seconds: float
    total_seconds: float
    device: str
    precision: str
    skipped_windows: int = 0

    @property
    def network_fraction(self) -> float:
        """Share of the wall time spent inside the network."""
        return self.network_seconds / self.total_seconds if self.total_seconds > 0 else 0.0


@dataclass
class InferenceResult:
    """Outputs of :func:`predict_volume`, on the input volume's grid (z, y, x).

    Attributes:
        probabilities: ``(len(channels), z, y, x)`` float32, or ``None`` when logits were asked.
        logits: ``(len(channels), z, y, x)`` float32, or ``None``.
        labels: argmax label map ``(z, y, x)`` (uint8, or int16 beyond 256 classes), or ``None``.
        channels: the model channel of each row of ``probabilities`` / ``logits``.
        num_classes: K, the number of channels the model produced.
        stats: :class:`InferenceStats`.
    """

    probabilities: np.ndarray | None
    logits: np.ndarray | None
    labels: np.ndarray | None
    channels: tuple[int, ...]
    num_classes: int
    stats: InferenceStats = field(repr=False)

    def channel(self, index: int) -> np.ndarray:
        """The ``(z, y, x)`` probability (or logit) map of model channel ``index``."""
        if index not in self.channels:
            raise ConfigError(f"channel {index} was not kept (kept: {list(self.channels)})")
        values = self.probabilities if self.probabilities is not None else self.logits
        assert values is not None
        return values[self.channels.index(index)]

    def mask(self, index: int) -> np.ndarray:
        """Boolean mask of voxels whose argmax is ``index`` (needs ``argmax=True``)."""
        if self.labels is None:
            raise ConfigError("no label map was computed: run with SlidingWindow(argmax=True)")
        return self.labels == index


# --------------------------------------------------------------------------- body crop


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


# --------------------------------------------------------------------------- window grid


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


# --------------------------------------------------------------------------- models


class _SliceWise(torch.nn.Module):
    """Runs a 2D network on every z-slice of 3D windows: (B, C, z, y, x) -> (B, K, z, y, x)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z, y, xx = x.shape
        out = self.net(x.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, xx))
        return out.reshape(b, z, out.shape[1], y, xx).permute(0, 2, 1, 3, 4)


def _model_multiple(models: Sequence[Any], config: SlidingWindow) -> tuple[int, int, int]:
    if config.min_input_multiple is not None:
        m = int(config.min_input_multiple)
        return (m, m, m)
    found = [int(getattr(mdl, "min_input_multiple", 0) or 0) for mdl in models]
    m = max(found) if any(found) else DEFAULT_MIN_INPUT_MULTIPLE
    two_d = all(int(getattr(mdl, "spatial_dims", 3)) == 2 for mdl in models)
    return (1 if two_d else m, m, m)


# --------------------------------------------------------------------------- engine


def sliding_window_inference(
    volume: np.ndarray | torch.Tensor,
    predictor: torch.nn.Module | Predictor,
    config: SlidingWindow | None = None,
    device: str | torch.device = "auto",
    *,
    hu: np.ndarray | None = None,
    body_box: Box | None = None,
    progress: ProgressCallback | None = None,
) -> InferenceResult:
    """Run one network over a whole volume with sliding windows; see :func:`predict_volume`."""
    return predict_volume(volume, [predictor], config, device, hu=hu, body_box=body_box, progress=progress)


def predict_volume(
    volume: np.ndarray | torch.Tensor,
    models: Sequence[torch.nn.Module | Predictor] | torch.nn.Module,
    config: SlidingWindow | None = None,
    device: str | torch.device = "auto",
    *,
    hu: np.ndarray | None = None,
    body_box: Box | None = None,
    progress: ProgressCallback | None = None,
) -> InferenceResult:
    """Class probabilities of a volume in model space, from one network or an ensemble.

    Args:
        volume: the network input, ``(C, z, y, x)`` or ``(z, y, x)``, already resampled and
            normalised (float32).
        models: one network or a list (an ensemble: the mean of their probabilities). Each maps
            ``(B, C, z, y, x)`` to logits ``(B, K, z, y, x)``; ``torch.nn.Module`` s are moved to
            ``device`` and put in eval mode (their training flag is restored afterwards). A module
            with ``spatial_dims == 2`` is run slice by slice.
        config: :class:`SlidingWindow` (defaults: liverctl's fast path).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a torch.device.
        hu: the raw HU image on the same grid as ``volume`` (z, y, x), for the body crop.
        body_box: a precomputed body box (slices); wins over ``hu``. Without either, the
            body crop is skipped.
        progress: called as ``progress("sliding window", done, total)`` after each batch.

    Returns:
        :class:`InferenceResult` with arrays on the grid of ``volume``.
    """
    t_start = time.perf_counter()
    config = config or SlidingWindow()
    device = resolve_device(device)
    precision = resolve_precision(device, config.precision, inference=True)
    if isinstance(models, torch.nn.Module) or (callable(models) and not isinstance(models, Sequence)):
        models = [models]  # type: ignore[list-item]
    models = list(models)  # type: ignore[arg-type]
    if not models:
        raise ConfigError("predict_volume needs at least one model")

    if isinstance(volume, np.ndarray) and not volume.flags.writeable:
        volume = volume.copy()  # torch cannot wrap read-only arrays
    vol = torch.as_tensor(volume)
    if vol.ndim == 3:
        vol = vol[None]
    if vol.ndim != 4:
        raise InputError(f"volume must be (C, z, y, x) or (z, y, x), got shape {tuple(vol.shape)}")
    if not vol.is_floating_point():
        vol = vol.float()
    vol = vol.to(torch.float32)
    full_shape: tuple[int, int, int] = tuple(int(s) for s in vol.shape[1:])  # type: ignore[assignment]

    # ---- body crop
    box: Box | None = None
    if config.crop_body:
        if body_box is not None:
            if len(body_box) != 3 or not all(isinstance(s, slice) for s in body_box):
                raise ConfigError(f"body_box must be three slices (z, y, x), got {body_box}")
            box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(body_box, full_shape, strict=True))  # type: ignore[assignment]
        elif hu is not None:
            if tuple(np.shape(hu)) != full_shape:
                raise InputError(f"hu image shape {np.shape(hu)} differs from the volume's {full_shape}")
            box = crop_to_body(hu, config.body_threshold_hu, config.body_margin)
        if box is not None and all(s.start == 0 and s.stop == n for s, n in zip(box, full_shape, strict=True)):
            box = None
    cropped = vol[(slice(None), *box)] if box is not None else vol
    crop_shape: tuple[int, int, int] = tuple(int(s) for s in cropped.shape[1:])  # type: ignore[assignment]
    if min(crop_shape) < 1:
        raise InputError(f"body box {box} is empty")

    # ---- window grid
    multiple = _model_multiple(models, config)
    plans = [
        plan_axis(crop_shape[a], config.roi[a], config.overlap, multiple[a], config.adaptive_roi) for a in range(3)
    ]
    window = tuple(p[0] for p in plans)
    padded = tuple(p[1] for p in plans)
    pad_before = tuple((padded[a] - crop_shape[a]) // 2 for a in range(3))
    if padded != crop_shape:
        pad = []
        for a in (2, 1, 0):
            pad += [pad_before[a], padded[a] - crop_shape[a] - pad_before[a]]
        if config.padding_mode == "constant":
            cropped = torch.nn.functional.pad(cropped, pad, mode="constant", value=float(config.pad_value))
        else:
            cropped = torch.nn.functional.pad(cropped[None], pad, mode=config.padding_mode)[0]
    window = tuple(min(w, p) for w, p in zip(window, padded, strict=True))
    starts = [window_starts(padded[a], window[a], config.overlap) for a in range(3)]
    grid = list(itertools.product(*starts))  # z-major, as MONAI's meshgrid(indexing="ij")
    grid_windows = len(grid)
    if config.skip_empty and hu is not None:
        if tuple(np.shape(hu)) != full_shape:
            raise InputError(f"hu image shape {np.shape(hu)} differs from the volume's {full_shape}")
        grid = _occupied(np.asarray(hu), box, grid, window, pad_before, crop_shape, config.body_threshold_hu)
    placed = [_place(start, window, pad_before, crop_shape) for start in grid]

    acc_device = device if config.accumulate_on == "device" else torch.device("cpu")
    weights = importance_map(window, config.mode, config.sigma_scale).to(acc_device)
    inputs = to_device(cropped.contiguous(), device)

    predictors: list[Predictor] = []
    heads: list[tuple[torch.Tensor, torch.Tensor | None] | None] = []
    restore: list[tuple[torch.nn.Module, bool]] = []
    relayout: list[tuple[torch.nn.Parameter, torch.memory_format]] = []
    flips = config.flips
    z_cuts = sorted({r[0].start for r, _ in placed} | {r[0].stop for r, _ in placed})
    engine = _SlabAccumulator(
        n_models=len(models),
        z_cuts=z_cuts,
        crop_shape=crop_shape,
        box=box,
        full_shape=full_shape,
        config=config,
        acc_device=acc_device,
        holes=len(grid) < grid_windows,
        heads=heads,
    )
    network_seconds = 0.0
    batch_size = int(config.batch_size or (1 if device.type == "cpu" else 4))
    n_batches = math.ceil(len(grid) / batch_size)
    try:
        for mdl in models:
            head = None
            if isinstance(mdl, torch.nn.Module):
                restore.append((mdl, mdl.training))
                relayout += prepare_network(mdl, device, precision)
                split = _split_head(mdl) if config.pointwise_head else None
                if split is not None:
                    mdl, head = split[0], _pointwise_weights(split[1], acc_device)
                elif int(getattr(mdl, "spatial_dims", 3)) == 2:
                    mdl = _SliceWise(mdl)
            predictors.append(mdl)
            heads.append(head)
        with torch.inference_mode():
            if progress is not None:
                progress("sliding window", 0, len(grid))
            for b in range(n_batches):
                batch = grid[b * batch_size : (b + 1) * batch_size]
                where = placed[b * batch_size : (b + 1) * batch_size]
                engine.finish_before(where[0][0][0].start)
                win = torch.stack(
                    [inputs[:, z : z + window[0], y : y + window[1], x : x + window[2]] for z, y, x in batch]
                )
                for m, predict in enumerate(predictors):
                    synchronize(device)
                    t0 = time.perf_counter()
                    logits = _run_flips(predict, win, flips, device, precision)
                    synchronize(device)
                    network_seconds += time.perf_counter() - t0
                    engine.add(m, logits, where, weights)
                engine.add_weights(where, weights)
                if progress is not None:
                    progress("sliding window", min((b + 1) * batch_size, len(grid)), len(grid))
            engine.finish_before(crop_shape[0] + 1)
    finally:
        restore_layout(relayout)
        for mdl, was_training in restore:
            mdl.train(was_training)

    n_win = len(grid)
    evaluated = n_win * math.prod(window) * len(flips) * len(models)
    scan_voxels = math.prod(full_shape)
    stats = InferenceStats(
        volume_shape=full_shape,
        body_box=tuple((s.start, s.stop) for s in box) if box is not None else None,
        cropped_shape=crop_shape,
        window=window,  # type: ignore[arg-type]
        windows=n_win,
        forward_passes=n_batches * len(flips) * len(models),
        evaluated_voxels=evaluated,
        grid_amplification=n_win * math.prod(window) / scan_voxels,
        compute_amplification=evaluated / scan_voxels,
        network_seconds=network_seconds + engine.head_seconds,
        total_seconds=time.perf_counter() - t_start,
        device=str(device),
        precision=precision,
        skipped_windows=grid_windows - n_win,
    )
    return engine.result(stats)


def _split_head(model: torch.nn.Module) -> tuple[Predictor, torch.nn.Conv3d] | None:
    """``model.split_head()`` when it offers one whose head is a plain 1x1x1 convolution."""
    split = getattr(model, "split_head", None)
    if split is None or int(getattr(model, "spatial_dims", 3)) != 3:
        return None
    parts = split()
    if parts is None:
        return None
    features, head = parts
    if not (
        isinstance(head, torch.nn.Conv3d)
        and tuple(head.kernel_size) == (1, 1, 1)
        and tuple(head.stride) == (1, 1, 1)
        and head.groups == 1
        and head.padding in ((0, 0, 0), "valid")
    ):
        return None
    return features, head


def _pointwise_weights(head: torch.nn.Conv3d, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W, b)`` of a 1x1x1 convolution: ``W`` (K, C) and ``b`` (K,), float32 on ``device``."""
    weight = head.weight.detach().reshape(head.out_channels, head.in_channels).float().to(device)
    bias = None if head.bias is None else head.bias.detach().float().to(device)
    return weight, bias


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


def _run_flips(
    predict: Predictor, win: torch.Tensor, flips: list[tuple[int, ...]], device: torch.device, precision: str
) -> torch.Tensor:
    """Mean logits over the mirror combinations (spatial axes 0..2 -> tensor dims 2..4)."""
    total: torch.Tensor | None = None
    for axes in flips:
        dims = [a + 2 for a in axes]
        x = torch.flip(win, dims) if dims else win
        with autocast(device, precision):
            out = predict(x)
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"the model must return a tensor of logits, got {type(out).__name__}")
        if len(flips) > 1:  # one pass: the accumulator converts only the part it keeps
            out = out.float()
        if dims:
            out = torch.flip(out, dims)
        total = out if total is None else total.add_(out)
    assert total is not None
    if len(flips) > 1:
        total /= len(flips)
    if total.ndim != 5 or total.shape[0] != win.shape[0] or tuple(total.shape[2:]) != tuple(win.shape[2:]):
        raise ConfigError(
            f"the model must map (B, C, z, y, x) to (B, K, z, y, x); got {tuple(win.shape)} -> {tuple(total.shape)}"
        )
    return total


class _SlabAccumulator:
    """Weighted logit sums in z-slabs of the cropped volume; finished slabs become outputs.

    Only the real (unpadded) part of each window is accumulated. The sums keep the memory
    layout of the network's output: channel-first, or channels-last (voxel-major, as oneDNN's
    bfloat16 convolutions produce it), so that adding a window never transposes it.
    """

    def __init__(
        self,
        *,
        n_models: int,
        z_cuts: list[int],
        crop_shape: tuple[int, ...],
        box: Box | None,
        full_shape: tuple[int, int, int],
        config: SlidingWindow,
        acc_device: torch.device,
        holes: bool,
        heads: list[tuple[torch.Tensor, torch.Tensor | None] | None],
    ) -> None:
        self.heads = heads  # per model: the pointwise head applied after blending, or None
        self.cuts = z_cuts
        self.crop_shape = crop_shape
        self.box = box
        self.full_shape = full_shape
        self.config = config
        self.device = acc_device
        self.holes = holes  # windows were skipped: some voxels may be covered by none
        self.head_seconds = 0.0  # time in the pointwise heads (part of the network's time)
        self.sums: list[dict[int, torch.Tensor]] = [{} for _ in range(n_models)]
        self.wsum: dict[int, torch.Tensor] = {}
        self.done = 0  # slabs [0, done) are finished
        self.num_classes: int | None = None
        self.layout = torch.contiguous_format
        self.channels: tuple[int, ...] = ()
        self.fill: torch.Tensor | None = None
        self.values: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def _slab_range(self, z0: int, z1: int) -> range:
        return range(self.cuts.index(z0), self.cuts.index(z1))

    def _slab(self, store: dict[int, torch.Tensor], i: int, channels: int | None) -> torch.Tensor:
        t = store.get(i)
        if t is None:
            dz = self.cuts[i + 1] - self.cuts[i]
            if channels is None:  # the weight sums
                t = torch.zeros((dz, *self.crop_shape[1:]), dtype=torch.float32, device=self.device)
            else:
                t = torch.empty(
                    (1, channels, dz, *self.crop_shape[1:]),
                    dtype=torch.float32,
                    device=self.device,
                    memory_format=self.layout,
                ).zero_()
            store[i] = t
        return t

    def add(self, m: int, logits: torch.Tensor, where: list[Placement], weights: torch.Tensor) -> None:
        """Blend the network outputs of one batch of windows (logits, or the features that
        model ``m``'s pointwise head turns into logits)."""
        width = int(logits.shape[1])
        head = self.heads[m]
        if head is not None and head[0].shape[1] != width:
            raise ConfigError(f"the model's features have {width} channels, its head takes {head[0].shape[1]}")
        k = width if head is None else int(head[0].shape[0])
        if self.num_classes is None:
            if width > 1 and not logits.is_contiguous() and logits.is_contiguous(memory_format=torch.channels_last_3d):
                self.layout = torch.channels_last_3d
            self._allocate(k)
        elif k != self.num_classes:
            raise ConfigError(f"ensemble models disagree on the number of channels: {self.num_classes} vs {k}")
        logits = logits.to(self.device).contiguous(memory_format=self.layout)
        for k, (real, local) in enumerate(where):
            for i in self._slab_range(real[0].start, real[0].stop):
                z0, z1 = self.cuts[i], self.cuts[i + 1]
                lz = slice(local[0].start + z0 - real[0].start, local[0].start + z1 - real[0].start)
                slab = self._slab(self.sums[m], i, width)
                part = logits[k : k + 1, :, lz, local[1], local[2]].float()
                slab[:, :, :, real[1], real[2]].addcmul_(part, weights[lz, local[1], local[2]])

    def add_weights(self, where: list[Placement], weights: torch.Tensor) -> None:
        for real, local in where:
            for i in self._slab_range(real[0].start, real[0].stop):
                z0, z1 = self.cuts[i], self.cuts[i + 1]
                lz = slice(local[0].start + z0 - real[0].start, local[0].start + z1 - real[0].start)
                self._slab(self.wsum, i, None)[:, real[1], real[2]] += weights[lz, local[1], local[2]]

    def _allocate(self, k: int) -> None:
        cfg = self.config
        self.num_classes = k
        if cfg.activation == "softmax" and cfg.output == "probabilities" and k < 2:
            raise ConfigError("softmax needs a model with at least 2 output channels; use activation='sigmoid'")
        channels = cfg.channels if cfg.channels is not None else tuple(range(k))
        if any(c >= k for c in channels):
            raise ConfigError(f"channels {list(channels)} out of range for a model with {k} output channels")
        self.channels = channels
        background = cfg.activation == "softmax"
        if cfg.output == "probabilities":
            fill = [1.0 if (c == 0 and background) else 0.0 for c in range(k)]
        else:
            fill = [0.0 if (c == 0 and background) else OUTSIDE_LOGIT for c in range(k)]
        self.fill = torch.tensor(fill, dtype=torch.float32, device=self.device)
        self.values = np.empty((len(channels), *self.full_shape), dtype=np.float32)
        for j, c in enumerate(channels):
            self.values[j] = fill[c]
        if cfg.argmax:
            self.labels = np.zeros(self.full_shape, dtype=np.uint8 if k <= 256 else np.int16)

    def finish_before(self, z: int) -> None:
        """Finish every slab that ends at or before z index ``z`` of the cropped volume."""
        while self.done < len(self.cuts) - 1 and self.cuts[self.done + 1] <= z:
            self._finish(self.done)
            self.done += 1

    def _finish(self, i: int) -> None:
        if i not in self.wsum:
            return
        wsum = self.wsum.pop(i)
        sums = [store.pop(i) for store in self.sums]
        # finish in thin sub-slabs so that softmax temporaries stay small
        for a in range(0, self.cuts[i + 1] - self.cuts[i], _FINISH_SLICES):
            b = min(a + _FINISH_SLICES, self.cuts[i + 1] - self.cuts[i])
            self._emit(wsum[a:b], [s[0, :, a:b] for s in sums], self.cuts[i] + a)

    def _emit(self, w: torch.Tensor, sums: list[torch.Tensor], z: int) -> None:
        """Turn the sums of cropped slices ``z, z + len(w)`` into outputs."""
        cfg = self.config
        last = self.layout == torch.channels_last_3d  # channel axis last in memory: compute there
        cdim = -1 if last else 0
        hole = (w == 0) if self.holes else None
        if hole is not None:
            w = w.masked_fill(hole, 1.0)
        wb = w[..., None] if last else w[None]
        means = []
        for m, s in enumerate(sums):
            mean = (s.permute(1, 2, 3, 0) if last else s).div_(wb)
            head = self.heads[m]
            if head is not None:  # blended features -> logits, once per voxel (network time)
                t0 = time.perf_counter()
                weight, bias = head
                if last:  # (z, y, x, C) @ (C, K)
                    mean = mean @ weight.T
                    if bias is not None:
                        mean += bias
                else:  # (K, C) . (C, z, y, x)
                    mean = torch.tensordot(weight, mean, dims=([1], [0]))
                    if bias is not None:
                        mean += bias[:, None, None, None]
                synchronize(mean.device)
                self.head_seconds += time.perf_counter() - t0
            means.append(mean)
        index = torch.tensor(self.channels, device=means[0].device, dtype=torch.long)
        if not self.channels and cfg.output == "probabilities" and (cfg.activation == "softmax" or len(means) == 1):
            # labels only: argmax of the (mean) logits needs no probabilities
            combined = means[0] if len(means) == 1 else None
            if combined is None:  # an ensemble averages probabilities
                combined = torch.stack([torch.softmax(mean, dim=cdim) for mean in means]).mean(0)
            labels, kept = combined.argmax(dim=cdim), combined.index_select(cdim, index)
        elif cfg.output == "logits":
            combined = means[0] if len(means) == 1 else torch.stack(means).mean(0)
            labels, kept = combined.argmax(dim=cdim), combined.index_select(cdim, index)
        elif cfg.activation == "softmax" and len(means) == 1:
            # one model: argmax of the logits, and only the kept probabilities exp(l - logsumexp)
            logits = means[0]
            labels = logits.argmax(dim=cdim)
            kept = (logits.index_select(cdim, index) - torch.logsumexp(logits, dim=cdim, keepdim=True)).exp_()
        else:
            combined = None
            for mean in means:
                p = torch.softmax(mean, dim=cdim) if cfg.activation == "softmax" else torch.sigmoid_(mean)
                combined = p if combined is None else combined.add_(p)
            assert combined is not None
            if len(means) > 1:
                combined /= len(means)
            labels, kept = combined.argmax(dim=cdim), combined.index_select(cdim, index)
        if hole is not None and bool(hole.any()):
            assert self.fill is not None
            fill = self.fill.index_select(0, index)
            labels[hole] = 0
            if last:
                kept[hole] = fill
            else:
                kept[:, hole] = fill[:, None]
        # where this part lands in the full grid
        oz = (self.box[0].start if self.box is not None else 0) + z
        oy = self.box[1].start if self.box is not None else 0
        ox = self.box[2].start if self.box is not None else 0
        dest = (slice(oz, oz + w.shape[0]), slice(oy, oy + w.shape[1]), slice(ox, ox + w.shape[2]))
        assert self.values is not None
        if self.labels is not None:
            self.labels[dest] = labels.cpu().numpy().astype(self.labels.dtype)
        self.values[(slice(None), *dest)] = (kept.permute(3, 0, 1, 2) if last else kept).cpu().numpy()

    def result(self, stats: InferenceStats) -> InferenceResult:
        assert self.values is not None and self.num_classes is not None
        probs = self.values if self.config.output == "probabilities" else None
        logits = self.values if self.config.output == "logits" else None
        return InferenceResult(probs, logits, self.labels, self.channels, self.num_classes, stats)
