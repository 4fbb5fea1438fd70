"""One file from the Hugging Face Hub through its cache: resumable (a partial file survives a
killed command), quiet (progress goes to the caller's callback), and every failure one line (a
:class:`~liverctl.errors.WeightsError` that says whether the Hub or the cache is at fault).
Used for registry entries (:mod:`liverctl.weights.download`) and for each file of an nnU-Net
results folder (:mod:`liverctl.weights.nnunet_files`)."""

from __future__ import annotations

import functools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverctl.errors import WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.pins import sha256_file
from liverctl.weights.registry import ModelEntry

__all__ = ["PARTIAL_SUFFIX", "HubFile", "hub_download"]


def _tqdm_adapter(progress: ProgressCallback | None, description: str) -> type:
    """A tqdm-like class for ``hf_hub_download(tqdm_class=...)`` that reports bytes to ``progress``.

    It never prints (the library does not), so huggingface_hub's own bars stay off too.
    """

    class _Bar:
        def __init__(self, *args: Any, total: float | None = None, initial: float = 0, **kwargs: Any) -> None:
            self.total = total
            self.n = initial or 0
            self._report()

        def _report(self) -> None:
            if progress is not None:
                progress(description, int(self.n), int(self.total) if self.total else None)

        def update(self, n: float | None = 1) -> None:
            self.n += n or 0
            self._report()

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_description(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

    return _Bar


@dataclass(frozen=True)
class HubFile:
    """One file on the Hub, as :func:`hub_download` needs it: a :class:`ModelEntry` is one, and
    :mod:`liverctl.weights.nnunet_files` makes one for each file of an nnU-Net entry. ``name`` is
    the registry entry's (for messages)."""

    name: str
    repo_id: str
    filename: str
    revision: str

    @property
    def revision_is_commit(self) -> bool:
        return bool(re.fullmatch(r"[0-9a-f]{40}", self.revision))


def offline_hint(entry: ModelEntry | HubFile) -> str:
    return (
        f"run `liverctl weights download {entry.name}` on a machine with network access "
        "(and copy its Hugging Face cache, HF_HOME, here), or pass --weights PATH to a local copy of the file"
    )


def describe(entry: ModelEntry | HubFile) -> str:
    return f"weights '{entry.name}' ({entry.repo_id}, file {entry.filename}, revision {entry.revision})"


PARTIAL_SUFFIX = ".liverctl-partial"
"""Suffix of the partial blob a download grows in the Hugging Face cache until it is complete."""


def _resumable_fetch(entry: ModelEntry | HubFile, progress: ProgressCallback | None) -> None:
    """Bring the file's blob into the Hugging Face cache through a partial file that outlives
    the command, so that a download interrupted by a killed command or a lost connection
    resumes where it stopped (HTTP Range) the next time.

    huggingface_hub (2.x) resumes only within one call: it writes to a process-unique
    temporary file and deletes it on failure (huggingface_hub PR #4228). Here the partial file
    is ``blobs/<etag>.liverctl-partial`` beside the blob, under a file lock in the cache's
    ``.locks``; once it has the
    announced size (and, for an LFS file, the sha256 the Hub announced as its ETag) it is
    renamed to ``blobs/<etag>``, and ``hf_hub_download`` then finds the blob and only links it
    into the snapshot. Nothing happens offline, or when the commit's file is already cached.
    """
    meta = _remote_metadata(entry)
    if meta is None:
        return
    from filelock import FileLock
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=entry.repo_id, repo_type="model")
    blobs = Path(constants.HF_HUB_CACHE) / folder / "blobs"
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{meta.etag}.liverctl.lock"
    blob = blobs / meta.etag
    if blob.exists():
        return
    blobs.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not blob.exists():
            _grow_partial(entry, meta, blobs / f"{meta.etag}{PARTIAL_SUFFIX}", progress)
            os.replace(blobs / f"{meta.etag}{PARTIAL_SUFFIX}", blob)


def _remote_metadata(entry: ModelEntry | HubFile) -> Any:
    """The Hub's metadata (etag, size, location) of a file still to fetch; ``None`` to leave it all
    to ``hf_hub_download`` (offline, already cached at a commit, unreachable, an odd answer)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return None
    if entry.revision_is_commit and isinstance(
        try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision), str
    ):
        return None
    try:
        meta = get_hf_file_metadata(hf_hub_url(entry.repo_id, entry.filename, revision=entry.revision))
    except Exception:  # unreachable, not found, gated...: hf_hub_download decides (cache) and reports
        return None
    if not meta.etag or meta.size is None or meta.location is None:
        return None  # let hf_hub_download handle what it makes of such an answer
    return meta


def _grow_partial(entry: ModelEntry | HubFile, meta: Any, partial: Path, progress: ProgressCallback | None) -> None:
    """Download the rest of ``partial`` (HTTP Range from its size) and check the announced sha256."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    have = partial.stat().st_size if partial.exists() else 0
    if have > meta.size:  # not this file: start again
        partial.unlink()
        have = 0
    with partial.open("r+b" if have else "wb") as fh:
        fh.seek(have)
        http_get(
            meta.location,
            fh,
            resume_size=have,
            headers=build_hf_headers(),
            expected_size=meta.size,
            tqdm_class=_tqdm_adapter(progress, f"download {entry.name}"),
        )
    if re.fullmatch(r"[0-9a-f]{64}", meta.etag) and (actual := sha256_file(partial)) != meta.etag:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"sha256 mismatch for {describe(entry)}: got {actual}, expected {meta.etag} (the sha256 the Hub "
            "announced); the download was discarded and will not be used (run the command again)"
        )


HUB_CONNECT_TIMEOUT_S = 3.0
"""How long the probe of the Hub (:func:`hub_reachable`) waits for a TCP connection."""

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@functools.lru_cache(maxsize=8)
def _probe(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=HUB_CONNECT_TIMEOUT_S).close()
    except OSError:  # refused, unreachable, no such host, timed out
        return False
    return True


def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub's endpoint (``HF_ENDPOINT``) opens within
    :data:`HUB_CONNECT_TIMEOUT_S`; asked once per process. huggingface_hub retries an unreachable
    Hub for about 24 s before it gives up (or falls back to the cache); this one quick probe lets
    liverctl use the cache, or say the Hub cannot be reached, at once. Behind a proxy (``*_PROXY``
    set) there is nothing to probe directly: ``True``."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    url = urlsplit(constants.ENDPOINT)
    if not url.hostname:
        return True
    return _probe(url.hostname, url.port or (443 if url.scheme == "https" else 80))


def hub_download(entry: ModelEntry | HubFile, *, force: bool, progress: ProgressCallback | None) -> Path:
    """``hf_hub_download`` with its exceptions turned into one-line :class:`WeightsError`; with
    the Hub unreachable (:func:`hub_reachable`), the cached file or that error at once."""
    from huggingface_hub import constants, hf_hub_download

    online = hub_reachable()
    if force and not online:
        raise WeightsError(
            f"{describe(entry)}: --force downloads the file again, but the Hub ({constants.ENDPOINT}) cannot be "
            "reached (no connection); leave out --force to use the cached file"
        )
    try:
        if not force and online:
            _resumable_fetch(entry, progress)
        path = hf_hub_download(
            repo_id=entry.repo_id,
            filename=entry.filename,
            revision=entry.revision,
            force_download=force,
            local_files_only=not online,
            tqdm_class=_tqdm_adapter(progress, f"download {entry.name}"),
        )
    except Exception as exc:
        error = _force_error(entry, exc) if force else None
        error = error or download_error(entry, exc)
        if error is None:
            raise
        raise error from None
    return Path(path)


def _force_error(entry: ModelEntry | HubFile, exc: Exception) -> WeightsError | None:
    """The one-line error for ``force_download=True`` when the Hub cannot be asked: offline mode,
    or a server that does not answer (huggingface_hub raises a bare ``ValueError`` then, with the
    real failure as its cause)."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors

    cause = exc.__cause__
    if not isinstance(exc, ValueError) or not isinstance(cause, Exception):
        return None
    if isinstance(cause, hf_errors.OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return WeightsError(
            f"{describe(entry)}: --force downloads the file again, which HF_HUB_OFFLINE=1 forbids; "
            "unset HF_HUB_OFFLINE, or leave out --force to use the cached file"
        )
    first = str(cause).splitlines()[0] if str(cause) else ""
    return WeightsError(
        f"{describe(entry)}: --force downloads the file again, but the Hub ({constants.ENDPOINT}) cannot be "
        f"reached ({type(cause).__name__}{': ' + first if first else ''}); leave out --force to use the cached file"
    )


def download_error(entry: ModelEntry | HubFile, exc: Exception) -> WeightsError | None:
    """The one-line :class:`WeightsError` for a failed ``hf_hub_download`` (``None``: not a
    download failure, let it through)."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf_errors

    what = describe(entry)
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return WeightsError(
            f"{what} are not in the local cache and HF_HUB_OFFLINE=1 forbids downloading: " + offline_hint(entry)
        )
    if isinstance(exc, hf_errors.LocalEntryNotFoundError):
        why = (
            "HF_HUB_OFFLINE=1 forbids downloading"
            if constants.HF_HUB_OFFLINE
            else f"the Hub ({constants.ENDPOINT}) cannot be reached"
        )
        return WeightsError(f"{what} are not in the local cache and {why}: " + offline_hint(entry))
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return WeightsError(
            f"{what}: the file does not exist in the repository at that revision; "
            "check filename and revision in the weights registry"
        )
    if isinstance(exc, hf_errors.GatedRepoError):
        return WeightsError(
            f"{what}: the repository is gated: accept its conditions on the Hub, then log in "
            "(`hf auth login` or HF_TOKEN)"
        )
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return WeightsError(f"{what}: repository not found on {constants.ENDPOINT} (or private: set HF_TOKEN)")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return WeightsError(f"{what}: revision not found in the repository")
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return WeightsError(f"{what}: the Hub answered HTTP {status}: {str(exc).splitlines()[0]}")
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return WeightsError(f"{what}: network error: {exc}; " + offline_hint(entry))
    if isinstance(exc, OSError):
        # huggingface_hub's size check after a broken transfer ("Consistency check failed"), disk full...
        return WeightsError(f"{what}: download failed: {str(exc).splitlines()[0]}")
    if type(exc).__module__.split(".")[0].startswith("httpx"):
        first = str(exc).splitlines()[0] if str(exc) else ""
        return WeightsError(f"{what}: download failed ({type(exc).__name__}: {first}); " + offline_hint(entry))
    return None
