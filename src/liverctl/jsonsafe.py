"""JSON-able values: non-finite floats become ``None`` (``null``), NumPy scalars Python ones.

One helper for every JSON file liverctl writes from numbers that may be NaN or infinite
(:mod:`liverctl.evaluation.results`, :mod:`liverctl.crosstest`). It imports nothing of
liverctl, so any module can use it without an import cycle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["json_safe"]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None``, recursively.

    Dicts keep their keys, lists and tuples become lists, NumPy scalars become Python
    scalars (a ``float`` subclass such as ``np.float64`` is kept as it is when finite);
    anything else is returned unchanged.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj
