"""One cell of a cross test: every scan of target T segmented by source S's model, and scored.

Step 3 of the protocol in :mod:`liverctl.crosstest`. Target crop (:func:`crop_target`): with
``target_crop="paper"`` each target scan and its reference are cropped in z as He et al. 2021
preprocess every scan (the first to the last slice of the
reference liver region, widened by 60 mm on each side, bounded by the volume) before the
source model segments it, and the metrics are computed on that slab; ``"none"`` keeps the raw
scan. A cell is written atomically to
``OUT/cells/<S>__<T>.json`` and each of its scans to ``OUT/cells/<S>__<T>/<case>.json``, with
the sha256 of S's model, so that a rerun reuses a finished cell and every finished scan of an
unfinished one. A scan that cannot be read or segmented, or whose reference has no liver
voxel, is skipped with a :class:`~liverctl.errors.LiverctlWarning`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.crosstest.sources import SourceDataset, _safe_name
from liverctl.errors import ConfigError, LiverctlError, LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.jsonsafe import json_safe
from liverctl.progress import ProgressCallback, report_values

__all__ = [
    "CELL_FORMAT",
    "TARGET_CROPS",
    "TARGET_MARGIN_MM",
    "TARGET_NORMALIZATIONS",
    "cell_reusable",
    "crop_target",
    "model_loader",
    "run_cell",
]

CELL_FORMAT = "liverctl-crosstest-cell-1"
TARGET_NORMALIZATIONS = ("target", "source")
"""``target_normalization`` values: every target scan normalised with its own dataset's intensity
statistics (per dataset, the paper's reading), or with the source model's (as ``predict``)."""
TARGET_CROPS = ("paper", "none")
"""``target_crop`` values: the paper's liver z-crop of every target scan, or the raw scan."""
TARGET_MARGIN_MM = 60.0
"""He et al. 2021: the liver's first and last slice, widened by 60 mm on each side."""


def _cell_path(output_dir: Path, source: str, target: str) -> Path:
    return output_dir / "cells" / f"{source}__{target}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` atomically as indented JSON, non-finite numbers as ``null``."""
    return write_text_atomic(path, json.dumps(json_safe(data), indent=2) + "\n")


def _reference_region(label_path: Path, liver_values: list[int]) -> Any:
    from liverctl.io import Image, read_label

    ref = read_label(label_path)
    return Image(np.isin(ref.array, liver_values).astype(np.uint8), ref.geometry)


def crop_target(image: Any, ref: Any, target_crop: str) -> tuple[Any, Any, tuple[int, int]]:
    """The target scan and its 0/1 reference region as the cross test scores them: with
    ``"paper"`` both cropped in z to the reference liver's first to last slice widened by
    :data:`TARGET_MARGIN_MM` on each side (bounded by the volume); with ``"none"`` unchanged.
    Returns ``(image, ref, (z0, z1))``, the kept slices ``z0 <= z < z1``."""
    from liverctl.preprocessing.crop import crop_z, liver_z_range

    if target_crop not in TARGET_CROPS:
        raise ConfigError(f"--target-crop must be one of {', '.join(TARGET_CROPS)}, got {target_crop!r}")
    z_range = liver_z_range(ref, TARGET_MARGIN_MM) if target_crop == "paper" else None
    if z_range is None or z_range == (0, image.shape[0]):
        return image, ref, (0, image.shape[0])
    return crop_z(image, *z_range), crop_z(ref, *z_range), z_range


def _case_record(
    model: Any,
    options: Any,
    case: tuple[str, Path, Path],
    target: SourceDataset,
    metrics: tuple[str, ...],
    target_crop: str = "paper",
) -> dict[str, Any]:
    """Segment one raw target scan (cropped as ``target_crop`` says) with the source model and score it."""
    from liverctl.io import check_same_grid, read_image
    from liverctl.metrics import compute_metrics

    name, image_path, label_path = case
    image = read_image(image_path)
    ref = _reference_region(label_path, target.liver_values)
    check_same_grid(image, ref, "scan", "reference")
    if not ref.array.any():
        return {"case": name, "skipped": "the reference has no liver voxel"}
    image, ref, z_range = crop_target(image, ref, target_crop)
    seg = model.segment(image, options, source=str(image_path))
    pm = compute_metrics(seg.mask.array, ref.array, image.spacing_zyx)
    values = pm.values()
    return {"case": name, **{m: values[m] for m in metrics}, "empty": pm.empty, "z_range": list(z_range)}


def _case_done(
    done: dict[str, Any] | None,
    model_sha: str,
    image: Path,
    metrics: tuple[str, ...],
    target_crop: str,
    intensity: dict[str, Any] | None = None,
) -> bool:
    """Whether a scan record of an earlier run holds this model's result for this scan, crop and
    intensity recipe (``None``: the model's own)."""
    return (
        done is not None
        and done.get("target_intensity") == intensity
        and done.get("model_sha256") == model_sha
        and done.get("image") == str(image)
        and done.get("target_crop", "none") == target_crop
        and (all(m in done for m in metrics) or "skipped" in done)
    )


def _score_case(
    model: Any,
    options: Any,
    case: tuple[str, Path, Path],
    target: SourceDataset,
    metrics: tuple[str, ...],
    cell: str,
    target_crop: str,
) -> dict[str, Any]:
    """:func:`_case_record`, with a scan that cannot be scored skipped (and warned about)."""
    name = case[0]
    try:
        record = _case_record(model, options, case, target, metrics, target_crop)
    except LiverctlError as exc:
        record = {"case": name, "skipped": " ".join(str(exc).split())}
    except MemoryError:
        record = {"case": name, "skipped": "out of memory"}
    if "skipped" in record:
        warnings.warn(
            f"cross test {cell}: skipping scan {name}: {record['skipped']}",
            LiverctlWarning,
            stacklevel=4,  # the crosstest() frame, as before the split
        )
    return record


def _summarise(
    source: SourceDataset,
    target: SourceDataset,
    model_sha: str,
    records: list[dict[str, Any]],
    metrics: tuple[str, ...],
    target_crop: str,
) -> dict[str, Any]:
    """The cell record: mean, SD and n per metric over the scans that were not skipped."""
    used = [r for r in records if "skipped" not in r]
    summary = {}
    for m in metrics:
        vals = np.array([float(r[m]) for r in used if r.get(m) is not None], dtype=float)
        summary[m] = {
            "mean": float(vals.mean()) if vals.size else None,
            "std": float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else None),
            "n": int(vals.size),
        }
    return {
        "format": CELL_FORMAT,
        "source": source.name,
        "target": target.name,
        "model_sha256": model_sha,
        "target_crop": target_crop,
        "scans": [c[0] for c in target.cases],
        "n": len(used),
        "summary": summary,
        "skipped": [{"case": r["case"], "reason": r["skipped"]} for r in records if "skipped" in r],
        "per_case": [{k: r.get(k) for k in ("case", *metrics, "empty")} for r in used],
    }


def run_cell(
    output_dir: Path,
    source: SourceDataset,
    target: SourceDataset,
    model_loader: Callable[[], Any],
    model_sha: str,
    options: Any,
    metrics: tuple[str, ...],
    progress: ProgressCallback | None,
    target_crop: str = "paper",
    intensity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment and score every scan of ``target`` with ``source``'s model; the cell record.
    ``intensity``: the target's own intensity recipe the model was given (``None``: its own).

    Each scan's record is written to ``cells/<S>__<T>/<case>.json`` as soon as it is done;
    a record of an earlier run for the same model and scan is reused. ``model_loader`` is
    called only when a scan must be segmented (a model that cannot be loaded is an error,
    not a skipped scan)."""
    case_dir = output_dir / "cells" / f"{source.name}__{target.name}"
    records: list[dict[str, Any]] = []
    description = f"{source.name} -> {target.name}"
    if progress is not None:
        progress(description, 0, len(target.cases))
    for i, case in enumerate(target.cases):
        path = case_dir / f"{_safe_name(case[0])}.json"
        done = _read_json(path)
        if _case_done(done, model_sha, case[1], metrics, target_crop, intensity):
            assert done is not None
            records.append(done)
        else:
            record = _score_case(model_loader(), options, case, target, metrics, description, target_crop)
            record.update({"model_sha256": model_sha, "image": str(case[1]), "label": str(case[2])})
            record["target_crop"], record["target_intensity"] = target_crop, intensity
            write_json(path, record)
            records.append(record)
        if progress is not None:
            progress(description, i + 1, len(target.cases))
    return {**_summarise(source, target, model_sha, records, metrics, target_crop), "target_intensity": intensity}


def cell_reusable(
    cell: dict[str, Any] | None,
    model_sha: str,
    target: SourceDataset,
    metrics: Sequence[str],
    target_crop: str = "paper",
) -> bool:
    """Whether a cell record of an earlier run holds this model's result on this scan list and crop."""
    return (
        cell is not None
        and cell.get("format") == CELL_FORMAT
        and cell.get("model_sha256") == model_sha
        and cell.get("target_crop", "none") == target_crop
        and cell.get("scans") == [c[0] for c in target.cases]
        and all(m in (cell.get("summary") or {}) for m in metrics)
    )


def model_loader(weights: Path, options: Any, intensity: Any = None) -> Callable[[], Any]:
    """A function that loads the model of ``weights`` on its first call and returns it on every call;
    with ``intensity`` (an :class:`~liverctl.weights.IntensityRecipe`) the model normalises scans
    with it instead of its own recipe (a target dataset's own statistics)."""
    import dataclasses

    from liverctl.predict import LiverModel

    box: list[Any] = []

    def load() -> Any:
        if not box:
            model = LiverModel.load(
                weights=weights, device=options.device, precision=options.precision, threads=options.threads
            )
            if intensity is not None:
                model.entry = dataclasses.replace(model.entry, intensity=intensity)
            box.append(model)
        return box[0]

    return load


def run_cells(
    sets: Sequence[SourceDataset],
    out: Path,
    models: dict[str, Path],
    options: Any,
    metrics: tuple[str, ...],
    progress: ProgressCallback | None,
    target_crop: str = "paper",
    target_recipes: dict[str, Any] | None = None,
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Every off-diagonal cell, reused or computed: ``(cells, computed, reused)``. ``target_recipes``:
    per target name, the intensity recipe its scans are normalised with (``None``: each source
    model's own)."""
    from liverctl.training.export import sha256_file

    pairs = [(s, t) for s in sets for t in sets if s is not t]
    if progress is not None:
        progress("crosstest", 0, len(pairs))
    shas = {name: sha256_file(path) for name, path in models.items()}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    computed: list[tuple[str, str]] = []
    reused: list[tuple[str, str]] = []
    for done, (s, t) in enumerate(pairs, start=1):
        sha = shas[s.name]
        path = _cell_path(out, s.name, t.name)
        cell = _read_json(path) if path.is_file() else None
        recipe = (target_recipes or {}).get(t.name)
        intensity = recipe.to_dict() if recipe is not None else None
        if cell_reusable(cell, sha, t, metrics, target_crop) and cell.get("target_intensity") == intensity:
            assert cell is not None
            reused.append((s.name, t.name))
        else:
            load = model_loader(models[s.name], options, recipe)
            cell = run_cell(out, s, t, load, sha, options, metrics, progress, target_crop, intensity)
            write_json(path, cell)
            computed.append((s.name, t.name))
        cells[(s.name, t.name)] = cell
        summary = cell.get("summary") or {}
        report_values(  # the cell's mean scores, for the log line (and the bar) of this cell
            progress,
            "crosstest",
            cell=f"{s.name} -> {t.name}",
            **{m: (summary.get(m) or {}).get("mean") for m in metrics},
        )
        if progress is not None:
            progress("crosstest", done, len(pairs))
    return cells, computed, reused
