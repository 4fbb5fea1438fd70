"""Target spacing of a dataset: the spacing rules of ``docs/studies/he2021.md``.

Spacings are in ITK's **(x, y, z)** order, in mm, like :attr:`~liverctl.io.Geometry.spacing`;
shapes are **(z, y, x)**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from liverctl.errors import ConfigError, DatasetError

__all__ = ["MEDIAN_RULE_SIZE", "SPACING_RULES", "parse_spacing", "spacing_for_shape", "target_spacing"]

SPACING_RULES: tuple[str, ...] = ("median", "128-median")


#: Side of the cube of the "128-median" rule (``docs/studies/he2021.md``).
MEDIAN_RULE_SIZE = 128


def parse_spacing(spec: str | Sequence[float]) -> str | tuple[float, float, float]:
    """A spacing rule name (``"median"``, ``"128-median"``) or an (x, y, z) spacing in mm.

    Accepts a sequence of 3 numbers, a string ``"X,Y,Z"``, or one number for isotropic.
    """
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in SPACING_RULES:
            return text
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(
                f"invalid spacing {spec!r}: use 'median', '128-median', one number or X,Y,Z in mm"
            ) from None
    else:
        values = [float(v) for v in spec]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ConfigError(f"invalid spacing {spec!r}: need 3 positive numbers (x, y, z) in mm")
    return (values[0], values[1], values[2])


def spacing_for_shape(
    spacing_xyz: Sequence[float], shape_zyx: Sequence[int], size: int = MEDIAN_RULE_SIZE
) -> tuple[float, float, float]:
    """The (x, y, z) spacing at which a volume of ``shape_zyx`` voxels becomes ``size`` voxels per axis."""
    n = np.asarray(shape_zyx, dtype=float)[::-1]
    s = np.asarray(spacing_xyz, dtype=float) * n / float(size)
    return (float(s[0]), float(s[1]), float(s[2]))


def target_spacing(
    spacings_xyz: Sequence[Sequence[float]],
    shapes_zyx: Sequence[Sequence[int]],
    rule: str | Sequence[float] = "128-median",
) -> tuple[float, float, float]:
    """Target spacing (x, y, z) of a dataset.

    ``"median"``: per-axis median of the cases' spacings (nnU-Net's basic rule).
    ``"128-median"``: per-axis median of the spacings that make each (cropped) case 128^3
    voxels (``docs/studies/he2021.md``, step 2). A sequence of 3 numbers is returned as given.
    """
    parsed = parse_spacing(rule) if not isinstance(rule, str) or rule.strip().lower() not in SPACING_RULES else rule
    if not isinstance(parsed, str):
        return parsed
    if len(spacings_xyz) == 0:
        raise DatasetError("cannot compute a target spacing without cases")
    if parsed == "median":
        values = np.asarray(spacings_xyz, dtype=float)
    else:
        values = np.asarray([spacing_for_shape(s, n) for s, n in zip(spacings_xyz, shapes_zyx, strict=True)])
    med = np.median(values, axis=0)
    return (float(med[0]), float(med[1]), float(med[2]))
