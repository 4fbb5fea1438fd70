"""liverctl.spatial.bounding_box: the one box helper that replaced three copies."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverctl.errors import ConfigError
from liverctl.spatial import bounding_box


def _reference(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The definition, axis by axis over the whole array (the former helpers did this)."""
    box = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if idx.size == 0:
            return None
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    density=st.floats(0.0, 0.3),
    margin=st.integers(0, 9),
    seed=st.integers(0, 1000),
)
def test_bounding_box_matches_its_definition(shape, density, margin, seed) -> None:
    mask = np.random.default_rng(seed).random(shape) < density
    assert bounding_box(mask, margin) == _reference(mask, margin)
    assert bounding_box(mask.astype(np.uint8), margin) == _reference(mask, margin)


def test_bounding_box_edge_cases() -> None:
    assert bounding_box(np.zeros((3, 4, 5), bool)) is None
    assert bounding_box(np.zeros((3, 4, 5), bool), margin=2) is None
    assert bounding_box(np.zeros((0, 4, 5), bool)) is None
    mask = np.zeros((4, 5, 6), bool)
    mask[0, 2, 5] = True
    assert bounding_box(mask) == (slice(0, 1), slice(2, 3), slice(5, 6))
    # a margin past the border is clipped to the array
    assert bounding_box(mask, margin=3) == (slice(0, 4), slice(0, 5), slice(2, 6))
    assert bounding_box(np.array([0, 1, 1, 0]), margin=1) == (slice(0, 4),)
    assert bounding_box(np.eye(4, dtype=bool)[1:3]) == (slice(0, 2), slice(1, 3))
    with pytest.raises(ConfigError, match="margin"):
        bounding_box(mask, margin=-1)
