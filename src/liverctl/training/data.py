"""Training data: preprocessed datasets, k-fold splits, label sets and batches.

A training dataset is a folder written by ``liverctl preprocess`` (read with
:func:`liverctl.preprocessing.load_preprocessed`) or any object with the same three
members (``plan``, ``cases`` with ``.name``, ``load(name, mmap=True) -> (Image, Image)``),
for instance :class:`ArrayDataset` for data already in memory.

K-fold splits (:func:`kfold_split`): the case names of each dataset are sorted (Python
string order) and cut into ``k`` contiguous chunks of sizes as equal as possible (the
first ``n % k`` chunks one larger, :func:`numpy.array_split`); fold ``i`` validates on
chunk ``i`` and trains on the others. In hybrid training every dataset is split this
way on its own, so every fold validates on every dataset.

Inner validation split (``inner_fraction=F``, ``TrainConfig.select_on = "inner:F"``): of each
dataset's training cases (after the k-fold split), ``max(1, round(F * n))`` drawn at random with
the run's seed (always leaving one to train) form :attr:`TrainingData.select`; they are left out
of training and only choose the exported epoch. The held-out fold (:attr:`TrainingData.val`) is
never part of it.

Whole liver (``merge_tumour=True``, He et al. 2021): the labels named ``tumour``, ``tumor`` or
``lesion`` of a dataset that names a ``liver`` are folded into the liver (their voxels train
the liver class; the network has no tumour class), before the label sets are compared.

Label sets: all datasets must declare the same ``{name: value}`` labels, unless the
target adaptive loss (``loss="tal"``) is used; then the network predicts the union of
the classes (background first, then the other names in order of first appearance) and
each dataset supervises only its own classes.

Bad cases: a case whose files cannot be read is skipped with a
:class:`~liverctl.errors.LiverctlWarning` and listed in :attr:`TrainingData.skipped`; a
case with no foreground voxels is kept as a negative example (its patches are random, it
is never used for foreground oversampling) with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, DatasetError, LiverctlError, LiverctlWarning
from liverctl.io import Image

__all__ = ["ArrayDataset", "TrainingData", "inner_split", "kfold_split", "plan_dict", "plan_labels"]


@dataclass
class _ArrayCase:
    name: str


@dataclass
class ArrayDataset:
    """An in-memory training dataset: ``images`` and ``labels`` map case names to
    :class:`~liverctl.io.Image`; ``plan`` is a dict like ``plan.json`` (``labels`` at least)."""

    images: dict[str, Image]
    labels: dict[str, Image]
    plan: dict[str, Any] = field(default_factory=lambda: {"labels": {"background": 0, "liver": 1}})
    name: str = "dataset"

    @property
    def cases(self) -> list[_ArrayCase]:
        return [_ArrayCase(n) for n in sorted(self.images)]

    def load(self, name: str, mmap: bool = True) -> tuple[Image, Image]:
        return self.images[name], self.labels[name]


def plan_dict(plan: Any) -> dict[str, Any]:
    """A preprocessing plan (dataclass or dict) as a plain dict."""
    if dataclasses.is_dataclass(plan) and not isinstance(plan, type):
        return dataclasses.asdict(plan)
    if isinstance(plan, dict):
        return dict(plan)
    if hasattr(plan, "to_dict"):
        return dict(plan.to_dict())
    return dict(vars(plan))


def plan_labels(plan: Any) -> dict[str, int]:
    """The ``{name: value}`` labels of a plan (a ``{value: name}`` form is turned round)."""
    labels = plan_dict(plan).get("labels") or {"background": 0, "liver": 1}
    if isinstance(labels, (list, tuple)):
        return {str(n): i for i, n in enumerate(labels)}
    out: dict[str, int] = {}
    for k, v in labels.items():
        if isinstance(v, str) and str(k).lstrip("-").isdigit():
            out[v] = int(k)
        else:
            out[str(k)] = int(v)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def kfold_split(names: Sequence[str], folds: int, fold: int) -> tuple[list[str], list[str]]:
    """``(train, validation)`` case names of ``fold`` of ``folds`` (module docs).

    Raises:
        ConfigError: fewer cases than ``folds`` (every fold needs one validation case and
            one training case).
    """
    ordered = sorted(names)
    if len(ordered) < max(folds, 2):
        raise ConfigError(f"{len(ordered)} cases are too few for {folds}-fold cross-validation (need >= {folds})")
    chunks = np.array_split(np.arange(len(ordered)), folds)
    val_idx = set(chunks[fold].tolist())
    return [n for i, n in enumerate(ordered) if i not in val_idx], [ordered[i] for i in sorted(val_idx)]


def inner_split(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(training, inner validation)`` case names: ``max(1, round(fraction * n))`` of the sorted
    ``names`` drawn with ``seed`` (at most ``n - 1``) validate, the rest train (module docs).

    Raises:
        ConfigError: fewer than two cases (nothing would be left to train on).
    """
    ordered = sorted(names)
    if len(ordered) < 2:
        raise ConfigError(f"{len(ordered)} training case is too few for an inner validation split (need >= 2)")
    k = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    picked = set(np.random.default_rng([int(seed), 0x5E1EC7]).permutation(len(ordered))[:k].tolist())
    return [n for i, n in enumerate(ordered) if i not in picked], [n for i, n in enumerate(ordered) if i in picked]


def _open(source: Any) -> tuple[Any, str]:
    if hasattr(source, "cases") and hasattr(source, "load"):
        return source, str(getattr(source, "name", None) or getattr(source, "folder", "dataset"))
    folder = Path(os.fspath(source))
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such preprocessed dataset folder")
    from liverctl.preprocessing import load_preprocessed

    dataset = load_preprocessed(folder)
    if not dataset.labelled:
        raise DatasetError(f"{folder} holds unlabelled scans: give it as --unlabelled (train --method sdnet)")
    return dataset, folder.name


@dataclass
class _CaseInfo:
    dataset: int
    name: str
    foreground: np.ndarray  # (n, 3) int32


class TrainingData:
    """The datasets of a training run, split into training and validation cases.

    Args:
        sources: preprocessed dataset folders or dataset objects (module docs).
        folds: k of the k-fold split (``None``: all cases train, none validate).
        fold: the fold held out (with ``folds``).
        loss: ``"dice_ce"`` (identical label sets required) or ``"tal"``.
        names: dataset names (default: folder names, made unique).
        merge_tumour: fold tumour labels into the liver (module docs).
        inner_fraction: the share of the training cases in an inner validation split (module docs).
        inner_seed: the seed of that split.

    Attributes:
        datasets: the opened dataset objects; ``names`` their names.
        labels: ``{name: channel}`` of the network's output classes.
        train, val: per dataset, the training / validation case names (sorted); ``val`` is the
            held-out fold.
        select: per dataset, the inner validation cases that choose the exported epoch (empty
            without ``inner_fraction``).
        luts: per dataset, a lookup table raw label value -> output channel.
        labelled: per dataset, the output channels it annotates (besides background).
        skipped: ``(dataset name, case name, reason)`` of the cases left out.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        *,
        folds: int | None = None,
        fold: int = 0,
        loss: str = "dice_ce",
        names: Sequence[str] | None = None,
        scan: bool = True,
        merge_tumour: bool = False,
        inner_fraction: float | None = None,
        inner_seed: int = 0,
    ) -> None:
        if not sources:
            raise ConfigError("training needs at least one preprocessed dataset")
        opened = [_open(s) for s in sources]
        self.datasets = [d for d, _ in opened]
        auto = [n for _, n in opened]
        if names:
            if len(names) != len(auto):
                raise ConfigError(f"{len(names)} dataset names for {len(auto)} datasets")
            auto = list(names)
        self.names = _unique(auto)
        self.plans = [plan_dict(d.plan) for d in self.datasets]
        self._setup_labels(loss, merge_tumour)
        self.train: list[list[str]] = []
        self.val: list[list[str]] = []
        self.select: list[list[str]] = []
        for name, ds in zip(self.names, self.datasets, strict=True):
            case_names = sorted(_case_name(c) for c in ds.cases)
            if not case_names:
                raise DatasetError(f"dataset {name} holds no cases")
            try:
                tr, va = (case_names, []) if folds is None else kfold_split(case_names, folds, fold)
                tr, se = (tr, []) if inner_fraction is None else inner_split(tr, inner_fraction, inner_seed)
            except ConfigError as exc:
                raise ConfigError(f"dataset {name}: {exc}") from None
            self.train.append(tr)
            self.val.append(va)
            self.select.append(se)
        self.skipped: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._bad: set[tuple[int, str]] = set()
        self.info: list[list[_CaseInfo]] = [[] for _ in self.datasets]
        if scan:
            self._scan()

    # -- labels ---------------------------------------------------------------------
    def _setup_labels(self, loss: str, merge_tumour: bool = False) -> None:
        raw = [plan_labels(p) for p in self.plans]
        folded = [_fold_tumour(labels) if merge_tumour else {} for labels in raw]
        sets = [{n: v for n, v in labels.items() if n not in fold} for labels, fold in zip(raw, folded, strict=True)]
        if loss != "tal":
            for name, labels in zip(self.names[1:], sets[1:], strict=True):
                if labels != sets[0]:
                    raise ConfigError(
                        f"datasets have different label sets: {self.names[0]} {sets[0]} vs {name} {labels}"
                        " (use the target adaptive loss, --loss tal, for partially labelled datasets)"
                    )
        union: dict[str, int] = {"background": 0}
        for labels in sets:
            for n, v in labels.items():
                if v != 0 and n not in union:
                    union[n] = len(union)
        if loss != "tal":
            union = {n: v for n, v in sets[0].items()}
            union.setdefault("background", 0)
        self.labels = dict(sorted(union.items(), key=lambda kv: kv[1]))
        self.n_classes = max(self.labels.values()) + 1
        self.luts: list[np.ndarray] = []
        self.labelled: list[list[int]] = []
        for labels, fold in zip(sets, folded, strict=True):
            lut = np.zeros(max(256, max(labels.values()) + 1, *(v + 1 for v in fold.values())), np.uint8)
            for n, v in labels.items():
                lut[v] = union[n] if loss == "tal" else v
            liver = next((v for n, v in labels.items() if n.lower() == "liver"), 0)
            for tumour_value in fold.values():
                lut[tumour_value] = lut[liver]
            self.luts.append(lut)
            self.labelled.append(sorted({int(lut[v]) for v in labels.values() if v != 0}))

    @property
    def liver_channels(self) -> list[int]:
        """Output channels counted as liver in validation: ``liver`` plus any tumour class
        (the whole organ, as in LiTS' liver evaluation); all foreground if there is no
        class named liver."""
        from liverctl.io.datasets import liver_region_values

        return liver_region_values(self.labels) or [v for v in self.labels.values() if v != 0]

    # -- cases ----------------------------------------------------------------------
    def _skip(self, d: int, name: str, reason: str) -> None:
        with self._lock:
            if (d, name) in self._bad:
                return
            self._bad.add((d, name))
            self.skipped.append((self.names[d], name, reason))
        warnings.warn(f"skipping case {name} of dataset {self.names[d]}: {reason}", LiverctlWarning, stacklevel=3)

    def _scan(self) -> None:
        for d, names in enumerate(self.train):
            for name in names:
                try:
                    image, label = self.load_arrays(d, name)
                    if image.shape != label.shape:
                        raise DatasetError(f"image {image.shape} and label {label.shape} differ in shape")
                    fg = _foreground(label, self.luts[d])
                except (LiverctlError, OSError, ValueError, EOFError, KeyError) as exc:
                    self._skip(d, name, " ".join(str(exc).split()) or type(exc).__name__)
                    continue
                if not len(fg):
                    warnings.warn(
                        f"case {name} of dataset {self.names[d]} has no foreground voxels: used as a negative"
                        " example only (no foreground oversampling)",
                        LiverctlWarning,
                        stacklevel=2,
                    )
                self.info[d].append(_CaseInfo(d, name, fg))
            if not self.info[d]:
                raise DatasetError(f"dataset {self.names[d]} has no readable training case")

    def load_arrays(self, d: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Image (float32) and label (uint8 raw values) arrays of a case, memory-mapped when
        the dataset allows it."""
        image, label = self.datasets[d].load(name, mmap=True)
        img = image.array if isinstance(image, Image) else np.asarray(image)
        lab = label.array if isinstance(label, Image) else np.asarray(label)
        if img.ndim != 3 or lab.ndim != 3:
            raise DatasetError(f"case {name}: expected 3D arrays, got {img.shape} and {lab.shape}")
        return img, lab

    def load_images(self, d: int, name: str) -> tuple[Image, Image]:
        """The case as :class:`~liverctl.io.Image` objects (for validation)."""
        return self.datasets[d].load(name, mmap=True)

    def is_bad(self, d: int, name: str) -> bool:
        return (d, name) in self._bad

    def mark_bad(self, d: int, name: str, reason: str) -> None:
        self._skip(d, name, reason)

    @property
    def sizes(self) -> list[int]:
        """Number of usable training cases per dataset."""
        return [len(i) for i in self.info]


def _fold_tumour(labels: dict[str, int]) -> dict[str, int]:
    """``{name: value}`` of the tumour-like labels to fold into the liver (none when the map
    names no liver)."""
    from liverctl.io.datasets import LIVER_REGION_NAMES

    lower = {n.lower(): v for n, v in labels.items()}
    if "liver" not in lower:
        return {}
    return {n: v for n, v in labels.items() if n.lower() in LIVER_REGION_NAMES[1:] and v != 0}


def _foreground(label: np.ndarray, lut: np.ndarray) -> np.ndarray:
    from liverctl.training.augmentation import foreground_coordinates

    mapped = lut[np.asarray(label)]
    return foreground_coordinates(mapped)


def _case_name(case: Any) -> str:
    return str(case["name"]) if isinstance(case, dict) else str(case.name)


def _unique(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        base, k = n, 2
        while n in out:
            n = f"{base}-{k}"
            k += 1
        out.append(n)
    return out
