"""Finding the cases of a CT dataset on disk.

liverctl reads three layouts, recognised in this order:

``msd``
    The Medical Segmentation Decathlon / nnU-Net layout: ``imagesTr/`` and ``labelsTr/``
    (``imagesTs/`` for unlabelled test images), with an optional ``dataset.json``. Images
    may carry nnU-Net's channel suffix (``liver_3_0000.nii.gz``) while the label has none
    (``liver_3.nii.gz``); the case is then called ``liver_3``. Only single-channel cases
    are supported (CT).
``pairs``
    ``images/`` and ``labels/`` folders whose files are paired by name (file name without
    its image suffix, so ``a.nii.gz`` pairs with ``a.nrrd``).
``lits``
    LiTS naming: ``volume-N.nii`` with ``segmentation-N.nii``, in the dataset folder itself
    or in its sub-folders (as in LiTS' "Training Batch 1" and "Training Batch 2"). The case
    is called ``volume-N``.

With ``require_labels=False`` images without a label are accepted (``Case.label_path`` is
``None``), and a folder holding image files directly is read as a ``flat`` layout of
unlabelled images.

Label names come from ``dataset.json`` when there is one (MSD ``{"0": "background"}`` and
nnU-Net v2 ``{"background": 0}`` forms both read), otherwise LiTS gets
``background 0, liver 1, tumor 2`` and the other layouts ``background 0, liver 1``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from liverctl.errors import DatasetError, InputError
from liverctl.io.files import image_stem, list_images

LAYOUTS: tuple[str, ...] = ("msd", "pairs", "lits", "flat")

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_LITS_VOLUME = re.compile(r"^volume-(?P<n>\d+)$", re.IGNORECASE)
_LITS_SEGMENTATION = re.compile(r"^segmentation-(?P<n>\d+)$", re.IGNORECASE)

DEFAULT_LABELS: dict[str, int] = {"background": 0, "liver": 1}
LITS_LABELS: dict[str, int] = {"background": 0, "liver": 1, "tumor": 2}


@dataclass(frozen=True)
class Case:
    """One scan of a dataset: its image and, when labelled, its label map."""

    name: str
    image_path: Path
    label_path: Path | None = None

    @property
    def labelled(self) -> bool:
        return self.label_path is not None


@dataclass(frozen=True)
class Dataset:
    """A dataset folder as liverctl understood it.

    Attributes:
        name: from ``dataset.json`` ("name") when present, else the folder name.
        root: the dataset folder (absolute; the case paths are absolute too).
        layout: one of :data:`LAYOUTS`.
        cases: the cases, sorted by name (numbers inside names compare as numbers).
        labels: label name -> value.
    """

    name: str
    root: Path
    layout: str
    cases: tuple[Case, ...]
    labels: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LABELS))

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def labelled(self) -> bool:
        """True when every case has a label map."""
        return all(c.labelled for c in self.cases)

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise DatasetError(f"dataset {self.name} has no case named {name!r}")


LIVER_REGION_NAMES: tuple[str, ...] = (
    "liver",
    "tumour",
    "tumor",
    "lesion",
    "cancer",
    "liver_tumour",
    "liver_tumor",
    "liver_lesion",
    "liver_cancer",
)
"""Label names that together form the liver region: the whole organ with its tumours, as LiTS
scores the liver (MSD Task03: liver 1, cancer 2). Matched case-insensitively, with spaces and
hyphens read as ``_`` (``"Liver Tumor"``). The one list of liverctl: MONAI/registry label maps
(:attr:`liverctl.predict.LiverModel.liver_channels`), nnU-Net ``dataset.json`` labels
(:func:`liverctl.nnunet.plans.liver_labels`), training and cross-testing all use it."""


def _label_key(name: object) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def liver_region_values(labels: Mapping[str, int]) -> list[int]:
    """Label values (or output channels) of the liver region in a ``{name: value}`` map.

    The values of the labels named in :data:`LIVER_REGION_NAMES` (case-insensitive; spaces and
    hyphens read as ``_``), sorted; background (0) is never included. Empty when the map names
    no liver (a tumour without a liver, e.g. MSD Task08's hepatic vessel tumour, is no liver).
    """
    norm = {_label_key(n): int(v) for n, v in labels.items()}
    if "liver" not in norm:
        return []
    return sorted({v for n, v in norm.items() if n in LIVER_REGION_NAMES and v != 0})


def natural_key(text: str) -> list[object]:
    """Sort key under which ``case_2`` comes before ``case_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _few(names: Iterable[str], limit: int = 3) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_dataset_json(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, int] | None]:
    """``(name, labels)`` from an MSD or nnU-Net v2 ``dataset.json`` (``None`` where absent)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {p}: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{p} does not hold a JSON object")
    name = data.get("name")
    raw = data.get("labels")
    labels: dict[str, int] | None = None
    if isinstance(raw, dict) and raw:
        labels = {}
        try:
            for key, value in raw.items():
                if str(key).lstrip("-").isdigit():  # MSD / nnU-Net v1: {"1": "liver"}
                    labels[str(value)] = int(key)
                elif isinstance(value, (list, tuple)):  # nnU-Net v2 regions: {"liver": [1, 2]}
                    labels[str(key)] = int(min(value))
                else:  # nnU-Net v2: {"liver": 1}
                    labels[str(key)] = int(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{p}: cannot read the 'labels' entry {raw!r}") from None
        labels = dict(sorted(labels.items(), key=lambda kv: kv[1]))
    return (str(name) if name else None), labels


def _strip_channel(stem: str, label_stems: set[str]) -> tuple[str, str | None]:
    """``(case name, channel)`` of an MSD image stem."""
    if stem in label_stems:
        return stem, None
    m = _CHANNEL.match(stem)
    if m:
        return m.group("case"), m.group("channel")
    return stem, None


def _pair_by_name(image_dir: Path, label_dir: Path | None, *, require_labels: bool, strip_channel: bool) -> list[Case]:
    images = list_images(image_dir)
    labels = list_images(label_dir) if label_dir is not None and label_dir.is_dir() else []
    label_by_stem: dict[str, Path] = {}
    for p in labels:
        stem = image_stem(p)
        if stem in label_by_stem:
            raise DatasetError(f"two label files for case {stem} in {label_dir}: {label_by_stem[stem].name}, {p.name}")
        label_by_stem[stem] = p
    by_case: dict[str, list[tuple[str | None, Path]]] = {}
    for p in images:
        stem = image_stem(p)
        name, channel = _strip_channel(stem, set(label_by_stem)) if strip_channel else (stem, None)
        by_case.setdefault(name, []).append((channel, p))
    multi = [name for name, items in by_case.items() if len(items) > 1]
    if multi:
        raise DatasetError(
            f"{image_dir}: cases with several images (channels) are not supported, "
            f"liverctl reads single-channel CT: {_few(sorted(multi, key=natural_key))}"
        )
    cases = [Case(name, items[0][1], label_by_stem.get(name)) for name, items in by_case.items()]
    if require_labels:
        where = label_dir if label_dir is not None else image_dir
        unlabelled = sorted((c.name for c in cases if c.label_path is None), key=natural_key)
        if unlabelled:
            raise DatasetError(f"{len(unlabelled)} image(s) have no label in {where}: {_few(unlabelled)}")
    orphans = sorted(set(label_by_stem) - set(by_case), key=natural_key)
    if orphans:
        raise DatasetError(f"{len(orphans)} label(s) in {label_dir} have no image in {image_dir}: {_few(orphans)}")
    return cases


def _find_lits(root: Path) -> tuple[list[Path], list[Path]]:
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    volumes: list[Path] = []
    segmentations: list[Path] = []
    for folder in folders:
        for p in list_images(folder):
            stem = image_stem(p)
            if _LITS_VOLUME.match(stem):
                volumes.append(p)
            elif _LITS_SEGMENTATION.match(stem):
                segmentations.append(p)
    return volumes, segmentations


def _lits_cases(root: Path, volumes: list[Path], segmentations: list[Path], *, require_labels: bool) -> list[Case]:
    def index(paths: list[Path], pattern: re.Pattern[str]) -> dict[int, Path]:
        out: dict[int, Path] = {}
        for p in paths:
            n = int(pattern.match(image_stem(p)).group("n"))  # type: ignore[union-attr]
            if n in out:
                raise DatasetError(f"LiTS case {n} appears twice: {out[n]} and {p}")
            out[n] = p
        return out

    vols = index(volumes, _LITS_VOLUME)
    segs = index(segmentations, _LITS_SEGMENTATION)
    if require_labels:
        missing = sorted(set(vols) - set(segs))
        if missing:
            raise DatasetError(
                f"{len(missing)} LiTS volume(s) in {root} have no segmentation-N file: "
                f"{_few(f'volume-{n}' for n in missing)}"
            )
    orphans = sorted(set(segs) - set(vols))
    if orphans:
        raise DatasetError(
            f"{len(orphans)} LiTS segmentation(s) in {root} have no volume-N file: "
            f"{_few(f'segmentation-{n}' for n in orphans)}"
        )
    return [Case(f"volume-{n}", vols[n], segs.get(n)) for n in sorted(vols)]


def discover_dataset(folder: str | os.PathLike[str], *, require_labels: bool = True, split: str = "train") -> Dataset:
    """Find the cases of the dataset in ``folder``.

    Args:
        folder: the dataset folder (see the module docstring for the layouts).
        require_labels: if true (the default), every image must have a label map.
        split: ``"train"`` reads ``imagesTr/labelsTr`` of an MSD dataset, ``"test"`` reads
            ``imagesTs`` (and ``labelsTs`` when present). Ignored by the other layouts.

    Raises:
        InputError: ``folder`` does not exist or is not a folder.
        DatasetError: no known layout, no images, an image without a label (when labels are
            required), a label without an image, or several channels for one case.
    """
    given = Path(folder)
    if not given.exists():
        raise InputError(f"no such dataset folder: {given}")
    if not given.is_dir():
        raise InputError(f"not a folder: {given} (give the dataset folder)")
    root = given.resolve()  # absolute paths: the records written from a Dataset work from any folder
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}: use 'train' or 'test'")
    name, labels = None, None
    if (root / "dataset.json").is_file():
        name, labels = read_dataset_json(root / "dataset.json")
    suffix = "Tr" if split == "train" else "Ts"

    if (root / f"images{suffix}").is_dir():
        layout = "msd"
        image_dir, label_dir = root / f"images{suffix}", root / f"labels{suffix}"
        if require_labels and not label_dir.is_dir():
            raise DatasetError(f"{root} has images{suffix}/ but no labels{suffix}/ folder")
        cases = _pair_by_name(image_dir, label_dir, require_labels=require_labels, strip_channel=True)
        where = image_dir
    elif (root / "images").is_dir():
        layout = "pairs"
        image_dir, label_dir = root / "images", root / "labels"
        if require_labels and not label_dir.is_dir():
            raise DatasetError(f"{root} has images/ but no labels/ folder")
        cases = _pair_by_name(image_dir, label_dir, require_labels=require_labels, strip_channel=False)
        where = image_dir
    else:
        volumes, segmentations = _find_lits(root)
        where = root
        if volumes or segmentations:
            layout = "lits"
            cases = _lits_cases(root, volumes, segmentations, require_labels=require_labels)
            labels = labels or dict(LITS_LABELS)
        elif not require_labels and list_images(root):
            layout = "flat"
            cases = [Case(image_stem(p), p, None) for p in list_images(root)]
        elif not any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise DatasetError(f"dataset folder {given} is empty")
        else:
            raise DatasetError(
                f"{given} is in no dataset layout liverctl knows: expected imagesTr/ + labelsTr/ (MSD, nnU-Net), "
                "images/ + labels/, or LiTS volume-N / segmentation-N files"
            )
    if not cases:
        raise DatasetError(f"no image files in {where}")
    cases.sort(key=lambda c: natural_key(c.name))
    return Dataset(
        name=name or root.name,
        root=root,
        layout=layout,
        cases=tuple(cases),
        labels=labels or dict(DEFAULT_LABELS),
    )
