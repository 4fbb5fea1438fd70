"""The engine: :func:`predict_volume` (one network or an ensemble over a whole volume) and
:func:`sliding_window_inference` (one network). Its steps, in order: the input volume and the
models (:func:`_as_volume`, :func:`_as_models`), the body crop (:func:`_body_box`), the window
grid (:func:`_window_grid`), the networks prepared (:func:`_prepare_models`), the windows run
and accumulated (:func:`_run_windows`, :class:`~liverctl.inference.accumulate._SlabAccumulator`)
and the statistics (:func:`_stats`). Arrays are (z, y, x) throughout."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from liverctl.device import (
    device_guard,
    device_label,
    prepare_network,
    resolve_device,
    resolve_precision,
    restore_layout,
    synchronize,
    tf32_during_forward,
    to_device,
)
from liverctl.errors import ConfigError, InputError
from liverctl.inference.accumulate import _SlabAccumulator
from liverctl.inference.body import crop_to_body
from liverctl.inference.config import Box, InferenceResult, InferenceStats, Predictor, SlidingWindow
from liverctl.inference.networks import (
    _Channels,
    _model_multiple,
    _pointwise_weights,
    _run_flips,
    _SliceWise,
    _split_head,
    slice_context_of,
    stack_neighbours,
)
from liverctl.inference.windows import Placement, _occupied, _place, importance_map, plan_axis, window_starts
from liverctl.progress import ProgressCallback

__all__ = ["predict_volume", "sliding_window_inference"]


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
    models = _as_models(models)
    vol, full_shape = _as_volume(volume)
    n_in, context = int(vol.shape[0]), slice_context_of(models)
    if context:  # 2D networks see neighbouring slices: stacked once, from the whole volume
        vol = torch.cat([vol, stack_neighbours(vol, context)], 0)
    box = _body_box(config, full_shape, hu, body_box)
    cropped = vol[(slice(None), *box)] if box is not None else vol
    crop_shape: tuple[int, int, int] = tuple(int(s) for s in cropped.shape[1:])  # type: ignore[assignment]
    if min(crop_shape) < 1:
        raise InputError(f"body box {box} is empty")
    grid = _window_grid(cropped, models, config, hu, box, full_shape)
    with device_guard(device):  # cuda:N current while liverctl works on it (pinned memory, handles)
        engine, network_seconds, batch_size = _run_models(
            models, grid, config, device, precision, (n_in, context), box, full_shape, progress
        )
    counts = (math.ceil(len(grid.starts) / batch_size), len(config.flips), len(models))
    seconds = (network_seconds + engine.head_seconds, time.perf_counter() - t_start)
    stats = _stats(grid, box, full_shape, crop_shape, counts, seconds, device, precision)
    return engine.result(replace(stats, accumulate_on=config.accumulate_on))


def _run_models(
    models: list,
    grid: _Grid,
    config: SlidingWindow,
    device: torch.device,
    precision: str,
    inputs: tuple[int, int],
    box: Box | None,
    full_shape: tuple[int, int, int],
    progress: ProgressCallback | None,
) -> tuple[_SlabAccumulator, float, int]:
    """The networks prepared, every window run and accumulated; the networks restored after.
    Returns the accumulator, the seconds inside the networks and the batch size."""
    crop_shape: tuple[int, int, int] = tuple(int(s) for s in grid.crop_shape)  # type: ignore[assignment]
    acc_device = device if config.accumulate_on == "device" else torch.device("cpu")
    weights = importance_map(grid.window, config.mode, config.sigma_scale).to(acc_device)
    heads: list[tuple[torch.Tensor, torch.Tensor | None] | None] = []
    engine = _SlabAccumulator(
        n_models=len(models),
        z_cuts=sorted({r[0].start for r, _ in grid.placed} | {r[0].stop for r, _ in grid.placed}),
        crop_shape=crop_shape,
        box=box,
        full_shape=full_shape,
        config=config,
        acc_device=acc_device,
        holes=len(grid.starts) < grid.grid_windows,
        heads=heads,
    )
    batch_size = int(config.batch_size or (1 if device.type == "cpu" else 4))
    restore: list[tuple[torch.nn.Module, bool]] = []
    relayout: list[tuple[torch.nn.Parameter, torch.memory_format]] = []
    try:
        predictors = _prepare_models(models, config, device, precision, acc_device, heads, restore, relayout, inputs)
        slabs = _SlabInput(grid.padded, grid.window, device)
        run = _Run(predictors, slabs, grid, weights, engine, config.flips, device, precision, batch_size)
        network_seconds = _run_windows(run, crop_shape, progress)
    finally:
        restore_layout(relayout)
        for mdl, was_training in restore:
            mdl.train(was_training)
    return engine, network_seconds, batch_size


class _SlabInput:
    """The padded input, sent to the device one z-slab at a time: the slab under the windows that
    start at one z (windows run z-major, so each slab is sent once). Only that slab is pinned for
    its copy, not the whole padded volume (pinned blocks stay cached for the process's life). On
    the CPU the windows are views of the volume itself."""

    def __init__(self, padded: torch.Tensor, window: tuple[int, int, int], device: torch.device) -> None:
        self.padded, self.window, self.device = padded, window, device
        self.z: int | None = None
        self.slab = padded

    def at(self, z: int, y: int, x: int) -> torch.Tensor:
        """The ``(C, *window)`` window starting at ``(z, y, x)``, on the device."""
        wz, wy, wx = self.window
        if self.padded.device == self.device:
            return self.padded[:, z : z + wz, y : y + wy, x : x + wx]
        if z != self.z:
            self.slab = to_device(self.padded[:, z : z + wz].contiguous(), self.device)
            self.z = z
        return self.slab[:, :, y : y + wy, x : x + wx]


def _as_models(models: Sequence[torch.nn.Module | Predictor] | torch.nn.Module) -> list:
    """One network or an ensemble, as a non-empty list."""
    if isinstance(models, torch.nn.Module) or (callable(models) and not isinstance(models, Sequence)):
        models = [models]  # type: ignore[list-item]
    models = list(models)  # type: ignore[arg-type]
    if not models:
        raise ConfigError("predict_volume needs at least one model")
    return models


def _as_volume(volume: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The input as a float32 ``(C, z, y, x)`` tensor, and its spatial shape."""
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
    return vol, tuple(int(s) for s in vol.shape[1:])  # type: ignore[return-value]


def _body_box(
    config: SlidingWindow, full_shape: tuple[int, int, int], hu: np.ndarray | None, body_box: Box | None
) -> Box | None:
    """The box the windows cover (``None``: the whole volume), with ``crop_body``."""
    if not config.crop_body:
        return None
    box: Box | None = None
    if body_box is not None:
        if len(body_box) != 3 or not all(isinstance(s, slice) for s in body_box):
            raise ConfigError(f"body_box must be three slices (z, y, x), got {body_box}")
        box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(body_box, full_shape, strict=True))  # type: ignore[assignment]
    elif hu is not None:
        if tuple(np.shape(hu)) != full_shape:
            raise InputError(f"hu image shape {np.shape(hu)} differs from the volume's {full_shape}")
        box = crop_to_body(hu, config.body_threshold_hu, config.body_margin)
    if box is not None and all(s.start == 0 and s.stop == n for s, n in zip(box, full_shape, strict=True)):
        return None
    return box


@dataclass
class _Grid:
    """The window grid over the (cropped) volume: the padded input, the window size, the window
    starts in z-major order (air windows left out) and where each window's real voxels lie."""

    padded: torch.Tensor
    window: tuple[int, int, int]
    starts: list[tuple[int, int, int]]
    placed: list[Placement]
    grid_windows: int
    crop_shape: tuple[int, int, int]


def _window_grid(
    cropped: torch.Tensor,
    models: Sequence,
    config: SlidingWindow,
    hu: np.ndarray | None,
    box: Box | None,
    full_shape: tuple[int, int, int],
) -> _Grid:
    """Window sizes per axis, padding where the volume is smaller, the starts, and the air windows skipped."""
    crop_shape = tuple(int(s) for s in cropped.shape[1:])
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
    return _Grid(cropped, window, grid, placed, grid_windows, crop_shape)  # type: ignore[arg-type]


def _prepare_models(
    models: Sequence,
    config: SlidingWindow,
    device: torch.device,
    precision: str,
    acc_device: torch.device,
    heads: list,
    restore: list,
    relayout: list,
    inputs: tuple[int, int] = (1, 0),
) -> list[Predictor]:
    """The predictors the windows go through; modules moved to ``device`` in eval mode (their
    training flags into ``restore``, their layouts into ``relayout``), pointwise heads into ``heads``.
    ``inputs`` = (image channels C, slice context K of the neighbour stacks appended to them):
    each 2D network gets its own neighbour channels, every other predictor the first C."""
    n_in, context = inputs
    predictors: list[Predictor] = []
    for mdl in models:
        head = None
        if isinstance(mdl, torch.nn.Module):
            restore.append((mdl, mdl.training))
            relayout += prepare_network(mdl, device, precision, channels_last=config.channels_last)
            split = _split_head(mdl) if config.pointwise_head else None
            if split is not None:
                mdl, head = split[0], _pointwise_weights(split[1], acc_device)
            elif int(getattr(mdl, "spatial_dims", 3)) == 2:
                k = int(getattr(mdl, "slice_context", 0) or 0)
                picked = slice(n_in * (1 + context - k), n_in * (2 + context + k)) if k else slice(0, n_in)
                mdl = _SliceWise(mdl, picked, 2 * k + 1)
        if context and not isinstance(mdl, _SliceWise):
            mdl = _Channels(mdl, n_in)
        predictors.append(mdl)
        heads.append(head)
    return predictors


@dataclass
class _Run:
    """What :func:`_run_windows` needs: the predictors, the padded input on the device, the grid,
    the importance weights, the accumulator, the mirror combinations and the batch size."""

    predictors: list[Predictor]
    inputs: _SlabInput
    grid: _Grid
    weights: torch.Tensor
    engine: _SlabAccumulator
    flips: list[tuple[int, ...]]
    device: torch.device
    precision: str
    batch_size: int


def _run_windows(run: _Run, crop_shape: tuple[int, int, int], progress: ProgressCallback | None) -> float:
    """Every window through every predictor, batch by batch, into the accumulator; returns the
    seconds spent inside the networks."""
    grid, engine, batch_size = run.grid, run.engine, run.batch_size
    n = len(grid.starts)
    network_seconds = 0.0
    with torch.inference_mode():
        if progress is not None:
            progress("sliding window", 0, n)
        for b in range(math.ceil(n / batch_size)):
            batch = grid.starts[b * batch_size : (b + 1) * batch_size]
            where = grid.placed[b * batch_size : (b + 1) * batch_size]
            engine.finish_before(where[0][0][0].start)
            win = torch.stack([run.inputs.at(z, y, x) for z, y, x in batch])
            for m, predict in enumerate(run.predictors):
                synchronize(run.device)
                t0 = time.perf_counter()
                logits = _run_flips(predict, win, run.flips, run.device, run.precision)
                synchronize(run.device)
                network_seconds += time.perf_counter() - t0
                engine.add(m, logits, where, run.weights)
            engine.add_weights(where, run.weights)
            if progress is not None:
                progress("sliding window", min((b + 1) * batch_size, n), n)
        engine.finish_before(crop_shape[0] + 1)
    return network_seconds


def _stats(
    grid: _Grid,
    box: Box | None,
    full_shape: tuple[int, int, int],
    crop_shape: tuple[int, int, int],
    counts: tuple[int, int, int],
    seconds: tuple[float, float],
    device: torch.device,
    precision: str,
) -> InferenceStats:
    """What the run computed: ``counts`` = (batches, mirror combinations, models), ``seconds`` =
    (inside the networks, in all)."""
    n_batches, n_flips, n_models = counts
    n_win = len(grid.starts)
    evaluated = n_win * math.prod(grid.window) * n_flips * n_models
    scan_voxels = math.prod(full_shape)
    return InferenceStats(
        volume_shape=full_shape,
        body_box=tuple((s.start, s.stop) for s in box) if box is not None else None,
        cropped_shape=crop_shape,
        window=grid.window,
        windows=n_win,
        forward_passes=n_batches * n_flips * n_models,
        evaluated_voxels=evaluated,
        grid_amplification=n_win * math.prod(grid.window) / scan_voxels,
        compute_amplification=evaluated / scan_voxels,
        network_seconds=seconds[0],
        total_seconds=seconds[1],
        device=device_label(device),
        precision=precision,
        tf32=tf32_during_forward(device, precision),
        skipped_windows=grid.grid_windows - n_win,
    )
