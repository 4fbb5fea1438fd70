"""Patch sampling with foreground oversampling, and data augmentation on patches.

Patches (He et al. 2021, nnU-Net):

- :func:`choose_center` picks the centre of a patch: uniformly inside the volume, or, for a
  "foreground" patch, a voxel drawn uniformly from the case's foreground voxels.
- :func:`extract_patch` cuts the patch around that centre, shifted to stay inside the volume
  where the volume is large enough; volumes smaller than the patch are padded (image with its
  minimum, label with 0).
- :func:`foreground_slots` says which batch elements are forced foreground: nnU-Net's rule
  "element i is foreground if ``i >= round(B * (1 - fraction))``" with fraction 1/3 (for a
  batch of 2: the second one).

Augmentation (:class:`Augmentation`, parameters drawn from a numpy ``Generator`` so that a
batch is a pure function of its seed): one spatial resampling that combines scaling
(isotropic factor in 0.85-1.25, p=0.2), rotation (each axis +-30 degrees, p=0.2) and an
elastic deformation (a random displacement field at 4^3 control points, upsampled
trilinearly, amplitude 0-4 voxels, p=0.2), applied to image (trilinear) and label
(nearest) with the same grid; then mirroring along each axis (p=0.5 each) and gamma
(gamma in 0.7-1.5, p=0.3; intensities are rescaled to [0, 1], raised to gamma and
mapped back, keeping the patch's mean and standard deviation). Rotation and scaling act in
voxel coordinates (as in nnU-Net), about the patch centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Augmentation",
    "choose_center",
    "extract_patch",
    "foreground_coordinates",
    "foreground_slots",
]


def foreground_slots(batch_size: int, fraction: float = 1 / 3) -> list[bool]:
    """Which batch elements must be centred on foreground (nnU-Net's oversampling rule)."""
    return [not i < round(batch_size * (1 - fraction)) for i in range(batch_size)]


def foreground_coordinates(label: np.ndarray, max_points: int = 10000, seed: int = 0) -> np.ndarray:
    """Up to ``max_points`` (z, y, x) coordinates of non-zero label voxels, drawn without
    replacement with a fixed seed (all of them when fewer); shape (n, 3), int32."""
    coords = np.argwhere(np.asarray(label) > 0)
    if len(coords) > max_points:
        pick = np.random.default_rng(seed).choice(len(coords), size=max_points, replace=False)
        coords = coords[np.sort(pick)]
    return coords.astype(np.int32)


def choose_center(
    shape: Sequence[int], rng: np.random.Generator, foreground: np.ndarray | None = None
) -> tuple[int, int, int]:
    """A patch centre: a random foreground voxel if ``foreground`` (n, 3) is given and not
    empty, else a uniformly random voxel of a volume of ``shape``."""
    if foreground is not None and len(foreground):
        return tuple(int(v) for v in foreground[int(rng.integers(0, len(foreground)))])  # type: ignore[return-value]
    return tuple(int(rng.integers(0, s)) for s in shape)  # type: ignore[return-value]


def extract_patch(
    image: np.ndarray, label: np.ndarray, center: Sequence[int], patch_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``patch_size`` patch around ``center`` from ``image`` and ``label`` (z, y, x).

    Along an axis where the volume is at least as large as the patch, the window is shifted
    to lie inside the volume; along a smaller axis the volume is centred and padded (image
    with its minimum, label with 0). Returns float32 image and uint8 label patches (copies).
    """
    img_out = np.empty(tuple(patch_size), np.float32)
    lab_out = np.zeros(tuple(patch_size), np.uint8)
    src, dst = [], []
    for c, n, p in zip(center, image.shape, patch_size, strict=True):
        if n >= p:
            start = int(np.clip(c - p // 2, 0, n - p))
            src.append(slice(start, start + p))
            dst.append(slice(0, p))
        else:
            off = (p - n) // 2
            src.append(slice(0, n))
            dst.append(slice(off, off + n))
    block = np.asarray(image[tuple(src)], dtype=np.float32)
    if any(d.stop - d.start != p for d, p in zip(dst, patch_size, strict=True)):
        img_out.fill(float(block.min()) if block.size else 0.0)
    img_out[tuple(dst)] = block
    lab_out[tuple(dst)] = np.asarray(label[tuple(src)])
    return img_out, lab_out


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation of (z, y, x) offsets: ``angles[0]`` about the z axis (in the axial y-x plane),
    ``angles[1]`` about y, ``angles[2]`` about x, in radians."""
    a, b, c = angles
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Augmentation:
    """Random spatial and intensity transforms of one (image, label) patch pair.

    Each field is the probability (``p_*``) or range of one transform; set a probability to
    0 to disable it. ``__call__(image, label, rng)`` takes (z, y, x) float and integer
    tensors and returns transformed copies of the same shape.
    """

    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.25)
    p_rotation: float = 0.2
    max_rotation_deg: float = 30.0
    p_elastic: float = 0.2
    elastic_max_voxels: float = 4.0
    elastic_grid: int = 4
    p_flip: float = 0.5
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)

    def draw(self, rng: np.random.Generator) -> dict:
        """Draw the parameters of one application (a plain dict)."""
        params: dict = {}
        params["scale"] = float(rng.uniform(*self.scale_range)) if rng.random() < self.p_scale else 1.0
        if rng.random() < self.p_rotation:
            params["angles"] = tuple(np.deg2rad(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg, 3)))
        else:
            params["angles"] = (0.0, 0.0, 0.0)
        if rng.random() < self.p_elastic:
            amp = rng.uniform(0, self.elastic_max_voxels)
            params["elastic"] = (rng.standard_normal((3, *(self.elastic_grid,) * 3)) * amp).astype(np.float32)
        else:
            params["elastic"] = None
        params["flips"] = tuple(int(ax) for ax in range(3) if rng.random() < self.p_flip)
        params["gamma"] = float(rng.uniform(*self.gamma_range)) if rng.random() < self.p_gamma else 1.0
        return params

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(image, label, self.draw(rng))

    @staticmethod
    def apply(image: torch.Tensor, label: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply drawn ``params`` to a (z, y, x) image and label."""
        scale, angles, elastic = params["scale"], params["angles"], params["elastic"]
        if scale != 1.0 or any(angles) or elastic is not None:
            image, label = _resample(image, label, scale, angles, elastic)
        if params["flips"]:
            image = torch.flip(image, params["flips"])
            label = torch.flip(label, params["flips"])
        if params["gamma"] != 1.0:
            image = _gamma(image, params["gamma"])
        return image, label


def _resample(
    image: torch.Tensor, label: torch.Tensor, scale: float, angles: Sequence[float], elastic: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = image.shape
    half = torch.tensor([(n - 1) / 2 for n in shape], dtype=torch.float32)
    axes = [torch.arange(n, dtype=torch.float32) - h for n, h in zip(shape, half, strict=True)]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    coords = torch.stack([zz, yy, xx], -1)  # output voxel offsets from the centre (z, y, x)
    matrix = torch.as_tensor(_rotation(angles) / scale, dtype=torch.float32)
    src = coords @ matrix.T
    if elastic is not None:
        field = torch.as_tensor(elastic)[None]
        disp = F.interpolate(field, size=tuple(shape), mode="trilinear", align_corners=True)[0]
        src = src + disp.permute(1, 2, 3, 0)
    grid = (src / half.clamp_min(0.5)).flip(-1)[None]  # grid_sample wants (x, y, z) in [-1, 1]
    low = image.min()
    img = F.grid_sample((image - low)[None, None].float(), grid, mode="bilinear", align_corners=True)[0, 0] + low
    lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", align_corners=True)[0, 0]
    return img.to(image.dtype), lab.round().to(label.dtype)


def _gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    mean, std = image.mean(), image.std()
    low, high = image.min(), image.max()
    span = (high - low).clamp_min(1e-7)
    out = ((image - low) / span) ** gamma * span + low
    new_std = out.std().clamp_min(1e-7)
    return (out - out.mean()) / new_std * std + mean
