"""A labelled : unlabelled split made before any label is read: :func:`preprocess_split`.

SD-Net's experiments (``docs/studies/sdnet.md``) keep the labels of a fraction of a
labelled dataset's training scans and use the others as unlabelled data (20:80 ... 80:20). For
the unlabelled share to be really unlabelled, the split must come first: :func:`labelled_split`
picks the labelled share from the case *names* alone, then

- the labelled share is preprocessed as any dataset (:func:`~liverctl.preprocessing.preprocess`:
  its fingerprint, liver z-crop, target spacing and z-score statistics come from these cases
  only) into ``OUT/labelled``;
- the unlabelled share is preprocessed as a folder of unlabelled scans would be
  (:func:`~liverctl.preprocessing.unlabelled.preprocess_unlabelled`: body crop, the labelled
  share's plan; its label files are never opened) into ``OUT/unlabelled``;
- ``OUT/split.json`` records the fraction, the seed and both lists of names.

``labelled_fraction = 1`` (100:0) writes ``OUT/labelled`` alone: every case keeps its label.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, InputError
from liverctl.io import write_text_atomic
from liverctl.io.datasets import Dataset, discover_dataset
from liverctl.io.manifest import MANIFEST_FILES, Manifest, check_new_or_owned_folder
from liverctl.preprocessing.dataset import PreprocessResult, _checked_options, preprocess
from liverctl.preprocessing.unlabelled import UnlabelledResult, check_scans, preprocess_unlabelled
from liverctl.progress import ProgressCallback

__all__ = ["SplitResult", "labelled_split", "preprocess_split"]

_OWN = (*MANIFEST_FILES, "labelled", "unlabelled")


def labelled_split(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(labelled, unlabelled)``: the sorted ``names`` shuffled with ``seed``; the first
    ``max(1, round(fraction * n))`` are labelled (both lists sorted). ``fraction = 1``: all.

    Raises:
        ConfigError: ``fraction`` outside (0, 1], or a fraction below 1 that leaves no case unlabelled.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"--labelled-fraction must be in (0, 1], got {fraction}")
    ordered = sorted(names)
    n_lab = max(1, round(fraction * len(ordered)))
    if fraction < 1 and n_lab >= len(ordered):
        raise ConfigError(f"--labelled-fraction {fraction} of {len(ordered)} cases leaves no unlabelled case")
    perm = np.random.default_rng([int(seed), 7]).permutation(len(ordered))
    lab = sorted(ordered[i] for i in perm[:n_lab])
    return lab, sorted(ordered[i] for i in perm[n_lab:])


@dataclass
class SplitResult:
    """What :func:`preprocess_split` did: the two preprocessing results and the split."""

    output: Path
    labelled: PreprocessResult
    unlabelled: UnlabelledResult | None
    split: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "split": self.split,
            "labelled": self.labelled.summary(),
            "unlabelled": None if self.unlabelled is None else self.unlabelled.summary(),
        }


def _subset(ds: Dataset, names: Sequence[str]) -> Dataset:
    keep = set(names)
    return dataclasses.replace(ds, cases=tuple(c for c in ds.cases if c.name in keep))


def _split_folder(out: Path, split: dict[str, Any], overwrite: bool) -> tuple[Manifest, Path]:
    """The manifest of ``OUT`` and its ``split.json``: refuse a folder holding anything but a split's
    outputs (``labelled/`` and ``unlabelled/`` answer for themselves), or another split without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    manifest, split_path = Manifest(out), out / "split.json"
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if p.name not in _OWN and not manifest.owns(p)]
        if foreign:
            raise InputError(
                f"output folder {out} holds files that are not from a liverctl preprocess --labelled-fraction "
                f"({', '.join(sorted(foreign)[:3])}); choose an empty or new folder"
            )
    for sub in ("labelled", "unlabelled"):  # both checked before either is written
        check_new_or_owned_folder(out / sub, "preprocess")
    if split_path.is_file() and not overwrite and json.loads(split_path.read_text(encoding="utf-8")) != split:
        raise ConfigError(f"{out} holds another split ({split_path}); use --overwrite or another output folder")
    return manifest, split_path


def preprocess_split(
    dataset: Dataset | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    labelled_fraction: float,
    split_seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> SplitResult:
    """Split ``dataset`` by name, then preprocess the labelled share into ``OUT/labelled`` and the
    unlabelled share into ``OUT/unlabelled`` (module docs). ``options`` go to
    :func:`~liverctl.preprocessing.preprocess` (``target_spacing``, ``window``, ...).

    Raises:
        ConfigError: a bad fraction or option, or ``OUT`` holding another split (without ``overwrite``).
    """
    ds = dataset if isinstance(dataset, Dataset) else discover_dataset(dataset)
    out = Path(output)
    _checked_options(
        options.get("target_spacing", "128-median"),
        options.get("window", "none"),
        options.get("normalization", "dataset"),
        options.get("crop", True),
        options.get("crop_margin_mm", 60.0),
        options.get("image_order", 1),
        options.get("liver_labels"),
        workers,
    )
    lab, unl = labelled_split([c.name for c in ds.cases], labelled_fraction, split_seed)
    split = {
        "dataset": ds.name,
        "source": str(ds.root),
        "labelled_fraction": float(labelled_fraction),
        "split_seed": int(split_seed),
        "labelled": lab,
        "unlabelled": unl,
    }
    if ds.root.resolve().is_relative_to(out.resolve()) or out.resolve().is_relative_to(ds.root.resolve()):
        raise InputError(f"output folder {output} would hold or be inside the input dataset; choose another folder")
    manifest, split_path = _split_folder(out, split, overwrite)
    unlabelled_share = _subset(ds, unl)
    check_scans(unlabelled_share.cases, workers=workers, progress=progress)  # the labelled ones: in preprocess
    common = {"workers": workers, "overwrite": overwrite, "progress": progress}
    labelled = preprocess(_subset(ds, lab), out / "labelled", **options, **common)
    manifest.claim([split_path], "preprocess")
    write_text_atomic(split_path, json.dumps(split, indent=2) + "\n")
    manifest.record([split_path])
    unlabelled = None
    if unl:
        unlabelled = preprocess_unlabelled(
            unlabelled_share, out / "unlabelled", out / "labelled", check=False, **common
        )
    elif overwrite and (out / "unlabelled").is_dir():  # an earlier split's unlabelled share is stale now
        Manifest(out / "unlabelled").remove_owned()
    return SplitResult(output=out, labelled=labelled, unlabelled=unlabelled, split=split)
