"""How a model's inputs are prepared and its windows run: the recipe parts of a ``weights.toml`` entry.

:class:`IntensityRecipe` (``intensity = { method = ... }``) and :class:`WindowRecipe`
(``[models.NAME.sliding_window]``), with their parsers (one-line
:class:`~liverctl.errors.ConfigError` naming the entry and field). Split out of
:mod:`liverctl.weights.registry`, which re-exports every name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from liverctl.errors import ConfigError
from liverctl.weights.tables import Table

__all__ = [
    "INTENSITY_METHODS",
    "INTERPOLATIONS",
    "PADDING_MODES",
    "WINDOW_MODES",
    "IntensityRecipe",
    "WindowRecipe",
    "parse_intensity",
    "parse_sliding_window",
]

#: Intensity recipes the predict pipeline knows (see :class:`IntensityRecipe`).
INTENSITY_METHODS = ("nonzero-zscore-minmax", "window-zscore", "window-image-zscore")
INTERPOLATIONS = ("linear", "bspline")
WINDOW_MODES = ("gaussian", "constant")
PADDING_MODES = ("constant", "replicate", "reflect")


@dataclass(frozen=True)
class IntensityRecipe:
    """How CT intensities are normalised before the network sees them.

    ``method`` is one of :data:`INTENSITY_METHODS`:

    * ``"nonzero-zscore-minmax"`` (MONAI bundles): over the voxels ``!= 0``,
      ``x <- (x - mean) / std`` (zero voxels stay 0, as MONAI ``NormalizeIntensity(nonzero=True)``);
      then the whole volume is min-max rescaled to ``range = (lo, hi)`` (``ScaleIntensity``).
    * ``"window-zscore"`` (liverctl-trained models): ``x <- (clip(x, *window) - mean) / std``
      with a fixed HU ``window`` (optional: no clipping without it) and fixed ``mean``/``std``.
    * ``"window-image-zscore"`` (liverctl models preprocessed with ``--normalization image``):
      ``x <- clip(x, *window)``, then z-scored with the scan's own mean/std over all its voxels
      in model space (std 0 -> 1), as :func:`liverctl.preprocessing.apply_plan` does.
    """

    method: str
    range: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class WindowRecipe:
    """A model's patch-wise inference settings (``[models.NAME.sliding_window]``): ``roi``
    voxels per patch in **(x, y, z)** order (the array axes i, j, k, like
    :attr:`liverctl.io.Geometry.spacing`), ``overlap`` fraction between patches, blending
    ``mode`` and the image ``padding_mode`` at the borders.

    The inference engine (:class:`liverctl.inference.SlidingWindow`) takes its ``roi`` in the
    order of the array it runs on: (z, y, x) for liverctl's arrays, so :attr:`roi_zyx`; a
    network trained on MONAI's (x, y, z) arrays gets :attr:`roi` as it is.
    """

    roi: tuple[int, int, int]
    overlap: float = 0.25
    mode: str = "gaussian"
    padding_mode: str = "constant"

    @classmethod
    def from_zyx(cls, roi_zyx: Sequence[int], **fields: Any) -> WindowRecipe:
        """The recipe of a window given in array order (z, y, x), e.g. a training patch."""
        z, y, x = (int(v) for v in roi_zyx)
        return cls(roi=(x, y, z), **fields)

    @property
    def roi_zyx(self) -> tuple[int, int, int]:
        """:attr:`roi` in array order (z, y, x)."""
        x, y, z = self.roi
        return (z, y, x)

    def to_dict(self) -> dict[str, Any]:
        return {"roi": list(self.roi), "overlap": self.overlap, "mode": self.mode, "padding_mode": self.padding_mode}


def parse_intensity(value: Any, where: str) -> IntensityRecipe:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: must be a table such as {{ method = "window-zscore", ... }}')
    t = Table(value, where)
    method = t.choice("method", INTENSITY_METHODS)
    if method == "nonzero-zscore-minmax":
        lo_hi = t.numbers("range", 2, default=[-1.0, 1.0])
        assert lo_hi is not None
        if not lo_hi[0] < lo_hi[1]:
            raise t.fail("range", f"must be [lo, hi] with lo < hi, not {list(lo_hi)}")
        t.check_unknown()
        return IntensityRecipe(method=method, range=lo_hi)
    window = t.numbers("window", 2, default=None)
    if window is not None and not window[0] < window[1]:
        raise t.fail("window", f"must be [lo, hi] with lo < hi, not {list(window)}")
    if method == "window-image-zscore":  # the scan's own statistics: no mean/std to give
        t.check_unknown()
        return IntensityRecipe(method=method, window=window)
    mean = t.number("mean")
    std = t.number("std")
    if not std > 0:
        raise t.fail("std", f"must be > 0, not {std}")
    t.check_unknown()
    return IntensityRecipe(method=method, window=window, mean=mean, std=std)


def parse_sliding_window(value: Any, where: str) -> WindowRecipe:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table with roi, overlap, mode")
    t = Table(value, where)
    roi = t.numbers("roi", 3, kind=int)
    assert roi is not None
    if min(roi) < 1:
        raise t.fail("roi", f"must be positive, not {list(roi)}")
    overlap = t.number("overlap", 0.25)
    if not 0.0 <= overlap < 1.0:
        raise t.fail("overlap", f"must be in [0, 1), not {overlap}")
    mode = t.choice("mode", WINDOW_MODES, "gaussian")
    padding = t.choice("padding_mode", PADDING_MODES, "constant")
    t.check_unknown()
    return WindowRecipe(roi=roi, overlap=overlap, mode=mode, padding_mode=padding)
