"""What the user names as scans -> the scans to read: files, folders (``recursive``), DICOM
series folders, DICOM series in a ``.zip``, and a single DICOM file (its series).

:func:`resolve_inputs` returns the scans and a name for each (the name of its mask):

- an image file (``.nii.gz``, ``.nrrd``, ``.mha``...): itself, named by its stem;
- a folder: the image files in it, or the DICOM series it holds; with ``recursive``, also
  those of every folder below it, named by their path under the folder (``a/b/ct.nii.gz`` ->
  ``a_b_ct``), so that two ``ct.nii.gz`` in two patients' folders get two masks. Without
  ``recursive``, a folder whose scans all lie deeper is refused with a hint;
- a ``.zip``: extracted once into a cache folder (``$TMPDIR/liverctl-zip-*``, reused while the
  zip is unchanged), then read as a folder, recursively; named by the zip's stem;
- a single DICOM file (``DICM`` at byte 128, or ``.dcm``): the series it belongs to (a
  :class:`~liverctl.errors.LiverctlWarning` says so), named by its folder when the folder
  holds that series only; :func:`liverctl.io.read_image` reads a DICOM file's series too.

A path that does not exist is kept: the caller refuses it before loading a model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

from liverctl.errors import InputError, LiverctlWarning
from liverctl.io.dicom import is_dicom_file

__all__ = ["is_dicom_file", "resolve_inputs"]


def _series_of_file(path: Path) -> tuple[str, int, int]:
    """``(series uid, slices of that series, series in the folder)`` of one DICOM file."""
    from liverctl.io.dicom import list_dicom_series

    found = list_dicom_series(path.parent)
    target = str(path.resolve())
    for s in found:
        if any(str(Path(f).resolve()) == target for f in s.files):
            return s.uid, s.n_slices, len(found)
    return "", 1, len(found)


def _dicom_file(path: Path) -> Path:
    uid, n, in_folder = _series_of_file(path)
    if n < 2:
        return path  # a multi-frame file, or a lone slice: read as it is
    where = path.parent if in_folder == 1 else path
    warnings.warn(
        f"{path} is one DICOM file of a {n}-slice series: segmenting the whole series"
        + (f" ({path.parent})" if in_folder == 1 else f" (SeriesInstanceUID {uid or '<none>'})"),
        LiverctlWarning,
        stacklevel=3,
    )
    return where


def _zip_folder(path: Path) -> Path:
    """The extracted copy of a zip (extracted once, atomically; reused while the zip is unchanged)."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"liverctl-zip-{key}"
    folder = cache / path.name[: -len(".zip")]
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
        os.replace(tmp, folder)
    except zipfile.BadZipFile:
        raise InputError(f"cannot read {path}: not a zip file, or a damaged one") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _folder_scans(folder: Path, recursive: bool) -> list[Path]:
    """Image files of ``folder``, or its DICOM series folder; with ``recursive``, of every folder below."""
    from liverctl.io.dicom import list_dicom_series
    from liverctl.io.files import list_images

    found: list[Path] = []
    folders = _subfolders(folder) if recursive else [folder]
    for d in folders:
        images = list_images(d)
        if images:
            _refuse_mixed(d, images)
            found.extend(images)
        elif any(f.is_file() for f in d.iterdir()) and list_dicom_series(d):
            found.append(d)
    return found


def _subfolders(folder: Path) -> list[Path]:
    """``folder`` and every folder below it (hidden ones skipped), each real folder once:
    symlinks are followed, but a link back up the tree (``self -> .``) or to a folder already
    seen is not entered again."""
    seen = {os.path.realpath(folder)}
    out = [folder]
    for root, dirs, _ in os.walk(folder, followlinks=True):
        keep = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if name.startswith(".") or real in seen:
                continue
            seen.add(real)
            keep.append(name)
            out.append(Path(root) / name)
        dirs[:] = keep
    return [out[0], *sorted(out[1:])]


def _refuse_mixed(folder: Path, images: list[Path]) -> None:
    """A folder holding image files and a DICOM series is refused: segmenting only the image
    files would skip the series without a word."""
    from liverctl.io.dicom import list_dicom_series

    if not any(is_dicom_file(f) for f in folder.iterdir() if f not in images and not f.name.startswith(".")):
        return
    series = [s for s in list_dicom_series(folder) if s.n_slices >= 2]
    if series:
        raise InputError(
            f"folder {folder} holds both image files ({images[0].name}...) and a DICOM series of "
            f"{series[0].n_slices} slices: give the image files and the series in folders of their own"
        )


def _name(scan: Path, root: Path | None, base: str | None) -> str:
    from liverctl.io.files import image_stem, image_suffix

    own = image_stem(scan) if scan.is_file() or image_suffix(scan) else scan.name
    if root is None:
        return own
    rel = scan.relative_to(root)
    parts = [*rel.parts[:-1], own] if rel.parts else []
    return "_".join([base, *parts] if base else parts) or own


def resolve_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> tuple[list[Path], dict[Path, str]]:
    """The scans the inputs name, and the name of each scan's mask (see the module docs)."""
    scans: list[Path] = []
    names: dict[Path, str] = {}

    def add(found: list[Path], root: Path | None = None, base: str | None = None) -> None:
        for scan in found:
            scans.append(scan)
            names[scan] = _name(scan, root, base)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = _folder_scans(p, recursive)
            if not found:
                deeper = [] if recursive else _folder_scans(p, True)
                hint = f"; {len(deeper)} scan(s) lie in its subfolders: add --recursive" if deeper else ""
                raise InputError(f"no images and no DICOM series in folder {p}{hint}")
            nested = recursive and any(f.parent != p and f != p for f in found)
            add(found, p if nested else None)
        elif p.is_file() and p.suffix.lower() == ".zip":
            folder = _zip_folder(p)
            found = _folder_scans(folder, True)
            if not found:
                raise InputError(f"{p} holds no image file and no DICOM series")
            stem = p.name[: -len(".zip")]
            if len(found) == 1:
                scans.append(found[0])
                names[found[0]] = stem
            else:
                add(found, folder, stem)
        elif is_dicom_file(p):
            add([_dicom_file(p)])
        else:
            add([p])
    return scans, names
