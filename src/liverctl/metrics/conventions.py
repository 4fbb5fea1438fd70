"""The named conventions of :mod:`liverctl.metrics`, its metric names and its empty-mask values.

What each convention means, and the empty-mask rules, are documented in
:mod:`liverctl.metrics` (``src/liverctl/metrics/__init__.py``).
"""

from __future__ import annotations

from typing import Literal

from liverctl.errors import ConfigError

SurfaceConvention = Literal["medpy", "lits"]
HD95Convention = Literal["pooled", "directed-max"]

SURFACE_CONVENTIONS: tuple[str, ...] = ("medpy", "lits")
HD95_CONVENTIONS: tuple[str, ...] = ("pooled", "directed-max")

#: Surface distance (mm) reported when exactly one of the two masks is empty (LiTS' value).
EMPTY_DISTANCE_MM = 9001.0
#: Relative volume difference reported when the reference is empty and the prediction is not.
EMPTY_RVD = 9001.0

#: Metric names, in report order. Distances in mm, volumes in mL, the rest fractions.
METRIC_NAMES: tuple[str, ...] = (
    "dice",
    "jaccard",
    "voe",
    "rvd",
    "assd",
    "rmsd",
    "hd",
    "hd95",
    "sensitivity",
    "specificity",
    "precision",
    "accuracy",
    "pred_ml",
    "ref_ml",
)
#: Metrics for which a larger value is better (for the others, smaller or closer to 0 is).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"dice", "jaccard", "sensitivity", "specificity", "precision", "accuracy"})

_CONNECTIVITY = {"medpy": 1, "lits": 2}


def check_conventions(surface: str, hd95: str) -> None:
    """Raise :class:`~liverctl.errors.ConfigError` for an unknown convention name."""
    if surface not in SURFACE_CONVENTIONS:
        raise ConfigError(f"unknown surface convention {surface!r}; choose one of {', '.join(SURFACE_CONVENTIONS)}")
    if hd95 not in HD95_CONVENTIONS:
        raise ConfigError(f"unknown HD95 convention {hd95!r}; choose one of {', '.join(HD95_CONVENTIONS)}")
