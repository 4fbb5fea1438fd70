"""The voxel grid a phantom is painted on: world and anatomical coordinates, image, labels."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from liverctl.phantoms.config import PhantomConfig
from liverctl.phantoms.shapes import SDF, _Shape


class _Scene:
    """The voxel grid in world and anatomical coordinates, and the image being painted."""

    def __init__(self, config: PhantomConfig, roll_deg: float, centre_xyz: tuple[float, float, float]):
        nz, ny, nx = config.shape
        sx, sy, sz = config.spacing
        self.x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
        self.y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
        self.z = ((np.arange(nz) - (nz - 1) / 2) * sz).astype(np.float32)
        X, Y = np.meshgrid(self.x - centre_xyz[0], self.y - centre_xyz[1])
        t = math.radians(roll_deg)
        # world -> anatomical: rotate in-plane by the roll angle (about the z axis)
        self.u2 = (math.cos(t) * X + math.sin(t) * Y).astype(np.float32)
        self.v2 = (-math.sin(t) * X + math.cos(t) * Y).astype(np.float32)
        self.yw2 = np.broadcast_to(self.y[:, None], (ny, nx))  # world y (gravity), mm from grid centre
        self.xw2 = np.broadcast_to(self.x[None, :], (ny, nx))
        self.w1 = (self.z - centre_xyz[2]).astype(np.float32)
        self.inv_h = np.float32(1.0 / float(np.mean(config.spacing)))
        self.img = np.full(config.shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(config.shape, dtype=np.uint8)

    def box(self, shape: _Shape, margin: float = 6.0) -> tuple[slice, slice, slice] | None:
        (ulo, vlo, wlo), (uhi, vhi, whi) = shape.lo, shape.hi
        inplane = (self.u2 >= ulo - margin) & (self.u2 <= uhi + margin)
        inplane &= (self.v2 >= vlo - margin) & (self.v2 <= vhi + margin)
        rows = np.flatnonzero(inplane.any(axis=1))
        cols = np.flatnonzero(inplane.any(axis=0))
        zs = np.flatnonzero((self.w1 >= wlo - margin) & (self.w1 <= whi + margin))
        if rows.size == 0 or cols.size == 0 or zs.size == 0:
            return None
        return slice(zs[0], zs[-1] + 1), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        zs, ys, xs = box
        coords = (self.u2[None, ys, xs], self.v2[None, ys, xs], self.w1[zs, None, None])
        self.last = (box, coords)
        return coords

    def cached(self, sdf: SDF, field: np.ndarray) -> SDF:
        """``sdf``, answered from ``field`` (its values on the whole grid) when called on a box's coordinates."""

        def lookup(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
            last = getattr(self, "last", None)
            if last is not None and u is last[1][0] and v is last[1][1] and w is last[1][2]:
                return field[last[0]]
            return sdf(u, v, w)

        return lookup

    def world_y(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        return self.yw2[None, box[1], box[2]]

    def paint(
        self,
        shape: _Shape,
        hu: float | np.ndarray | Callable[[tuple[slice, slice, slice]], np.ndarray],
        label: int | None = None,
    ) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
        """Blend ``hu`` into the image where ``shape`` is; set ``label`` where its centre is inside."""
        box = self.box(shape)
        if box is None:
            return None
        sd = shape.sdf(*self.coords(box))
        sd = np.broadcast_to(sd, self.img[box].shape)
        occ = np.clip(0.5 - sd * self.inv_h, 0.0, 1.0)
        value = hu(box) if callable(hu) else hu
        sub = self.img[box]
        sub += occ * (value - sub)
        if label is not None:
            self.lab[box][sd < 0] = label
        return box, sd


def _smooth_inplane(a: np.ndarray, side: float) -> np.ndarray:
    """Separable 3-tap filter ``[side, 1 - 2 side, side]`` along y and x (edges replicated)."""
    for axis in (1, 2):
        out = a * np.float32(1.0 - 2.0 * side)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        out[hi] += np.float32(side) * a[lo]
        out[lo] += np.float32(side) * a[hi]
        first = [slice(None)] * 3
        last = [slice(None)] * 3
        first[axis], last[axis] = slice(0, 1), slice(-1, None)
        out[tuple(first)] += np.float32(side) * a[tuple(first)]
        out[tuple(last)] += np.float32(side) * a[tuple(last)]
        a = out
    return a
