"""The files of an nnU-Net v2 entry (``format = "nnunetv2"``): download, verify, find in the cache.

Every file of the entry's results folder (``plans.json``, ``dataset.json`` and
``fold_N/<checkpoint>`` for each fold) comes through the same code as a single-file entry's
(:func:`liverctl.weights.transfer.hub_download`: ``hf_hub_download``, the Hugging Face cache,
resumable transfers, one-line errors), each through its own :class:`HubFile`. Each file's
sha256 is checked against its pin before anything reads it; a file that fails is removed from
the cache (snapshot link and blob) with a one-line :class:`~liverctl.errors.WeightsError`. The
folder the files form in the cache (``snapshots/<commit>/<folder>``) is what
:class:`~liverctl.nnunet.NnUNetModel` loads.

:func:`fetch_files` is the unpinned step ``liverctl weights add`` uses to learn the hashes it
then pins (each file still checked against the sha256 the Hub announced for it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from liverctl.errors import WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.pins import VerifyResult, _announced_sha256, refuse_mismatch, registry_name, sha256_file
from liverctl.weights.transfer import HubFile, hub_download

__all__ = ["cached_folder", "download_folder", "fetch_files", "hub_files", "verified_folder", "verify_folder"]


def hub_files(entry: NnUNetEntry) -> dict[str, HubFile]:
    """The entry's files by path relative to its folder, each as a :class:`HubFile`."""
    return {
        rel: HubFile(entry.name, entry.repo_id, f"{entry.folder}/{rel}", entry.revision) for rel in entry.relative_files
    }


def _describe(entry: NnUNetEntry, rel: str) -> str:
    if entry.local:
        return f"weights '{entry.name}' (local folder {entry.local_folder}, file {rel})"
    return f"weights '{entry.name}' ({entry.repo_id}, file {entry.folder}/{rel}, revision {entry.revision})"


def _check(entry: NnUNetEntry, rel: str, path: Path, expected: str | None) -> str:
    """The sha256 of a cached file; evict it and raise if it is not ``expected`` (or, unpinned,
    not the sha256 the Hub announced for it)."""
    actual = sha256_file(path)
    announced = _announced_sha256(path)
    reference, source = (expected, registry_name(entry)) if expected else (announced, "the sha256 the Hub announced")
    if reference is not None and actual != reference and entry.local:  # a file on disk: report, never delete
        raise WeightsError(
            f"sha256 mismatch for weights '{entry.name}' ({path}): got {actual}, expected {reference} "
            f"({source}); not using it (import the model again)"
        )
    if reference is not None and actual != reference:
        refuse_mismatch(entry.name, _describe(entry, rel), path, actual, reference, source)
    return actual


def _folder_of(entry: NnUNetEntry, paths: Mapping[str, Path]) -> Path:
    """The results folder the cached files form (``.../snapshots/<commit>/<folder>``)."""
    root = paths["plans.json"].parent
    for rel, path in paths.items():
        if Path(os.path.abspath(path)) != Path(os.path.abspath(root / rel)):  # pragma: no cover - cache layout
            raise WeightsError(f"weights '{entry.name}': {rel} is not cached beside plans.json ({path})")
    return root


def fetch_files(
    entry: NnUNetEntry, *, force: bool = False, progress: ProgressCallback | None = None, pinned: bool = True
) -> dict[str, tuple[Path, str]]:
    """Download every file of ``entry``; ``{relative path: (cached path, sha256)}``.

    ``pinned=False`` (``liverctl weights add``, whose entry has no pins yet) checks each file
    against the sha256 the Hub announced for it (LFS files) instead of the entry's pins.
    """
    out = {}
    for rel, hub_file in hub_files(entry).items():
        path = hub_download(hub_file, force=force, progress=progress)
        out[rel] = (path, _check(entry, rel, path, entry.sha256.get(rel) if pinned else None))
    return out


def download_folder(entry: NnUNetEntry, *, force: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Download (or find in the cache) every file of ``entry``, verify each against its pin, and
    return the results folder they form in the Hugging Face cache (a local entry: its folder,
    every file verified, no network)."""
    if entry.local:
        return verified_folder(entry)
    files = fetch_files(entry, force=force, progress=progress)
    return _folder_of(entry, {rel: path for rel, (path, _) in files.items()})


def _cached(entry: NnUNetEntry) -> dict[str, Path | None]:
    if entry.local:
        return {rel: p if (p := entry.local_folder / rel).is_file() else None for rel in entry.relative_files}
    from huggingface_hub import try_to_load_from_cache

    out: dict[str, Path | None] = {}
    for rel, f in hub_files(entry).items():
        found = try_to_load_from_cache(f.repo_id, f.filename, revision=f.revision)
        out[rel] = Path(found) if isinstance(found, str) and os.path.isfile(found) else None
    return out


def cached_folder(entry: NnUNetEntry) -> Path | None:
    """The entry's results folder in the cache when every file is there (no network, no hashing)."""
    cached = _cached(entry)
    if any(p is None for p in cached.values()):
        return None
    return _folder_of(entry, cached)  # type: ignore[arg-type]


def verified_folder(entry: NnUNetEntry) -> Path:
    """The cached results folder, every file checked against its pin (no network).

    A file that fails is removed from the cache; a missing one raises with the command that
    fetches it.
    """
    cached = _cached(entry)
    missing = [rel for rel, p in cached.items() if p is None]
    if missing and entry.local:
        raise WeightsError(f"{_describe(entry, missing[0])}: the file is missing; import the model again")
    if missing:
        raise WeightsError(
            f"{_describe(entry, missing[0])} are not downloaded yet: run `liverctl weights download {entry.name}`"
        )
    for rel, path in cached.items():
        _check(entry, rel, path, entry.sha256[rel])  # type: ignore[arg-type]
    return _folder_of(entry, cached)  # type: ignore[arg-type]


def verify_folder(entry: NnUNetEntry) -> VerifyResult:
    """``liverctl weights verify`` of an nnU-Net entry: every cached file against its pin.

    Read-only. ``"ok"`` when all match; ``"not-cached"`` when a file is missing; ``"mismatch"``
    names the first file that differs (``expected_from``).
    """
    cached = _cached(entry)
    if any(p is None for p in cached.values()):
        return VerifyResult(entry.name, "not-cached")
    for rel, path in cached.items():
        assert path is not None
        actual = sha256_file(path)
        if actual != entry.sha256[rel]:
            return VerifyResult(
                entry.name, "mismatch", path, actual, entry.sha256[rel], f'{registry_name(entry)} sha256."{rel}"'
            )
    folder = _folder_of(entry, cached)  # type: ignore[arg-type]
    return VerifyResult(entry.name, "ok", folder, None, None, registry_name(entry))
