"""The nnU-Net test folder and the scans the nnU-Net parity tests and benchmark run on.

The results folder is made by ``tests/data/make_nnunet_phantom.py`` with nnU-Net 2.5.1 itself.
The scans are liverctl phantoms of another seed than its training data:

* ``native``: the training grid (40x48x38 voxels, 8 x 8 x 10 mm along z, y, x);
* ``anisotropic``: 4 x 4 mm in-plane, 16 mm slices (nnU-Net resamples the coarse axis on its own,
  order 0, and in-plane with order 3);
* ``oblique``: 7.5 x 7.5 x 9 mm, its direction rotated 10 degrees about x and 12 about y, and a
  zero border on two sides (so nnU-Net's crop to the non-zero box does something).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from liverctl.io import Geometry, Image, write_image
from liverctl.phantoms import make_phantom

FOLDER = (
    Path(__file__).resolve().parents[1]
    / "data"
    / "nnunet"
    / "Dataset914_LiverPhantom"
    / "nnUNetTrainer__nnUNetPlans__3d_fullres"
)
CASES = ("native", "anisotropic", "oblique")


def _rotation(ax_deg: float, ay_deg: float) -> tuple[float, ...]:
    a, b = math.radians(ax_deg), math.radians(ay_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return tuple(float(v) for v in (ry @ rx).ravel())


def make_case(name: str) -> Image:
    """One test scan (int16 HU), deterministic."""
    if name == "native":
        ct, _ = make_phantom(domain="tumour", seed=915, case=0, shape=(40, 48, 38), spacing=(10.0, 8.0, 8.0))
        return ct
    if name == "anisotropic":
        ct, _ = make_phantom(domain="tumour", seed=915, case=1, shape=(20, 96, 95), spacing=(4.0, 4.0, 16.0))
        return ct
    if name == "oblique":
        ct, _ = make_phantom(domain="tumour", seed=915, case=2, shape=(36, 52, 42), spacing=(9.0, 7.5, 7.5))
        array = ct.array.copy()
        array[:, :, :3] = 0  # zero border: nnU-Net crops it away and puts background back
        array[:, -2:, :] = 0
        geometry = Geometry(ct.geometry.spacing, ct.geometry.origin, _rotation(10.0, 12.0))
        return Image(array, geometry)
    raise ValueError(name)


def write_cases(folder: Path) -> dict[str, Path]:
    """Write every case as ``<name>_0000.nii.gz`` (nnU-Net's naming) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write_image(make_case(name), folder / f"{name}_0000.nii.gz") for name in CASES}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
