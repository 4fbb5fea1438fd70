"""``weights.toml`` entries of ``format = "nnunetv2"``: an nnU-Net v2 results folder on the Hub.

An entry names a results folder inside a Hugging Face Hub repository, pinned to a commit, with
the sha256 of every file inference reads::

    [models.liver-nnunet]
    format = "nnunetv2"
    repo_id = "owner/name"
    revision = "<40-hex commit>"
    folder = "Dataset003_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres"
    folds = [0, 1, 2, 3, 4]
    checkpoint = "checkpoint_final.pth"
    description = "..."

    [models.liver-nnunet.sha256]
    "plans.json" = "<64 hex>"
    "dataset.json" = "<64 hex>"
    "fold_0/checkpoint_final.pth" = "<64 hex>"
    ...

:func:`parse_nnunet_entry` validates such a table for :func:`liverctl.weights.load_registry`
(one-line :class:`~liverctl.errors.ConfigError` naming the entry and the field, through the same
:class:`~liverctl.weights.tables.Table` as the other entries); :meth:`NnUNetEntry.to_toml` writes
it back (what ``liverctl weights add`` appends). Preprocessing, network and labels come from the
folder's own ``plans.json`` and ``dataset.json``, so an entry carries none of the recipe fields a
MONAI entry needs. Unlike those, nothing is trusted on first use: every file is pinned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.weights.tables import Table, toml_key, toml_value

__all__ = ["FORMAT", "NnUNetEntry", "parse_nnunet_entry"]

FORMAT = "nnunetv2"
"""The ``format`` value of an nnU-Net v2 entry."""

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
_FOLDER = re.compile(r"^([\w.-]+/)*[\w.-]+__[\w.-]+__[\w.-]+$")
_CHECKPOINT = re.compile(r"^[\w.-]+\.pth$")


@dataclass(frozen=True)
class NnUNetEntry:
    """A validated ``format = "nnunetv2"`` registry entry (see the module docs).

    ``sha256`` maps each of :attr:`relative_files` (paths relative to ``folder``) to its digest.
    A *local* entry (``repo_id = ""``, as ``liverctl weights import`` writes them) names a folder
    on disk relative to its registry's folder (``base_dir``) instead of one in a Hub repository.
    """

    name: str
    repo_id: str
    revision: str
    folder: str
    folds: tuple[int | str, ...]
    checkpoint: str = "checkpoint_final.pth"
    sha256: dict[str, str] = field(default_factory=dict)
    description: str = ""
    license: str = ""
    citation: str = ""
    base_dir: Path | None = field(default=None, compare=False)
    registry_file: Path | None = field(default=None, compare=False, repr=False)
    """The ``weights.toml`` this entry was read from (named in messages about its pins)."""

    format = FORMAT
    architecture = FORMAT

    @property
    def local(self) -> bool:
        """A results folder on disk (``repo_id = ""``), not one on the Hub."""
        return not self.repo_id

    @property
    def revision_is_commit(self) -> bool:
        return not self.local

    @property
    def local_folder(self) -> Path:
        """For a local entry: the results folder (``folder`` resolved against the registry's folder)."""
        path = Path(self.folder).expanduser()
        return path if path.is_absolute() or self.base_dir is None else self.base_dir / path

    @property
    def relative_files(self) -> list[str]:
        """Files of the results folder inference reads, relative to it (the ``sha256`` keys)."""
        return ["plans.json", "dataset.json", *[f"fold_{f}/{self.checkpoint}" for f in self.folds]]

    @property
    def files(self) -> list[str]:
        """The same files as paths inside the repository (for ``hf_hub_download``)."""
        return [f"{self.folder}/{rel}" for rel in self.relative_files]

    @property
    def pinned(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the order :meth:`to_toml` writes)."""
        return {
            "name": self.name,
            "format": FORMAT,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "folder": self.folder,
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "description": self.description,
            "license": self.license,
            "citation": self.citation,
            "sha256": dict(self.sha256),
        }

    def to_toml(self) -> str:
        """The ``[models.NAME]`` tables of this entry, which :func:`parse_nnunet_entry` reads back as it."""
        fields = self.to_dict()
        key = toml_key(fields.pop("name"))
        pins = fields.pop("sha256")
        lines = [f"[models.{key}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in fields.items() if v != "" or k in ("description", "repo_id")]
        lines += ["", f"[models.{key}.sha256]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in pins.items())]
        return "\n".join(lines) + "\n"


def _folds(t: Table) -> tuple[int | str, ...]:
    folds = t.get("folds", list, [0, 1, 2, 3, 4])
    ok = bool(folds) and len({str(f) for f in folds}) == len(folds)
    if not ok or not all((isinstance(f, int) and not isinstance(f, bool) and f >= 0) or f == "all" for f in folds):
        raise t.fail("folds", f'must be a non-empty list of distinct fold numbers (or "all"), not {folds!r}')
    return tuple(folds)


def _pins(t: Table, relative_files: list[str]) -> dict[str, str]:
    sha = t.get("sha256", dict, what='a table of { "plans.json" = "<64 hex>", ... }')
    pins = {}
    for rel in relative_files:
        value = sha.get(rel)
        if not isinstance(value, str) or not _HEX64.match(value.strip().lower()):
            raise t.fail("sha256", f'"{rel}" must be pinned to 64 hex digits, not {value!r}')
        pins[rel] = value.strip().lower()
    extra = sorted(set(sha) - set(pins))
    if extra:
        raise t.fail("sha256", f'"{extra[0]}" is not a file this entry uses (its folds and checkpoint)')
    return pins


def parse_nnunet_entry(name: str, table: dict[str, Any], where: str, base_dir: Path | None = None) -> NnUNetEntry:
    """Validate the TOML table of ``[models.NAME]`` with ``format = "nnunetv2"``.

    ``where`` is ``"<file>: models.<name>"``, as the errors of the other entries start;
    ``base_dir`` is the registry's folder (what a local entry's ``folder`` is relative to).
    """
    t = Table(table, where)
    if t.get("format", str) != FORMAT:
        raise t.fail("format", f'must be "{FORMAT}" here, not {table.get("format")!r}')
    repo_id = t.get("repo_id", str)
    if repo_id and not _REPO.match(repo_id):
        raise t.fail("repo_id", f"must look like 'owner/name' (or \"\" for a local folder), not {repo_id!r}")
    revision = t.get("revision", str, "" if not repo_id else ...)
    if repo_id and not _HEX40.match(revision):
        raise t.fail("revision", f"must be a 40-hex commit (an nnU-Net folder is pinned), not {revision!r}")
    folder = t.get("folder", str)
    if ".." in folder.split("/") or not _FOLDER.match(folder):
        raise t.fail("folder", f"must be a <trainer>__<plans>__<configuration> path in the repo, not {folder!r}")
    folds = _folds(t)
    checkpoint = t.get("checkpoint", str, "checkpoint_final.pth")
    if not _CHECKPOINT.match(checkpoint):
        raise t.fail("checkpoint", f"must be a .pth file name (no folder), not {checkpoint!r}")
    texts = [t.get(key, str, "") for key in ("description", "license", "citation")]
    files = NnUNetEntry(name, repo_id, revision, folder, folds, checkpoint).relative_files
    pins = _pins(t, files)
    t.check_unknown()
    return NnUNetEntry(name, repo_id, revision, folder, folds, checkpoint, pins, *texts, base_dir=base_dir)
