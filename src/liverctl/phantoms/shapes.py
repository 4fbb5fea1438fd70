"""Implicit shapes of the phantoms, in anatomical coordinates.

A shape is a signed-distance-like function sd(u, v, w) in mm (negative inside) over
broadcastable arrays, plus an axis-aligned bounding box in anatomical coordinates.
u: to the patient's left, v: posterior, w: superior (mm, body-centred).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SDF = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Shape:
    sdf: SDF
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


def _ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> SDF:
    """Approximate signed distance to an ellipsoid (Quilez's k0*(k0-1)/k1 bound)."""
    cu, cv, cw = c
    a, b, cc = r

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        du, dv, dw = u - cu, v - cv, w - cw
        k0 = np.sqrt((du / a) ** 2 + (dv / b) ** 2 + (dw / cc) ** 2)
        k1 = np.sqrt((du / a**2) ** 2 + (dv / b**2) ** 2 + (dw / cc**2) ** 2) + np.float32(1e-6)
        return k0 * (k0 - 1.0) / k1

    return sdf


def _capsule(p0: tuple[float, float, float], p1: tuple[float, float, float], radius: float) -> SDF:
    """Signed distance to a tube of ``radius`` around the segment p0-p1."""
    bu, bv, bw = (p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2])
    bb = bu * bu + bv * bv + bw * bw or 1.0

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        pu, pv, pw = u - p0[0], v - p0[1], w - p0[2]
        h = np.clip((pu * bu + pv * bv + pw * bw) / bb, 0.0, 1.0)
        return np.sqrt((pu - bu * h) ** 2 + (pv - bv * h) ** 2 + (pw - bw * h) ** 2) - radius

    return sdf


def _column(cu: float, cv: float, ru: float, rv: float) -> SDF:
    """An elliptic cylinder along w (infinite)."""

    def sdf(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        k = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
        return (k - 1.0) * min(ru, rv) + 0.0 * w

    return sdf


def _capsule_box(p0, p1, r: float) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo = tuple(min(a, b) - r for a, b in zip(p0, p1, strict=True))
    hi = tuple(max(a, b) + r for a, b in zip(p0, p1, strict=True))
    return lo, hi  # type: ignore[return-value]


def _ell_box(c, r, grow: float = 1.0) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    lo = tuple(ci - ri * grow for ci, ri in zip(c, r, strict=True))
    hi = tuple(ci + ri * grow for ci, ri in zip(c, r, strict=True))
    return lo, hi  # type: ignore[return-value]


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (polynomial), blending two shapes over ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


class _Noise:
    """A smooth random field: a sum of plane waves with random directions.

    ``cos(a(u, v) + b(w)) = cos(a) cos(b) - sin(a) sin(b)`` keeps every term a product of
    an in-plane and a cranio-caudal factor, which broadcast cheaply over the grid.
    """

    def __init__(self, rng: np.random.Generator, amplitude: float, wavelength: tuple[float, float], terms: int = 4):
        lam = rng.uniform(wavelength[0], wavelength[1], size=terms)
        direction = rng.normal(size=(terms, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.k = (direction * (2 * np.pi / lam)[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=terms).astype(np.float32)
        self.amp = (amplitude * rng.uniform(0.6, 1.0, size=terms) * math.sqrt(2.0 / terms)).astype(np.float32)

    def __call__(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = None
        for (ku, kv, kw), p, a in zip(self.k, self.phase, self.amp, strict=True):
            inplane = ku * u + kv * v + p
            axial = kw * w
            term = (a * np.cos(inplane)) * np.cos(axial) - (a * np.sin(inplane)) * np.sin(axial)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]


def _deformed(sdf: SDF, noise: _Noise) -> SDF:
    return lambda u, v, w: sdf(u, v, w) + noise(u, v, w)
