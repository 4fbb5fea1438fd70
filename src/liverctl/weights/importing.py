"""``liverctl weights import``: register models on a machine without the network.

:func:`import_weights` takes

* an archive written by ``liverctl weights pack`` (:mod:`liverctl.weights.archive`), zipped or
  unpacked into a folder: its models under their own names;
* an nnU-Net v2 export zip (what ``nnUNetv2_export_model_to_zip`` writes, the way
  TotalSegmentator releases its models) or a local nnU-Net results folder
  (``<trainer>__<plans>__<configuration>/`` holding ``plans.json``);
* a plain weights file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``) with its
  recipe: a ``weights.toml`` naming the network and preprocessing (``--recipe``, else the
  ``<file>.toml`` or ``weights.toml`` beside the file, as ``liverctl train`` writes them);

and copies the files into the store of imported weights (:func:`liverctl.weights.home.store_dir`,
under ``$LIVERCTL_HOME``) as local, sha256-pinned registry entries, which
:func:`liverctl.weights.load_registry` then offers beside the registry's own. Every file is
hashed at import (and against the archive's pins) and checked again at every load.

Nothing is registered unless everything passes: the files are staged in a temporary folder
inside the store, verified, then renamed into place, and the store's ``weights.toml`` is
written last (temp + rename). A failure leaves the store as it was.

Example::

    from liverctl.weights.importing import import_weights
    entries = import_weights("liver-weights.zip")         # on the offline machine
    entries = import_weights("Dataset003_Liver.zip", name="liver-nnunet")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

from liverctl.errors import ConfigError, WeightsError
from liverctl.weights.archive import MANIFEST, REGISTRY_FILE, archive_entries, extract_zip, read_manifest, slug
from liverctl.weights.home import store_dir, store_registry_path
from liverctl.weights.nnunet_entry import NnUNetEntry
from liverctl.weights.pins import sha256_file
from liverctl.weights.registry import WEIGHT_SUFFIXES, Entry, ModelEntry, load_registry, save_registry

__all__ = ["import_weights"]

_CHECKPOINT = "checkpoint_final.pth"
_NOTHING = "nothing was imported"


def _check_name(name: str | None) -> None:
    if name is not None and (not name.strip() or any(c in name for c in "\n\r\"'")):
        raise ConfigError(f"--name must be a non-empty name without quotes or newlines, not {name!r}")


def _kind(src: Path, recipe: str | os.PathLike[str] | None) -> str:
    """What ``src`` is: ``"archive-dir"``, ``"results"``, ``"zip"`` or ``"file"`` (checked before anything is written)."""
    if not src.exists():
        raise WeightsError(f"{src}: not found; {_NOTHING}")
    if src.is_dir():
        kind = "archive-dir" if (src / MANIFEST).is_file() else "results" if (src / "plans.json").is_file() else None
        if kind is None:
            raise WeightsError(
                f"{src}: not an nnU-Net results folder (plans.json missing) nor an unpacked liverctl weights "
                f"archive ({MANIFEST} missing); {_NOTHING}"
            )
    elif src.name.endswith(WEIGHT_SUFFIXES):  # before the zip test: torch's own files are zips
        kind = "file"
    elif src.suffix.lower() == ".zip" or zipfile.is_zipfile(src):
        kind = "zip"
    else:
        raise WeightsError(
            f"{src}: not a liverctl weights archive, an nnU-Net export zip, a results folder or a weights file "
            f"({', '.join(WEIGHT_SUFFIXES)}); {_NOTHING}"
        )
    if recipe is not None and kind != "file":
        raise ConfigError("--recipe describes a plain weights file; an archive or nnU-Net folder carries its own")
    return kind


def _check_free(names: Sequence[str]) -> None:
    """Refuse a name the registry or the store already uses (before any hashing or copying)."""
    registry = load_registry()
    for name in names:
        if name in registry.models:
            raise ConfigError(
                f"model name '{name}' is already taken (see `liverctl weights list`); pass --name another name; "
                f"{_NOTHING}"
            )


@contextlib.contextmanager
def _staging(store: Path) -> Iterator[Path]:
    """A temporary folder inside the store (same file system: its folders are renamed into place),
    removed afterwards whatever happens; imports into one store run one at a time."""
    from filelock import FileLock

    store.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store / ".import.lock")):
        stage = Path(tempfile.mkdtemp(prefix=".import-", dir=store))
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def import_weights(
    source: str | os.PathLike[str], *, name: str | None = None, recipe: str | os.PathLike[str] | None = None
) -> list[Entry]:
    """Register the models of ``source`` in the store of imported weights; returns their entries
    as registered (local entries, every file sha256-pinned).

    Args:
        source: a ``liverctl weights pack`` archive (zip or unpacked folder), an nnU-Net export
            zip, an nnU-Net results folder, or a weights file.
        name: the name to register the model under (one model only; default: its own name,
            ``<dataset>-<configuration>`` for nnU-Net, the recipe's entry name for a file).
        recipe: for a weights file: the ``weights.toml`` whose default entry describes it.

    Raises :class:`ConfigError` / :class:`WeightsError` (one line): a source of no known kind,
    a truncated or corrupt zip, a member escaping the target folder, a results folder without
    ``plans.json``, a name already taken, a file whose sha256 differs from its pin. Nothing is
    registered then, and nothing is left in the store.
    """
    src = Path(source).expanduser()
    _check_name(name)
    kind = _kind(src, recipe)
    with _staging(store_dir()) as stage:
        if kind == "zip":
            unpacked = extract_zip(src, stage / "unpacked")  # a truncated or escaping zip stops here
            staged = _stage_unpacked(unpacked, stage, name, str(src))
        elif kind == "archive-dir":
            staged = _stage_archive(src, name, str(src), stage)
        elif kind == "results":
            staged = [_stage_results(src, stage, name, str(src))]
        else:
            staged = [_stage_file(src, stage, name, recipe)]
        return _register(staged, store_dir())


def _stage_unpacked(unpacked: Path, stage: Path, name: str | None, where: str) -> list[Entry]:
    if (unpacked / MANIFEST).is_file():
        return _stage_archive(unpacked, name, where)
    folders = sorted(p.parent for p in unpacked.rglob("plans.json"))
    if not folders:
        raise WeightsError(
            f"{where}: neither a liverctl weights archive ({MANIFEST} missing) nor an nnU-Net export "
            f"(no results folder with plans.json in it); {_NOTHING}"
        )
    if len(folders) > 1:
        full = [f for f in folders if f.name.endswith("__3d_fullres")]
        if len(full) != 1:
            names = ", ".join(str(f.relative_to(unpacked)) for f in folders)
            raise WeightsError(
                f"{where}: holds several results folders ({names}); export one configuration; {_NOTHING}"
            )
        folders = full
    return [_stage_results(folders[0], stage, name, where)]


# --------------------------------------------------------------------------- liverctl archives


def _relative(path: str, where: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2 or "\\" in path:
        raise WeightsError(
            f"{where}: the archive names {path!r}, which is not a file inside a model's folder; {_NOTHING}"
        )
    return rel


def _entry_files(entry: Entry) -> dict[str, str]:
    """``{path relative to the registry: pinned sha256}`` of an archive's entry."""
    if isinstance(entry, NnUNetEntry):
        return {f"{entry.folder}/{rel}": sha for rel, sha in entry.sha256.items()}
    return {entry.filename: entry.sha256}


def _stage_archive(root: Path, name: str | None, where: str, stage: Path | None = None) -> list[Entry]:
    """The entries of an unpacked archive, every file checked against the manifest's pins and
    every entry's pins against the manifest (an unpacked folder given by the user is copied into
    ``stage`` first; the user's folder is never moved)."""
    pins = read_manifest(root, where)
    entries = archive_entries(root, where)
    if name is not None and len(entries) != 1:
        raise ConfigError(
            f"--name renames one model; {where} holds {len(entries)}: {', '.join(e.name for e in entries)}"
        )
    entries = [replace(entries[0], name=name)] if name is not None else entries
    _check_free([e.name for e in entries])
    for arc in pins:
        _relative(arc, where)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST, REGISTRY_FILE}
    if extra := sorted(present - set(pins)):
        raise WeightsError(f"{where}: holds {extra[0]}, which its manifest does not list; {_NOTHING}")
    if missing := sorted(set(pins) - present):
        raise WeightsError(f"{where}: is missing {missing[0]}, which its manifest lists; {_NOTHING}")
    for entry in entries:
        for rel, sha in _entry_files(entry).items():
            _relative(rel, where)
            if pins.get(rel) != sha:
                raise WeightsError(
                    f"{where}: model '{entry.name}' pins {rel} to a sha256 the manifest does not; {_NOTHING}"
                )
    if stage is not None:  # the user's unpacked folder: copy, then hash the copies
        root = Path(shutil.copytree(root, stage / "unpacked", symlinks=False))
        entries = [replace(e, base_dir=root) for e in entries]
    for arc, sha in pins.items():
        actual = sha256_file(root / arc)
        if actual != sha:
            raise WeightsError(
                f"{where}: {arc} has sha256 {actual}, not {sha} as the archive pins it: the archive was altered "
                f"or damaged; {_NOTHING}"
            )
    return entries


# --------------------------------------------------------------------------- nnU-Net folders


def _copy_checked(src: Path, dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return sha256_file(dest)


def _stage_results(folder: Path, stage: Path, name: str | None, where: str) -> Entry:
    """An nnU-Net results folder copied (the files inference reads) into ``stage``, pinned."""
    from liverctl.nnunet.plans import read_plans
    from liverctl.weights.add import _folds

    files = {p.relative_to(folder).as_posix(): None for p in folder.rglob("*") if p.is_file()}
    folds = _folds(files, None, _CHECKPOINT, f"{where}: {folder.name}")
    config = folder.name if len(folder.name.split("__")) == 3 else "nnUNetTrainer__nnUNetPlans__3d_fullres"
    model = name or f"{folder.parent.name}-{config.split('__')[-1]}"
    _check_name(model)
    _check_free([model])
    entry = NnUNetEntry(model, "", "", f"{slug(model)}/{config}", tuple(folds), _CHECKPOINT)
    models = stage / "models"
    target = models / entry.folder
    pins = {rel: _copy_checked(folder / rel, target / rel) for rel in entry.relative_files}
    read_plans(target)  # a folder liverctl cannot run is refused before it is registered
    return replace(entry, sha256=pins, description=f"imported from {where}", base_dir=models)


# --------------------------------------------------------------------------- single files


def _recipe_of(src: Path, recipe: str | os.PathLike[str] | None) -> Path:
    if recipe is not None:
        return Path(recipe).expanduser()
    for candidate in (src.with_name(src.name + ".toml"), src.with_name("weights.toml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{src}: a weights file needs its recipe (which network reads it, with which preprocessing): pass "
        f"--recipe FILE, a weights.toml whose default entry describes it; {_NOTHING}"
    )


def _stage_file(src: Path, stage: Path, name: str | None, recipe: str | os.PathLike[str] | None) -> Entry:
    """A weights file and its recipe's entry, copied into ``stage`` and pinned."""
    from liverctl.weights.resolve import load_state_dict

    recipe_path = _recipe_of(src, recipe)
    entry = load_registry(recipe_path).get()
    if not isinstance(entry, ModelEntry):
        raise ConfigError(f"{recipe_path}: its default entry is an nnU-Net folder, not the recipe of one weights file")
    model = name or entry.name
    _check_free([model])
    source_sha = sha256_file(src)
    if entry.sha256 and entry.sha256 != source_sha:
        raise WeightsError(
            f"{src}: sha256 {source_sha} differs from the pin of its recipe {recipe_path} ({entry.sha256}); {_NOTHING}"
        )
    models = stage / "models"
    rel = f"{slug(model)}/{src.name}"
    sha = _copy_checked(src, models / rel)
    if sha != source_sha:
        raise WeightsError(f"{src}: the file changed while it was copied; {_NOTHING}")
    load_state_dict(models / rel, expected_sha256=sha)  # a file torch cannot read safely is refused here
    return replace(entry, name=model, repo_id="", revision="", filename=rel, sha256=sha, base_dir=models)


# --------------------------------------------------------------------------- the store


def _unique_folder(store: Path, base: str) -> str:
    candidate, n = base, 1
    while (store / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _register(staged: list[Entry], store: Path) -> list[Entry]:
    """Rename each staged model's folder into the store, then write the store's registry (last,
    atomically); on any failure the renamed folders are removed again."""
    _check_free([e.name for e in staged])
    registry_file = store_registry_path()
    existing = list(load_registry(registry_file).models.values()) if registry_file.is_file() else []
    default = load_registry(registry_file).default if existing else staged[0].name
    moved: list[Path] = []
    final: list[Entry] = []
    try:
        for entry in staged:
            is_nnunet = isinstance(entry, NnUNetEntry)
            rel = PurePosixPath(entry.folder if is_nnunet else entry.filename)  # type: ignore[union-attr]
            assert entry.base_dir is not None
            folder = _unique_folder(store, slug(entry.name))
            os.rename(entry.base_dir / rel.parts[0], store / folder)
            moved.append(store / folder)
            new_rel = "/".join((folder, *rel.parts[1:]))
            final.append(
                replace(entry, base_dir=store, **({"folder": new_rel} if is_nnunet else {"filename": new_rel}))
            )
        comment = "liverctl's store of imported weights, written by `liverctl weights import` (docs/offline.md)"
        save_registry(registry_file, [*existing, *final], default, comment=comment)
    except BaseException:
        for folder_path in moved:
            shutil.rmtree(folder_path, ignore_errors=True)
        raise
    written = load_registry(registry_file)
    return [written.get(e.name) for e in final]
