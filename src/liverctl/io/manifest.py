"""The record of the files liverctl wrote into a folder, so that it never replaces or deletes
anything else.

Every command that writes into a folder it may write into again (``preprocess``, ``phantom``,
``predict``, ``postprocess``, ``demo``) keeps ``FOLDER/.liverctl-manifest.json``: the paths it
wrote there (relative to the folder), each with the size and modification time the file had when
liverctl finished writing it. Before a command replaces or removes a file it asks the manifest
whether liverctl wrote it:

- a path the manifest lists with the same size and modification time: liverctl's own output;
- a path the manifest lists as *claimed* (recorded before writing, its size and time not yet
  recorded, e.g. a killed run): liverctl's only while no file is there; an existing file with
  no recorded size and time is never taken as liverctl's;
- anything else, including a listed file that was changed since (same path, other size or
  time): the user's, which no liverctl command replaces or deletes, ``--overwrite`` or not.

Paths are keyed by where they really are: the folder and every path's parent are resolved
(symlinks followed, ``.``/``..`` removed) once, relative paths against the working directory, so
``o/m01``, ``./o/m01/``, ``/abs/o/m01``, ``o/x/../m01`` and a symlink to it share one manifest
and one key per file (a path's own last component is not followed: a symlink is its own file).

Several processes may write into one folder: every change takes an exclusive lock on the folder
(``fcntl.flock``), reads the manifest back from disk, applies the change and rewrites it
atomically before the lock is released, so no process loses what another recorded
(:meth:`Manifest.locked` holds the lock over a longer step, e.g. merging a summary file).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from liverctl.errors import InputError
from liverctl.io.files import write_text_atomic

MANIFEST_NAME = ".liverctl-manifest.json"
LOCK_NAME = ".liverctl-manifest.lock"
"""Lock file, used only where the folder itself cannot be locked (some network file systems)."""
MANIFEST_FILES = frozenset({MANIFEST_NAME, LOCK_NAME})
"""The names of liverctl's bookkeeping files in an output folder."""
_VERSION = 1


def _stat(path: Path) -> dict[str, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def real_path(path: str | os.PathLike[str]) -> Path:
    """``path`` absolute, with its folder's symlinks, ``.`` and ``..`` resolved (the last
    component kept as named: a symlink there is a file of its own)."""
    p = Path(path)
    if p.name in ("", ".", ".."):
        return Path(os.path.realpath(p))
    return Path(os.path.realpath(p.parent)) / p.name


def _lock_folder(folder: Path) -> int:
    """An open descriptor holding an exclusive ``flock`` on ``folder`` (or on its lock file where a
    folder cannot be locked)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EBADF, errno.EINVAL, errno.ENOLCK, errno.EOPNOTSUPP):
            raise
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


class Manifest:
    """The files liverctl wrote into ``folder`` (see the module docs)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).resolve()
        self.path = self.folder / MANIFEST_NAME
        self._files: dict[str, dict[str, int] | None] = {}
        self.commands: list[str] = []
        self._lock_fd: int | None = None
        self._depth = 0
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
        self._files = {str(k): (v if _valid_stat(v) else None) for k, v in files.items()}
        self.commands = [str(c) for c in data.get("commands", [])]

    @contextlib.contextmanager
    def locked(self) -> Iterator[Manifest]:
        """Hold the folder's lock: the manifest is read back from disk on entry (what other
        processes recorded meanwhile) and saved on exit. Re-entrant within this object."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._lock_fd = _lock_folder(self.folder)
        self._depth = 1
        try:
            if self.path.is_file():
                self._load()  # every change is saved under this lock: the disk holds them all
            yield self
            self.save()
        finally:
            self._depth = 0
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)

    # ---- queries

    @property
    def exists(self) -> bool:
        """Whether liverctl has written into this folder before (a manifest is there)."""
        return self.path.is_file()

    def _key(self, path: str | os.PathLike[str]) -> str:
        """The key of ``path`` (relative paths are relative to the working directory)."""
        try:
            return real_path(path).relative_to(self.folder).as_posix()
        except ValueError:
            raise InputError(f"{path} is not inside {self.folder}") from None

    def owns(self, path: str | os.PathLike[str]) -> bool:
        """Whether liverctl wrote ``path`` and nobody changed it since (its recorded size and
        modification time match); a path only claimed is liverctl's while no file is there."""
        key = self._key(path)
        if key not in self._files:
            return False
        recorded, now = self._files[key], _stat(self.folder / key)
        return now is None if recorded is None else recorded == now

    def foreign(self, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
        """The existing files among ``paths`` that liverctl did not write."""
        return [Path(p) for p in paths if (Path(p).exists() or Path(p).is_symlink()) and not self.owns(p)]

    def owned_files(self) -> list[Path]:
        """The files liverctl wrote here that are still as it left them."""
        return [
            self.folder / k for k in sorted(self._files) if (self.folder / k).is_file() and self.owns(self.folder / k)
        ]

    def check_replaceable(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Raise :class:`InputError` if any of ``paths`` exists and liverctl did not write it."""
        foreign = self.foreign(paths)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise InputError(
                f"refusing to replace {foreign[0]}{more}: liverctl did not write it; move it away or choose another output"
            )

    # ---- changes (each under the folder's lock, see :meth:`locked`)

    def claim(self, paths: Iterable[str | os.PathLike[str]], command: str | None = None) -> None:
        """Record ``paths`` as liverctl's before writing them (a killed write stays liverctl's
        until a file appears there without its size and time recorded)."""
        keys = [self._key(p) for p in paths]
        with self.locked():
            for key in keys:
                if key not in self._files or not self.owns(self.folder / key):
                    self._files[key] = None
            self._add_command(command)

    def record(self, paths: Iterable[str | os.PathLike[str]], command: str | None = None) -> None:
        """Record ``paths``, just written, with their size and modification time."""
        keys = [self._key(p) for p in paths]
        with self.locked():
            for key in keys:
                self._files[key] = _stat(self.folder / key)
            self._add_command(command)

    def _add_command(self, command: str | None) -> None:
        if command and command not in self.commands:
            self.commands.append(command)

    def remove_owned(self, keep: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
        """Delete every file liverctl wrote here (but ``keep``), and folders that only they filled.

        Files the user added or changed are left where they are; so are their folders.
        """
        kept = {self._key(k) for k in keep}
        removed: list[Path] = []
        folders: set[Path] = set()
        with self.locked():
            for key in sorted(self._files):
                path = self.folder / key
                if key in kept or not self.owns(path):
                    continue
                if path.is_file() or path.is_symlink():
                    path.unlink()
                    removed.append(path)
                del self._files[key]
                folders.update(p for p in path.parents if p != self.folder and p.is_relative_to(self.folder))
            for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        return removed

    def save(self) -> None:
        """Write the manifest (atomically; under :meth:`locked` when other processes may write)."""
        data: dict[str, Any] = {
            "liverctl_manifest": _VERSION,
            "about": "files liverctl wrote in this folder; liverctl replaces or deletes nothing else",
            "commands": self.commands,
            "files": dict(sorted(self._files.items())),
        }
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")


def _valid_stat(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"bytes", "mtime_ns"}
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    )


def check_new_or_owned_folder(folder: str | os.PathLike[str], command: str) -> Manifest:
    """The manifest of an output folder that is new, empty, or written by liverctl ``command``.

    A folder holding anything else is refused: liverctl does not mix its outputs with the
    user's files, and ``--overwrite`` removes only what liverctl wrote.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    manifest = Manifest(out)
    if out.is_dir() and any(p.name not in MANIFEST_FILES for p in out.iterdir()) and command not in manifest.commands:
        raise InputError(
            f"output folder {out} holds files that are not from a liverctl {command}; choose an empty or new folder "
            "(liverctl replaces only what it wrote)"
        )
    return manifest
