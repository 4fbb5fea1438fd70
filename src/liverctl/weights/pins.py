"""sha256 of weights files and the trust-on-first-use pin store.

:func:`sha256_file` is liverctl's one file hash (the registry's ``sha256`` pins, the
``.sha256`` file ``liverctl train`` writes beside its export, the model sha256 of predict's
reports). The checks a cached file must pass before it is used:

* an entry pinned in ``weights.toml`` (``sha256 = "<64 hex>"``) must match the pin;
* an entry with an empty pin is *trusted on first use*: the hash of the first download is
  recorded in liverctl's pin store (:func:`pins_path`) with a :class:`LiverctlWarning`, and
  every later download or load of that file is checked against the record;
* a file the Hub announced as an LFS object is also checked against the sha256 the server
  announced (the cache blob's name), which catches a corrupted transfer even on first use.

:func:`check` compares without side effects (``liverctl weights verify``); :func:`accept`
evicts a Hub file that fails (snapshot link and blob) and raises a one-line
:class:`WeightsError`, or records a first-use pin.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverctl.errors import LiverctlWarning, WeightsError
from liverctl.weights.home import HOME_ENV, liverctl_home
from liverctl.weights.registry import HEX64, ModelEntry

__all__ = ["HOME_ENV", "VerifyResult", "accept", "check", "pin_key", "pins_path", "read_pins", "sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in ``chunk_size`` chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def pins_path() -> Path:
    """The trust-on-first-use pin store: ``$LIVERCTL_HOME/pins.json``, else
    ``$XDG_CACHE_HOME/liverctl/pins.json``, else ``~/.cache/liverctl/pins.json``
    (:func:`liverctl.weights.home.liverctl_home`)."""
    return liverctl_home() / "pins.json"


def read_pins() -> dict[str, dict[str, str]]:
    path = pins_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the pin store {path}: {exc}; fix or delete it") from None
    pins = data.get("pins") if isinstance(data, dict) else None
    if not isinstance(pins, dict):
        raise WeightsError(f"the pin store {path} is not a liverctl pins.json; fix or delete it")
    return pins


def _record_pin(key: str, sha: str, model: str) -> Path:
    from liverctl.io import write_text_atomic

    pins = read_pins()
    pins[key] = {
        "sha256": sha,
        "model": model,
        "recorded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    path = pins_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"version": 1, "pins": pins}, indent=2, sort_keys=True) + "\n")
    return path


def _snapshot_commit(path: Path) -> str | None:
    """The commit folder of a Hub cache path ``.../snapshots/<commit>/<filename>``."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "snapshots" and i + 1 < len(parts):
            return parts[i + 1]
    return None


def pin_key(entry: ModelEntry, path: Path | None) -> str | None:
    """``repo_id@commit/filename``: the file a trust-on-first-use record is about.

    The commit is the entry's revision when that is a commit, else the commit the cached
    file was resolved to (a branch that moves to a new commit is a new file to trust).
    """
    commit = entry.revision if entry.revision_is_commit else (_snapshot_commit(path) if path else None)
    if commit is None:
        return None
    return f"{entry.repo_id}@{commit}/{entry.filename}"


def _announced_sha256(path: Path) -> str | None:
    """The sha256 the Hub announced for an LFS file: the name of its cache blob."""
    try:
        blob = Path(os.path.realpath(path)).name
    except OSError:  # pragma: no cover
        return None
    return blob if HEX64.match(blob) else None


def _evict(path: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points to."""
    blob = Path(os.path.realpath(path))
    for p in (path, blob):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one model's cached file.

    ``status``: ``"ok"`` (matches the weights.toml pin), ``"recorded"`` (matches the
    trust-on-first-use record), ``"unrecorded"`` (cached, no pin and no record yet),
    ``"mismatch"`` (differs from the pin, the record or the sha256 the Hub announced) or
    ``"not-cached"``. ``expected_from`` says which reference ``expected`` comes from.
    """

    name: str
    status: str
    path: Path | None = None
    sha256: str | None = None
    expected: str | None = None
    expected_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "recorded", "unrecorded")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "expected": self.expected,
            "expected_from": self.expected_from,
        }


def _as_served(path: Path, actual: str) -> bool | None:
    """Whether a cached file holds the bytes the Hub announced for it: its blob is named by the
    sha256 (LFS files) or by the git blob sha1 (small files) the Hub sent; ``None`` if unknown."""
    try:
        blob = Path(os.path.realpath(path))
    except OSError:  # pragma: no cover
        return None
    if HEX64.match(blob.name):
        return blob.name == actual
    if re.fullmatch(r"[0-9a-f]{40}", blob.name):
        digest = hashlib.sha1(b"blob %d\0" % blob.stat().st_size)
        with open(blob, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest() == blob.name
    return None


def refuse_mismatch(name: str, what: str, path: Path, actual: str, expected: str, source: str) -> None:
    """Raise the one-line error of a cached file whose sha256 is not ``expected``.

    The file is removed from the (shared) Hugging Face cache only when its bytes contradict what
    the Hub itself announced for it (its sha256, or for a small file its git blob id): a damaged
    download. A file that is the Hub's own bytes, or that cannot be told damaged, stays: the pin
    is what disagrees, and another registry sharing the cache may pin this very file.
    """
    served = _as_served(path, actual)
    if served is False:
        _evict(path)
        raise WeightsError(
            f"sha256 mismatch for {what}: got {actual}, expected {expected} ({source}); the damaged file was "
            f"removed from the cache and will not be used (run `liverctl weights download {name}` to fetch it again)"
        )
    which = "the file the Hub serves" if served else "the cached file"
    raise WeightsError(
        f"sha256 mismatch for {what}: {which} has sha256 {actual}, but {source} expects {expected}; not using it "
        "(left in the shared cache, where another registry may trust it): check that pin"
    )


def registry_name(entry: Any) -> str:
    """The registry file an entry comes from, for messages (``weights.toml`` if unknown)."""
    return str(getattr(entry, "registry_file", None) or "weights.toml")


def check(entry: ModelEntry, path: Path) -> VerifyResult:
    """Hash ``path`` and compare it with every reference there is for it (no side effects)."""
    actual = sha256_file(path)
    announced = None if entry.local else _announced_sha256(path)
    if entry.sha256:
        expected, source = entry.sha256, registry_name(entry)
    else:
        key = None if entry.local else pin_key(entry, path)
        record = read_pins().get(key) if key else None
        expected, source = (
            (record.get("sha256"), f"trust-on-first-use record in {pins_path()}") if record else (None, None)
        )
    if expected is not None and expected != actual:
        return VerifyResult(entry.name, "mismatch", path, actual, expected, source)
    if announced is not None and announced != actual:
        return VerifyResult(entry.name, "mismatch", path, actual, announced, "the sha256 the Hub announced")
    if expected is None:
        return VerifyResult(entry.name, "unrecorded", path, actual)
    return VerifyResult(entry.name, "ok" if entry.sha256 else "recorded", path, actual, expected, source)


def accept(entry: ModelEntry, path: Path) -> str:
    """Check a freshly resolved cached file; evict it and raise on mismatch; record TOFU pins.

    Returns the file's sha256.
    """
    result = check(entry, path)
    if result.status == "mismatch" and entry.local:  # a user's file: report, never delete
        raise WeightsError(
            f"sha256 mismatch for local weights '{entry.name}' ({path}): got {result.sha256}, "
            f"expected {result.expected} ({result.expected_from}); not using it"
        )
    if result.status == "mismatch":
        refuse_mismatch(
            entry.name,
            f"weights '{entry.name}' ({entry.repo_id}/{entry.filename} @ {entry.revision})",
            path,
            result.sha256 or "",
            result.expected or "",
            result.expected_from or "",
        )
    if result.status == "unrecorded" and not entry.local:
        key = pin_key(entry, path)
        assert key is not None and result.sha256 is not None
        store = _record_pin(key, result.sha256, entry.name)
        warnings.warn(
            f"weights '{entry.name}' have no sha256 pin in {registry_name(entry)}: trusting this first download "
            f"(trust-on-first-use) and recording sha256 {result.sha256} in {store}; "
            "every later use is checked against it",
            LiverctlWarning,
            stacklevel=3,
        )
    assert result.sha256 is not None
    return result.sha256
