"""What liverctl accepts as a CT scan in Hounsfield units: one verdict for every command.

``predict``, ``preprocess`` (and so ``train``, which reads its output), ``crosstest`` and the
demo read scans through :func:`read_ct` (or call :func:`check_ct` on an image they already
hold), so the same file gets the same verdict from each of them:

- refused (:class:`~liverctl.errors.ImageFormatError`): NaN or infinite voxels (also in NIfTI
  files, whose reader turns them into 0: :func:`liverctl.io.read_image` catches that); all values
  within 0..255 (an 8-bit picture, or a mask given as the scan); no value below 0 (a CT whose
  rescale intercept was not applied: air must be near -1000 HU);
- accepted with a note: no air (nothing below -500 HU: a tight crop?), values above 4000 HU
  (metal, or not HU);
- accepted, but with no body: less than :data:`NO_BODY_ML` (and 1 % of the scan) of tissue
  above :data:`BODY_HU` (an all-air scan). ``predict`` gives it an empty mask with the ``no_body`` QC flag, never a
  liver; ``preprocess`` refuses it as a training case.
"""

from __future__ import annotations

import os

import numpy as np

from liverctl.errors import ImageFormatError
from liverctl.io.image import Image
from liverctl.io.images import read_image

BODY_HU = -500.0
"""Voxels above this value are tissue (the body), below it air, as in the body crop."""

NO_BODY_ML = 10.0
"""A scan with less tissue than this (mL above :data:`BODY_HU`), and less than
:data:`NO_BODY_FRACTION` of its volume, holds no body to segment."""

NO_BODY_FRACTION = 0.01
"""See :data:`NO_BODY_ML`: so that a small crop that is all tissue still counts as a body."""


def check_ct(image: Image, source: str = "image") -> list[str]:
    """Refuse images that cannot be CT in Hounsfield units; return QC notes for odd ones.

    See the module docs for what is refused and what is noted.
    """
    array = image.array
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ImageFormatError(f"{source} holds NaN or infinite values")
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 255:
        raise ImageFormatError(
            f"{source} does not look like CT: values lie in {lo:g}..{hi:g}, not Hounsfield units "
            "(expected air near -1000 HU); is it a picture or a mask?"
        )
    if lo >= 0:
        raise ImageFormatError(
            f"{source} does not look like CT in Hounsfield units: no value below 0 (min {lo:g}, max {hi:g}); "
            "apply the DICOM rescale slope/intercept first"
        )
    notes = []
    if lo > BODY_HU:
        notes.append(f"no air in the image (minimum {lo:g} HU): a tight crop, or not a CT in HU")
    if hi > 4000:
        notes.append(f"values up to {hi:g} HU: metal, or not Hounsfield units")
    return notes


def body_volume_ml(image: Image) -> float:
    """Volume (mL) of the voxels above :data:`BODY_HU`."""
    count = sum(int(np.count_nonzero(plane > BODY_HU)) for plane in image.array)  # per slice: no full-size temporary
    return count * image.voxel_volume_ml


def has_body(image: Image) -> bool:
    """Whether the scan holds a body: :data:`NO_BODY_ML` of tissue, or :data:`NO_BODY_FRACTION` of it."""
    total_ml = image.array.size * image.voxel_volume_ml
    return body_volume_ml(image) >= min(NO_BODY_ML, NO_BODY_FRACTION * total_ml)


NO_BODY = f"no body (less than {NO_BODY_ML:g} mL, or 1 % of the scan, above {BODY_HU:g} HU)"
"""How reports and errors describe a scan without a body."""


def read_ct(path: str | os.PathLike[str], *, series_uid: str | None = None) -> tuple[Image, list[str]]:
    """Read a scan and check it is CT in HU: ``(image, notes)`` (see :func:`check_ct`)."""
    image = read_image(path, series_uid=series_uid)
    return image, check_ct(image, str(path))
