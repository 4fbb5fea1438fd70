"""Deprecated: ``liverctl.hub`` is now the package :mod:`liverctl.weights` (``liverctl weights``).

Every public name of the former module is re-exported here for one release; import from
:mod:`liverctl.weights` instead. ``hub.SlidingWindow`` is :class:`liverctl.weights.WindowRecipe`
(not the inference engine's :class:`liverctl.inference.SlidingWindow`).
"""

from __future__ import annotations

from liverctl.weights import *  # noqa: F403
from liverctl.weights import __all__ as _weights_all

__all__ = list(_weights_all)
