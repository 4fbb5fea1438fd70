"""The record of the files liverctl wrote into a folder, so that it never replaces or deletes
anything else.

Every command that writes into a folder it may write into again (``preprocess``, ``phantom``,
``predict``, ``postprocess``, ``demo``) keeps ``FOLDER/.liverctl-manifest.json``: the paths it
wrote there (relative to the folder), each with the size and modification time the file had when
liverctl finished writing it. Before a command replaces or removes a file it asks the manifest
whether liverctl wrote it:

- a path the manifest lists with the same size and modification time: liverctl's own output;
- a path the manifest lists as *claimed* (recorded before writing, never completed, e.g. a
  killed run): liverctl's own;
- anything else, including a listed file that was changed since (same path, other size or
  time): the user's, which no liverctl command replaces or deletes, ``--overwrite`` or not.

The manifest is rewritten atomically after each change, so a run killed at any point leaves a
manifest that describes what is on disk or claims a little more.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from liverctl.errors import InputError
from liverctl.io.files import write_text_atomic

MANIFEST_NAME = ".liverctl-manifest.json"
_VERSION = 1


def _stat(path: Path) -> dict[str, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class Manifest:
    """The files liverctl wrote into ``folder`` (see the module docs)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).absolute()
        self.path = self.folder / MANIFEST_NAME
        self._files: dict[str, dict[str, int] | None] = {}
        self.commands: list[str] = []
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            files = data["files"]
            if not isinstance(files, dict):
                raise TypeError("files is not a table")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"cannot read {self.path} ({exc}); liverctl will not replace files in {self.folder}"
            ) from None
        self._files = {str(k): (v if isinstance(v, dict) else None) for k, v in files.items()}
        self.commands = [str(c) for c in data.get("commands", [])]

    # ---- queries

    @property
    def exists(self) -> bool:
        """Whether liverctl has written into this folder before (a manifest is there)."""
        return self.path.is_file()

    def _key(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        p = p if p.is_absolute() else self.folder / p
        try:
            return p.absolute().relative_to(self.folder).as_posix()
        except ValueError:
            raise InputError(f"{path} is not inside {self.folder}") from None

    def owns(self, path: str | os.PathLike[str]) -> bool:
        """Whether liverctl wrote ``path`` (and nobody changed it since)."""
        key = self._key(path)
        if key not in self._files:
            return False
        recorded = self._files[key]
        return recorded is None or recorded == _stat(self.folder / key)

    def foreign(self, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
        """The existing files among ``paths`` that liverctl did not write."""
        return [Path(p) for p in paths if (Path(p).exists() or Path(p).is_symlink()) and not self.owns(p)]

    def owned_files(self) -> list[Path]:
        """The files liverctl wrote here that are still as it left them."""
        return [self.folder / k for k in sorted(self._files) if (self.folder / k).is_file() and self.owns(k)]

    def check_replaceable(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Raise :class:`InputError` if any of ``paths`` exists and liverctl did not write it."""
        foreign = self.foreign(paths)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise InputError(
                f"refusing to replace {foreign[0]}{more}: liverctl did not write it; move it away or choose another output"
            )

    # ---- changes

    def claim(self, paths: Iterable[str | os.PathLike[str]], command: str | None = None) -> None:
        """Record ``paths`` as liverctl's before writing them (a killed write stays liverctl's)."""
        changed = False
        for p in paths:
            key = self._key(p)
            if key not in self._files:
                self._files[key] = None
                changed = True
        if command and command not in self.commands:
            self.commands.append(command)
            changed = True
        if changed or not self.exists:
            self.save()

    def record(self, paths: Iterable[str | os.PathLike[str]], command: str | None = None) -> None:
        """Record ``paths``, just written, with their size and modification time."""
        for p in paths:
            key = self._key(p)
            self._files[key] = _stat(self.folder / key)
        if command and command not in self.commands:
            self.commands.append(command)
        self.save()

    def remove_owned(self, keep: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
        """Delete every file liverctl wrote here (but ``keep``), and folders that only they filled.

        Files the user added or changed are left where they are; so are their folders.
        """
        kept = {self._key(k) for k in keep}
        removed: list[Path] = []
        folders: set[Path] = set()
        for key in sorted(self._files):
            path = self.folder / key
            if key in kept or not self.owns(key):
                continue
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
            del self._files[key]
            folders.update(p for p in path.parents if p != self.folder and p.is_relative_to(self.folder))
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.save()
        return removed

    def save(self) -> None:
        data: dict[str, Any] = {
            "liverctl_manifest": _VERSION,
            "about": "files liverctl wrote in this folder; liverctl replaces or deletes nothing else",
            "commands": self.commands,
            "files": dict(sorted(self._files.items())),
        }
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")


def check_new_or_owned_folder(folder: str | os.PathLike[str], command: str) -> Manifest:
    """The manifest of an output folder that is new, empty, or written by liverctl ``command``.

    A folder holding anything else is refused: liverctl does not mix its outputs with the
    user's files, and ``--overwrite`` removes only what liverctl wrote.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    manifest = Manifest(out)
    if out.is_dir() and any(p.name != MANIFEST_NAME for p in out.iterdir()) and command not in manifest.commands:
        raise InputError(
            f"output folder {out} holds files that are not from a liverctl {command}; choose an empty or new folder "
            "(liverctl replaces only what it wrote)"
        )
    return manifest
