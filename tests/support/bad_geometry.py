"""Small scans with broken geometry, written as a user's tool would leave them (issue 19): for
the reader tests (tests/test_geometry_verdict.py) and the bad-input catalogue."""

from __future__ import annotations

import contextlib
import gzip
import locale
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def ct_array(shape=(16, 24, 24)) -> np.ndarray:
    """A small CT in HU (z, y, x): air around a 40 HU body with a 150 HU 'liver'."""
    a = np.full(shape, -1000, np.int16)
    a[2:-2, 3:-3, 3:-3] = 40
    a[5:11, 8:16, 8:16] = 150
    return a


def write(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 3.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def nifti_pixdim(path: Path, pixdim=(0.0, 0.0, 0.0), array: np.ndarray | None = None, xform_code: int = 0) -> Path:
    """A NIfTI-1 file (``.nii``) whose header stores ``pixdim`` and, with ``xform_code`` 0, no
    qform/sform: ITK reads pixdim 0 as 1.0 mm and a negative pixdim as a flip."""
    a = ct_array() if array is None else array
    plain = path.with_name(path.name.removesuffix(".gz"))
    write(plain, a)
    raw = bytearray(plain.read_bytes())
    struct.pack_into("<3f", raw, 80, *pixdim)  # pixdim[1..3]
    struct.pack_into("<2h", raw, 252, xform_code, xform_code)  # qform_code, sform_code
    if plain == path:
        path.write_bytes(bytes(raw))
    else:
        plain.unlink()
        path.write_bytes(gzip.compress(bytes(raw)))
    return path


def metaimage(path: Path, spacing=("2", "2", "3"), matrix: tuple[float, ...] | None = None) -> Path:
    """A ``.mha`` with ``ElementSpacing`` and ``TransformMatrix`` as given (strings allowed: ``nan``)."""
    write(path, ct_array())
    head, sep, data = path.read_bytes().partition(b"ElementDataFile = LOCAL\n")
    lines = []
    for line in head.decode().splitlines():
        if line.startswith("ElementSpacing"):
            line = "ElementSpacing = " + " ".join(str(s) for s in spacing)
        if line.startswith("TransformMatrix") and matrix is not None:
            line = "TransformMatrix = " + " ".join(str(v) for v in matrix)
        lines.append(line)
    path.write_bytes(("\n".join(lines) + "\n").encode() + sep + data)
    return path


SHEAR = (1, 0, 0, 0.5, 1, 0, 0, 0, 1)
SINGULAR = (1, 0, 0, 1, 0, 0, 0, 0, 1)


@contextlib.contextmanager
def keep_locale() -> Iterator[None]:
    """Restore the process's C locale after the block: ITK's DICOM writer (GDCM) sets it to "C", which
    turns Python's default text encoding to ASCII for every test that runs after it in the process."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def dicom_series(folder: Path, n: int = 6, step: float = 2.0, skip: int | None = None) -> Path:
    """A small CT series, one file a slice (``slice_00.dcm``...); ``skip``: that slice is left out
    (a gap of ``2 * step``)."""
    folder.mkdir(parents=True, exist_ok=True)
    a = ct_array((n, 24, 24))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        if k == skip:
            continue
        s = sitk.GetImageFromArray(a[k : k + 1])
        s.SetSpacing((0.8, 0.8, step))
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{k * step}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.8",
            "0018|0050": str(step),
            "0028|1052": "0",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:02d}.dcm"))
        with keep_locale():
            writer.Execute(s)
    return folder


def truncate(path: Path, keep: int = 600) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def nrrd_sheared(path: Path) -> Path:
    """A ``.nrrd`` whose ``space directions`` are not perpendicular (ITK's NRRD reader keeps them)."""
    write(path, ct_array())
    head, sep, data = path.read_bytes().partition(b"\n\n")
    head = head.replace(b"space directions: (2,0,0) (0,2,0) (0,0,3)", b"space directions: (2,0,0) (1,2,0) (0,0,3)")
    path.write_bytes(head + sep + data)
    return path


def nifti_claiming(path: Path, dims=(4000, 4000, 4000), array: np.ndarray | None = None) -> Path:
    """A small ``.nii`` whose header claims ``dims`` voxels (128 GB as int16 by default)."""
    write(path, ct_array() if array is None else array)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<4h", raw, 40, 3, *dims)
    path.write_bytes(bytes(raw))
    return path
