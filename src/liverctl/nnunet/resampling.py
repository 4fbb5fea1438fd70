"""nnU-Net v2's resampling (``resample_data_or_seg_to_shape``), exact and fast.

nnU-Net resamples images (order 3) and logits (order 1) channel by channel with
``skimage.transform.resize`` (``mode="edge"``, no anti-aliasing, in float64, output clipped to
the input's range). When the spacing is anisotropic (the largest spacing more than
``separate_z_anisotropy_threshold`` = 3 times the smallest, in the current or the new spacing)
and exactly one axis is the coarse one, it resizes each slice across that axis in-plane and
then interpolates along it with ``scipy.ndimage.map_coordinates`` of order ``order_z``
(0: nearest), ``mode="nearest"``.

:func:`resample` with ``exact=True`` calls those very primitives in that order, so it returns
nnU-Net's numbers. ``exact=False`` computes the same interpolation in float32: order 1 with
``torch.nn.functional.interpolate`` (trilinear, ``align_corners=False``, which is the same
sampling grid and edge rule), higher orders with ``scipy.ndimage.zoom(grid_mode=True)`` (what
skimage's ``resize`` calls, here without the float64 copy), order-0 z with an index lookup.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liverctl.nnunet.plans import Resampling

__all__ = ["compute_new_shape", "resample", "separate_z_axis"]


def compute_new_shape(
    shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(old_spacing / new_spacing * shape)`` per axis
    (refused before any allocation if no CT needs that grid: :func:`liverctl.io.checks.check_grid_size`)."""
    from liverctl.io.checks import check_grid_size

    new_shape = tuple(round(o / n * s) for o, n, s in zip(old_spacing, new_spacing, shape, strict=True))
    check_grid_size(new_shape, tuple(new_spacing)[::-1])  # nnU-Net order is (z, y, x)
    return new_shape


def _lowres_axes(spacing: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=float)
    return np.where(max(spacing) / spacing == 1)[0]


def separate_z_axis(
    current: Sequence[float], new: Sequence[float], force: bool | None = None, threshold: float = 3.0
) -> int | None:
    """The axis nnU-Net resamples separately (``determine_do_sep_z_and_axis``), or ``None``."""

    def anisotropic(s: Sequence[float]) -> bool:
        return bool(np.max(s) / np.min(s) > threshold)

    if force is not None:
        axes = _lowres_axes(current) if force else None
    elif anisotropic(current):
        axes = _lowres_axes(current)
    elif anisotropic(new):
        axes = _lowres_axes(new)
    else:
        axes = None
    if axes is None or len(axes) != 1:  # none, or two or three equally coarse axes
        return None
    return int(axes[0])


def resample(
    data: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    how: Resampling,
    *,
    exact: bool = True,
) -> np.ndarray:
    """Resample ``data`` (c, a, b, c) to ``new_shape`` as nnU-Net does for images and logits.

    Returns ``data`` itself when the shape does not change (as nnU-Net does); otherwise an
    array of ``data``'s dtype (``exact``) or float32 (fast).
    """
    if data.ndim != 4:
        raise ValueError(f"data must be (c, x, y, z), got shape {data.shape}")
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_z_axis(current_spacing, new_spacing, how.force_separate_z, how.anisotropy_threshold)
    if exact:
        return _resample_exact(data, new_shape, axis, how.order, how.order_z)
    return _resample_fast(data, new_shape, axis, how.order, how.order_z)


def _resample_exact(
    data: np.ndarray, new_shape: tuple[int, ...], axis: int | None, order: int, order_z: int
) -> np.ndarray:
    from scipy.ndimage import map_coordinates
    from skimage.transform import resize

    shape = np.array(data.shape[1:])
    target = np.array(new_shape)
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    data = data.astype(float, copy=False)
    kwargs = {"mode": "edge", "anti_aliasing": False}
    if axis is None:
        for c in range(data.shape[0]):
            out[c] = resize(data[c], new_shape, order, **kwargs)
        return out
    plane = tuple(int(v) for v in np.delete(target, axis))
    for c in range(data.shape[0]):
        tmp = target.copy()
        tmp[axis] = shape[axis]
        here = np.zeros(tmp)
        for s in range(shape[axis]):
            index = [slice(None)] * 3
            index[axis] = s
            here[tuple(index)] = resize(data[c][tuple(index)], plane, order, **kwargs)
        if shape[axis] == target[axis]:
            out[c] = here
            continue
        rows, cols, dim = target
        scale = [float(h) / t for h, t in zip(here.shape, (rows, cols, dim), strict=True)]
        grid = np.mgrid[:rows, :cols, :dim]
        coords = np.array([sc * (g + 0.5) - 0.5 for sc, g in zip(scale, grid, strict=True)])
        out[c] = map_coordinates(here, coords, order=order_z, mode="nearest")[None]
    return out


def _zoom32(volume: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """skimage ``resize(mode="edge", anti_aliasing=False)`` in float32 (clip included)."""
    from scipy.ndimage import zoom

    volume = np.ascontiguousarray(volume, dtype=np.float32)
    factors = [t / s for t, s in zip(shape, volume.shape, strict=True)]
    if order == 1:
        import torch

        t = torch.from_numpy(volume)[None, None]
        mode = "trilinear" if volume.ndim == 3 else "bilinear"
        out = torch.nn.functional.interpolate(t, size=tuple(shape), mode=mode, align_corners=False)[0, 0].numpy()
        return out  # linear interpolation cannot leave the input's range
    out = zoom(volume, factors, order=order, mode="nearest", grid_mode=True)
    if order > 1:
        np.clip(out, volume.min(), volume.max(), out=out)
    return out


def _resample_fast(
    data: np.ndarray, new_shape: tuple[int, ...], axis: int | None, order: int, order_z: int
) -> np.ndarray:
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    if axis is None:
        for c in range(data.shape[0]):
            out[c] = _zoom32(data[c], new_shape, order)
        return out
    plane = tuple(int(v) for v in np.delete(np.array(new_shape), axis))
    n_in, n_out = data.shape[1 + axis], new_shape[axis]
    for c in range(data.shape[0]):
        moved = np.moveaxis(data[c], axis, 0)
        here = np.empty((n_in, *plane), dtype=np.float32)
        for s in range(n_in):
            here[s] = _zoom32(moved[s], plane, order)
        if n_in != n_out:
            coords = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
            if order_z == 0:
                here = here[np.clip(np.floor(coords + 0.5).astype(int), 0, n_in - 1)]
            else:
                from scipy.ndimage import map_coordinates

                grid = np.meshgrid(coords, *[np.arange(p) for p in plane], indexing="ij")
                here = map_coordinates(here, np.array(grid), order=order_z, mode="nearest").astype(np.float32)
        out[c] = np.moveaxis(here, 0, axis)
    return out
