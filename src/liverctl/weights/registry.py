"""The ``weights.toml`` registry: its entries, read and written by one schema.

A *registry* (``weights.toml``) names every model liverctl can use: where its weights live
on the Hugging Face Hub (repository, file, revision) or beside the registry (a local entry,
as ``liverctl train`` exports them), the sha256 the file must have, the network that reads
them and the preprocessing that network expects. :func:`load_registry` reads and validates
one (a :class:`Registry`); :func:`get_entry` picks one :class:`ModelEntry`;
:func:`format_registry` / :func:`save_registry` write entries back in the same schema
(the field list of :meth:`ModelEntry.to_dict`), which :func:`load_registry` reads back as the
same entries.

Axis order of the fields: ``spacing`` and ``sliding_window.roi`` are in **(x, y, z)** (the
array axes i, j, k, like :attr:`liverctl.io.Geometry.spacing` and the CLI options); liverctl's
arrays and the inference engine are in (z, y, x). :class:`WindowRecipe` converts once
(:meth:`WindowRecipe.from_zyx`, :attr:`WindowRecipe.roi_zyx`). ``network_axes`` says which
array order the network itself was trained on (``"zyx"``, or ``"xyz"`` for MONAI bundles).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, WeightsError
from liverctl.weights.home import store_registry_path
from liverctl.weights.nnunet_entry import FORMAT, NnUNetEntry, parse_nnunet_entry
from liverctl.weights.recipes import (
    INTENSITY_METHODS,
    INTERPOLATIONS,
    PADDING_MODES,
    WINDOW_MODES,
    IntensityRecipe,
    WindowRecipe,
    parse_intensity,
    parse_sliding_window,
)
from liverctl.weights.tables import Table, toml_key, toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DECISIONS",
    "INTENSITY_METHODS",
    "INTERPOLATIONS",
    "PADDING_MODES",
    "REGISTRY_ENV",
    "WEIGHT_SUFFIXES",
    "WINDOW_MODES",
    "Entry",
    "IntensityRecipe",
    "ModelEntry",
    "NnUNetEntry",
    "Registry",
    "WindowRecipe",
    "as_entry",
    "format_registry",
    "get_entry",
    "load_registry",
    "registry_path",
    "save_registry",
]

#: Environment variable naming a registry file that replaces the shipped ``weights.toml``.
REGISTRY_ENV = "LIVERCTL_WEIGHTS_TOML"

#: How output channels become a liver mask (see :class:`ModelEntry`).
DECISIONS = ("argmax", "sigmoid")
NETWORK_AXES: tuple[str, ...] = ("zyx", "xyz")
GRIDS: tuple[str, ...] = ("liverctl", "monai")
"""Array axis order the network was trained on: liverctl's (z, y, x), or MONAI's (x, y, z)."""
#: File suffixes :func:`load_state_dict` reads (``.safetensors`` via safetensors, the rest via torch).
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry: where its weights are and how to use them.

    ``repo_id``/``filename``/``revision`` locate the file on the Hub; a *local* entry
    (``repo_id = ""``) names a file beside the registry instead (see :attr:`local_path`).
    ``datasets`` names the dataset branches of a multi-dataset network (in branch order) and
    ``datasets_intensity`` their own intensity recipes.
    ``spacing`` is in mm along the array axes i, j, k = **(x, y, z)** (as
    :attr:`liverctl.io.Geometry.spacing`) after reorientation to ``orientation``
    (MONAI/NiBabel axis codes, e.g. ``"RAS"``); ``sliding_window.roi`` is in the same order
    (:class:`WindowRecipe`). ``network_axes`` is the array order the network was trained on. ``decision`` is ``"argmax"`` (liver is where
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
    sliding_window: WindowRecipe
    datasets: tuple[str, ...] = ()
    datasets_intensity: dict[str, IntensityRecipe] = field(default_factory=dict)
    network_axes: str = "zyx"
    grid: str = "liverctl"
    """How a scan is brought to ``spacing`` and back: ``"monai"`` = MONAI's ``Spacingd`` grid
    (first voxel kept, border padding) and ``Invertd``'s nearest-neighbour way back
    (:mod:`liverctl.predict.monai_grid`), as MONAI bundles do; ``"liverctl"`` = the centred grid of
    :func:`liverctl.spatial.resample`, as ``liverctl preprocess`` trains."""
    license: str = ""
    citation: str = ""
    description: str = ""
    base_dir: Path | None = None
    registry_file: Path | None = field(default=None, compare=False, repr=False)
    """The ``weights.toml`` this entry was read from (named in messages about its pin)."""

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
        return bool(HEX40.match(self.revision))

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
            "spacing": None if self.spacing is None else list(self.spacing),
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
            "grid": self.grid,
            "license": self.license,
            "citation": self.citation,
            "description": self.description,
        }


Entry = ModelEntry | NnUNetEntry
"""A registry entry: a single weights file with its recipe, or an nnU-Net v2 results folder."""


@dataclass(frozen=True)
class Registry:
    """A parsed, validated ``weights.toml``: the ``default`` model name and every entry."""

    default: str
    models: dict[str, Entry]
    path: Path | None = None

    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: str | None = None) -> Entry:
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
    return Path(__file__).resolve().parents[3] / "weights.toml"


def _parse_location(t: Table) -> dict[str, Any]:
    """``repo_id``, ``filename``, ``revision`` and ``sha256``: where the file is, what it must hash to."""
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
    if sha and not HEX64.match(sha):
        raise t.fail("sha256", f'must be 64 hex digits or "" (trust-on-first-use), not {sha!r}')
    return {"repo_id": repo_id, "filename": filename, "revision": revision, "sha256": sha}


def _parse_network(t: Table) -> dict[str, Any]:
    """``architecture`` and ``kwargs``; the model grid: ``spacing``, ``orientation``, ``interpolation``."""
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
    return {
        "architecture": architecture,
        "kwargs": dict(kwargs),
        "spacing": spacing,
        "orientation": orientation,
        "interpolation": interpolation,
    }


def _parse_outputs(t: Table) -> dict[str, Any]:
    """``n_classes``, ``liver_channel``, ``decision`` and ``labels``: how outputs become a mask."""
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
    return {"n_classes": n_classes, "liver_channel": liver_channel, "decision": decision, "labels": dict(labels)}


def _parse_datasets(t: Table) -> dict[str, Any]:
    """``datasets`` (DCM branch names) and their own ``datasets_intensity`` recipes."""
    datasets = t.get("datasets", list, [])
    if not all(isinstance(d, str) and d for d in datasets) or len(set(datasets)) != len(datasets):
        raise t.fail("datasets", f"must be a list of distinct dataset names, not {datasets!r}")
    t.used.add("datasets_intensity")
    per_dataset = t.data.get("datasets_intensity", {})
    if not isinstance(per_dataset, dict):
        raise t.fail("datasets_intensity", "must be a table of { dataset = { method = ... } }")
    recipes = {d: parse_intensity(r, f"{t.where}.datasets_intensity.{d}") for d, r in per_dataset.items()}
    return {"datasets": tuple(datasets), "datasets_intensity": recipes}


def _parse_entry(
    name: str, value: Any, source: str, base_dir: Path | None = None, registry_file: Path | None = None
) -> Entry:
    """One ``[models.NAME]`` table as a :class:`ModelEntry`, or an :class:`NnUNetEntry` for
    ``format = "nnunetv2"`` (fields checked in file order)."""
    where = f"{source}: models.{name}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table")
    fmt = value.get("format")
    if fmt == FORMAT:
        return dataclasses.replace(parse_nnunet_entry(name, value, where, base_dir), registry_file=registry_file)
    if fmt is not None:
        raise ConfigError(f'{where}.format: must be "{FORMAT}" (an nnU-Net v2 results folder) or left out, not {fmt!r}')
    t = Table(value, where)
    fields = {**_parse_location(t), **_parse_network(t)}
    t.used.add("intensity")
    if "intensity" not in value:
        raise ConfigError(f"{where}: missing field 'intensity'")
    fields["intensity"] = parse_intensity(value["intensity"], f"{where}.intensity")
    fields.update(_parse_outputs(t))
    t.used.add("sliding_window")
    window = value.get("sliding_window", {"roi": [96, 96, 96]})
    fields["sliding_window"] = parse_sliding_window(window, f"{where}.sliding_window")
    fields.update(_parse_datasets(t))
    fields["network_axes"] = t.choice("network_axes", NETWORK_AXES, "zyx")
    fields["grid"] = t.choice("grid", GRIDS, "liverctl")
    for key in ("license", "citation", "description"):
        fields[key] = t.get(key, str, "")
    t.check_unknown()
    return ModelEntry(name=name, base_dir=base_dir, registry_file=registry_file, **fields)


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read and validate a ``weights.toml`` (default: :func:`registry_path`, joined by the
    entries of the store of imported weights, :func:`liverctl.weights.home.store_registry_path`,
    whose names the registry does not use).

    Raises :class:`ConfigError` with one line naming the file, the entry and the field for
    anything malformed (wrong type, unknown field, liver channel out of range, ...).
    """
    if path is not None:
        return _read_registry(Path(path))
    registry = _read_registry(registry_path())
    store = store_registry_path()
    if not store.is_file():
        return registry
    imported = _read_registry(store)
    models = {**registry.models, **{n: e for n, e in imported.models.items() if n not in registry.models}}
    return Registry(default=registry.default or imported.default, models=models, path=registry.path)


def _read_registry(path: Path) -> Registry:
    """One ``weights.toml``, validated (see :func:`load_registry`)."""
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
    models = {
        name: _parse_entry(name, value, path.name, base_dir, base_dir / path.name) for name, value in models_raw.items()
    }
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise ConfigError(f"{path.name}: unknown top-level key '{unknown[0]}'")
    default = data.get("default", next(iter(models), ""))
    if not isinstance(default, str) or (models and default not in models):
        raise ConfigError(f"{path.name}: default = {default!r} names no [models.NAME] entry")
    return Registry(default=default, models=models, path=path)


def get_entry(name: str | None = None, *, registry: Registry | None = None) -> Entry:
    """The registry entry called ``name`` (the registry's default when ``None``).

    An unknown name raises :class:`WeightsError` listing the known names.
    """
    return (registry or load_registry()).get(name)


def as_entry(entry: Entry | str | None, registry: Registry | None = None) -> Entry:
    """``entry`` itself, or the registry entry it names (``None``: the default)."""
    return entry if isinstance(entry, ModelEntry | NnUNetEntry) else get_entry(entry, registry=registry)


_SUBTABLES = ("kwargs", "sliding_window", "datasets_intensity")


def entry_toml(entry: Entry) -> str:
    """The ``[models.NAME]`` tables of ``entry``, which :func:`load_registry` reads back as it.

    Fields without a value (``None``) are left out; so is an empty ``datasets_intensity``.
    """
    if isinstance(entry, NnUNetEntry):
        return entry.to_toml()
    fields = entry.to_dict()
    name = toml_key(fields.pop("name"))
    lines = [f"[models.{name}]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in fields.items() if k not in _SUBTABLES and v is not None]
    for key in _SUBTABLES:
        table = {k: v for k, v in fields[key].items() if v is not None}
        if table or key != "datasets_intensity":
            lines += ["", f"[models.{name}.{key}]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def format_registry(entries: Sequence[Entry], default: str | None = None, *, comment: str = "") -> str:
    """A ``weights.toml`` text holding ``entries`` (``default``: the first entry's name)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append(f"default = {toml_value(default if default is not None else entries[0].name)}")
    return "\n".join(lines) + "\n" + "".join("\n" + entry_toml(e) for e in entries)


def save_registry(
    path: str | os.PathLike[str], entries: Sequence[Entry], default: str | None = None, *, comment: str = ""
) -> Path:
    """Write :func:`format_registry` atomically to ``path``; returns the path."""
    from liverctl.io import write_text_atomic

    return write_text_atomic(Path(path), format_registry(entries, default, comment=comment))
