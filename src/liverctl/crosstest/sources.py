"""The datasets of a cross test and their models: opening, naming, label checks, training.

Step 1 and 2 of the protocol in :mod:`liverctl.crosstest`: each dataset folder becomes a
:class:`SourceDataset` (raw or preprocessed), gets a unique file-name safe name, must name
a ``liver`` label, and is trained into ``OUT/models/<name>/`` (or its earlier model reused).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, DatasetError, InputError, LiverctlWarning
from liverctl.io.datasets import LIVER_REGION_NAMES, liver_region_values
from liverctl.progress import ProgressCallback

__all__ = ["LIVER_NAMES", "SourceDataset", "open_dataset", "parse_metrics"]

#: Label names that make up the liver region of a reference label map.
LIVER_NAMES: tuple[str, ...] = LIVER_REGION_NAMES

#: Training options that do not change the model (ignored when deciding to reuse one).
_RUNTIME_OPTIONS = ("device", "precision", "num_workers", "dataset_names", "checkpoint_every")


@dataclass
class SourceDataset:
    """One dataset of a cross test: where its training data and its raw scans are.

    Attributes:
        name: unique name (file-name safe), used for folders and matrix labels.
        folder: the folder given by the user.
        preprocessed: the preprocessed folder the model is trained on.
        labels: label name -> value of the raw label maps.
        cases: ``(case name, raw image path, raw label path)`` of every scan.
        raw: whether ``folder`` was a raw dataset (preprocessed by the cross test).
    """

    name: str
    folder: Path
    preprocessed: Path
    labels: dict[str, int]
    cases: list[tuple[str, Path, Path]]
    raw: bool

    @property
    def liver_values(self) -> list[int]:
        """Raw label values that form the liver region."""
        return liver_region_values(self.labels)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "dataset"


def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``"dice,assd"`` or ``["dice", "assd"]`` -> a validated tuple (Dice always first)."""
    from liverctl.metrics import METRIC_NAMES

    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [str(m).strip().lower() for m in items if str(m).strip()]
    unknown = [m for m in names if m not in METRIC_NAMES]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_NAMES)}")
    return tuple(dict.fromkeys(["dice", *names]))


def _is_preprocessed(folder: Path) -> bool:
    return (folder / "plan.json").is_file() and (folder / "cases.json").is_file()


def open_dataset(folder: str | os.PathLike[str], output_dir: str | os.PathLike[str]) -> SourceDataset:
    """Describe a raw or preprocessed dataset folder (nothing is preprocessed yet).

    A preprocessed folder's raw scans are the ``source_image`` / ``source_label`` paths in
    its ``cases.json``; they must still exist (the cross test predicts from raw scans).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"no such dataset folder: {root}")
    if _is_preprocessed(root):
        from liverctl.preprocessing import load_preprocessed
        from liverctl.training.data import plan_labels

        pre = load_preprocessed(root)
        cases = []
        for rec in pre.cases:
            image, label = rec.get("source_image"), rec.get("source_label")
            if not image or not label or label == "None":
                raise DatasetError(f"{root}: case {rec.get('name')} records no raw image/label (cases.json)")
            cases.append((str(rec["name"]), Path(image), Path(label)))
        name = pre.plan.dataset or root.name
        return SourceDataset(name, root, root, plan_labels(pre.plan), cases, raw=False)
    from liverctl.io.datasets import discover_dataset

    ds = discover_dataset(root)
    cases = [(c.name, Path(c.image_path), Path(c.label_path)) for c in ds.cases if c.label_path is not None]
    out = Path(output_dir) / "preprocessed" / _safe_name(ds.name)
    return SourceDataset(ds.name, root, out, dict(ds.labels), cases, raw=True)


def _name_datasets(sets: list[SourceDataset]) -> None:
    roots = [s.folder.resolve() for s in sets]
    for i, r in enumerate(roots):
        if r in roots[:i]:
            raise ConfigError(f"dataset {sets[i].folder} is given twice")
    names = [_safe_name(s.name) for s in sets]
    if len(set(names)) != len(names):  # same dataset.json name: fall back to the folder names
        names = [_safe_name(s.folder.resolve().name) for s in sets]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two datasets are both called {dup!r}: rename one folder")
    for s, n in zip(sets, names, strict=True):
        if s.raw:
            s.preprocessed = s.preprocessed.parent / n
        s.name = n


def _compared_labels(labels: dict[str, int], whole_liver: bool) -> dict[str, int]:
    """The labels that must agree between datasets: all, or without the tumour-like ones when the
    models are trained on the whole liver (a tumour label then only widens the liver region)."""
    if not whole_liver:
        return labels
    return {n: v for n, v in labels.items() if n.lower() not in LIVER_REGION_NAMES[1:]}


def _check_labels(sets: list[SourceDataset], liver_only: bool, stacklevel: int = 3, whole_liver: bool = False) -> None:
    """Every dataset names a liver label and holds a labelled scan; label sets agree, tumour labels
    aside with ``whole_liver`` (or ``liver_only``: a warning, attributed ``stacklevel`` frames up)."""
    for s in sets:
        if not any(n.lower() == "liver" and int(v) != 0 for n, v in s.labels.items()):
            raise ConfigError(f"dataset {s.name} has no label named 'liver' (labels: {s.labels})")
        if not s.cases:
            raise DatasetError(f"dataset {s.name} holds no labelled scan")
    first = sets[0]
    for s in sets[1:]:
        if _compared_labels(s.labels, whole_liver) != _compared_labels(first.labels, whole_liver):
            message = f"datasets have different label sets: {first.name} {first.labels} vs {s.name} {s.labels}"
            if not liver_only:
                raise ConfigError(message + "; pass --liver-only (liver_only=True) to compare the liver region only")
            warnings.warn(message + ": compared on the liver region only", LiverctlWarning, stacklevel=stacklevel)


def open_sources(
    datasets: Sequence[str | os.PathLike[str]],
    out: Path,
    liver_only: bool,
    stacklevel: int = 3,
    whole_liver: bool = False,
) -> list[SourceDataset]:
    """Open, name and check the datasets of a cross test (none may lie inside ``out``); with
    ``whole_liver`` a dataset with a tumour label and one without compare equal."""
    sets = [open_dataset(d, out) for d in datasets]
    _name_datasets(sets)
    for s in sets:
        if out.resolve() == s.folder.resolve() or s.folder.resolve().is_relative_to(out.resolve()):
            raise InputError(f"output folder {out} would hold the input dataset {s.folder}; choose another folder")
    _check_labels(sets, liver_only, stacklevel=stacklevel + 1, whole_liver=whole_liver)
    return sets


# --------------------------------------------------------------------------- models


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RUNTIME_OPTIONS}


def _model_ready(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "weights.toml").is_file()


def _check_model_config(folder: Path, config: Any) -> None:
    """A model folder from an earlier run must have been trained with the same options."""
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    want = _comparable(config.to_dict())
    diff = sorted(k for k in want if k in saved and saved[k] != want[k] and k != "patch_size")
    if list(want.get("patch_size", [])) != list(saved.get("patch_size", want.get("patch_size", []))):
        diff.append("patch_size")
    if diff:
        raise ConfigError(
            f"{folder} holds a model trained with other options (different {', '.join(diff)}); "
            "use another output folder or the same options"
        )


def _train_source(
    source: SourceDataset,
    output_dir: Path,
    train_config: Any,
    preprocess_options: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> tuple[Path, bool]:
    """Train (or resume, or reuse) the model of one source; returns (weights file, trained now).

    A raw source is preprocessed first (resumable), only when its model must be trained."""
    from liverctl.training import train

    folder = output_dir / "models" / source.name
    if _model_ready(folder):
        return folder / "model.safetensors", False
    if source.raw:
        from liverctl.preprocessing import preprocess

        preprocess(source.folder, source.preprocessed, progress=progress, **(preprocess_options or {}))
    config = dataclasses.replace(train_config, folds=None, dataset_names=[source.name])
    resume = (folder / "last.pt").is_file()
    result = train([source.preprocessed], folder, config, progress=progress, resume=resume)
    if result.model_path is None:
        raise DatasetError(f"training on {source.name} exported no model")
    return Path(result.model_path), True


def train_sources(
    sets: Sequence[SourceDataset],
    out: Path,
    config: Any,
    preprocess_options: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> tuple[dict[str, Path], list[str], list[str]]:
    """One model per source: ``(weights file per name, names trained now, names reused)``.

    Every model folder of ``out`` is checked against ``config`` first, so that a folder of
    models trained with other options is refused before any time is spent."""
    for s in sets:
        _check_model_config(out / "models" / s.name, config)
    models: dict[str, Path] = {}
    trained: list[str] = []
    reused: list[str] = []
    for s in sets:
        path, now = _train_source(s, out, config, preprocess_options, progress)
        models[s.name] = path
        (trained if now else reused).append(s.name)
    return models, trained, reused
