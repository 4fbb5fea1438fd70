"""A dataset preprocessed for training: :func:`preprocess` writes it, :func:`load_preprocessed` reads it.

:func:`preprocess` runs nnU-Net's sequence over a dataset folder: fingerprint
(:mod:`~liverctl.preprocessing.fingerprinting`) -> plan (:mod:`~liverctl.preprocessing.planning`)
-> :func:`preprocess_case` for every case (liver z-crop, :func:`~liverctl.preprocessing.planning.apply_plan`,
the label map resampled with nearest neighbour onto the same grid), in worker processes
(:mod:`~liverctl.preprocessing.workers`), resuming a killed run. :class:`PreprocessedDataset`
is its output folder read back, arrays memory-mapped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, DatasetError, GeometryError, InputError
from liverctl.io import Geometry, Image, atomic_path, write_text_atomic
from liverctl.io.datasets import Case, Dataset, discover_dataset
from liverctl.io.manifest import Manifest, check_new_or_owned_folder
from liverctl.preprocessing.cases import read_case, source_stat
from liverctl.preprocessing.crop import crop_z, liver_region
from liverctl.preprocessing.fingerprinting import Fingerprint, fingerprint
from liverctl.preprocessing.intensity import resolve_window
from liverctl.preprocessing.planning import NORMALIZATIONS, Plan, apply_plan, plan
from liverctl.preprocessing.spacing import parse_spacing
from liverctl.preprocessing.workers import map_cases
from liverctl.progress import ProgressCallback
from liverctl.spatial import interpolation_order, resample_to_reference

__all__ = ["PreprocessResult", "PreprocessedDataset", "load_preprocessed", "preprocess", "preprocess_case"]

_FILES = ("fingerprint.json", "fingerprint_samples.npz", "plan.json", "cases.json")


@dataclass
class PreprocessResult:
    """What :func:`preprocess` did."""

    output: Path
    plan: Plan
    fingerprint: Fingerprint
    cases: list[dict[str, Any]]
    processed: list[str]
    skipped: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        stats = self.fingerprint.liver_intensity()
        shapes = np.asarray([c["shape"] for c in self.cases], dtype=float)
        return {
            "output": str(self.output),
            "dataset": self.plan.dataset,
            "layout": self.fingerprint.layout,
            "cases": len(self.cases),
            "processed": len(self.processed),
            "skipped": len(self.skipped),
            "target_spacing": list(self.plan.target_spacing),
            "spacing_rule": self.plan.spacing_rule,
            "window": None if self.plan.window is None else list(self.plan.window),
            "window_name": self.plan.window_name,
            "normalization": self.plan.normalization,
            "mean": self.plan.mean,
            "std": self.plan.std,
            "crop_margin_mm": self.plan.crop_margin_mm if self.plan.crop else None,
            "liver_intensity": stats,
            "median_shape": np.median(shapes, axis=0).tolist() if len(shapes) else None,
            "seconds": round(self.seconds, 2),
        }


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def preprocess_case(case: Case, plan: Plan, crop: tuple[int, int], output: str | os.PathLike[str]) -> dict[str, Any]:
    """Preprocess one case into ``output`` (images/, labels/, cases/<name>.json) and return its record."""
    out = Path(output)
    image, label = read_case(case)
    source_geometry, source_shape = image.geometry, image.shape
    if plan.crop:
        image, label = crop_z(image, *crop), crop_z(label, *crop)
    else:
        crop = (0, image.shape[0])
    result = apply_plan(image, plan)
    del image
    lab = resample_to_reference(label, result, interpolator="nearest")
    del label
    lab_array = lab.array.astype(np.uint8) if lab.array.dtype != np.uint8 and lab.array.max() <= 255 else lab.array
    record = {
        "name": case.name,
        "shape": list(result.shape),
        "geometry": result.geometry.to_dict(),
        "source_image": str(case.image_path),
        "source_label": str(case.label_path),
        "source_shape": list(source_shape),
        "source_geometry": source_geometry.to_dict(),
        "source_stat": source_stat(case),
        "crop": list(crop),
        "foreground_voxels": int(np.count_nonzero(liver_region(lab_array, plan.liver_labels))),
    }
    image_path, label_path, record_path = _case_files(out, case.name)
    _save_npy(image_path, result.array)
    _save_npy(label_path, lab_array)
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _case_files(output: Path, name: str) -> list[Path]:
    """The files :func:`preprocess_case` writes for case ``name``, the record last."""
    return [output / "images" / f"{name}.npy", output / "labels" / f"{name}.npy", output / "cases" / f"{name}.json"]


def _case_done(output: Path, case: Case) -> dict[str, Any] | None:
    """The record of a case finished by an earlier run from the same, unchanged source files."""
    name = case.name
    record_path = output / "cases" / f"{name}.json"
    if not (record_path.is_file() and (output / "images" / f"{name}.npy").is_file()):
        return None
    if not (output / "labels" / f"{name}.npy").is_file():
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = (
        record.get("source_image") == str(case.image_path)
        and record.get("source_label") == str(case.label_path)
        and record.get("source_stat") == source_stat(case)
    )
    return record if same else None


def _reusable_fingerprint(
    output: Path, ds: Dataset, crop_margin_mm: float | None, liver_labels: list[int] | None
) -> Fingerprint | None:
    path, samples_path = output / "fingerprint.json", output / "fingerprint_samples.npz"
    if not (path.is_file() and samples_path.is_file()):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fp = Fingerprint.from_dict(data, *Fingerprint.load_arrays(samples_path))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if fp.crop_margin_mm != crop_margin_mm or fp.liver_labels != liver_labels:
        return None
    if [c.name for c in fp.cases] != [c.name for c in ds.cases]:
        return None
    for record, case in zip(fp.cases, ds.cases, strict=True):
        if record.source_image != str(case.image_path) or record.source_label != str(case.label_path):
            return None
        if record.source_stat != source_stat(case) or case.name not in fp.samples:
            return None
    return fp


def _labels_with_observed(labels: dict[str, int], fp: Fingerprint) -> dict[str, int]:
    """The dataset's label names, plus ``label_N`` for values found in the label maps but not named."""
    out = dict(labels)
    named = set(out.values())
    for value in sorted({v for c in fp.cases for v in c.label_values} - named):
        out[f"label_{value}"] = value
    return out


def _check_output(output: Path, ds: Dataset) -> None:
    out = output.resolve()
    inputs = {ds.root.resolve()}
    for c in ds.cases:
        inputs.add(Path(c.image_path).resolve().parent)
        if c.label_path is not None:
            inputs.add(Path(c.label_path).resolve().parent)
    if out in inputs or any(p.is_relative_to(out) for p in inputs):
        raise InputError(f"output folder {output} would hold or replace the input dataset; choose another folder")
    if output.exists() and not output.is_dir():
        raise InputError(f"output {output} exists and is not a folder")


def preprocess(
    dataset: Dataset | str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    target_spacing: str | Sequence[float] = "128-median",
    window: str | Sequence[float] | None = "none",
    normalization: str = "dataset",
    crop: bool = True,
    crop_margin_mm: float = 60.0,
    image_order: int | str = 1,
    liver_labels: Sequence[int] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> PreprocessResult:
    """Fingerprint, plan and preprocess a dataset into ``output`` (the folder ``train`` reads).

    Per case: liver z-crop (``crop_margin_mm``, unless ``crop=False``), resample to the
    target spacing, HU window, z-score (see :func:`apply_plan`); the label map is resampled
    with nearest neighbour onto the same grid. Output layout::

        output/fingerprint.json     dataset fingerprint (+ fingerprint_samples.npz)
        output/plan.json            the Plan (apply_plan redoes it on a new scan)
        output/cases.json           one record per case (shape, geometry, source, crop...)
        output/images/<name>.npy    float32 (z, y, x)
        output/labels/<name>.npy    uint8 (z, y, x), same grid
        output/cases/<name>.json    the case's record, written once its arrays are complete

    Every file is written atomically. Rerunning with the same options skips the finished
    cases (and reuses the fingerprint if no source file changed); a different plan in an
    existing output folder is an error unless ``overwrite=True``.
    """
    start = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else discover_dataset(dataset)
    out = Path(output)
    _check_output(out, ds)
    margin, labels_list = _checked_options(
        target_spacing, window, normalization, crop, crop_margin_mm, image_order, liver_labels, workers
    )
    manifest = check_new_or_owned_folder(out, "preprocess")
    targets = [out / name for name in _FILES] + [p for case in ds.cases for p in _case_files(out, case.name)]
    manifest.check_replaceable(targets)  # before any work: never replace a file liverctl did not write
    existing_plan: Plan | None = None
    if (out / "plan.json").is_file() and manifest.owns(out / "plan.json"):
        existing_plan = Plan.load(out / "plan.json")

    fp = None if overwrite else _reusable_fingerprint(out, ds, margin, labels_list)
    if fp is None:
        fp = fingerprint(ds, crop_margin_mm=margin, liver_labels=labels_list, workers=workers, progress=progress)
    new_plan = plan(
        fp,
        target_spacing=target_spacing,
        window=window,
        normalization=normalization,
        image_order=image_order,
        labels=_labels_with_observed(ds.labels, fp),
    )
    if existing_plan is not None and not overwrite:
        diff = new_plan.differences(existing_plan)
        if diff:
            raise ConfigError(
                f"{out} was preprocessed with another plan (different {', '.join(diff)}); "
                "use --overwrite or another output folder"
            )
    _check_grids(fp, new_plan)  # before anything is written or removed
    if overwrite:
        manifest.remove_owned()  # only what liverctl wrote here; the user's files stay
    _write_plan_files(out, manifest, fp, new_plan)
    cases, processed, skipped = _preprocess_cases(out, ds, fp, new_plan, manifest, workers, progress)
    return PreprocessResult(
        output=out,
        plan=new_plan,
        fingerprint=fp,
        cases=cases,
        processed=processed,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _check_grids(fp: Fingerprint, new_plan: Plan) -> None:
    """Refuse, before any write, a case whose resampled grid no CT needs (e.g. a 1000 mm spacing
    brought to 1.5 mm: :func:`liverctl.io.checks.check_grid_size`)."""
    from liverctl.spatial import resampled_grid

    for case in fp.cases:
        try:
            resampled_grid(Geometry(case.spacing), case.cropped_shape, new_plan.target_spacing)
        except GeometryError as exc:
            raise GeometryError(f"case {case.name} ({case.source_image}): {exc}") from None


def _checked_options(
    target_spacing: str | Sequence[float],
    window: str | Sequence[float] | None,
    normalization: str,
    crop: bool,
    crop_margin_mm: float,
    image_order: int | str,
    liver_labels: Sequence[int] | None,
    workers: int,
) -> tuple[float | None, list[int] | None]:
    """Validate :func:`preprocess`'s options before the (long) fingerprint: ``(crop margin or
    None, sorted liver labels or None)``."""
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    margin = float(crop_margin_mm) if crop else None
    if margin is not None and (not math.isfinite(margin) or margin < 0):
        raise ConfigError(f"crop margin must be 0 or more mm, got {crop_margin_mm}")
    labels_list = None if liver_labels is None else sorted({int(v) for v in liver_labels})
    parse_spacing(target_spacing)
    resolve_window(window)
    if str(normalization).strip().lower() not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {normalization!r}: use 'dataset' or 'image'")
    if interpolation_order(image_order) == 0:
        raise ConfigError("images need linear (1) or cubic (3) interpolation; nearest is for label maps")
    return margin, labels_list


def _write_plan_files(out: Path, manifest: Manifest, fp: Fingerprint, new_plan: Plan) -> None:
    """Write the fingerprint (+ its arrays) and the plan, claimed in the folder's manifest."""
    out.mkdir(parents=True, exist_ok=True)
    top = [out / name for name in _FILES]
    manifest.claim(top, "preprocess")
    write_text_atomic(out / "fingerprint.json", json.dumps(fp.to_dict(), indent=2) + "\n")
    fp.save_arrays(out / "fingerprint_samples.npz")
    write_text_atomic(out / "plan.json", new_plan.to_json())
    manifest.record(top[:3])


def _preprocess_cases(
    out: Path,
    ds: Dataset,
    fp: Fingerprint,
    new_plan: Plan,
    manifest: Manifest,
    workers: int,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Preprocess the cases an earlier run did not finish, then write ``cases.json``:
    ``(records in dataset order, names processed, names skipped)``."""
    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    skipped: list[str] = []
    crops = {c.name: c.crop for c in fp.cases}
    for case in ds.cases:
        done = _case_done(out, case)
        if done is not None:
            records[case.name] = done
            skipped.append(case.name)
        else:
            todo.append(((case, new_plan, tuple(crops[case.name]), str(out)), {}))
    manifest.claim(p for args, _ in todo for p in _case_files(out, args[0].name))
    for record in map_cases(preprocess_case, todo, workers=workers, progress=progress, description="preprocess"):
        records[record["name"]] = record
        manifest.record(_case_files(out, record["name"]))
    cases = [records[c.name] for c in ds.cases]
    write_text_atomic(out / "cases.json", json.dumps(cases, indent=2) + "\n")
    manifest.record([out / "cases.json"])
    return cases, [args[0].name for args, _ in todo], skipped


# --------------------------------------------------------------------------- reading back


@dataclass
class PreprocessedDataset:
    """A folder written by :func:`preprocess`: ``plan``, ``fingerprint`` and one record per case.

    ``labelled`` is false for a folder of unlabelled scans written by
    :func:`~liverctl.preprocessing.unlabelled.preprocess_unlabelled`: it has images only, so
    :meth:`load` refuses and :meth:`load_image` reads.
    """

    folder: Path
    plan: Plan
    cases: list[dict[str, Any]]
    fingerprint: dict[str, Any] = field(repr=False, default_factory=dict)
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self.cases]

    def record(self, name: str) -> dict[str, Any]:
        for c in self.cases:
            if c["name"] == name:
                return c
        raise DatasetError(f"preprocessed dataset {self.folder} has no case named {name!r}")

    def load(self, name: str, mmap: bool = True) -> tuple[Image, Image]:
        """``(image, label)`` of a case; memory-mapped read-only arrays when ``mmap``."""
        if not self.labelled:
            raise DatasetError(
                f"{self.folder} holds unlabelled scans (preprocess --unlabelled): use it as "
                f"train --method sdnet --unlabelled {self.folder}"
            )
        rec = self.record(name)
        geometry = Geometry.from_dict(rec["geometry"])
        image, label = (self._array(sub, name, mmap) for sub in ("images", "labels"))
        if tuple(image.shape) != tuple(rec["shape"]) or image.shape != label.shape:
            raise GeometryError(f"case {name}: array shapes {image.shape}/{label.shape} differ from {rec['shape']}")
        return Image(image, geometry), Image(label, geometry)

    def load_image(self, name: str, mmap: bool = True) -> Image:
        """The image of a case alone (its label map, if any, is not opened)."""
        rec = self.record(name)
        image = self._array("images", name, mmap)
        if tuple(image.shape) != tuple(rec["shape"]):
            raise GeometryError(f"case {name}: array shape {image.shape} differs from {rec['shape']}")
        return Image(image, Geometry.from_dict(rec["geometry"]))

    def _array(self, sub: str, name: str, mmap: bool) -> np.ndarray:
        path = self.folder / sub / f"{name}.npy"
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"missing preprocessed file {path}; rerun liverctl preprocess") from None
        except ValueError as exc:
            raise InputError(f"cannot read {path}: {exc}") from None


def load_preprocessed(folder: str | os.PathLike[str]) -> PreprocessedDataset:
    """Open an output folder of :func:`preprocess` (no arrays are read until ``load``)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"no such preprocessed folder: {root}")
    if not (root / "plan.json").is_file():
        raise DatasetError(f"{root} is not a liverctl preprocess output (no plan.json)")
    if not (root / "cases.json").is_file():
        raise DatasetError(f"{root} is incomplete (no cases.json); rerun liverctl preprocess")
    plan_ = Plan.load(root / "plan.json")
    try:
        cases = json.loads((root / "cases.json").read_text(encoding="utf-8"))
        fp_path = root / "fingerprint.json"
        fp = json.loads(fp_path.read_text(encoding="utf-8")) if fp_path.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {root}: {exc}") from None
    return PreprocessedDataset(root, plan_, cases, fp, labelled=not (root / "unlabelled.json").is_file())
