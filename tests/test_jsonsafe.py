"""liverctl.jsonsafe: the one helper that makes numbers JSON-able for evaluate and crosstest."""

from __future__ import annotations

import json
import math

import numpy as np

from liverctl.jsonsafe import json_safe


def test_non_finite_floats_become_none_recursively() -> None:
    data = {"a": math.nan, "b": [1.5, math.inf, (-math.inf, 2.0)], "c": {"d": np.float64("nan")}, "e": "x"}
    assert json_safe(data) == {"a": None, "b": [1.5, None, [None, 2.0]], "c": {"d": None}, "e": "x"}


def test_numpy_scalars_become_python_scalars() -> None:
    out = json_safe([np.int64(3), np.bool_(True), np.float32(0.5), np.float32("inf")])
    assert out == [3, True, 0.5, None]
    assert [type(v) for v in out[:3]] == [int, bool, float]
    json.dumps(out)  # nothing NumPy is left


def test_finite_values_are_kept_as_they_are() -> None:
    value = np.float64(0.25)
    assert json_safe(value) is value  # a float subclass stays (bitwise the same JSON)
    assert json_safe(None) is None and json_safe(7) == 7


def test_a_matrix_row_list_as_crosstest_writes_it() -> None:
    mat = np.array([[np.nan, 0.8], [0.7, np.nan]])
    assert json_safe(mat.tolist()) == [[None, 0.8], [0.7, None]]
