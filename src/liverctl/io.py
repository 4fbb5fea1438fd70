"""Reading and writing images with their geometry.

An :class:`Image` is a 3D NumPy array in **(z, y, x)** order, as SimpleITK returns it,
plus its :class:`Geometry` (spacing, origin and direction, in ITK's **(x, y, z)**
physical order, millimetres, LPS). Every function in liverctl that takes or returns
voxels takes or returns an ``Image``, so the geometry never gets lost on the way.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage
(``.mha``, ``.mhd``) and DICOM series folders. Writes are atomic: the data goes to a
temporary file beside the target, which is renamed over the target only when complete,
so an interrupted or failed write never leaves a half-written file.

DICOM series folders are listed and read by :mod:`liverctl.dicom`; the checks of NIfTI files
that ITK's reader skips (truncation, hidden NaN) are in :mod:`liverctl.nifti`. Their public
names are re-exported here for one release.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from liverctl.dicom import DicomSeries as DicomSeries  # moved to liverctl.dicom, re-exported for one release
from liverctl.dicom import list_dicom_series as list_dicom_series
from liverctl.dicom import read_dicom_series
from liverctl.errors import ConfigError, GeometryError, ImageFormatError, InputError, LabelError
from liverctl.nifti import check_complete, nifti_has_nonfinite, stored_affine  # moved to liverctl.nifti, re-exported

# ITK prints warnings (e.g. about DICOM slice spacing) straight to stderr; the library
# must not print, and the CLI reports problems itself.
sitk.ProcessObject_SetGlobalWarningDisplay(False)

IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# Tolerances used when deciding whether two geometries are "the same grid". NIfTI stores
# spacing and origin as float32, so values read back from a file differ from float64
# ones by ~1e-7 relative; anything below these bounds is far below a voxel.
SPACING_RTOL = 1e-5
ORIGIN_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-5


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies in patient space.

    Attributes are in ITK order: ``spacing`` and ``origin`` are (x, y, z) in mm,
    ``direction`` is the row-major 3x3 matrix whose columns are the x, y, z axis
    directions (LPS). Arrays are (z, y, x): use :attr:`spacing_zyx` with them.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ImageFormatError("geometry must be 3D (3 spacings, 3 origin values, 9 direction values)")
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ImageFormatError(f"voxel spacing must be positive and finite, got {self.spacing}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order (z, y, x), for use with NumPy arrays."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def ras_affine(self) -> np.ndarray:
        """The 4x4 voxel (x, y, z) index -> RAS mm affine of this grid (MONAI's and nibabel's
        convention; liverctl's own is LPS)."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Physical (x, y, z) mm coordinates of voxel indices given as (..., 3) in (z, y, x)."""
        idx_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin) + (idx_xyz * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) in (z, y, x) of physical (x, y, z) mm points."""
        matrix = self.direction_matrix * np.asarray(self.spacing)[None, :]  # index (x, y, z) -> mm
        offset = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin)
        return np.linalg.solve(matrix, offset.reshape(-1, 3).T).T.reshape(offset.shape)[..., ::-1]

    def mismatch(self, other: Geometry) -> str | None:
        """``None`` if both describe the same grid (within tolerance), else what differs."""
        if not np.allclose(self.spacing, other.spacing, rtol=SPACING_RTOL, atol=0):
            return f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}"
        if not np.allclose(self.origin, other.origin, rtol=0, atol=ORIGIN_ATOL_MM):
            return f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}"
        if not np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_ATOL):
            return f"direction {_fmt(self.direction)} vs {_fmt(other.direction)}"
        return None

    def to_dict(self) -> dict[str, list[float]]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


@dataclass
class Image:
    """A 3D array in (z, y, x) order with the geometry that places it in the patient.

    ``stored_affine``: for a NIfTI file, the voxel (x, y, z) -> RAS affine exactly as nibabel
    reads it from the header (:func:`liverctl.nifti.nifti_affine`), which ``geometry`` matches
    to a few float32 ulps; MONAI-exact resampling starts from these bits. Kept by
    :meth:`with_array` (same grid), dropped by everything that makes a new grid.
    """

    array: np.ndarray
    geometry: Geometry
    stored_affine: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ImageFormatError(f"expected a 3D image, got an array of shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx

    @property
    def voxel_volume_ml(self) -> float:
        return self.geometry.voxel_volume_mm3 / 1000.0

    def with_array(self, array: np.ndarray) -> Image:
        """The same grid with other voxel values (e.g. a mask of this scan)."""
        if array.shape != self.array.shape:
            raise GeometryError(f"array shape {array.shape} does not match image shape {self.array.shape}")
        return Image(array, self.geometry, self.stored_affine)

    def to_sitk(self) -> sitk.Image:
        array = self.array
        if array.dtype == bool:
            array = array.astype(np.uint8)
        return self.geometry.apply_to(sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Image:
        return cls(sitk.GetArrayFromImage(image), Geometry.from_sitk(image))


# --------------------------------------------------------------------------- paths


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The recognised image suffix of ``path`` (``.nii.gz``, ``.mha``...), else ``None``."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image suffix: ``case_001.nii.gz`` -> ``case_001``."""
    p = Path(path)
    suffix = image_suffix(p)
    return p.name[: -len(suffix)] if suffix else p.name


def is_image_file(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() and image_suffix(p) is not None and not p.name.startswith(".")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def check_not_input(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse to write ``output`` if it is one of ``inputs`` (liverctl never overwrites an input)."""
    out = Path(output).resolve()
    for item in inputs:
        if Path(item).resolve() == out:
            raise InputError(f"refusing to overwrite an input file: {output}")


def check_output_suffix(output: str | os.PathLike[str], flag: str = "-o") -> None:
    """Refuse an output path that is neither an image file nor a folder: ``-o x.png`` would
    otherwise become a folder ``x.png/``. An existing folder is always a folder."""
    p = Path(output)
    if not p.is_dir() and image_suffix(p) is None and p.suffix:
        raise ConfigError(
            f"{flag} {output}: {p.suffix} is not a mask format (use {', '.join(IMAGE_SUFFIXES)}); "
            "for a folder, drop the suffix or create the folder first"
        )


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output whose folder cannot be made or written."""
    path = Path(path)
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is not a folder")
    try:  # a real write, as permissions, ACLs and read-only mounts all decide it
        fd, probe = tempfile.mkstemp(prefix=".liverctl-probe.", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc} in {folder}") from None
    os.close(fd)
    os.unlink(probe)


def check_not_input_folder(output: str | os.PathLike[str], folders: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse an output folder that is one of the input ``folders`` or lies inside one."""
    out = Path(output).resolve()
    for item in folders:
        if out.is_relative_to(Path(item).resolve()):
            raise InputError(
                f"output folder {output} is or lies inside the input dataset {item}; choose another folder"
            )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the target's suffix so that writers that choose the format
    from the extension (SimpleITK) write the right format. On error the temporary file is
    removed and the target is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(target) or target.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _new_file_mode(target))  # mkstemp made it 0600
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would give: the target's own, else 0666 minus the umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


# --------------------------------------------------------------------------- read / write


def _itk_message(exc: BaseException) -> str:
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


def _not_3d(image: sitk.Image, path: Path) -> Image:
    size = "x".join(str(s) for s in image.GetSize())
    raise ImageFormatError(f"{path} is a {image.GetDimension()}D image ({size}); liverctl needs a 3D volume")


def _checked(image: Image, path: Path) -> Image:
    if min(image.shape) < 2:
        size = "x".join(str(s) for s in image.shape[::-1])
        raise ImageFormatError(f"{path} has a single slice ({size}); liverctl needs a 3D volume")
    return image


def _itk_read(path: Path) -> sitk.Image:
    """``sitk.ReadImage``, but of this very file.

    Asked for ``case.nii.gz``, ITK's NIfTI reader reads ``case.nii`` instead when one lies beside
    it (SimpleITK 2.5.7). Such a file is read through a link that stands alone in a temporary
    folder.
    """
    if image_suffix(path) == ".nii.gz" and path.with_name(image_stem(path) + ".nii").exists():
        with tempfile.TemporaryDirectory(prefix="liverctl-read-") as tmp:
            link = Path(tmp) / path.name
            link.symlink_to(path.absolute())
            return sitk.ReadImage(str(link))
    return sitk.ReadImage(str(path))


def _series_of_dicom_file(path: Path) -> str | None:
    """The SeriesInstanceUID of a DICOM file that is one slice of a series of several, else ``None``."""
    from liverctl.inputs import _series_of_file, is_dicom_file

    if image_suffix(path) is not None or not is_dicom_file(path):
        return None
    uid, n, _ = _series_of_file(path)
    return uid if n >= 2 else None


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None, check_finite: bool = True) -> Image:
    """Read a 3D image file or a DICOM series folder.

    Raises :class:`~liverctl.errors.InputError` for a missing or unreadable path and
    :class:`~liverctl.errors.ImageFormatError` for a 2D, 4D or multi-component image and for
    one with NaN or infinite voxels (in every format: NIfTI's reader hides them as 0).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    if p.is_dir():
        return read_dicom_series(p, series_uid)
    if series_uid is not None:
        raise InputError(f"--series applies to DICOM folders, but {p} is a file")
    series = _series_of_dicom_file(p)
    if series is not None:  # one file of a DICOM series: the series
        return read_dicom_series(p.parent, series)
    try:
        image = _itk_read(p)
    except RuntimeError as exc:
        raise InputError(f"cannot read {p}: {_itk_message(exc)}") from None
    check_complete(p)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageFormatError(
            f"{p} has {image.GetNumberOfComponentsPerPixel()} components per voxel; liverctl needs a scalar 3D volume"
        )
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        return _not_3d(image, p)
    result = _checked(Image.from_sitk(image), p)
    if check_finite:
        _check_finite(result, p)
    if image_suffix(p) in (".nii", ".nii.gz"):
        result.stored_affine = stored_affine(p, result.geometry)
    return result


def _check_finite(image: Image, path: Path, error: type[InputError] = ImageFormatError, what: str = "") -> None:
    """Refuse NaN or infinite voxels, also where the NIfTI reader hid them (as 0)."""
    if image_suffix(path) in (".nii", ".nii.gz"):
        try:
            bad = image.array.dtype.kind == "f" and nifti_has_nonfinite(path)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {path}: truncated or corrupt file ({exc})") from None
    else:
        bad = image.array.dtype.kind == "f" and not np.isfinite(image.array).all()
    if bad:
        raise error(f"{what}{path} holds NaN or infinite values")


def as_label_array(array: np.ndarray, source: str = "label map") -> np.ndarray:
    """Validate a label map and return it as the smallest unsigned integer type.

    Accepts any integer type and floats that hold whole numbers (some tools save masks as
    float32); rejects fractional, negative, NaN and too-large values with a
    :class:`~liverctl.errors.LabelError`.
    """
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise LabelError(f"{source} holds NaN or infinite values")
        if not np.array_equal(array, np.round(array)):
            raise LabelError(
                f"{source} holds fractional values (e.g. {_first_fraction(array):g}); a label map must hold whole numbers"
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise LabelError(f"{source} has unsupported voxel type {array.dtype}")
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0:
        raise LabelError(f"{source} holds negative values (min {lo:g}); labels must be 0 or positive")
    if hi > np.iinfo(np.uint16).max:
        raise LabelError(f"{source} holds label {hi:g}, more than liverctl supports (65535)")
    dtype = np.uint8 if hi <= 255 else np.uint16
    return array.astype(dtype, copy=array.dtype != dtype)


def _first_fraction(array: np.ndarray) -> float:
    flat = array.ravel()
    return float(flat[np.flatnonzero(flat != np.round(flat))[0]])


def read_label(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Image:
    """Read a label map (mask) and validate it with :func:`as_label_array`."""
    image = read_image(path, series_uid=series_uid, check_finite=False)
    if not Path(path).is_dir():
        _check_finite(image, Path(path), LabelError, "label map ")
    return Image(as_label_array(image.array, f"label map {path}"), image.geometry)


def write_image(image: Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write ``image`` atomically, format from the suffix, voxel type unchanged."""
    p = Path(path)
    if image_suffix(p) is None:
        raise InputError(f"unknown image format for {p}; use one of {', '.join(IMAGE_SUFFIXES)}")
    compress = compress and image_suffix(p) != ".nii"
    if image_suffix(p) in (".mhd", ".nhdr"):
        # Header + separate data file: write both under their final names in a temporary
        # folder beside the target, then move the data file(s) first and the header last.
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{p.name}.", dir=p.parent) as tmpdir:
            tmp = Path(tmpdir) / p.name
            try:
                sitk.WriteImage(image.to_sitk(), str(tmp), useCompression=compress)
            except RuntimeError as exc:
                raise InputError(f"cannot write {p}: {_itk_message(exc)}") from None
            for f in sorted(Path(tmpdir).iterdir(), key=lambda f: f.name == p.name):
                os.replace(f, p.parent / f.name)
        return p
    with atomic_path(p) as tmp:
        try:
            sitk.WriteImage(image.to_sitk(), str(tmp), useCompression=compress)
        except RuntimeError as exc:
            raise InputError(f"cannot write {p}: {_itk_message(exc)}") from None
    return p


def write_mask(mask: np.ndarray | Image, reference: Image | Geometry, path: str | os.PathLike[str]) -> Path:
    """Write a label map in exactly ``reference``'s grid, as uint8 (uint16 past 255 labels)."""
    array = mask.array if isinstance(mask, Image) else np.asarray(mask)
    geometry = reference.geometry if isinstance(reference, Image) else reference
    if isinstance(reference, Image) and array.shape != reference.shape:
        raise GeometryError(f"mask shape {array.shape} does not match the reference image shape {reference.shape}")
    return write_image(Image(as_label_array(array, "mask"), geometry), path)


def check_same_grid(a: Image, b: Image, what_a: str = "prediction", what_b: str = "reference") -> None:
    """Raise :class:`~liverctl.errors.GeometryError` unless ``a`` and ``b`` share one voxel grid."""
    if a.shape != b.shape:
        raise GeometryError(f"{what_a} shape {a.shape[::-1]} differs from {what_b} shape {b.shape[::-1]} (x, y, z)")
    diff = a.geometry.mismatch(b.geometry)
    if diff is not None:
        raise GeometryError(f"{what_a} and {what_b} lie on different grids: {diff}")
