"""``weights.toml`` entries of ``format = "nnunetv2"`` (draft for the registry integration).

An entry names a results folder inside a Hugging Face Hub repository, pinned::

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

:func:`parse_nnunet_entry` validates such a table (one-line :class:`~liverctl.errors.ConfigError`
naming the field); :attr:`NnUNetEntry.files` lists the files to download (paths inside the
repository) and :func:`entry_toml` writes the TOML text of an entry (what ``liverctl weights
add`` would append). Preprocessing, network and labels come from the folder's own plans, so an
entry carries none of the fields a MONAI entry needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liverctl.errors import ConfigError

__all__ = ["NnUNetEntry", "entry_toml", "parse_nnunet_entry"]

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FOLDER = re.compile(r"^([\w.-]+/)*[\w.-]+__[\w.-]+__[\w.-]+$")
_FIELDS = {
    "format",
    "repo_id",
    "revision",
    "folder",
    "folds",
    "checkpoint",
    "sha256",
    "description",
    "license",
    "citation",
}


@dataclass(frozen=True)
class NnUNetEntry:
    """A validated ``format = "nnunetv2"`` registry entry."""

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

    @property
    def relative_files(self) -> list[str]:
        """Files of the results folder inference needs, relative to it (the sha256 keys)."""
        return ["plans.json", "dataset.json", *[f"fold_{f}/{self.checkpoint}" for f in self.folds]]

    @property
    def files(self) -> list[str]:
        """The same files as paths inside the repository (for ``hf_hub_download``)."""
        return [f"{self.folder}/{rel}" for rel in self.relative_files]


def parse_nnunet_entry(name: str, table: Mapping[str, Any], where: str = "weights.toml") -> NnUNetEntry:
    """Validate the TOML table of ``[models.NAME]`` with ``format = "nnunetv2"``."""
    w = f"{where}: models.{name}"
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ConfigError(f"{w}: unknown field '{unknown[0]}'")
    if table.get("format") != "nnunetv2":
        raise ConfigError(f'{w}.format: must be "nnunetv2", not {table.get("format")!r}')
    repo_id = table.get("repo_id")
    if not isinstance(repo_id, str) or not re.match(r"^[\w.-]+/[\w.-]+$", repo_id):
        raise ConfigError(f"{w}.repo_id: must look like 'owner/name', not {repo_id!r}")
    revision = table.get("revision")
    if not isinstance(revision, str) or not _HEX40.match(revision):
        raise ConfigError(f"{w}.revision: must be a 40-hex commit (an nnU-Net folder is pinned), not {revision!r}")
    folder = table.get("folder")
    if not isinstance(folder, str) or ".." in folder.split("/") or not _FOLDER.match(folder):
        raise ConfigError(f"{w}.folder: must be a <trainer>__<plans>__<configuration> path in the repo, not {folder!r}")
    folds = table.get("folds", [0, 1, 2, 3, 4])
    ok = isinstance(folds, list) and folds and len(set(map(str, folds))) == len(folds)
    if not ok or not all((isinstance(f, int) and not isinstance(f, bool) and f >= 0) or f == "all" for f in folds):
        raise ConfigError(f'{w}.folds: must be a list of distinct fold numbers (or "all"), not {folds!r}')
    checkpoint = table.get("checkpoint", "checkpoint_final.pth")
    if not isinstance(checkpoint, str) or "/" in checkpoint or not checkpoint.endswith(".pth"):
        raise ConfigError(f"{w}.checkpoint: must be a .pth file name, not {checkpoint!r}")
    sha = table.get("sha256", {})
    if not isinstance(sha, dict):
        raise ConfigError(f'{w}.sha256: must be a table of {{ "plans.json" = "<64 hex>", ... }}')
    entry = NnUNetEntry(name, repo_id, revision, folder, tuple(folds), checkpoint, {}, *_texts(table, w))
    pins = {}
    for rel in entry.relative_files:
        value = sha.get(rel)
        if not isinstance(value, str) or not _HEX64.match(value.strip().lower()):
            raise ConfigError(f'{w}.sha256: "{rel}" must be pinned to 64 hex digits, not {value!r}')
        pins[rel] = value.strip().lower()
    extra = sorted(set(sha) - set(pins))
    if extra:
        raise ConfigError(f'{w}.sha256: "{extra[0]}" is not a file this entry uses')
    return NnUNetEntry(name, repo_id, revision, folder, tuple(folds), checkpoint, pins, *_texts(table, w))


def _texts(table: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    out = []
    for key in ("description", "license", "citation"):
        value = table.get(key, "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}.{key}: must be a string")
        out.append(value)
    return out[0], out[1], out[2]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def entry_toml(
    name: str,
    repo_id: str,
    revision: str,
    folder: str,
    sha256: Mapping[str, str],
    folds: Sequence[int | str] = (0, 1, 2, 3, 4),
    checkpoint: str = "checkpoint_final.pth",
    description: str = "",
) -> str:
    """The TOML text of an entry (validated by :func:`parse_nnunet_entry` before it is returned).

    ``sha256`` maps each file of :attr:`NnUNetEntry.relative_files` to its digest, e.g. from
    :func:`liverctl.hub.sha256_file` of the downloaded files.
    """
    table = {
        "format": "nnunetv2",
        "repo_id": repo_id,
        "revision": revision,
        "folder": folder,
        "folds": list(folds),
        "checkpoint": checkpoint,
        "sha256": dict(sha256),
        **({"description": description} if description else {}),
    }
    parse_nnunet_entry(name, table, "new entry")
    key = name if re.match(r"^[A-Za-z0-9_-]+$", name) else _quote(name)
    lines = [f"[models.{key}]"]
    for k in ("format", "repo_id", "revision", "folder", "checkpoint", "description"):
        if k in table:
            lines.append(f"{k} = {_quote(str(table[k]))}")
    lines.append("folds = [" + ", ".join(str(f) if isinstance(f, int) else _quote(f) for f in folds) + "]")
    lines.append(f"[models.{key}.sha256]")
    lines += [f"{_quote(rel)} = {_quote(digest)}" for rel, digest in table["sha256"].items()]
    return "\n".join(lines) + "\n"
