"""Intensity recipes: HU windows, z-score, and the model recipes of the weights registry.

- :func:`window` clips to a HU window (a preset of the published methods, see
  :data:`WINDOW_PRESETS`, or ``"LO,HI"``); :func:`resolve_window` and :func:`window_name`
  parse and name a window spec.
- :func:`zscore`: ``(image - mean) / std``.
- :func:`normalise`: a weights entry's intensity recipe (what ``predict`` feeds a network).

Every function returns float32 and leaves its input untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from liverctl.errors import ConfigError
from liverctl.io import Image

__all__ = ["WINDOW_PRESETS", "normalise", "resolve_window", "window", "window_name", "zscore"]

#: HU windows of the published methods: name -> (low, high) or None. SD-Net's paper states two:
#: "truncated to a range of [0, 400]" (``sdnet``, the default of its reproduction) and "window width
#: 400, window position 0" (``sdnet-w400-l0``, -200..200).
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "liver": (-200.0, 250.0),  # H-DenseUNet
    "abdomen": (0.0, 400.0),  # SD-Net
    "sdnet": (0.0, 400.0),
    "sdnet-w400-l0": (-200.0, 200.0),
    "pipofan": (-200.0, 200.0),  # PIPO-FAN
    "none": None,
}


def resolve_window(spec: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``(low, high)`` in HU for a preset name, a ``"LO,HI"`` string or a pair; ``None`` for no window."""
    if spec is None:
        return None
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in WINDOW_PRESETS:
            return WINDOW_PRESETS[key]
        try:
            values = [float(p) for p in key.replace("..", ",").split(",")]
        except ValueError:
            raise ConfigError(
                f"unknown window {spec!r}: use one of {', '.join(WINDOW_PRESETS)} or LO,HI in HU"
            ) from None
    else:
        values = [float(v) for v in spec]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise ConfigError(f"invalid window {spec!r}: need two numbers LO,HI with LO < HI")
    return (values[0], values[1])


def window_name(spec: str | Sequence[float] | None) -> str:
    """The preset name of a window spec, or ``"LO,HI"``; ``"none"`` for no window."""
    bounds = resolve_window(spec)
    if isinstance(spec, str) and spec.strip().lower() in WINDOW_PRESETS:
        return spec.strip().lower()
    return "none" if bounds is None else f"{bounds[0]:g},{bounds[1]:g}"


def window(image: Image, preset: str | Sequence[float] | None) -> Image:
    """Clip intensities to a HU window (preset name, ``"LO,HI"`` or a pair); float32 result.

    Presets: ``liver`` -200..250 (H-DenseUNet), ``abdomen``/``sdnet`` 0..400 (SD-Net),
    ``sdnet-w400-l0`` -200..200 (SD-Net's other statement), ``pipofan`` -200..200 (PIPO-FAN),
    ``none`` (no clipping).
    """
    bounds = resolve_window(preset)
    array = image.array.astype(np.float32, copy=True)
    if bounds is not None:
        np.clip(array, bounds[0], bounds[1], out=array)
    return Image(array, image.geometry)


def zscore(image: Image, mean: float, std: float) -> Image:
    """``(image - mean) / std`` as float32 (``std`` must be positive)."""
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise ConfigError(f"z-score needs a finite mean and a positive std, got mean {mean} and std {std}")
    array = image.array.astype(np.float32, copy=True)
    array -= np.float32(mean)
    array /= np.float32(std)
    return Image(array, image.geometry)


def normalise(array: np.ndarray, recipe: Any) -> np.ndarray:
    """Apply a weights-entry intensity recipe (see :class:`liverctl.weights.IntensityRecipe`) to HU values.

    ``nonzero-zscore-minmax`` is MONAI's ``NormalizeIntensity(nonzero=True)`` followed by
    ``ScaleIntensity(minv, maxv)``; ``window-zscore`` clips to a HU window and applies a fixed
    z-score (liverctl-trained models); ``window-image-zscore`` clips and z-scores with the
    scan's own mean/std (models preprocessed with ``--normalization image``).
    """
    x = np.asarray(array, dtype=np.float32)
    if recipe.method == "nonzero-zscore-minmax":
        out = x.copy()
        nonzero = x != 0
        if nonzero.any():
            values = x[nonzero]
            mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
            out[nonzero] = (values - mean) / (std if std > 0 else 1.0)
        lo, hi = recipe.range or (0.0, 1.0)
        mn, mx = float(out.min()), float(out.max())
        if mx - mn > 0:
            out = (out - mn) / (mx - mn) * (hi - lo) + lo
        else:
            out = out - mn + lo
        return out.astype(np.float32, copy=False)
    if recipe.method in ("window-zscore", "window-image-zscore"):
        lo, hi = recipe.window if recipe.window is not None else (-np.inf, np.inf)
        clipped = np.clip(x, lo, hi)
        if recipe.method == "window-zscore":
            mean, std = recipe.mean or 0.0, recipe.std if recipe.std else 1.0
        else:  # apply_plan's normalization="image": the scan's own statistics
            mean, std = float(clipped.mean(dtype=np.float64)), float(clipped.std(dtype=np.float64))
            std = std if std > 0 else 1.0
        clipped -= np.float32(mean)
        clipped /= np.float32(std)
        return clipped.astype(np.float32, copy=False)
    raise ConfigError(f"unknown intensity recipe {recipe.method!r}")
