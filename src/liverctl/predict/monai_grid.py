"""MONAI's ``Spacingd`` grid and resampling, and ``Invertd``'s way back, reproduced.

A MONAI bundle resamples a scan (after ``Orientationd``) with ``Spacingd(pixdim, mode="bilinear")``
and brings its label map back with ``Invertd(nearest_interp=True)``. Three things make that
differ from a plain resampling to the same spacing:

- **the grid** (``monai.data.utils.zoom_affine`` + ``compute_shape_offset``): the output keeps
  the input's rotation, its first voxel centre sits on the input's first voxel centre, and
  its size along each axis is ``round((n - 1) * s / s' + 1)`` (NumPy's round: half to even);
- **the values outside the scan** (``padding_mode="border"``): an output voxel beyond the
  input's last voxel centre takes the clamped (edge) value, never a fill value;
- **the arithmetic** (``monai.transforms.spatial.functional.spatial_resample``): a float64
  ``torch.nn.functional.affine_grid`` / ``grid_sample`` with ``align_corners=False`` on the
  voxel-to-voxel affine normalised as ``monai.networks.utils.to_norm_affine`` does it, so that
  nearest-neighbour ties (an output voxel centre exactly between two input centres, as at
  1.5 mm -> 3 mm) round as MONAI rounds them (half to even).

:func:`spacing_grid` gives the grid, :func:`resample_like_monai` the values (both ways). They
work on :class:`liverctl.io.Image` (arrays (z, y, x), LPS geometry) and convert once to MONAI's
convention: (x, y, z) index order and a RAS world affine. Large outputs are computed in slabs,
with the same base-grid arithmetic as ``affine_grid`` on the whole volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from liverctl.errors import ConfigError
from liverctl.io import Geometry, Image
from liverctl.io.checks import check_grid_size

#: MONAI's ``AFFINE_TOL``: a spacing within it of the target is kept as it is.
AFFINE_TOL = 1e-3

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Output voxels per slab of :func:`resample_like_monai` (bounds the float64 grid: 24 bytes a voxel).
SLAB_VOXELS = 1 << 23


def ras_affine(geometry: Geometry) -> np.ndarray:
    """The 4x4 voxel (x, y, z) index -> RAS mm affine that MONAI's readers give this grid."""
    return geometry.ras_affine()


def source_affine(image: Image) -> np.ndarray:
    """The RAS affine MONAI's reader gives ``image``: the file's stored bits where liverctl read
    them (NIfTI, :attr:`Image.stored_affine`), else :func:`ras_affine` of its geometry."""
    return image.stored_affine.copy() if image.stored_affine is not None else ras_affine(image.geometry)


def geometry_of(affine: np.ndarray) -> Geometry:
    """The LPS :class:`Geometry` of a RAS voxel-to-world affine (inverse of :func:`ras_affine`)."""
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)
    rzs = lps[:3, :3]
    spacing = np.linalg.norm(rzs, axis=0)
    return Geometry(tuple(spacing), tuple(lps[:3, 3]), tuple((rzs / spacing).ravel()))


def _zoom_affine(affine: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``monai.data.utils.zoom_affine(affine, scale, diagonal=False)``."""
    rzs = affine[:-1, :-1]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    rotation = rzs @ np.linalg.inv(zs)
    s = np.sign(np.diag(zs)) * np.abs(scale)
    out = np.eye(len(affine))
    out[:-1, :-1] = rotation @ np.diag(s)
    return out


def _shape_offset(
    shape_xyz: np.ndarray, in_affine: np.ndarray, out_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``monai.data.utils.compute_shape_offset(shape, in_affine, out_affine, scale_extent=False)``."""
    shape = np.asarray(shape_xyz, dtype=float)
    corners = np.asarray(np.meshgrid(*[(0.0, n - 1.0) for n in shape], indexing="ij")).reshape((3, -1))
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out_affine, in_affine) @ corners
    world = in_affine @ corners
    distance = corners_out[:-1].copy()
    corners_out = corners_out[:-1] / corners_out[-1]
    out_shape = np.round(np.ptp(corners_out, axis=1) + 1.0)
    offset = None
    for i in range(world.shape[1]):
        if np.allclose(np.min(distance - distance[:, i : i + 1], 1), 0.0, rtol=AFFINE_TOL):
            offset = world[:-1, i]
            break
    if offset is None:  # no corner is the smallest: centre the output on the input
        offset = in_affine[:-1, :-1] @ (shape / 2.0) + in_affine[:-1, -1] - out_affine[:-1, :-1] @ (out_shape / 2.0)
    return out_shape.astype(int), offset


def spacing_affine(
    affine: np.ndarray, shape_xyz: Sequence[int], pixdim_xyz: Sequence[float]
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``Spacingd(pixdim)``'s output for an input with this RAS ``affine`` and shape (x, y, z):
    its RAS affine and its shape (x, y, z), computed as MONAI computes them."""
    pixdim = np.asarray([float(v) for v in pixdim_xyz], dtype=float)
    if pixdim.shape != (3,) or not np.all(np.isfinite(pixdim) & (pixdim > 0)):
        raise ConfigError(f"invalid target spacing {tuple(pixdim_xyz)}: need 3 positive numbers (x, y, z) in mm")
    affine = np.asarray(affine, dtype=float)
    original = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    out_d = np.where(np.abs(original - pixdim) <= AFFINE_TOL, original, pixdim)
    new = _zoom_affine(affine, out_d)
    shape, offset = _shape_offset(np.asarray(shape_xyz), affine, new)
    check_grid_size(shape[::-1], out_d)  # before any allocation
    new[:3, -1] = offset[:3]
    return new, (int(shape[0]), int(shape[1]), int(shape[2]))


def _times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 torch, as ``TraceableTransform.track_transform_meta`` updates an affine."""
    return (torch.as_tensor(a, dtype=torch.float64) @ torch.as_tensor(b, dtype=torch.float64)).numpy()


def orientation_affine(original: Image, oriented: Image) -> np.ndarray:
    """The RAS affine MONAI's ``Orientationd`` gives ``oriented`` (``original`` with its axes
    permuted and flipped, e.g. by :func:`liverctl.preprocessing.reorient`): the original affine
    times the permutation-and-flip matrix, as ``nibabel.orientations.inv_ornt_aff`` builds it,
    so that its last bits are MONAI's."""
    d0, d1 = original.geometry.direction_matrix, oriented.geometry.direction_matrix
    shape0 = original.shape[::-1]
    flip = np.zeros((4, 4))
    flip[3, 3] = 1.0
    for new_axis in range(3):
        cosines = d0.T @ d1[:, new_axis]
        old_axis = int(np.argmax(np.abs(cosines)))
        sign = 1.0 if cosines[old_axis] > 0 else -1.0
        flip[old_axis, new_axis] = sign
        if sign < 0:
            flip[old_axis, 3] = shape0[old_axis] - 1.0
    return _times(source_affine(original), flip)


@dataclass(frozen=True)
class BundleGrid:
    """Where ``Orientationd`` + ``Spacingd(pixdim)`` put a scan, in the affines MONAI holds.

    ``oriented_affine``: the scan after ``Orientationd``; ``target_affine``: the grid
    ``Spacingd`` computes; ``model_affine``: the affine the resampled ``MetaTensor`` then holds
    (``oriented_affine @ solve(oriented_affine, target_affine)``, a few ulps off the target),
    which ``Invertd`` inverts. Shapes are (z, y, x).
    """

    oriented_affine: np.ndarray
    oriented_shape: tuple[int, int, int]
    target_affine: np.ndarray
    model_affine: np.ndarray
    model_shape: tuple[int, int, int]

    @classmethod
    def of(cls, original: Image, oriented: Image, pixdim_xyz: Sequence[float]) -> BundleGrid:
        """The grid of ``oriented`` (``original`` reoriented, see :func:`orientation_affine`)."""
        a_o = orientation_affine(original, oriented)
        target, shape_xyz = spacing_affine(a_o, oriented.shape[::-1], pixdim_xyz)
        model = _times(a_o, np.linalg.solve(a_o, target))
        return cls(a_o, oriented.shape, target, model, (shape_xyz[2], shape_xyz[1], shape_xyz[0]))

    @property
    def model_geometry(self) -> Geometry:
        return geometry_of(self.model_affine)

    def to_model(self, oriented_array: np.ndarray) -> np.ndarray:
        """``Spacingd(mode="bilinear")`` of the oriented scan (float32, (z, y, x))."""
        return resample_like_monai(oriented_array, self.oriented_affine, self.target_affine, self.model_shape)

    def to_oriented(
        self, model_array: np.ndarray, mode: str = "nearest", box: tuple[slice, slice, slice] | None = None
    ) -> np.ndarray:
        """``Invertd`` of ``Spacingd``: a model-space array back on the oriented scan's grid
        (only its ``box``, (z, y, x) slices, when given)."""
        return resample_like_monai(
            model_array, self.model_affine, self.oriented_affine, self.oriented_shape, mode=mode, box=box
        )


def spacing_grid(
    geometry: Geometry, shape_zyx: Sequence[int], pixdim_xyz: Sequence[float]
) -> tuple[Geometry, tuple[int, int, int]]:
    """The grid ``Spacingd(pixdim)`` resamples an image on this grid to: ``(geometry, shape (z, y, x))``."""
    affine, shape_xyz = spacing_affine(ras_affine(geometry), tuple(shape_zyx)[::-1], pixdim_xyz)
    return geometry_of(affine), (shape_xyz[2], shape_xyz[1], shape_xyz[0])


def _normalize(shape: Sequence[int]) -> torch.Tensor:
    """``monai.networks.utils.normalize_transform(shape, align_corners=False)`` (float64)."""
    size = torch.tensor([float(s) for s in shape], dtype=torch.float64)
    norm = size.clone()
    norm[norm <= 0.0] = 2.0
    out = torch.diag(torch.cat((2.0 / norm, torch.ones(1, dtype=torch.float64))))
    out[:-1, -1] = 1.0 / size - 1.0
    return out


def _theta(
    src_affine: np.ndarray, dst_affine: np.ndarray, src_xyz: Sequence[int], dst_xyz: Sequence[int]
) -> torch.Tensor:
    """The normalised, index-reversed 3x4 matrix that MONAI's ``AffineTransform`` hands ``affine_grid``."""
    xform = torch.as_tensor(np.linalg.solve(src_affine, dst_affine), dtype=torch.float64)
    dst_norm = _normalize(dst_xyz)
    theta = _normalize(src_xyz) @ xform @ torch.as_tensor(np.linalg.inv(dst_norm.numpy()), dtype=torch.float64)
    rev = [2, 1, 0]
    theta[:3] = theta[rev]
    theta[:, :3] = theta[:, rev]
    return theta[:3]


def _steps(n: int) -> torch.Tensor:
    """``affine_grid``'s coordinates along one axis (``align_corners=False``)."""
    if n <= 1:
        return torch.zeros(max(n, 1), dtype=torch.float64)
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float64) * (n - 1) / n


def resample_like_monai(
    array_zyx: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape_zyx: Sequence[int],
    *,
    mode: str = "bilinear",
    box: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """``array_zyx`` (on the grid of the RAS ``src_affine``) resampled onto the grid of
    ``dst_affine`` as MONAI's ``SpatialResample`` does it: float64 ``grid_sample`` with
    ``padding_mode="border"`` and ``align_corners=False``.

    ``mode="bilinear"`` (``Spacingd``'s; float32 out) or ``"nearest"`` (``Invertd`` of a label
    map; the voxel type kept). Pass the affines MONAI would hold (:func:`orientation_affine`,
    :func:`spacing_affine`): nearest-neighbour ties follow their last bits. ``box`` (slices of
    the output, (z, y, x)) computes that part alone, with the same numbers as the whole.
    """
    if mode not in ("bilinear", "nearest"):
        raise ConfigError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    src_xyz, dst_xyz = tuple(array_zyx.shape)[::-1], tuple(int(s) for s in dst_shape_zyx)[::-1]
    src, dst = np.asarray(src_affine, float), np.asarray(dst_affine, float)
    dtype = array_zyx.dtype if mode == "nearest" else np.float32
    if (
        box is None
        and src_xyz == dst_xyz
        and (
            np.allclose(src, dst, atol=AFFINE_TOL) or np.allclose(np.linalg.solve(src, dst), np.eye(4), atol=AFFINE_TOL)
        )
    ):  # MONAI returns the input as it is (no resampling, so voxels that are 0 stay 0)
        return np.ascontiguousarray(array_zyx, dtype=dtype)
    theta = _theta(src, dst, src_xyz, dst_xyz)
    # MONAI's tensor is (C, x, y, z); grid_sample sees (N, C, D=x, H=y, W=z)
    source = torch.from_numpy(np.ascontiguousarray(array_zyx.transpose(2, 1, 0), dtype=np.float64))[None, None]
    full = [slice(0, n) for n in dst_xyz]
    sx, sy, sz = full if box is None else [slice(*b.indices(n)[:2]) for b, n in zip(box[::-1], dst_xyz, strict=True)]
    # affine_grid's coordinates of the whole output, cut to the box: the same numbers
    cx, cy, cz = _steps(dst_xyz[0])[sx], _steps(dst_xyz[1])[sy], _steps(dst_xyz[2])[sz]
    d, h, w = len(cx), len(cy), len(cz)
    out = np.empty((d, h, w), dtype=np.float64)
    per_slab = max(1, SLAB_VOXELS // max(h * w, 1))
    for start in range(0, d, per_slab):
        stop = min(start + per_slab, d)
        base = torch.ones((stop - start, h, w, 4), dtype=torch.float64)
        base[..., 0] = cz
        base[..., 1] = cy[:, None]
        base[..., 2] = cx[start:stop, None, None]
        grid = base.view(1, -1, 4).bmm(theta.T[None]).view(1, stop - start, h, w, 3)
        values = torch.nn.functional.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=False)
        out[start:stop] = values[0, 0].numpy()
    return np.ascontiguousarray(out.transpose(2, 1, 0).astype(dtype))
