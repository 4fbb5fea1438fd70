"""A scan in its model's space, and the way back: :class:`ModelSpace`.

Two recipes, chosen by the weights entry's ``grid`` (see ``weights.toml``):

``grid = "monai"`` (MONAI bundles): ``Orientationd`` + ``Spacingd`` + ``Invertd`` as the bundle
runs them (:mod:`liverctl.predict.monai_grid`): the grid keeps the oriented scan's first voxel and
rotation, values beyond the scan's edge are the edge's (border padding), and the label map
comes back by nearest neighbour, ties rounded half to even.

- exact (``shortcuts=False``, ``--no-shortcuts`` / ``--exact``): MONAI's float64
  ``grid_sample`` both ways, bit for bit;
- defaults: the same grid and the same decisions, computed faster: SimpleITK's linear
  resampling (float32) of the scan extended by copies of its edge voxels, which is MONAI's
  border padding to float rounding, and, on the way back, the nearest model voxel of each scan voxel, found axis
  by axis (the two grids share their rotation, so the map is separable) bounds the box where the
  liver can land, and MONAI's nearest neighbour runs in that box alone: the same numbers.

``grid = "liverctl"`` (models trained by ``liverctl train``): the centred grid of
:func:`liverctl.spatial.resample`, as ``liverctl preprocess`` prepared the training data, and
the liver indicator brought back by linear interpolation (threshold 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from liverctl.io import Geometry, Image
from liverctl.predict.monai_grid import BundleGrid
from liverctl.preprocessing.intensity import normalise
from liverctl.spatial import _resample_sitk, bounding_box, orientation_of, reorient, resample, resample_to_reference

__all__ = ["ModelSpace"]

NEAR_ZERO_HU = 0.01
"""Fast model-space values within this of 0 HU have their zero-ness decided by MONAI's arithmetic
(the fast resampling is within ~1e-5 HU of MONAI's; see :func:`_monai_zero_set`)."""

POINTS_PER_CHUNK = 1 << 20
"""Model voxels per ``grid_sample`` call of :func:`_monai_values_at`."""


@dataclass
class ModelSpace:
    """A scan in its model's space: ``hu`` (float32 HU with its geometry, for the body crop and
    air windows), ``net_input`` (after the intensity recipe), and for ``grid = "monai"`` the
    :class:`~liverctl.predict.monai_grid.BundleGrid` and the oriented scan's geometry, for the way back."""

    hu: Image
    net_input: np.ndarray
    grid: BundleGrid | None = None
    oriented: Geometry | None = None

    @classmethod
    def of(cls, image: Image, entry: Any, exact: bool = False) -> ModelSpace:
        """``image`` in the space of the model ``entry`` describes (see the module docs)."""
        oriented = reorient(image, entry.orientation)
        if entry.grid == "monai":
            grid = BundleGrid.of(image, oriented, entry.spacing)
            if exact:
                array = grid.to_model(oriented.array)
            else:
                array = _monai_zero_set(_itk_linear(oriented, grid), oriented.array, grid)
            hu = Image(array, grid.model_geometry)
            return cls(hu, normalise(hu.array, entry.intensity), grid, oriented.geometry)
        hu = oriented
        if hu.geometry.mismatch(replace(hu.geometry, spacing=tuple(entry.spacing))) is not None:
            hu = resample(hu, entry.spacing, interpolator=entry.interpolation)
        elif hu.array.dtype != np.float32:
            hu = Image(hu.array.astype(np.float32), hu.geometry)
        return cls(hu, normalise(hu.array, entry.intensity))

    def mask_on(self, image: Image, indicator: np.ndarray, exact: bool = False) -> np.ndarray:
        """The model-space liver decision (bool) on ``image``'s own grid (bool)."""
        if self.grid is None:
            back = resample_to_reference(
                Image(indicator.astype(np.float32), self.hu.geometry),
                image,
                interpolator="linear",
                default_value=0.0,
                support_only=True,  # only the box around the liver: the same result, far less work
            )
            return back.array > 0.5
        labels = indicator.astype(np.uint8)
        if exact:
            oriented = self.grid.to_oriented(labels)
        else:  # the same numbers, computed only where the liver can land
            oriented = np.zeros(self.grid.oriented_shape, np.uint8)
            box = _reach(labels, self.grid)
            if box is not None:
                oriented[box] = self.grid.to_oriented(labels, box=box)
        return self._unoriented(oriented, image).astype(bool)

    def probability_on(self, image: Image, probability: np.ndarray) -> Image:
        """A model-space probability map on ``image``'s own grid (float32, in [0, 1])."""
        if self.grid is None:
            p = resample_to_reference(
                Image(probability, self.hu.geometry), image, interpolator="linear", default_value=0.0
            )
            array = p.array
        else:  # Invertd of the probability: bilinear
            array = self._unoriented(self.grid.to_oriented(probability.astype(np.float32), mode="bilinear"), image)
        return Image(np.clip(array, 0.0, 1.0).astype(np.float32), image.geometry)

    def _unoriented(self, array: np.ndarray, image: Image) -> np.ndarray:
        """An array on the oriented scan's grid back in the scan's own axis order (Invertd of
        Orientationd: a permutation and flips, no interpolation)."""
        assert self.oriented is not None
        return reorient(Image(array, self.oriented), orientation_of(image)).array


def _itk_linear(oriented: Image, grid: BundleGrid) -> np.ndarray:
    """``Spacingd``'s bilinear resampling computed by SimpleITK (float32).

    MONAI's ``padding_mode="border"`` clamps each coordinate that falls beyond the scan to its
    edge and still interpolates along the others; ITK's nearest-neighbour extrapolation would
    round *every* coordinate of such a point (85 HU off on a face of a 0.9 -> 3 mm grid). So the
    scan is first extended by copies of its edge voxels until every model voxel lies within it:
    linear interpolation between equal copies is the clamp, exactly.
    """
    # the model grid shares the oriented scan's rotation: each axis maps on its own
    xform = np.linalg.solve(grid.oriented_affine, grid.model_affine)
    pads = []
    for axis_zyx in range(3):
        axis = 2 - axis_zyx
        n_scan, n_model = grid.oriented_shape[axis_zyx], grid.model_shape[axis_zyx]
        ends = xform[axis, axis] * np.array([0.0, n_model - 1]) + xform[axis, 3]
        lo = max(0, int(np.ceil(-ends.min() - 1e-9)))
        hi = max(0, int(np.ceil(ends.max() - (n_scan - 1) - 1e-9)))
        pads.append((lo, hi))
    source = oriented
    if any(lo or hi for lo, hi in pads):
        g = oriented.geometry
        shift_xyz = np.array([pads[2][0], pads[1][0], pads[0][0]], float) * np.asarray(g.spacing)
        origin = np.asarray(g.origin) - g.direction_matrix @ shift_xyz
        source = Image(np.pad(oriented.array, pads, mode="edge"), replace(g, origin=tuple(float(v) for v in origin)))
    return _resample_sitk(source, grid.model_geometry, grid.model_shape, 1, 0.0, extrapolate_nearest=True).array


def _monai_zero_set(array: np.ndarray, oriented: np.ndarray, grid: BundleGrid) -> np.ndarray:
    """``array`` (the fast resampling) with MONAI's zero set: exactly where ``Spacingd`` gives 0.

    ``NormalizeIntensity(nonzero=True)`` leaves voxels that are exactly 0 at 0 and shifts all
    others, so a voxel that is 0 HU on one side and 3e-6 HU on the other differs by up to 0.3 in
    the network input (water, calibration inserts, zero padding, on grids whose model voxels
    fall on scan voxel centres). Wherever the float32 result is within :data:`NEAR_ZERO_HU` of 0,
    MONAI's own float64 arithmetic decides zero-ness, and only that: such a voxel becomes 0 where
    MONAI's value is 0, MONAI's value where the fast one is 0 and MONAI's is not, and keeps the
    fast value otherwise (modified in place and returned).
    """
    near = np.flatnonzero(np.abs(array) <= NEAR_ZERO_HU)
    if near.size == 0:
        return array
    fast = array.reshape(-1)[near]
    theirs = _monai_values_at(oriented, grid, near)
    array.flat[near] = np.where(theirs == 0, np.float32(0), np.where(fast == 0, theirs, fast))  # in place, any layout
    return array


def _monai_values_at(oriented: np.ndarray, grid: BundleGrid, flat_index: np.ndarray) -> np.ndarray:
    """``grid.to_model(oriented)`` at some model voxels only (flat (z, y, x) indices), with the
    same float64 ``affine_grid`` rows and ``grid_sample`` arithmetic as the whole volume."""
    import torch

    from liverctl.predict.monai_grid import AFFINE_TOL, _steps, _theta

    src, dst = grid.oriented_affine, grid.target_affine
    if tuple(oriented.shape) == tuple(grid.model_shape) and (
        np.allclose(src, dst, atol=AFFINE_TOL) or np.allclose(np.linalg.solve(src, dst), np.eye(4), atol=AFFINE_TOL)
    ):  # MONAI hands the input back unresampled
        return np.asarray(oriented, np.float32).reshape(-1)[flat_index]
    dst_zyx = tuple(int(n) for n in grid.model_shape)
    theta = _theta(src, dst, oriented.shape[::-1], dst_zyx[::-1])
    source = torch.from_numpy(np.ascontiguousarray(oriented.transpose(2, 1, 0), dtype=np.float64))[None, None]
    steps = [_steps(n) for n in dst_zyx]
    out = np.empty(flat_index.size, np.float32)
    for start in range(0, flat_index.size, POINTS_PER_CHUNK):
        part = flat_index[start : start + POINTS_PER_CHUNK]
        z, y, x = (torch.from_numpy(np.asarray(i, np.int64)) for i in np.unravel_index(part, dst_zyx))
        base = torch.stack((steps[0][z], steps[1][y], steps[2][x], torch.ones(len(part), dtype=torch.float64)), 1)
        points = base[None].bmm(theta.T[None]).view(1, 1, 1, len(part), 3)
        values = torch.nn.functional.grid_sample(
            source, points, mode="bilinear", padding_mode="border", align_corners=False
        )
        out[start : start + len(part)] = values.reshape(-1).numpy().astype(np.float32)
    return out


def _reach(labels: np.ndarray, grid: BundleGrid) -> tuple[slice, slice, slice] | None:
    """The box of the oriented scan grid whose nearest model voxels can be non-zero.

    The model grid has the oriented scan's rotation, so a scan voxel's continuous model index
    along each axis depends on its own index along that axis alone (``a * i + b``, the diagonal
    of ``solve(model_affine, oriented_affine)``): the scan voxels within one model voxel of the
    labels' box, border clamping included, form a box too.
    """
    model_box = bounding_box(labels)
    if model_box is None:
        return None
    xform = np.linalg.solve(grid.model_affine, grid.oriented_affine)
    box = []
    for axis_zyx in range(3):
        axis = 2 - axis_zyx
        n_scan, n_model = grid.oriented_shape[axis_zyx], labels.shape[axis_zyx]
        index = np.clip(xform[axis, axis] * np.arange(n_scan) + xform[axis, 3], 0, n_model - 1)
        lo, hi = model_box[axis_zyx].start - 1, model_box[axis_zyx].stop
        hits = np.flatnonzero((index >= lo) & (index <= hi))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return (box[0], box[1], box[2])
