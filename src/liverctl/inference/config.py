"""The engine's settings (:class:`SlidingWindow`, axis order (z, y, x)) and what it returns
(:class:`InferenceResult` with its :class:`InferenceStats`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from liverctl.errors import ConfigError

__all__ = [
    "DEFAULT_MIN_INPUT_MULTIPLE",
    "OUTSIDE_LOGIT",
    "Box",
    "InferenceResult",
    "InferenceStats",
    "Predictor",
    "SlidingWindow",
]

Box = tuple[slice, slice, slice]
Predictor = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_MIN_INPUT_MULTIPLE = 16
"""Window sizes are rounded to this when the model has no ``min_input_multiple`` attribute."""

OUTSIDE_LOGIT = -100.0
"""Logit given to foreground channels outside the body box when ``output="logits"``."""


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
        ensemble: how the models of an ensemble are combined: ``"mean"`` (the mean of their
            probabilities) or ``"vote"`` (majority vote of their decisions, PIPO-FAN's five
            folds: each model's argmax, or with ``activation="sigmoid"`` each channel > 0.5;
            the label with most votes wins, a tie goes to the label with the higher mean
            probability; the returned "probabilities" are then the fractions of votes).
            One model: both are the same. ``"vote"`` needs ``output="probabilities"``.
        channels_last: on the CPU, run float32 convolutions channels-last
            (:func:`liverctl.device.inference_memory_format`): the same arithmetic summed in
            another order, 1.3x faster per 96^3 SegResNet window, but not always within the
            exactness test's 1e-4 (3.7e-4 measured on a trained network and a real abdomen).
            Off by default; ``predict`` turns it on where ``--backend auto`` found it the
            fastest candidate that passes the test
            (:func:`liverctl.inference.backends.backend_network`).
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
    ensemble: Literal["mean", "vote"] = "mean"
    channels_last: bool = False

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
        if self.ensemble not in ("mean", "vote"):
            raise ConfigError(f"ensemble must be 'mean' or 'vote', got {self.ensemble!r}")
        if self.ensemble == "vote" and self.output != "probabilities":
            raise ConfigError("ensemble='vote' combines decisions: it needs output='probabilities'")
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
    of the grid left out because they hold only air (``skip_empty``). ``device``: where the
    networks ran, with a CUDA device's index and name (``"cuda:0 (NVIDIA H100 80GB HBM3)"``,
    :func:`liverctl.device.device_label`); ``precision``: the resolved one (never ``"auto"``);
    ``tf32``: whether TensorFloat-32 could round float32 work in the forward
    (:func:`liverctl.device.tf32_during_forward`: always False for fp32); ``accumulate_on``:
    where the weighted sums were kept (``"device"`` or ``"cpu"``).
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
    tf32: bool = False
    accumulate_on: str = "device"

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
