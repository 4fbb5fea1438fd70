"""NIfTI files checked below ITK: truncated files and NaN voxels that ITK's reader hides.

ITK zero-fills the missing part of a truncated NIfTI file, and its NIfTI reader (SimpleITK
2.5) turns NaN and infinite voxels into 0, both without a word. :func:`check_complete` and
:func:`nifti_has_nonfinite` read the file's own header (:func:`_nifti_layout`, NIfTI-1 and
NIfTI-2, either byte order) and bytes to catch both; :func:`liverctl.io.read_image` calls them.
:func:`nifti_affine` / :func:`stored_affine` give the header's own affine, as nibabel (and MONAI) read it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from liverctl.errors import InputError

if TYPE_CHECKING:
    from liverctl.io.image import Geometry

__all__ = ["check_complete", "has_nifti_header", "nifti_affine", "nifti_has_nonfinite", "nifti_pixdim", "stored_affine"]


@dataclass(frozen=True)
class _NiftiLayout:
    """Where a NIfTI-1/2 file keeps its voxels, from its header."""

    endian: str
    datatype: int
    offset: int
    voxels: int
    bitpix: int

    @property
    def data_end(self) -> int:
        return self.offset + self.voxels * self.bitpix // 8


#: NIfTI datatype codes of the floating-point voxel types, as NumPy type letters.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """The voxel layout a NIfTI-1/2 header describes; ``None`` if it is not a NIfTI header."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            minimum = 352
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            minimum = 544
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    voxels = math.prod(max(int(d), 1) for d in dims[1 : ndim + 1])
    return _NiftiLayout(endian, int(datatype), max(int(offset), minimum), voxels, int(bitpix))


def _nifti_data_end(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (header + voxel data), from its header; ``None`` if unknown."""
    layout = _nifti_layout(header)
    return None if layout is None else layout.data_end


def nifti_has_nonfinite(path: str | os.PathLike[str]) -> bool:
    """Whether a float NIfTI file stores NaN or infinite voxels.

    ITK's NIfTI reader (SimpleITK 2.5) turns them into 0 without a word, so the array it
    returns looks clean; this reads the stored values themselves, in 16 MiB pieces (only for
    float32/float64 files: integer voxels cannot be NaN).
    """
    from liverctl.io.files import image_suffix

    path = Path(path)
    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    with opener(path, "rb") as fh:
        layout = _nifti_layout(fh.read(540))
        if layout is None or layout.datatype not in _NIFTI_FLOATS:
            return False
        dtype = np.dtype(layout.endian + _NIFTI_FLOATS[layout.datatype])
        fh.seek(layout.offset)
        remaining = layout.voxels * dtype.itemsize
        step = (16 << 20) // dtype.itemsize * dtype.itemsize
        while remaining > 0:
            chunk = fh.read(min(step, remaining))
            if not chunk:
                break
            usable = len(chunk) // dtype.itemsize * dtype.itemsize
            if not np.isfinite(np.frombuffer(chunk[:usable], dtype=dtype)).all():
                return True
            remaining -= len(chunk)
    return False


#: Where NIfTI-1 / NIfTI-2 headers keep the transform fields: (float type, int type, pixdim,
#: qform_code, sform_code, quatern_b, srow_x) offsets; the fields after each start are contiguous.
_XFORM_FIELDS = {348: ("f4", "i2", 76, 252, 254, 256, 280), 540: ("f8", "i4", 104, 344, 348, 352, 400)}


def nifti_affine(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The voxel (x, y, z) index -> RAS mm affine that nibabel gives this NIfTI file, to the
    last bit (``header.get_best_affine()``, as MONAI's ``NibabelReader`` reads it): the sform
    when ``sform_code`` is set, else the qform (quaternion computed in NumPy's longdouble, as
    nibabel does), else ``None`` (no transform stored; nibabel then guesses one).

    ITK reads the same header into an orthonormalised direction matrix, a few float32 ulps
    away from the stored sform: enough to flip the nearest-neighbour ties of a resampling at
    an exact 2:1 spacing ratio (see :mod:`liverctl.predict.monai_grid`).
    """
    from liverctl.io.files import image_suffix

    path = Path(path)
    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    with opener(path, "rb") as fh:
        header = fh.read(540)
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if size in _XFORM_FIELDS and len(header) >= size:
            break
    else:
        return None
    ftype, itype, pixdim_at, qcode_at, scode_at, quat_at, srow_at = _XFORM_FIELDS[size]
    f, i = np.dtype(endian + ftype), np.dtype(endian + itype)
    code = lambda at: int(np.frombuffer(header, i, 1, at)[0])  # noqa: E731
    if code(scode_at) != 0:
        out = np.eye(4)
        out[:3, :] = np.frombuffer(header, f, 12, srow_at).reshape(3, 4)
        return out
    if code(qcode_at) != 0:
        return _qform(np.frombuffer(header, f, 6, quat_at), np.frombuffer(header, f, 8, pixdim_at))
    return None


def nifti_pixdim(path: str | os.PathLike[str]) -> tuple[float, ...] | None:
    """The voxel spacing (x, y, z) a NIfTI header stores in ``pixdim[1:4]``, as stored (ITK
    turns 0 into 1.0 mm and a negative value into a flip, without a word), for the axes the
    image has (``dim[0]``, at most 3); ``None`` if the header cannot be read."""
    from liverctl.io.files import image_suffix

    path = Path(path)
    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    try:
        with opener(path, "rb") as fh:
            header = fh.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", header[:4])[0] if len(header) >= 4 else 0
        if size in _XFORM_FIELDS and len(header) >= size:
            ftype, _, pixdim_at = _XFORM_FIELDS[size][:3]
            values = np.frombuffer(header, np.dtype(endian + ftype), 8, pixdim_at)
            ndim = int(
                np.frombuffer(header, np.dtype(endian + ("i2" if size == 348 else "i8")), 1, 40 if size == 348 else 16)[
                    0
                ]
            )
            return tuple(float(v) for v in values[1 : 1 + min(max(ndim, 0), 3)])
    return None


def stored_affine(path: str | os.PathLike[str], geometry: Geometry) -> np.ndarray | None:
    """The header's own affine (:func:`nifti_affine`) if it describes the grid ITK read as
    ``geometry`` (a sheared sform ITK passed over for the qform does not), else ``None``."""
    affine = nifti_affine(path)
    if affine is None:
        return None
    ours = geometry.ras_affine()
    if np.allclose(affine[:3, :3], ours[:3, :3], atol=1e-4) and np.allclose(affine[:3, 3], ours[:3, 3], atol=1e-3):
        return affine
    return None


def _qform(quatern: np.ndarray, pixdim: np.ndarray) -> np.ndarray:
    """nibabel's ``Nifti1Header.get_qform``: quaternion b, c, d and offsets x, y, z; pixdim[0]
    is qfac (0 read as 1)."""
    xyz = np.asarray(quatern[:3], dtype=np.longdouble)
    w2 = 1.0 - xyz @ xyz
    w = 0 if abs(w2) < 3 * np.finfo(quatern.dtype).eps else np.sqrt(w2)
    w, x, y, z = np.r_[w, xyz]
    s = 2.0 / (w * w + x * x + y * y + z * z)
    X, Y, Z = x * s, y * s, z * s
    wX, wY, wZ, xX, xY, xZ, yY, yZ, zZ = w * X, w * Y, w * Z, x * X, x * Y, x * Z, y * Y, y * Z, z * Z
    rotation = np.array(
        [
            [1.0 - (yY + zZ), xY - wZ, xZ + wY],
            [xY + wZ, 1.0 - (xX + zZ), yZ - wX],
            [xZ - wY, yZ + wX, 1.0 - (xX + yY)],
        ]
    )
    vox = pixdim[1:4].copy()
    vox[-1] *= -1.0 if pixdim[0] == -1 else 1.0
    out = np.eye(4)
    out[:3, :3] = np.dot(rotation, np.diag(vox))
    out[:3, 3] = quatern[3:6]
    return out


def _gzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file, by streaming it; raises EOFError if it is cut short."""
    total = 0
    with open(path, "rb") as fh:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while chunk := fh.read(1 << 20):
            total += len(d.decompress(chunk))
            while d.eof and d.unused_data:  # concatenated gzip members
                rest = d.unused_data
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                total += len(d.decompress(rest))
        if not d.eof:
            raise EOFError("compressed stream ends early")
    return total


def has_nifti_header(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with a readable NIfTI-1/2 header (then :func:`check_complete` can
    judge it before ITK allocates what the header claims)."""
    from liverctl.io.files import image_suffix

    path = Path(path)
    opener = gzip.open if image_suffix(path) == ".nii.gz" else open
    try:
        with opener(path, "rb") as fh:
            return _nifti_layout(fh.read(540)) is not None
    except (OSError, EOFError, zlib.error):
        return False


def check_complete(path: str | os.PathLike[str]) -> None:
    """ITK zero-fills the missing part of a truncated NIfTI file without a word: catch it.

    Plain ``.nii``: the file must be as long as its header says. ``.nii.gz``: the gzip
    trailer's length must match; if it does not, the stream is decompressed (not stored)
    to tell a truncated file from an unusual but complete one.
    """
    from liverctl.io.files import image_suffix

    path = Path(path)
    suffix = image_suffix(path)
    short = InputError(f"cannot read {path}: truncated file (shorter than a NIfTI header)")
    try:
        if suffix == ".nii":
            with open(path, "rb") as fh:
                header = fh.read(540)
            expected = _nifti_data_end(header)
            size = path.stat().st_size
        elif suffix == ".nii.gz":
            with gzip.open(path, "rb") as fh:
                header = fh.read(540)
            if len(header) < 348:
                raise short
            expected = _nifti_data_end(header)
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                trailer = struct.unpack("<I", fh.read(4))[0]
            if expected is None or trailer == expected % (1 << 32):
                return
            size = _gzip_length(path)
        else:
            return
    except (OSError, EOFError, zlib.error, struct.error) as exc:
        raise InputError(f"cannot read {path}: truncated or corrupt file ({exc})") from None
    if len(header) < 348:
        raise short
    if expected is not None and size < expected:
        raise InputError(f"cannot read {path}: truncated file ({size} of {expected} bytes)")
