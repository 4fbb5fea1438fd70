"""``liverctl weights add``: pin an nnU-Net v2 results folder on the Hub as a ``weights.toml`` entry.

:func:`add_nnunet` lists the folder's files on the Hub at the given revision (resolved to its
commit), downloads the files inference reads through :mod:`liverctl.weights.nnunet_files` (each
checked against the sha256 the Hub announced for it, and against the listing's LFS sha256),
checks that liverctl can run the folder (:func:`liverctl.nnunet.plans.read_plans`: a 3D
configuration with a label named liver), computes each file's sha256 and writes the entry into
the registry **as text**: the file's comments and other entries stay as they are, the new
entry is appended (or, with ``force``, replaces the tables of the entry of the same name), and
the result is validated by :func:`~liverctl.weights.load_registry` before it is renamed over
the registry (temp + rename).

Example::

    from liverctl.weights.add import add_nnunet
    entry = add_nnunet("owner/repo", "main", "Dataset003_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres",
                       folds=[0, 1, 2, 3, 4], name="liver-nnunet")
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, WeightsError
from liverctl.progress import ProgressCallback
from liverctl.weights.nnunet_entry import FORMAT, NnUNetEntry, parse_nnunet_entry
from liverctl.weights.registry import HEX40, load_registry, registry_path
from liverctl.weights.transfer import HubFile, download_error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["add_nnunet", "default_name", "with_entry"]

_PLACEHOLDER = "0" * 64
_NOTE = "# added by `liverctl weights add`"


def default_name(repo_id: str, folder: str) -> str:
    """``<dataset>-<configuration>`` of a results folder path (the repository's name when the
    folder sits at the top of the repository)."""
    parts = folder.strip("/").split("/")
    base = parts[-2] if len(parts) > 1 else repo_id.split("/")[-1]
    return f"{base}-{parts[-1].split('__')[-1]}"


def _checked_args(
    name: str, repo_id: str, revision: str, folder: str, folds: Sequence[int | str] | None, checkpoint: str
) -> None:
    """Every argument through the registry's own schema, before anything is downloaded."""
    if not name or any(c in name for c in "\n\r\"'"):
        raise ConfigError(f"--name must be a non-empty name without quotes or newlines, not {name!r}")
    if not revision or any(c.isspace() for c in revision):
        raise ConfigError(f"--revision must be a commit, branch or tag, not {revision!r}")
    chosen = tuple(folds) if folds is not None else (0,)
    files = NnUNetEntry(name, repo_id, "0" * 40, folder, chosen, checkpoint).relative_files
    table = {
        "format": FORMAT,
        "repo_id": repo_id,
        "revision": revision if HEX40.match(revision) else "0" * 40,
        "folder": folder,
        "folds": list(chosen),
        "checkpoint": checkpoint,
        "sha256": {rel: _PLACEHOLDER for rel in files},
    }
    parse_nnunet_entry(name, table, "weights add")


def _listing(repo_id: str, revision: str, folder: str) -> tuple[str, dict[str, Any]]:
    """The commit ``revision`` resolves to, and the folder's files there ``{relative path: RepoFile}``."""
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.hf_api import RepoFile

    if constants.HF_HUB_OFFLINE:
        raise WeightsError("weights add lists the folder on the Hub, which HF_HUB_OFFLINE=1 forbids; unset it")
    probe = HubFile("(new entry)", repo_id, f"{folder}/plans.json", revision)
    try:
        commit = revision
        if not HEX40.match(revision):
            commit = get_hf_file_metadata(hf_hub_url(repo_id, probe.filename, revision=revision)).commit_hash
        tree = HfApi().list_repo_tree(repo_id, path_in_repo=folder, revision=commit, recursive=True)
        files = {f.path[len(folder) + 1 :]: f for f in tree if isinstance(f, RepoFile)}
    except Exception as exc:
        error = download_error(probe, exc)
        if error is None:
            raise
        raise error from None
    if not commit or not HEX40.match(commit):
        raise WeightsError(f"{repo_id}: the Hub did not say which commit revision {revision!r} is")
    return commit, files


def _folds(files: dict[str, Any], folds: Sequence[int | str] | None, checkpoint: str, where: str) -> list[int | str]:
    for rel in ("plans.json", "dataset.json"):
        if rel not in files:
            raise WeightsError(f"{where}: not an nnU-Net results folder ({rel} missing)")
    found = sorted(m.group(1) for rel in files if (m := re.fullmatch(rf"fold_(\d+|all)/{re.escape(checkpoint)}", rel)))
    numbers = sorted(int(f) for f in found if f.isdigit())
    available: list[int | str] = [*numbers, *(["all"] if "all" in found else [])]
    if folds is None:
        chosen = numbers or available
        if not chosen:
            raise WeightsError(f"{where}: no fold_N/{checkpoint} in the folder")
        return list(chosen)
    missing = [f for f in folds if f not in available]
    if missing:
        have = ", ".join(map(str, available)) or "none"
        raise WeightsError(f"{where}: fold {missing[0]} has no {checkpoint} (folds with it: {have})")
    return list(folds)


def _header_path(line: str) -> list[str] | None:
    """The key path of a TOML table header line (``[models."x".sha256]`` -> models, x, sha256)."""
    stripped = line.strip()
    if not stripped.startswith("["):
        return None
    try:
        node: Any = tomllib.loads(stripped)
    except tomllib.TOMLDecodeError:
        return None
    path = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        path.append(key)
        if isinstance(node, list):
            node = node[-1] if node else {}
    return path


def with_entry(text: str, name: str, block: str, *, replace_existing: bool) -> str:
    """``text`` (a registry) with the tables of ``models.<name>`` replaced by ``block``, or
    ``block`` appended; every other line (comments, entries) kept as it is."""
    lines = text.splitlines(keepends=True)
    keep, inside, removed = [], False, False
    for line in lines:
        path = _header_path(line)
        if path is not None:
            entering = path[:2] == ["models", name] and not inside
            inside = path[:2] == ["models", name]
            removed = removed or inside
            if entering and keep and keep[-1][0].startswith(_NOTE):  # the note of an earlier `weights add`
                keep.pop()
            if not inside:  # comments just above the next table belong to it
                tail = []
                while keep and keep[-1][1] and (not keep[-1][0].strip() or keep[-1][0].lstrip().startswith("#")):
                    tail.append((keep.pop()[0], False))
                keep += reversed(tail)
        keep.append((line, inside))
    if removed and not replace_existing:  # pragma: no cover - the caller checks first
        raise ConfigError(f"models.{name} already exists")
    body = "".join(line for line, inside in keep if not inside).rstrip("\n")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    note = f"{_NOTE} on {stamp}\n"
    return (body + "\n\n" if body else "") + note + block


def add_nnunet(
    repo_id: str,
    revision: str,
    folder: str,
    *,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    name: str | None = None,
    force: bool = False,
    registry: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
) -> NnUNetEntry:
    """Pin an nnU-Net v2 results folder of a Hub repository as the registry entry ``name``.

    Args:
        repo_id: the Hub repository.
        revision: a commit, branch or tag (pinned as the commit it resolves to).
        folder: the ``<trainer>__<plans>__<configuration>`` folder inside the repository.
        folds: the folds to use (default: every ``fold_N`` holding ``checkpoint``).
        checkpoint: the checkpoint file name of each fold.
        name: the entry's name (default: :func:`default_name`).
        force: replace an entry of the same name (otherwise refused, before any download).
        registry: the ``weights.toml`` to write (default: :func:`~liverctl.weights.registry_path`);
            created (with ``default`` = this entry) when it does not exist.

    Returns the entry as written. Raises :class:`ConfigError` / :class:`WeightsError` (one line).
    """
    folder = folder.strip("/")
    name = name or default_name(repo_id, folder)
    _checked_args(name, repo_id, revision, folder, folds, checkpoint)
    path = Path(registry).expanduser() if registry is not None else registry_path()
    folder_of_registry = path.parent
    while not folder_of_registry.exists() and folder_of_registry != folder_of_registry.parent:
        folder_of_registry = folder_of_registry.parent  # atomic_path creates the missing folders
    if not os.access(folder_of_registry, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(
            f"{path}: cannot write the registry there; pass --registry FILE (or set LIVERCTL_WEIGHTS_TOML)"
        )
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is not None and name in load_registry(path).models and not force:
        raise ConfigError(f"{path}: models.{name} already exists; pass --force to replace it, or --name another name")
    commit, listing = _listing(repo_id, revision, folder)
    where = f"{repo_id}@{commit[:12]}/{folder}"
    chosen = _folds(listing, folds, checkpoint, where)
    entry = NnUNetEntry(name, repo_id, commit, folder, tuple(chosen), checkpoint)
    from liverctl.weights.nnunet_files import fetch_files

    fetched = fetch_files(entry, progress=progress, pinned=False)
    for rel, (cached, sha) in fetched.items():
        lfs = getattr(listing[rel], "lfs", None)
        if lfs is not None and getattr(lfs, "sha256", sha) != sha:
            from liverctl.weights.pins import _evict

            _evict(cached)
            raise WeightsError(f"{where}/{rel}: downloaded sha256 {sha} differs from the Hub's listing {lfs.sha256}")
    from liverctl.nnunet.plans import read_plans

    read_plans(fetched["plans.json"][0].parent)  # refuse a folder liverctl cannot run, before writing
    entry = replace(entry, sha256={rel: sha for rel, (_, sha) in fetched.items()})
    new_text = with_entry(text or f'default = "{name}"\n', name, entry.to_toml(), replace_existing=force)
    from liverctl.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(new_text, encoding="utf-8")
        written = load_registry(tmp).get(name)  # the file as it will be: valid, with this entry
    return written  # type: ignore[return-value]
