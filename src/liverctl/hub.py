"""Pretrained weights: the ``weights.toml`` registry, Hub downloads and sha256 pins.

A *registry* (``weights.toml``) names every model liverctl can use: where its weights live
on the Hugging Face Hub (repository, file, revision), the sha256 the file must have, the
network that reads them and the preprocessing that network expects. :func:`load_registry`
validates it; :func:`get_entry` picks one :class:`ModelEntry`.

:func:`download` fetches an entry's file through ``huggingface_hub`` (its cache under
``HF_HOME``, its offline mode ``HF_HUB_OFFLINE=1``, its ``HF_ENDPOINT``), then checks the
sha256 of the bytes on disk:

* an entry pinned in ``weights.toml`` (``sha256 = "<64 hex>"``) must match the pin;
* an entry with an empty pin is *trusted on first use*: the hash of the first download is
  recorded in liverctl's pin store (:func:`pins_path`) with a :class:`LiverctlWarning`, and
  every later download or load of that file is checked against the record;
* a file the Hub announced as an LFS object is also checked against the sha256 the server
  announced (the cache blob's name), which catches a corrupted transfer even on first use.

A file that fails a check is removed from the cache (snapshot link and blob) so that it is
never used, and a one-line :class:`WeightsError` says so. Weights are only ever loaded by
:func:`load_state_dict`: ``torch.load(weights_only=True)`` or safetensors, after the check.

Example::

    from liverctl import hub
    entry = hub.get_entry()                 # the registry's default model
    path = hub.download(entry)              # cached after the first call
    state = hub.load_state_dict(path, expected_sha256=hub.sha256_file(path))
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.resources
import json
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liverctl.errors import ConfigError, LiverctlWarning, WeightsError
from liverctl.progress import ProgressCallback

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    import torch

__all__ = [
    "DECISIONS",
    "INTENSITY_METHODS",
    "IntensityRecipe",
    "ModelEntry",
    "Registry",
    "ResolvedWeights",
    "SlidingWindow",
    "VerifyResult",
    "WeightsInfo",
    "download",
    "get_entry",
    "list_weights",
    "load_registry",
    "load_state_dict",
    "local_weights",
    "pins_path",
    "registry_path",
    "resolve_weights",
    "sha256_file",
    "verify",
    "verify_all",
    "weights_path",
]

#: Environment variable naming a registry file that replaces the shipped ``weights.toml``.
REGISTRY_ENV = "LIVERCTL_WEIGHTS_TOML"
#: Environment variable naming liverctl's own state folder (holds ``pins.json``).
HOME_ENV = "LIVERCTL_HOME"

#: Intensity recipes the predict pipeline knows (see :class:`IntensityRecipe`).
INTENSITY_METHODS = ("nonzero-zscore-minmax", "window-zscore")
#: How output channels become a liver mask (see :class:`ModelEntry`).
DECISIONS = ("argmax", "sigmoid")
NETWORK_AXES: tuple[str, ...] = ("zyx", "xyz")
"""Array axis order the network was trained on: liverctl's (z, y, x), or MONAI's (x, y, z)."""
INTERPOLATIONS = ("linear", "bspline")
WINDOW_MODES = ("gaussian", "constant")
PADDING_MODES = ("constant", "replicate", "reflect")
#: File suffixes :func:`load_state_dict` reads (``.safetensors`` via safetensors, the rest via torch).
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class IntensityRecipe:
    """How CT intensities are normalised before the network sees them.

    ``method`` is one of :data:`INTENSITY_METHODS`:

    * ``"nonzero-zscore-minmax"`` (MONAI bundles): over the voxels ``!= 0``,
      ``x <- (x - mean) / std`` (zero voxels stay 0, as MONAI ``NormalizeIntensity(nonzero=True)``);
      then the whole volume is min-max rescaled to ``range = (lo, hi)`` (``ScaleIntensity``).
    * ``"window-zscore"`` (liverctl-trained models): ``x <- (clip(x, *window) - mean) / std``
      with a fixed HU ``window`` (optional: no clipping without it) and fixed ``mean``/``std``.
    """

    method: str
    range: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SlidingWindow:
    """Patch-wise inference settings: ``roi`` voxels per patch (array axes i, j, k), ``overlap``
    fraction between patches, blending ``mode`` and the image ``padding_mode`` at the borders."""

    roi: tuple[int, int, int]
    overlap: float = 0.25
    mode: str = "gaussian"
    padding_mode: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        return {"roi": list(self.roi), "overlap": self.overlap, "mode": self.mode, "padding_mode": self.padding_mode}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry: where its weights are and how to use them.

    ``repo_id``/``filename``/``revision`` locate the file on the Hub; a *local* entry
    (``repo_id = ""``) names a file beside the registry instead (see :attr:`local_path`).
    ``datasets`` names the dataset branches of a multi-dataset network (in branch order) and
    ``datasets_intensity`` their own intensity recipes.
    ``spacing`` is in mm along the array axes after reorientation to ``orientation``
    (MONAI/NiBabel axis codes, e.g. ``"RAS"``). ``decision`` is ``"argmax"`` (liver is where
    the arg-max over the ``n_classes`` channels equals ``liver_channel``) or ``"sigmoid"``
    (liver is where ``sigmoid(channel liver_channel) > 0.5``). An empty ``sha256`` means
    trust-on-first-use.
    """

    name: str
    repo_id: str
    filename: str
    revision: str
    sha256: str
    architecture: str
    kwargs: dict[str, Any]
    spacing: tuple[float, float, float]
    orientation: str
    interpolation: str
    intensity: IntensityRecipe
    n_classes: int
    liver_channel: int
    decision: str
    labels: dict[str, int]
    sliding_window: SlidingWindow
    datasets: tuple[str, ...] = ()
    datasets_intensity: dict[str, IntensityRecipe] = field(default_factory=dict)
    network_axes: str = "zyx"
    license: str = ""
    citation: str = ""
    description: str = ""
    base_dir: Path | None = None

    @property
    def local(self) -> bool:
        """A local entry (``repo_id = ""``): ``filename`` is a file on disk, relative to the
        registry's folder, not a file on the Hub (as ``liverctl train`` exports them)."""
        return not self.repo_id

    @property
    def local_path(self) -> Path:
        """For a local entry: the weights file (``filename`` resolved against the registry's folder)."""
        path = Path(self.filename).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    @property
    def pinned(self) -> bool:
        """Whether ``weights.toml`` pins the file's sha256 (otherwise: trust-on-first-use)."""
        return bool(self.sha256)

    @property
    def revision_is_commit(self) -> bool:
        """Whether ``revision`` is an immutable 40-hex commit (not a branch or tag)."""
        return bool(_HEX40.match(self.revision))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "sha256": self.sha256,
            "architecture": self.architecture,
            "kwargs": dict(self.kwargs),
            "spacing": list(self.spacing),
            "orientation": self.orientation,
            "interpolation": self.interpolation,
            "intensity": self.intensity.to_dict(),
            "n_classes": self.n_classes,
            "liver_channel": self.liver_channel,
            "decision": self.decision,
            "labels": dict(self.labels),
            "sliding_window": self.sliding_window.to_dict(),
            "datasets": list(self.datasets),
            "datasets_intensity": {d: r.to_dict() for d, r in self.datasets_intensity.items()},
            "network_axes": self.network_axes,
            "license": self.license,
            "citation": self.citation,
            "description": self.description,
        }


@dataclass(frozen=True)
class Registry:
    """A parsed, validated ``weights.toml``: the ``default`` model name and every entry."""

    default: str
    models: dict[str, ModelEntry]
    path: Path | None = None

    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str | None = None) -> ModelEntry:
        """The entry called ``name`` (the default when ``None``); unknown -> :class:`WeightsError`."""
        key = self.default if name is None else name
        try:
            return self.models[key]
        except KeyError:
            where = f" in {self.path}" if self.path else ""
            raise WeightsError(
                f"unknown model '{key}'{where}; known models: {', '.join(self.models) or '(none)'}"
            ) from None


def registry_path() -> Path:
    """Where the registry is read from.

    ``$LIVERCTL_WEIGHTS_TOML`` when set (a private registry, or a test's); otherwise the
    ``weights.toml`` shipped inside the installed package; otherwise (source tree or
    editable install) the repository's top-level ``weights.toml``.
    """
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    try:
        shipped = importlib.resources.files("liverctl").joinpath("weights.toml")
        if shipped.is_file():
            return Path(str(shipped))
    except (ModuleNotFoundError, TypeError, OSError):  # pragma: no cover - unusual loaders
        pass
    return Path(__file__).resolve().parents[2] / "weights.toml"


class _Table:
    """Typed access to one TOML table with errors that name the entry and the field."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}.{key}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.where}: missing field '{key}'")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {what or _kind_name(kinds)}, not {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {what or _kind_name(kinds)}, not {value!r}")
        return value

    def number(self, key: str, default: Any = ...) -> float:
        return float(self.get(key, (int, float), default, what="a number"))

    def numbers(self, key: str, n: int, kind: type = float, default: Any = ...) -> tuple | None:
        value = self.get(key, list, default, what=f"a list of {n} numbers")
        if value is None:
            return None
        kinds = (int,) if kind is int else (int, float)
        if len(value) != n or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
            raise self.fail(key, f"must be a list of {n} {'integers' if kind is int else 'numbers'}, not {value!r}")
        return tuple(kind(v) for v in value)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}: unknown field '{unknown[0]}'")


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table", bool: "true/false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _parse_intensity(value: Any, where: str) -> IntensityRecipe:
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: must be a table such as {{ method = "window-zscore", ... }}')
    t = _Table(value, where)
    method = t.choice("method", INTENSITY_METHODS)
    if method == "nonzero-zscore-minmax":
        lo_hi = t.numbers("range", 2, default=[-1.0, 1.0])
        assert lo_hi is not None
        if not lo_hi[0] < lo_hi[1]:
            raise t.fail("range", f"must be [lo, hi] with lo < hi, not {list(lo_hi)}")
        t.check_unknown()
        return IntensityRecipe(method=method, range=lo_hi)
    window = t.numbers("window", 2, default=None)
    if window is not None and not window[0] < window[1]:
        raise t.fail("window", f"must be [lo, hi] with lo < hi, not {list(window)}")
    mean = t.number("mean")
    std = t.number("std")
    if not std > 0:
        raise t.fail("std", f"must be > 0, not {std}")
    t.check_unknown()
    return IntensityRecipe(method=method, window=window, mean=mean, std=std)


def _parse_sliding_window(value: Any, where: str) -> SlidingWindow:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table with roi, overlap, mode")
    t = _Table(value, where)
    roi = t.numbers("roi", 3, kind=int)
    assert roi is not None
    if min(roi) < 1:
        raise t.fail("roi", f"must be positive, not {list(roi)}")
    overlap = t.number("overlap", 0.25)
    if not 0.0 <= overlap < 1.0:
        raise t.fail("overlap", f"must be in [0, 1), not {overlap}")
    mode = t.choice("mode", WINDOW_MODES, "gaussian")
    padding = t.choice("padding_mode", PADDING_MODES, "constant")
    t.check_unknown()
    return SlidingWindow(roi=roi, overlap=overlap, mode=mode, padding_mode=padding)


def _parse_entry(name: str, value: Any, source: str, base_dir: Path | None = None) -> ModelEntry:
    where = f"{source}: models.{name}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    t = _Table(value, where)
    repo_id = t.get("repo_id", str)
    if repo_id and not re.match(r"^[\w.-]+/[\w.-]+$", repo_id):
        raise t.fail("repo_id", f"must look like 'owner/name' (or \"\" for a local file), not {repo_id!r}")
    filename = t.get("filename", str)
    if repo_id and (not filename or filename.startswith("/") or ".." in filename.split("/")):
        raise t.fail("filename", f"must be a relative path inside the repository, not {filename!r}")
    if not filename.endswith(WEIGHT_SUFFIXES):
        raise t.fail("filename", f"must end with one of {', '.join(WEIGHT_SUFFIXES)}, not {filename!r}")
    revision = t.get("revision", str, "main" if repo_id else "")
    if (repo_id and not revision) or any(c.isspace() for c in revision):
        raise t.fail("revision", f"must be a commit, branch or tag, not {revision!r}")
    sha = t.get("sha256", str, "").strip().lower()
    if sha and not _HEX64.match(sha):
        raise t.fail("sha256", f'must be 64 hex digits or "" (trust-on-first-use), not {sha!r}')
    architecture = t.get("architecture", str)
    if not architecture:
        raise t.fail("architecture", "must not be empty")
    kwargs = t.get("kwargs", dict, {})
    spacing = t.numbers("spacing", 3)
    assert spacing is not None
    if min(spacing) <= 0:
        raise t.fail("spacing", f"must be positive, not {list(spacing)}")
    orientation = t.get("orientation", str, "RAS").upper()
    axes = [{"L": 0, "R": 0, "P": 1, "A": 1, "I": 2, "S": 2}.get(c) for c in orientation]
    if len(orientation) != 3 or None in axes or sorted(axes) != [0, 1, 2]:  # type: ignore[type-var]
        raise t.fail("orientation", f"must be three axis codes such as RAS or LPS, not {orientation!r}")
    interpolation = t.choice("interpolation", INTERPOLATIONS, "linear")
    t.used.add("intensity")
    if "intensity" not in value:
        raise ConfigError(f"{where}: missing field 'intensity'")
    intensity = _parse_intensity(value["intensity"], f"{where}.intensity")
    n_classes = t.get("n_classes", int)
    if n_classes < 1:
        raise t.fail("n_classes", f"must be >= 1, not {n_classes}")
    liver_channel = t.get("liver_channel", int)
    if not 0 <= liver_channel < n_classes:
        raise t.fail("liver_channel", f"must be in [0, {n_classes - 1}] (n_classes = {n_classes}), not {liver_channel}")
    decision = t.choice("decision", DECISIONS, "argmax")
    labels = t.get("labels", dict, {"liver": liver_channel})
    for organ, channel in labels.items():
        if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel < n_classes:
            raise t.fail(f"labels.{organ}", f"must be a channel in [0, {n_classes - 1}], not {channel!r}")
    if labels.get("liver") != liver_channel:
        raise t.fail("labels", f"must contain liver = {liver_channel} (the liver_channel), not {labels.get('liver')!r}")
    t.used.add("sliding_window")
    sliding = _parse_sliding_window(value.get("sliding_window", {"roi": [96, 96, 96]}), f"{where}.sliding_window")
    datasets = t.get("datasets", list, [])
    if not all(isinstance(d, str) and d for d in datasets) or len(set(datasets)) != len(datasets):
        raise t.fail("datasets", f"must be a list of distinct dataset names, not {datasets!r}")
    t.used.add("datasets_intensity")
    per_dataset = value.get("datasets_intensity", {})
    if not isinstance(per_dataset, dict):
        raise t.fail("datasets_intensity", "must be a table of { dataset = { method = ... } }")
    datasets_intensity = {d: _parse_intensity(r, f"{where}.datasets_intensity.{d}") for d, r in per_dataset.items()}
    network_axes = t.choice("network_axes", NETWORK_AXES, "zyx")
    license_ = t.get("license", str, "")
    citation = t.get("citation", str, "")
    description = t.get("description", str, "")
    t.check_unknown()
    return ModelEntry(
        name=name,
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        sha256=sha,
        architecture=architecture,
        kwargs=dict(kwargs),
        spacing=spacing,
        orientation=orientation,
        interpolation=interpolation,
        intensity=intensity,
        n_classes=n_classes,
        liver_channel=liver_channel,
        decision=decision,
        labels=dict(labels),
        sliding_window=sliding,
        datasets=tuple(datasets),
        datasets_intensity=datasets_intensity,
        network_axes=network_axes,
        license=license_,
        citation=citation,
        description=description,
        base_dir=base_dir,
    )


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate a ``weights.toml`` (default: :func:`registry_path`).

    Raises :class:`ConfigError` with one line naming the file, the entry and the field for
    anything malformed (wrong type, unknown field, liver channel out of range, ...).
    """
    path = Path(path) if path is not None else registry_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"weights registry not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read weights registry {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    models_raw = data.get("models", {})
    if not isinstance(models_raw, dict):
        raise ConfigError(f"{path.name}: 'models' must be a table of [models.NAME] tables")
    base_dir = path.resolve().parent
    models = {name: _parse_entry(name, value, path.name, base_dir) for name, value in models_raw.items()}
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise ConfigError(f"{path.name}: unknown top-level key '{unknown[0]}'")
    default = data.get("default", next(iter(models), ""))
    if not isinstance(default, str) or (models and default not in models):
        raise ConfigError(f"{path.name}: default = {default!r} names no [models.NAME] entry")
    return Registry(default=default, models=models, path=path)


def get_entry(name: str | None = None, *, registry: Registry | None = None) -> ModelEntry:
    """The registry entry called ``name`` (the registry's default when ``None``).

    An unknown name raises :class:`WeightsError` listing the known names.
    """
    return (registry or load_registry()).get(name)


def _as_entry(entry: ModelEntry | str | None, registry: Registry | None = None) -> ModelEntry:
    return entry if isinstance(entry, ModelEntry) else get_entry(entry, registry=registry)


# --------------------------------------------------------------------------- hashes and pins


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in ``chunk_size`` chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def pins_path() -> Path:
    """The trust-on-first-use pin store: ``$LIVERCTL_HOME/pins.json``, else
    ``$XDG_CACHE_HOME/liverctl/pins.json``, else ``~/.cache/liverctl/pins.json``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "pins.json"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "liverctl" / "pins.json"


def _read_pins() -> dict[str, dict[str, str]]:
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

    pins = _read_pins()
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


def _pin_key(entry: ModelEntry, path: Path | None) -> str | None:
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
    return blob if _HEX64.match(blob) else None


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


def _check(entry: ModelEntry, path: Path) -> VerifyResult:
    """Hash ``path`` and compare it with every reference there is for it (no side effects)."""
    actual = sha256_file(path)
    announced = None if entry.local else _announced_sha256(path)
    if entry.sha256:
        expected, source = entry.sha256, "weights.toml"
    else:
        key = None if entry.local else _pin_key(entry, path)
        record = _read_pins().get(key) if key else None
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


def _accept(entry: ModelEntry, path: Path) -> str:
    """Check a freshly resolved cached file; evict it and raise on mismatch; record TOFU pins.

    Returns the file's sha256.
    """
    result = _check(entry, path)
    if result.status == "mismatch" and entry.local:  # a user's file: report, never delete
        raise WeightsError(
            f"sha256 mismatch for local weights '{entry.name}' ({path}): got {result.sha256}, "
            f"expected {result.expected} ({result.expected_from}); not using it"
        )
    if result.status == "mismatch":
        _evict(path)
        raise WeightsError(
            f"sha256 mismatch for weights '{entry.name}' ({entry.repo_id}/{entry.filename} @ {entry.revision}): "
            f"got {result.sha256}, expected {result.expected} ({result.expected_from}); "
            "the file was removed from the cache and will not be used "
            f"(run `liverctl weights download {entry.name}` to fetch it again)"
        )
    if result.status == "unrecorded" and not entry.local:
        key = _pin_key(entry, path)
        assert key is not None and result.sha256 is not None
        store = _record_pin(key, result.sha256, entry.name)
        warnings.warn(
            f"weights '{entry.name}' have no sha256 pin in weights.toml: trusting this first download "
            f"(trust-on-first-use) and recording sha256 {result.sha256} in {store}; "
            "every later use is checked against it",
            LiverctlWarning,
            stacklevel=3,
        )
    assert result.sha256 is not None
    return result.sha256


# --------------------------------------------------------------------------- downloads


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


def _offline_hint(entry: ModelEntry) -> str:
    return (
        f"run `liverctl weights download {entry.name}` on a machine with network access "
        "(and copy its Hugging Face cache, HF_HOME, here), or pass --weights PATH to a local copy of the file"
    )


def _describe(entry: ModelEntry) -> str:
    return f"weights '{entry.name}' ({entry.repo_id}, file {entry.filename}, revision {entry.revision})"


PARTIAL_SUFFIX = ".liverctl-partial"
"""Suffix of the partial blob a download grows in the Hugging Face cache until it is complete."""


def _resumable_fetch(entry: ModelEntry, progress: ProgressCallback | None) -> None:
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
    from filelock import FileLock
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.file_download import http_get, repo_folder_name
    from huggingface_hub.utils import build_hf_headers

    if constants.HF_HUB_OFFLINE:
        return
    if entry.revision_is_commit and isinstance(
        try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision), str
    ):
        return
    try:
        meta = get_hf_file_metadata(hf_hub_url(entry.repo_id, entry.filename, revision=entry.revision))
    except Exception:  # unreachable, not found, gated...: hf_hub_download decides (cache) and reports
        return
    if not meta.etag or meta.size is None or meta.location is None:
        return  # let hf_hub_download handle what it makes of such an answer
    folder = repo_folder_name(repo_id=entry.repo_id, repo_type="model")
    blobs = Path(constants.HF_HUB_CACHE) / folder / "blobs"
    lock = Path(constants.HF_HUB_CACHE) / ".locks" / folder / f"{meta.etag}.liverctl.lock"
    blob = blobs / meta.etag
    if blob.exists():
        return
    blobs.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    partial = blobs / f"{meta.etag}{PARTIAL_SUFFIX}"
    with FileLock(str(lock)):
        if blob.exists():
            return
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
                f"sha256 mismatch for {_describe(entry)}: got {actual}, expected {meta.etag} (the sha256 the Hub "
                "announced); the download was discarded and will not be used (run the command again)"
            )
        os.replace(partial, blob)


def _hub_download(entry: ModelEntry, *, force: bool, progress: ProgressCallback | None) -> Path:
    """``hf_hub_download`` with its exceptions turned into one-line :class:`WeightsError`."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hf_errors

    try:
        if not force:
            _resumable_fetch(entry, progress)
        path = hf_hub_download(
            repo_id=entry.repo_id,
            filename=entry.filename,
            revision=entry.revision,
            force_download=force,
            tqdm_class=_tqdm_adapter(progress, f"download {entry.name}"),
        )
    except hf_errors.OfflineModeIsEnabled:
        raise WeightsError(
            f"{_describe(entry)} are not in the local cache and HF_HUB_OFFLINE=1 forbids downloading: "
            + _offline_hint(entry)
        ) from None
    except hf_errors.LocalEntryNotFoundError:
        why = (
            "HF_HUB_OFFLINE=1 forbids downloading"
            if constants.HF_HUB_OFFLINE
            else f"the Hub ({constants.ENDPOINT}) cannot be reached"
        )
        raise WeightsError(
            f"{_describe(entry)} are not in the local cache and {why}: " + _offline_hint(entry)
        ) from None
    except hf_errors.RemoteEntryNotFoundError:
        raise WeightsError(
            f"{_describe(entry)}: the file does not exist in the repository at that revision; "
            "check filename and revision in the weights registry"
        ) from None
    except hf_errors.GatedRepoError:
        raise WeightsError(
            f"{_describe(entry)}: the repository is gated: accept its conditions on the Hub, then log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from None
    except hf_errors.RepositoryNotFoundError:
        raise WeightsError(
            f"{_describe(entry)}: repository not found on {constants.ENDPOINT} (or private: set HF_TOKEN)"
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise WeightsError(f"{_describe(entry)}: revision not found in the repository") from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise WeightsError(f"{_describe(entry)}: the Hub answered HTTP {status}: {str(exc).splitlines()[0]}") from None
    except (ConnectionError, TimeoutError) as exc:
        raise WeightsError(f"{_describe(entry)}: network error: {exc}; " + _offline_hint(entry)) from None
    except OSError as exc:
        # huggingface_hub's size check after a broken transfer ("Consistency check failed"), disk full...
        raise WeightsError(f"{_describe(entry)}: download failed: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0].startswith("httpx"):
            raise WeightsError(
                f"{_describe(entry)}: download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                + _offline_hint(entry)
            ) from None
        raise
    return Path(path)


def download(
    entry: ModelEntry | str | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> Path:
    """Fetch a model's weights file into the Hugging Face cache and check its sha256.

    ``entry`` is a :class:`ModelEntry` or a registry name (``None``: the default model).
    A cached file is reused (no transfer; for a commit revision, no network at all); a
    transfer that breaks off, or whose command is killed, resumes where it stopped (HTTP
    Range), within the call or at the next one (see :func:`_resumable_fetch`);
    ``force`` downloads again. Returns the path of the cached, verified file.

    Raises :class:`WeightsError` (one line) when the file cannot be had (offline and not
    cached, unknown repository/revision/file, network failure) or fails its sha256 check (the
    file is then removed from the cache). An unpinned entry's first download is recorded
    with a :class:`LiverctlWarning` (trust-on-first-use).
    """
    entry = _as_entry(entry, registry)
    path = _local_file(entry) if entry.local else _hub_download(entry, force=force, progress=progress)
    _accept(entry, path)
    return path


def _local_file(entry: ModelEntry) -> Path:
    path = entry.local_path
    if not path.is_file():
        raise WeightsError(f"weights '{entry.name}': local file {path} not found")
    return path


def _cached_path(entry: ModelEntry) -> Path | None:
    """The cached file of ``entry`` (a local entry: its file) without network access, or ``None``."""
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
    entry = _as_entry(name, registry)
    path = _cached_path(entry)
    if path is None:
        raise WeightsError(f"{_describe(entry)} are not downloaded yet: " + _offline_hint(entry))
    _accept(entry, path)
    return path


def verify(name: str | None = None, *, registry: Registry | None = None) -> VerifyResult:
    """Check a model's cached file against its pin, its trust-on-first-use record and the
    sha256 the Hub announced. Read-only: nothing is recorded or removed."""
    entry = _as_entry(name, registry)
    path = _cached_path(entry)
    if path is None:
        return VerifyResult(entry.name, "not-cached")
    return _check(entry, path)


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

    entry: ModelEntry
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
    pins = _read_pins()
    rows = []
    for entry in registry.models.values():
        cached = _cached_path(entry)
        if entry.sha256:
            pin = "sha256"
        elif entry.local:
            pin = "none"
        else:
            key = _pin_key(entry, cached)
            pin = "recorded" if key and key in pins else "tofu"
        rows.append(WeightsInfo(entry, entry.name == registry.default, cached, pin))
    return rows


# --------------------------------------------------------------------------- resolving and loading


@dataclass(frozen=True)
class ResolvedWeights:
    """The weights file a prediction uses: the registry entry that describes the network and
    preprocessing, the file, its sha256 and where it came from (``"hub"`` or ``"local"``)."""

    entry: ModelEntry
    path: Path
    sha256: str
    source: str

    @property
    def matches_registry_pin(self) -> bool | None:
        """For a local file: whether it is byte-identical to the registry's pinned file."""
        return (self.sha256 == self.entry.sha256) if self.entry.sha256 else None


def local_weights(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """Check a user-supplied weights file (``--weights PATH``) and return it with its sha256.

    No pin applies to a local file; its sha256 is computed so that it can be reported.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsError(f"weights file not found: {p}")
    if not p.is_file():
        raise WeightsError(f"weights path is not a file: {p}")
    if not p.name.endswith(WEIGHT_SUFFIXES):
        raise WeightsError(f"{p.name}: weights must be a {', '.join(WEIGHT_SUFFIXES)} file")
    return p, sha256_file(p)


def resolve_weights(
    model: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    registry: Registry | None = None,
) -> ResolvedWeights:
    """The weights file for ``predict``: ``weights`` (a local file) when given, otherwise the
    registry entry ``model`` (default model when ``None``) downloaded and verified.

    The entry always supplies architecture, preprocessing and label map; with a local file it
    only describes how to use it: no pin applies, except when the file is the very file a local
    entry names (``liverctl train``'s ``model.safetensors`` beside its ``weights.toml``), whose
    pinned sha256 it must then match.
    """
    entry = get_entry(model, registry=registry)
    if weights is not None:
        path, sha = local_weights(weights)
        if entry.local and entry.sha256 and path.resolve() == entry.local_path.resolve() and sha != entry.sha256:
            raise WeightsError(
                f"sha256 mismatch for local weights '{entry.name}' ({path}): got {sha}, "
                f"expected {entry.sha256} (weights.toml beside it); not using it"
            )
        return ResolvedWeights(entry, path, sha, "local")
    if entry.local:
        path = _local_file(entry)
        return ResolvedWeights(entry, path, _accept(entry, path), "local")
    path = _hub_download(entry, force=False, progress=progress)
    sha = _accept(entry, path)
    return ResolvedWeights(entry, path, sha, "hub")


def _unsupported_global(message: str) -> str | None:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def load_state_dict(path: str | os.PathLike[str], expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict safely: sha256 check first (when ``expected_sha256`` is given), then
    ``safetensors`` for ``.safetensors`` files and ``torch.load(weights_only=True)`` otherwise.

    A checkpoint dict that wraps the weights under ``"state_dict"``, ``"model"`` or
    ``"network"`` (MONAI ``CheckpointSaver``, Lightning) is unwrapped. A pickle that needs
    anything beyond tensors and plain containers is refused with a one-line
    :class:`WeightsError`; arbitrary code is never run.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    if expected_sha256:
        actual = sha256_file(p)
        if actual != expected_sha256.lower():
            raise WeightsError(f"sha256 mismatch for {p}: got {actual}, expected {expected_sha256}; not loading it")
    import torch

    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{p.name}: not a readable safetensors file ({' '.join(str(exc).split())})") from None
    else:
        import pickle

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            culprit = _unsupported_global(str(exc))
            if culprit is None and re.search(r"Unsupported operand|invalid load key", str(exc)):
                raise WeightsError(f"{p.name}: not a readable PyTorch weights file (corrupt or not a pickle)") from None
            what = f" ({culprit})" if culprit else ""
            raise WeightsError(
                f"{p.name}: refusing to load: the file holds Python objects other than tensors{what}, "
                "which torch.load(weights_only=True) does not execute; convert it to a plain state_dict or safetensors"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(f"{p.name}: not a readable PyTorch weights file ({first})") from None
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "network"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{p.name}: holds {type(obj).__name__}, not a state_dict (a dict of tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{p.name}: not a state_dict: entry {bad[0]!r} is not a tensor")
    return dict(obj)
