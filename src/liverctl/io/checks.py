"""What every image reader checks and how it words ITK's errors: one line, a 3D volume of at
least two slices along each axis."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from liverctl.errors import ImageFormatError
from liverctl.io.image import Image


def itk_message(exc: BaseException) -> str:
    """The informative part of an ITK exception, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    for ln in lines:
        if ln.startswith("sitk::ERROR:"):
            return ln[len("sitk::ERROR:") :].strip()
    for ln in reversed(lines):
        if not ln.startswith(("sitk::ERROR", "/")):
            return ln
    return lines[-1] if lines else type(exc).__name__


def refuse_not_3d(image: sitk.Image, path: Path) -> Image:
    size = "x".join(str(s) for s in image.GetSize())
    raise ImageFormatError(f"{path} is a {image.GetDimension()}D image ({size}); liverctl needs a 3D volume")


def require_volume(image: Image, path: Path) -> Image:
    if min(image.shape) < 2:
        size = "x".join(str(s) for s in image.shape[::-1])
        raise ImageFormatError(f"{path} has a single slice ({size}); liverctl needs a 3D volume")
    return image
