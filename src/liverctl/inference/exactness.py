"""The exactness test: may other arithmetic stand in for torch's fp32 forward?

The candidates are torch's channels-last layout (the same sums in another order) and the
compiled runtimes (:mod:`liverctl.inference.backends`). A candidate passes when, on every test
window, every class's softmax probability is within :data:`TOLERANCE` (1e-4) of torch fp32 in
the default layout. ``--backend auto`` uses only candidates that pass; a named runtime that
fails is refused.

Which windows: :class:`TestWindows`. A model that ``predict`` loads is tested on
:func:`phantom_windows`: one window of Gaussian noise and two windows of a synthetic abdomen
(:mod:`liverctl.phantoms`, contrast phase, seed 0) carried through **the model's own
preprocessing** (its grid, orientation and intensity recipe), so a network is tested at the
scale and on the kind of content it will see. Without a model (a bare network),
:data:`GENERIC`: Gaussian noise and nearly flat windows at four levels.

Why the content matters, measured on a 2-core AVX2 CPU with a weakly trained bundle-layout
SegResNet: on the generic windows OpenVINO was 2.8e-4 from torch, ONNX Runtime 1.4e-3 and torch
channels-last 5.5e-4; on windows of a real abdomen after the bundle's recipe OpenVINO was
1.3e-5, ONNX Runtime 3.4e-5 and channels-last 3.7e-4. Nearly flat windows amplify rounding in
normalisation layers far beyond what CT does, and rank the candidates differently from real
content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GENERIC", "TOLERANCE", "TestWindows", "noise_window", "phantom_windows", "probability_difference"]

TOLERANCE = 1e-4
"""Largest softmax probability difference from torch fp32 a candidate may show."""
FLAT_LEVELS = (-2.0, -1.0, 0.0, 1.0)
""":data:`GENERIC`'s nearly flat windows: these values plus noise of :data:`FLAT_NOISE`.

Exactly constant windows are left out on purpose: there a normalisation layer divides the
rounding noise of the sums by its epsilon, and *any* other order of the same float32 sums
differs (one 96^3 window of the bundle's SegResNet: channels-last 3.0e-4 from the default
layout). Real CT has no constant windows (air windows are skipped)."""
FLAT_NOISE = 0.01
SEED = 24


@dataclass(frozen=True)
class TestWindows:
    """The windows a candidate is tested on. ``name`` identifies them in the caches (a compiled
    model's manifest, ``auto``'s timings): other windows, another test. ``make(shape)`` builds
    them, each of ``shape`` (1, C, ...), only when a test runs."""

    name: str
    make: Callable[[tuple[int, ...]], list[torch.Tensor]]

    def windows(self, shape: Sequence[int]) -> list[torch.Tensor]:
        return self.make(tuple(int(s) for s in shape))


def noise_window(shape: Sequence[int]) -> torch.Tensor:
    """The test's window of Gaussian noise (fixed seed) of ``shape`` (1, C, ...)."""
    return torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(SEED))


def _generic(shape: tuple[int, ...]) -> list[torch.Tensor]:
    noise = noise_window(shape)
    return [noise, *(level + FLAT_NOISE * noise for level in FLAT_LEVELS)]


GENERIC = TestWindows(f"noise+flat{FLAT_LEVELS}+{FLAT_NOISE}", _generic)


def phantom_windows(
    key: str, to_input: Callable[[Any], np.ndarray], spacing: Sequence[float], shape_zyx: Sequence[int]
) -> TestWindows:
    """The test for a model: noise, and two windows of a synthetic abdomen of ``shape_zyx``
    voxels of ``spacing`` (x, y, z mm; the model's) after ``to_input`` (the model's preprocessing: a
    :class:`~liverctl.io.Image` to the network input, ``(C, ...)`` or ``(...)`` in the axes the
    network takes). ``key`` names that preprocessing (the caches tell tests apart by it).

    The windows: the one at the input's centre (liver, spine, bowel) and the one at its first
    corner (the body's edge, air, the table). Where the input is smaller than the window along an
    axis, it is padded with its edge values."""
    from liverctl.phantoms import GENERATOR_VERSION

    def make(shape: tuple[int, ...]) -> list[torch.Tensor]:
        from liverctl.phantoms import make_phantom

        window = shape[2:]
        grid = tuple(max(8, int(n)) for n in shape_zyx)
        ct, _ = make_phantom(seed=0, shape=grid, spacing=tuple(float(s) for s in spacing))  # type: ignore[arg-type]
        array = np.asarray(to_input(ct), dtype=np.float32)
        if array.ndim == len(window):
            array = array[None]
        pad = [(0, 0)] + [(0, max(0, w - n)) for w, n in zip(window, array.shape[1:], strict=True)]
        array = np.pad(array, pad, mode="edge")
        centre = tuple(slice((n - w) // 2, (n - w) // 2 + w) for n, w in zip(array.shape[1:], window, strict=True))
        corner = tuple(slice(0, w) for w in window)
        picked = [array[(slice(None), *centre)], array[(slice(None), *corner)]]
        return [noise_window(shape), *(torch.from_numpy(np.ascontiguousarray(a))[None] for a in picked)]

    digest = hashlib.sha256(f"{key}|{tuple(spacing)}|{tuple(shape_zyx)}".encode()).hexdigest()[:16]
    return TestWindows(f"noise+phantom-{GENERATOR_VERSION}-{digest}", make)


def probability_difference(
    network: Callable[[torch.Tensor], torch.Tensor],
    candidate: Callable[[torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    test: TestWindows | Sequence[torch.Tensor] = GENERIC,
) -> float:
    """Largest softmax probability difference between ``candidate`` and ``network`` (torch fp32,
    the reference) over the windows of ``test`` (or those windows themselves)."""
    windows = test.windows(shape) if isinstance(test, TestWindows) else list(test)
    worst = 0.0
    for x in windows:
        with torch.inference_mode():
            ref = torch.softmax(network(x).float(), 1)
            out = torch.softmax(candidate(x).float(), 1)
        worst = max(worst, float((out - ref).abs().max()))
    return worst
