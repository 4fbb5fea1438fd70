"""Cross-dataset testing (the protocol of He et al. 2021, :mod:`liverctl.training.he2021`): train on all of dataset S, test on every other T.

:func:`crosstest` runs the protocol of He et al. (2021) end to end:

1. **Datasets.** Each ``DATASET`` is a raw dataset folder (any layout of
   :func:`liverctl.datasets.discover_dataset`; it is preprocessed into
   ``OUT/preprocessed/<name>`` with :func:`liverctl.preprocessing.preprocess`, which skips
   cases it already did, when its model has to be trained) or a folder written by
   ``liverctl preprocess``. ``<name>`` is the dataset's name (``dataset.json``), or its
   folder name when two datasets share a name.
2. **Sources.** One model per dataset, trained on *all* its scans (no validation split)
   with :func:`liverctl.training.train` into ``OUT/models/<name>/``; a finished model
   (``model.safetensors`` + ``weights.toml``) is reused (by name: delete its folder to
   retrain), an interrupted run is resumed from its ``last.pt``. Models found in ``OUT``
   that were trained with other options are an error.
3. **Cells.** For every ordered pair (S, T) with S != T, every scan of T is segmented with
   S's model and compared with T's reference. The diagonal (a model tested on the data it
   was trained on) is not part of the protocol and stays empty; within-dataset accuracy is
   what ``liverctl train --folds K`` measures.
4. **Matrices.** Per metric, an S x T matrix of per-case means, as CSV, in one JSON file,
   and as a heatmap PNG with the best source per target (column) boxed and in bold.

Honest recipe. A target scan is **never** taken from the target's own preprocessing:
the *raw* target scan (the original file; for a preprocessed target, the ``source_image``
recorded in its ``cases.json``) goes through exactly what ``liverctl predict --weights``
does with S's exported model: reorientation, resampling to S's spacing, S's HU window and
S's z-score statistics (:class:`liverctl.predict.LiverModel`), sliding-window inference,
back to the scan's own grid, largest component and hole filling. The metrics are computed
on the scan's own grid against the raw reference label map.

Liver region. Every dataset must name a ``liver`` label. The reference liver region of a
target scan is the union of its labels named ``liver``, ``tumour``/``tumor`` and
``lesion`` (the whole organ, as in LiTS' liver scoring); the prediction is the model's
liver mask. Datasets with different label sets are refused (:class:`ConfigError`) unless
``liver_only=True``, which accepts them with a warning (the comparison is on the liver
region in any case; each source model is trained on its own label set).

Resumability. Each finished cell is written atomically to ``OUT/cells/<S>__<T>.json``
together with the sha256 of S's model and the list of T's scans; a rerun reuses every
cell whose model and scan list are unchanged, and every finished scan of an unfinished
cell (``OUT/cells/<S>__<T>/<case>.json``). Nothing already computed is recomputed.

Bad input. A target scan that cannot be read or segmented (corrupt file, not CT) is
skipped with a :class:`~liverctl.errors.LiverctlWarning` and listed in the cell's
``skipped``; so is a target scan whose reference has no liver voxel (Dice is undefined
there). A cell with no usable scan is NaN (``null`` in JSON, empty in CSV). Unreadable
*training* scans are skipped by the trainer with a warning.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.datasets import LIVER_REGION_NAMES, liver_region_values
from liverctl.errors import ConfigError, DatasetError, InputError, LiverctlError, LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.progress import ProgressCallback

__all__ = ["LIVER_NAMES", "CrosstestResult", "SourceDataset", "crosstest", "open_dataset", "parse_metrics"]

#: Label names that make up the liver region of a reference label map.
LIVER_NAMES: tuple[str, ...] = LIVER_REGION_NAMES

#: Training options that do not change the model (ignored when deciding to reuse one).
_RUNTIME_OPTIONS = ("device", "precision", "num_workers", "dataset_names", "checkpoint_every")

CELL_FORMAT = "liverctl-crosstest-cell-1"


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


@dataclass
class CrosstestResult:
    """What :func:`crosstest` produced.

    Attributes:
        output_dir: the output folder.
        names: dataset names, in the order given (rows = sources, columns = targets).
        metrics: the metrics of the matrices.
        matrices: ``{metric: S x T array}`` of per-case means (NaN on the diagonal and for
            cells without a usable scan).
        best: ``{metric: {target: best source}}`` (``None`` if the column has no value).
        cells: ``{(source, target): cell record}`` as written to ``cells/<S>__<T>.json``.
        computed, reused: the cells computed by this run / taken from an earlier one.
        trained, reused_models: the sources trained (or resumed) by this run / reused.
        files: written files: ``"json"``, ``"csv:<metric>"``, ``"png:<metric>"``.
        seconds: wall time of this run.
    """

    output_dir: Path
    names: list[str]
    metrics: tuple[str, ...]
    matrices: dict[str, np.ndarray]
    best: dict[str, dict[str, str | None]]
    cells: dict[tuple[str, str], dict[str, Any]]
    computed: list[tuple[str, str]] = field(default_factory=list)
    reused: list[tuple[str, str]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    reused_models: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (non-finite values become ``None``)."""
        return {
            "protocol": "train on all scans of each source dataset S, test on every other dataset T "
            "(METHODS.md section 1); diagonal not computed",
            "names": list(self.names),
            "metrics": list(self.metrics),
            "statistic": "mean over the target's scans (per-case metrics)",
            "matrices": {m: [[_finite(v) for v in row] for row in self.matrices[m]] for m in self.metrics},
            "best_source": self.best,
            "cells": {f"{s}__{t}": {k: v for k, v in c.items() if k != "per_case"} for (s, t), c in self.cells.items()},
            "computed": [f"{s}__{t}" for s, t in self.computed],
            "reused": [f"{s}__{t}" for s, t in self.reused],
            "trained": list(self.trained),
            "reused_models": list(self.reused_models),
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- helpers


def _finite(value: Any) -> Any:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


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
    from liverctl.datasets import discover_dataset

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


def _check_labels(sets: list[SourceDataset], liver_only: bool) -> None:
    for s in sets:
        if not any(n.lower() == "liver" and int(v) != 0 for n, v in s.labels.items()):
            raise ConfigError(f"dataset {s.name} has no label named 'liver' (labels: {s.labels})")
        if not s.cases:
            raise DatasetError(f"dataset {s.name} holds no labelled scan")
    first = sets[0]
    for s in sets[1:]:
        if s.labels != first.labels:
            message = f"datasets have different label sets: {first.name} {first.labels} vs {s.name} {s.labels}"
            if not liver_only:
                raise ConfigError(message + "; pass --liver-only (liver_only=True) to compare the liver region only")
            warnings.warn(message + ": compared on the liver region only", LiverctlWarning, stacklevel=3)


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


def _cell_path(output_dir: Path, source: str, target: str) -> Path:
    return output_dir / "cells" / f"{source}__{target}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reference_region(label_path: Path, liver_values: list[int]) -> Any:
    from liverctl.io import Image, read_label

    ref = read_label(label_path)
    return Image(np.isin(ref.array, liver_values).astype(np.uint8), ref.geometry)


def _case_record(
    model: Any,
    options: Any,
    case: tuple[str, Path, Path],
    target: SourceDataset,
    metrics: tuple[str, ...],
) -> dict[str, Any]:
    """Segment one raw target scan with the source model and score it (module docs)."""
    from liverctl.io import check_same_grid, read_image
    from liverctl.metrics import compute_metrics

    name, image_path, label_path = case
    image = read_image(image_path)
    ref = _reference_region(label_path, target.liver_values)
    check_same_grid(image, ref, "scan", "reference")
    if not ref.array.any():
        return {"case": name, "skipped": "the reference has no liver voxel"}
    seg = model.segment(image, options, source=str(image_path))
    pm = compute_metrics(seg.mask.array, ref.array, image.spacing_zyx)
    values = pm.values()
    return {"case": name, **{m: values[m] for m in metrics}, "empty": pm.empty}


def _run_cell(
    output_dir: Path,
    source: SourceDataset,
    target: SourceDataset,
    model_loader: Any,
    model_sha: str,
    options: Any,
    metrics: tuple[str, ...],
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    case_dir = output_dir / "cells" / f"{source.name}__{target.name}"
    records: list[dict[str, Any]] = []
    description = f"{source.name} -> {target.name}"
    if progress is not None:
        progress(description, 0, len(target.cases))
    for i, case in enumerate(target.cases):
        name = case[0]
        path = case_dir / f"{_safe_name(name)}.json"
        done = _read_json(path)
        if (
            done is not None
            and done.get("model_sha256") == model_sha
            and done.get("image") == str(case[1])
            and (all(m in done for m in metrics) or "skipped" in done)
        ):
            records.append(done)
            if progress is not None:
                progress(description, i + 1, len(target.cases))
            continue
        model = model_loader()  # a model that cannot be loaded is an error, not a skipped scan
        try:
            record = _case_record(model, options, case, target, metrics)
        except LiverctlError as exc:
            record = {"case": name, "skipped": " ".join(str(exc).split())}
        except MemoryError:
            record = {"case": name, "skipped": "out of memory"}
        if "skipped" in record:
            warnings.warn(
                f"cross test {source.name} -> {target.name}: skipping scan {name}: {record['skipped']}",
                LiverctlWarning,
                stacklevel=2,
            )
        record.update({"model_sha256": model_sha, "image": str(case[1]), "label": str(case[2])})
        write_text_atomic(path, json.dumps(_clean_json(record), indent=2) + "\n")
        records.append(record)
        if progress is not None:
            progress(description, i + 1, len(target.cases))
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
        "scans": [c[0] for c in target.cases],
        "n": len(used),
        "summary": summary,
        "skipped": [{"case": r["case"], "reason": r["skipped"]} for r in records if "skipped" in r],
        "per_case": [{k: r.get(k) for k in ("case", *metrics, "empty")} for r in used],
    }


def _clean_json(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return obj


def _cell_reusable(cell: dict[str, Any] | None, model_sha: str, target: SourceDataset, metrics: Sequence[str]) -> bool:
    return (
        cell is not None
        and cell.get("format") == CELL_FORMAT
        and cell.get("model_sha256") == model_sha
        and cell.get("scans") == [c[0] for c in target.cases]
        and all(m in (cell.get("summary") or {}) for m in metrics)
    )


def best_sources(matrix: np.ndarray, names: Sequence[str], metric: str) -> dict[str, str | None]:
    """The best source (row) per target (column): highest value for metrics where higher
    is better, lowest for the others (lowest absolute value for the signed RVD). Ties go to
    the first source in order; a column without any value gets ``None``."""
    from liverctl.metrics import HIGHER_IS_BETTER

    out: dict[str, str | None] = {}
    for j, target in enumerate(names):
        col = np.asarray(matrix[:, j], dtype=float)
        if metric == "rvd":
            col = np.abs(col)
        if not np.isfinite(col).any():
            out[target] = None
            continue
        score = np.where(np.isfinite(col), col, -np.inf if metric in HIGHER_IS_BETTER else np.inf)
        i = int(np.argmax(score) if metric in HIGHER_IS_BETTER else np.argmin(score))
        out[target] = names[i]
    return out


def matrix_csv(matrix: np.ndarray, names: Sequence[str], digits: int = 6) -> str:
    """The matrix as CSV: header ``source\\target,<T1>,...``, one row per source; empty
    fields for the diagonal and for cells without a value."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["source\\target", *names])
    for i, s in enumerate(names):
        writer.writerow([s, *("" if not math.isfinite(v) else f"{v:.{digits}g}" for v in matrix[i])])
    return buf.getvalue()


# --------------------------------------------------------------------------- public API


def crosstest(
    datasets: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    train_config: Any = None,
    metrics: str | Sequence[str] = ("dice",),
    preprocess_options: dict[str, Any] | None = None,
    predict_options: Any = None,
    liver_only: bool = False,
    plot: bool = True,
    progress: ProgressCallback | None = None,
) -> CrosstestResult:
    """Cross-dataset test: one model per dataset, tested on every other dataset (module docs).

    Args:
        datasets: two or more raw or preprocessed dataset folders.
        output_dir: the output folder (created; rerunning in it resumes).
        train_config: a :class:`liverctl.training.TrainConfig` (folds are ignored: each
            source trains on all its scans); ``None`` = the defaults.
        metrics: metric names of :data:`liverctl.metrics.METRIC_NAMES` (Dice is always
            included), as a list or ``"dice,assd"``.
        preprocess_options: keyword arguments of :func:`liverctl.preprocessing.preprocess`
            for the raw datasets (``target_spacing``, ``window``, ``normalization``...).
        predict_options: a :class:`liverctl.predict.PredictOptions`; default: the
            training device and precision, everything else as ``liverctl predict``.
        liver_only: accept datasets with different label sets (compared on the liver region).
        plot: write the heatmap PNGs.
        progress: receives the progress of preprocessing, training, each cell
            (``"S -> T"``) and ``("crosstest", cells done, cells)``.

    Returns:
        A :class:`CrosstestResult`; the files are listed in ``result.files``.

    Raises:
        ConfigError: fewer than two datasets, the same dataset twice, different label sets,
            an unknown metric, an output folder holding models trained with other options.
        InputError, DatasetError: a missing or unreadable dataset.
    """
    start = time.perf_counter()
    wanted = parse_metrics(metrics)
    if len(datasets) < 2:
        raise ConfigError("a cross test needs at least two datasets")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")

    from liverctl.training import TrainConfig

    config = train_config if train_config is not None else TrainConfig()
    config.validate()
    sets = [open_dataset(d, out) for d in datasets]
    _name_datasets(sets)
    for s in sets:
        if out.resolve() == s.folder.resolve() or s.folder.resolve().is_relative_to(out.resolve()):
            raise InputError(f"output folder {out} would hold the input dataset {s.folder}; choose another folder")
    _check_labels(sets, liver_only)
    names = [s.name for s in sets]
    out.mkdir(parents=True, exist_ok=True)

    # 1. one model per source (a raw source is preprocessed first, when it must be trained)
    from liverctl.predict import LiverModel, PredictOptions
    from liverctl.training.export import sha256_file

    result = CrosstestResult(out, names, wanted, {}, {}, {})
    for s in sets:  # refuse a folder of models trained otherwise before spending any time
        _check_model_config(out / "models" / s.name, config)
    models: dict[str, Path] = {}
    for s in sets:
        path, trained = _train_source(s, out, config, preprocess_options, progress)
        models[s.name] = path
        (result.trained if trained else result.reused_models).append(s.name)

    # 2. the cells
    options = predict_options or PredictOptions(device=config.device, precision=config.precision)
    pairs = [(s, t) for s in sets for t in sets if s is not t]
    if progress is not None:
        progress("crosstest", 0, len(pairs))
    shas = {name: sha256_file(path) for name, path in models.items()}
    for done, (s, t) in enumerate(pairs, start=1):
        sha = shas[s.name]
        path = _cell_path(out, s.name, t.name)
        cell = _read_json(path) if path.is_file() else None
        if _cell_reusable(cell, sha, t, wanted):
            assert cell is not None
            result.reused.append((s.name, t.name))
        else:
            loaded: list[Any] = []

            def loader(source: SourceDataset = s, box: list[Any] = loaded) -> Any:
                if not box:
                    box.append(
                        LiverModel.load(
                            weights=models[source.name],
                            device=options.device,
                            precision=options.precision,
                            threads=options.threads,
                        )
                    )
                return box[0]

            cell = _run_cell(out, s, t, loader, sha, options, wanted, progress)
            write_text_atomic(path, json.dumps(_clean_json(cell), indent=2) + "\n")
            result.computed.append((s.name, t.name))
        result.cells[(s.name, t.name)] = cell
        if progress is not None:
            progress("crosstest", done, len(pairs))

    # 3. matrices, best sources, files
    n = len(names)
    for m in wanted:
        mat = np.full((n, n), np.nan)
        for (sn, tn), cell in result.cells.items():
            value = ((cell.get("summary") or {}).get(m) or {}).get("mean")
            if value is not None:
                mat[names.index(sn), names.index(tn)] = float(value)
        result.matrices[m] = mat
        result.best[m] = best_sources(mat, names, m)
        result.files[f"csv:{m}"] = write_text_atomic(out / f"matrix_{m}.csv", matrix_csv(mat, names))
    if plot:
        from liverctl.metrics import HIGHER_IS_BETTER
        from liverctl.plots import heatmap

        for m in wanted:
            best = result.best[m]
            marks = [names.index(b) if b is not None else None for b in (best[t] for t in names)]
            result.files[f"png:{m}"] = heatmap(
                result.matrices[m],
                names,
                names,
                out / f"matrix_{m}.png",
                best=marks,
                title=f"Cross test: {m} (rows: trained on, columns: tested on)",
                cmap="viridis" if m in HIGHER_IS_BETTER else "viridis_r",
                value_label=m,
            )
    result.files["json"] = out / "crosstest.json"
    result.seconds = time.perf_counter() - start
    write_text_atomic(out / "crosstest.json", json.dumps(_clean_json(result.to_dict()), indent=2) + "\n")
    return result
