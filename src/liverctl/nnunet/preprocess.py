"""nnU-Net v2's preprocessing of one CT scan, from a liverctl :class:`~liverctl.io.Image`.

nnU-Net's ``SimpleITKIO`` reads a scan as ``sitk.GetArrayFromImage`` does, a (z, y, x) array
(exactly :attr:`Image.array`), with the spacing reversed to (z, y, x) (exactly
:attr:`Image.spacing_zyx`), cast to float32. It never looks at the direction matrix, so an
oblique scan is used in its stored array order; so is it here. ``DefaultPreprocessor`` then:

1. applies ``transpose_forward`` to the array and the spacing;
2. crops to the bounding box of the non-zero voxels, after ``binary_fill_holes`` of that mask
   (``crop_to_nonzero``); a scan without zero voxels keeps its whole box;
3. normalises with the configuration's scheme (CTNormalization: clip to the foreground
   0.5/99.5 percentiles, subtract the foreground mean, divide by the foreground std, all from
   the plans), **before** resampling;
4. resamples to the configuration's spacing (``compute_new_shape``; the plans' data resampling,
   see :mod:`liverctl.nnunet.resampling`).

:func:`preprocess` does the same with the same NumPy/SciPy calls; ``exact=False`` only swaps
step 4 for the float32 resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverctl.io import Image
from liverctl.nnunet.plans import NnUNetPlans
from liverctl.nnunet.resampling import compute_new_shape, resample

__all__ = ["Preprocessed", "crop_to_nonzero", "normalise", "preprocess"]

AIR_HU = -500.0
"""Raw values below this are air for :attr:`Preprocessed.body` (CT only)."""


@dataclass
class Preprocessed:
    """A scan in network space and what is needed to bring a prediction back.

    All shapes are in the transposed axis order. ``bbox`` is ``[[lo, hi], ...]`` of the crop in
    the transposed (uncropped) array; ``spacing`` is the scan's transposed spacing. ``body`` is
    a coarse (z, y, x)-transposed boolean map of non-air voxels on the network grid, or ``None``
    (not CT, or not asked for); it lets the default mode skip windows that see only air.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    shape_before_cropping: tuple[int, int, int]
    bbox: list[list[int]]
    shape_after_cropping: tuple[int, int, int]
    body: np.ndarray | None = None


def bbox_from_mask(mask: np.ndarray) -> list[list[int]]:
    """acvl_utils' ``get_bbox_from_mask``: ``[[lo, hi], ...]`` per axis; the whole array if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1] if hits.size else [0, int(mask.shape[axis])])
    return box


def crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """nnU-Net's ``crop_to_nonzero`` for an image without segmentation.

    Returns ``(cropped data, seg, bbox)`` where ``seg`` is 0 inside the filled non-zero mask and
    -1 outside it (int8, cropped), as nnU-Net passes it to the normalisation.
    """
    from scipy.ndimage import binary_fill_holes

    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    bbox = bbox_from_mask(mask)
    slicer = tuple(slice(lo, hi) for lo, hi in bbox)
    seg = np.where(mask[slicer][None], np.int8(0), np.int8(-1))
    return data[(slice(None), *slicer)], seg, bbox


def normalise(image: np.ndarray, seg: np.ndarray, plans: NnUNetPlans) -> np.ndarray:
    """One channel, normalised as nnU-Net's scheme ``plans.normalization`` does (float32)."""
    scheme = plans.normalization
    image = image.astype(np.float32, copy=False)
    if scheme == "CTNormalization":
        p = plans.intensity
        np.clip(image, p["percentile_00_5"], p["percentile_99_5"], out=image)
        image -= p["mean"]
        image /= max(p["std"], 1e-8)
    elif scheme == "ZScoreNormalization":
        if plans.use_mask_for_norm:
            mask = seg >= 0
            mean = image[mask].mean()
            std = image[mask].std()
            image[mask] = (image[mask] - mean) / max(std, 1e-8)
        else:
            mean = image.mean()
            std = image.std()
            image -= mean
            image /= max(std, 1e-8)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=1e-8, a_max=None)
    # NoNormalization: the float32 cast only
    return image


def _body_on_grid(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Non-air voxels of the cropped raw array, mapped to ``shape`` by nearest index."""
    body = raw > AIR_HU
    index = [
        np.clip(np.floor((np.arange(n) + 0.5) * (m / n)).astype(int), 0, m - 1)
        for n, m in zip(shape, raw.shape, strict=True)
    ]
    return body[np.ix_(*index)]


def preprocess(image: Image, plans: NnUNetPlans, *, exact: bool = True, body: bool = False) -> Preprocessed:
    """Preprocess ``image`` for the plans' network exactly as nnU-Net's ``DefaultPreprocessor``.

    Args:
        image: the scan as liverctl reads it ((z, y, x) array + geometry).
        plans: the validated plans.
        exact: nnU-Net's float64 resampling (``True``) or the float32 one (``False``).
        body: also compute :attr:`Preprocessed.body` (CT scans, for skipping air windows).
    """
    tf = plans.transpose_forward
    data = np.asarray(image.array)[None].astype(np.float32)  # SimpleITKIO: float32, (1, z, y, x)
    spacing = tuple(abs(s) for s in image.spacing_zyx)
    data = data.transpose([0, *[i + 1 for i in tf]])
    spacing_t = tuple(float(spacing[i]) for i in tf)
    shape_before = tuple(int(s) for s in data.shape[1:])
    data, seg, bbox = crop_to_nonzero(data)
    shape_after = tuple(int(s) for s in data.shape[1:])
    new_shape = compute_new_shape(shape_after, spacing_t, plans.spacing)
    raw = data[0].copy() if body and plans.normalization == "CTNormalization" else None
    data[0] = normalise(data[0], seg[0], plans)  # on the cropped view, in nnU-Net's memory order
    data = resample(data, new_shape, spacing_t, plans.spacing, plans.resampling_data, exact=exact)
    return Preprocessed(
        data=np.ascontiguousarray(data, dtype=np.float32),
        spacing=spacing_t,  # type: ignore[arg-type]
        shape_before_cropping=shape_before,  # type: ignore[arg-type]
        bbox=bbox,
        shape_after_cropping=shape_after,  # type: ignore[arg-type]
        body=None if raw is None else _body_on_grid(raw, new_shape),
    )
