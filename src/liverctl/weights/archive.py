"""``liverctl weights pack``: models carried to an air-gapped machine as one archive.

An archive is a zip holding, for each model, its files under ``<slug>/`` (a single weights
file, or the files of an nnU-Net v2 results folder), a ``weights.toml`` with their registry
entries as *local* entries (``repo_id = ""``, paths relative to the archive's root, every file
sha256-pinned) and ``liverctl-weights.json``, the manifest: its format, the sha256 of every
file and where each model came from. ``liverctl weights import`` (:mod:`liverctl.weights.importing`)
checks all of it before it registers anything.

This module also reads zips safely for the importer (:func:`extract_zip`): a member whose path
would land outside the target folder, a link, or a truncated or corrupt zip is refused in one
line.

Example::

    from liverctl.weights.archive import pack
    pack(["wholebody-ct-3mm"], "liver-weights.zip")   # downloads (or finds in the cache) first
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import stat
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from liverctl.errors import ConfigError, WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.registry import Entry, Registry, format_registry, load_registry

__all__ = [
    "ARCHIVE_FORMAT",
    "MANIFEST",
    "REGISTRY_FILE",
    "archive_entries",
    "extract_zip",
    "local_entry",
    "pack",
    "read_manifest",
    "slug",
]

#: The manifest's name inside an archive, and its ``format`` value.
MANIFEST = "liverctl-weights.json"
ARCHIVE_FORMAT = "liverctl-weights-archive"
#: The registry of the archive's models (local entries, relative to the archive's root).
REGISTRY_FILE = "weights.toml"
_VERSION = 1


def slug(name: str) -> str:
    """A folder name for a model name (``my model`` -> ``my_model``)."""
    return re.sub(r"[^\w.-]", "_", name).strip(".") or "model"


def local_entry(entry: Entry, folder: str, sha256: str | None = None) -> Entry:
    """``entry`` as a local entry whose files lie in ``folder`` (relative to its registry):
    a weights file ``folder/<file name>`` pinned to ``sha256``, or the results folder
    ``folder/<trainer>__<plans>__<configuration>``."""
    if isinstance(entry, NnUNetEntry):
        return replace(
            entry, repo_id="", revision="", folder=f"{folder}/{PurePosixPath(entry.folder).name}", base_dir=None
        )
    name = PurePosixPath(entry.filename).name
    return replace(
        entry, repo_id="", revision="", filename=f"{folder}/{name}", sha256=sha256 or entry.sha256, base_dir=None
    )


def _source(entry: Entry) -> dict[str, Any]:
    """Where a packed model came from (kept in the manifest)."""
    if entry.local:
        return {"local": str(entry.local_folder if isinstance(entry, NnUNetEntry) else entry.local_path)}
    path = entry.folder if isinstance(entry, NnUNetEntry) else entry.filename
    return {"repo_id": entry.repo_id, "revision": entry.revision, "path": path}


def _model_files(entry: Entry, progress: ProgressCallback | None) -> tuple[Entry, dict[str, tuple[Path, str]]]:
    """The model's verified files ``{path in the archive: (file, sha256)}`` and its archive entry."""
    from liverctl.weights.download import download
    from liverctl.weights.pins import sha256_file

    folder = slug(entry.name)
    path = download(entry, progress=progress)  # every file checked against its pin on the way
    if isinstance(entry, NnUNetEntry):
        packed = local_entry(entry, folder)
        inside = PurePosixPath(packed.folder)  # type: ignore[union-attr]
        return packed, {str(inside / rel): (path / rel, entry.sha256[rel]) for rel in entry.relative_files}
    sha = sha256_file(path)
    packed = local_entry(entry, folder, sha)
    return packed, {packed.filename: (path, sha)}  # type: ignore[union-attr]


def _check_output(output: Path) -> None:
    """Refuse to overwrite a file liverctl did not write (an archive of its own may be replaced)."""
    if output.is_dir():
        raise ConfigError(f"-o {output}: is a folder; give the archive's file name, such as weights.zip")
    if output.exists():
        try:
            read_manifest_from_zip(output)
        except WeightsError:
            raise ConfigError(
                f"-o {output}: the file exists and is not a liverctl weights archive; not overwriting it"
            ) from None
    if not output.parent.exists():
        raise ConfigError(f"-o {output}: folder {output.parent} does not exist")


def pack(
    names: Sequence[str],
    output: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write the models ``names`` (their files, registry entries and sha256 pins) into the
    archive ``output``, atomically. Each model is downloaded first (or found in the cache) and
    verified against its pins. Returns ``output``.

    Raises :class:`ConfigError` (unknown or repeated names, an ``output`` that is not liverctl's)
    before any download, :class:`WeightsError` for a file that cannot be had or fails its pin.
    """
    out = Path(output).expanduser()
    if not names:
        raise ConfigError("give the models to pack: liverctl weights pack NAME... -o FILE")
    if len(set(names)) != len(names):
        raise ConfigError(f"model '{next(n for n in names if list(names).count(n) > 1)}' is given twice")
    registry = registry or load_registry()
    entries = [registry.get(n) for n in names]
    folders = [slug(e.name) for e in entries]
    if len(set(folders)) != len(folders):
        raise ConfigError("two of the models have names that differ only in punctuation; pack them separately")
    _check_output(out)
    packed, files = [], {}
    for entry in entries:
        local, found = _model_files(entry, progress)
        packed.append(local)
        files.update(found)
    manifest = {
        "format": ARCHIVE_FORMAT,
        "version": _VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": [{"name": e.name, "source": _source(e)} for e in entries],
        "files": {arc: sha for arc, (_, sha) in files.items()},
    }
    return _write_zip(out, packed, files, manifest)


def _write_zip(out: Path, packed: list[Entry], files: dict[str, tuple[Path, str]], manifest: dict[str, Any]) -> Path:
    from liverctl.io import atomic_path

    comment = "models packed by `liverctl weights pack`; import with `liverctl weights import`"
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
        zf.writestr(REGISTRY_FILE, format_registry(packed, packed[0].name, comment=comment))
        for arc, (path, _) in files.items():
            zf.write(path, arc)
    return out


# --------------------------------------------------------------------------- reading zips safely


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: not a readable zip archive (truncated, corrupt or not a zip: {exc}); nothing was imported"
        ) from None


def _safe_members(zf: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    """Every member, each checked to stay inside the target folder (no absolute path, no
    ``..``, no drive letter or backslash, no link)."""
    members = zf.infolist()
    for info in members:
        name = info.filename
        parts = PurePosixPath(name).parts
        escapes = name.startswith("/") or "\\" in name or ".." in parts or re.match(r"^[A-Za-z]:", name)
        if escapes or stat.S_ISLNK(info.external_attr >> 16):
            what = "is a link" if not escapes else "would be written outside the target folder"
            raise WeightsError(f"{path}: refusing the archive: member {name!r} {what}; nothing was imported")
    return members


def extract_zip(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract the zip ``path`` into the existing folder ``dest``, every member checked first
    (:func:`_safe_members`) and every byte against the zip's CRC. Returns ``dest``.

    Raises :class:`WeightsError` (one line) for a file that is no zip, a truncated or corrupt
    one, or a member that would escape ``dest``; the caller removes ``dest``.
    """
    src, root = Path(path), Path(dest)
    zf = _open_zip(src)
    with zf:
        members = _safe_members(zf, src)
        try:
            for info in members:
                target = root.joinpath(*PurePosixPath(info.filename).parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
        except (zipfile.BadZipFile, EOFError, zlib.error, ValueError) as exc:
            raise WeightsError(
                f"{src}: the zip archive is corrupt or truncated ({exc}); nothing was imported"
            ) from None
    return root


def read_manifest(root: Path, where: str) -> dict[str, str]:
    """The ``files`` table of an unpacked archive's manifest ``{path: sha256}``, checked."""
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{where}: unreadable {MANIFEST} ({exc}); nothing was imported") from None
    return _checked_manifest(data, where)


def read_manifest_from_zip(path: Path) -> dict[str, str]:
    """The manifest's ``files`` of the archive ``path`` (a :class:`WeightsError` if it has none)."""
    with _open_zip(path) as zf:
        try:
            data = json.loads(zf.read(MANIFEST))
        except (KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"{path}: no readable {MANIFEST} ({exc})") from None
    return _checked_manifest(data, str(path))


def _checked_manifest(data: Any, where: str) -> dict[str, str]:
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        raise WeightsError(f"{where}: {MANIFEST} is not a liverctl weights archive manifest; nothing was imported")
    if data.get("version") != _VERSION:
        raise WeightsError(
            f"{where}: archive version {data.get('version')!r} is not one this liverctl reads ({_VERSION})"
        )
    files = data.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in files.items()
    ):
        raise WeightsError(f"{where}: {MANIFEST} has no valid 'files' table of sha256 pins; nothing was imported")
    return files


def archive_entries(root: Path, where: str) -> list[Entry]:
    """The entries of an unpacked archive's ``weights.toml`` (local entries under ``root``)."""
    try:
        return list(load_registry(root / REGISTRY_FILE).models.values())
    except ConfigError as exc:
        raise WeightsError(
            f"{where}: the archive's {REGISTRY_FILE} is not valid ({exc}); nothing was imported"
        ) from None
