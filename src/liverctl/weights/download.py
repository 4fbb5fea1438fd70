"""Fetching weights files: the Hugging Face Hub through its cache, or a local entry's file.

:func:`download` fetches an entry's file through ``huggingface_hub`` (its cache under
``HF_HOME``, its offline mode ``HF_HUB_OFFLINE=1``, its ``HF_ENDPOINT``), through a partial
file that survives a killed command (:mod:`liverctl.weights.transfer`), then checks the sha256 of the
bytes on disk (:mod:`liverctl.weights.pins`). Every failure is one line: a
:class:`~liverctl.errors.WeightsError`. :func:`weights_path`, :func:`verify` and
:func:`list_weights` look at the cache without the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverctl.errors import WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.nnunet_files import cached_folder, download_folder, verified_folder, verify_folder
from liverctl.weights.pins import VerifyResult, accept, check, pin_key, read_pins
from liverctl.weights.registry import Entry, ModelEntry, Registry, as_entry, load_registry
from liverctl.weights.transfer import describe, hub_download, offline_hint

__all__ = [
    "WeightsInfo",
    "cached_path",
    "download",
    "list_weights",
    "local_file",
    "verify",
    "verify_all",
    "weights_path",
]


def download(
    entry: Entry | str | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> Path:
    """Fetch a model's weights file into the Hugging Face cache and check its sha256.

    For an nnU-Net entry (``format = "nnunetv2"``): every file of its results folder, each
    checked against its pin; returns the folder (:func:`liverctl.weights.download_folder`).

    ``entry`` is a :class:`ModelEntry` or a registry name (``None``: the default model).
    A cached file is reused (no transfer; for a commit revision, no network at all); a
    transfer that breaks off, or whose command is killed, resumes where it stopped (HTTP
    Range), within the call or at the next one (see :mod:`liverctl.weights.transfer`);
    ``force`` downloads again. Returns the path of the cached, verified file.

    Raises :class:`WeightsError` (one line) when the file cannot be had (offline and not
    cached, unknown repository/revision/file, network failure) or fails its sha256 check (the
    file is then removed from the cache). An unpinned entry's first download is recorded
    with a :class:`LiverctlWarning` (trust-on-first-use).
    """
    entry = as_entry(entry, registry)
    if isinstance(entry, NnUNetEntry):
        return download_folder(entry, force=force, progress=progress)
    path = local_file(entry) if entry.local else hub_download(entry, force=force, progress=progress)
    accept(entry, path)
    return path


def local_file(entry: ModelEntry) -> Path:
    path = entry.local_path
    if not path.is_file():
        raise WeightsError(f"weights '{entry.name}': local file {path} not found")
    return path


def cached_path(entry: Entry) -> Path | None:
    """The cached file of ``entry`` (a local entry: its file; an nnU-Net entry: its results
    folder, when every file is cached) without network access, or ``None``."""
    if isinstance(entry, NnUNetEntry):
        return cached_folder(entry)
    if entry.local:
        return entry.local_path if entry.local_path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def weights_path(name: str | None = None, *, registry: Registry | None = None) -> Path:
    """Path of a model's already-downloaded weights file, checked against its sha256.

    Never touches the network. Raises :class:`WeightsError` when the file is not cached
    (with the command that fetches it) or fails its check (it is then removed).
    """
    entry = as_entry(name, registry)
    if isinstance(entry, NnUNetEntry):
        return verified_folder(entry)
    path = cached_path(entry)
    if path is None:
        raise WeightsError(f"{describe(entry)} are not downloaded yet: " + offline_hint(entry))
    accept(entry, path)
    return path


def verify(name: str | None = None, *, registry: Registry | None = None) -> VerifyResult:
    """Check a model's cached file against its pin, its trust-on-first-use record and the
    sha256 the Hub announced. Read-only: nothing is recorded or removed."""
    entry = as_entry(name, registry)
    if isinstance(entry, NnUNetEntry):
        return verify_folder(entry)
    path = cached_path(entry)
    if path is None:
        return VerifyResult(entry.name, "not-cached")
    return check(entry, path)


def verify_all(*, registry: Registry | None = None) -> list[VerifyResult]:
    """:func:`verify` for every registry entry."""
    registry = registry or load_registry()
    return [verify(name, registry=registry) for name in registry.names()]


@dataclass(frozen=True)
class WeightsInfo:
    """One row of :func:`list_weights`: the entry, whether it is the default, its cached file
    (``None`` if not downloaded) and its pin status: ``"sha256"`` (pinned in weights.toml),
    ``"recorded"`` (trust-on-first-use hash recorded), ``"tofu"`` (nothing recorded yet) or
    ``"none"`` (an unpinned local entry)."""

    entry: Entry
    default: bool
    cached: Path | None
    pin: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.entry.to_dict(),
            "default": self.default,
            "cached": str(self.cached) if self.cached else None,
            "pin": self.pin,
        }


def list_weights(*, registry: Registry | None = None) -> list[WeightsInfo]:
    """Every registry entry with its cache and pin status (no network, no hashing)."""
    registry = registry or load_registry()
    pins = read_pins()
    rows = []
    for entry in registry.models.values():
        cached = cached_path(entry)
        if isinstance(entry, NnUNetEntry) or entry.sha256:  # an nnU-Net entry pins every file
            pin = "sha256"
        elif entry.local:
            pin = "none"
        else:
            key = pin_key(entry, cached)
            pin = "recorded" if key and key in pins else "tofu"
        rows.append(WeightsInfo(entry, entry.name == registry.default, cached, pin))
    return rows
