"""The cross test end to end: :func:`crosstest` and its :class:`CrosstestResult`.

:func:`crosstest` runs the protocol described in :mod:`liverctl.crosstest` as named steps:
check the inputs, open the sources (:mod:`~liverctl.crosstest.sources`), train or reuse one
model per source, run or reuse every cell (:mod:`~liverctl.crosstest.cells`), then write the
matrices, heatmaps (:mod:`~liverctl.crosstest.matrix`) and ``crosstest.json``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.crosstest.cells import TARGET_CROPS, TARGET_NORMALIZATIONS, run_cells, write_json
from liverctl.crosstest.matrix import write_heatmaps, write_matrices
from liverctl.crosstest.sources import open_sources, parse_metrics, train_sources
from liverctl.errors import ConfigError, InputError
from liverctl.jsonsafe import json_safe
from liverctl.progress import ProgressCallback

__all__ = ["CROSSTEST_METHODS", "CrosstestResult", "crosstest"]


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
        method: the training method of the source models; target_crop: how target scans were cropped;
        target_normalization: whose intensity statistics normalised the target scans.
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
    method: str = "he2021"
    target_crop: str = "paper"
    target_normalization: str = "target"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (non-finite values become ``None``)."""
        return {
            "protocol": "train on all scans of each source dataset S, test on every other dataset T "
            "(He et al. 2021); diagonal not computed",
            "method": self.method,
            "target_crop": self.target_crop,
            "target_normalization": self.target_normalization,
            "names": list(self.names),
            "metrics": list(self.metrics),
            "statistic": "mean over the target's scans (per-case metrics)",
            "matrices": {m: json_safe(np.asarray(self.matrices[m], dtype=float).tolist()) for m in self.metrics},
            "best_source": self.best,
            "cells": {f"{s}__{t}": {k: v for k, v in c.items() if k != "per_case"} for (s, t), c in self.cells.items()},
            "computed": [f"{s}__{t}" for s, t in self.computed],
            "reused": [f"{s}__{t}" for s, t in self.reused],
            "trained": list(self.trained),
            "reused_models": list(self.reused_models),
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": round(self.seconds, 3),
        }


def _check_inputs(
    datasets: Sequence[str | os.PathLike[str]], output_dir: str | os.PathLike[str], metrics: str | Sequence[str]
) -> tuple[tuple[str, ...], Path]:
    """The validated metrics and the output folder (which may not be a file)."""
    wanted = parse_metrics(metrics)
    if len(datasets) < 2:
        raise ConfigError("a cross test needs at least two datasets")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    return wanted, out


CROSSTEST_METHODS = ("he2021", "di2in-an", "hdenseunet", "pipofan")
"""The training methods a cross test trains its sources with (SD-Net needs unlabelled scans)."""


def _train_config(train_config: Any, tumour_class: bool) -> Any:
    """``train_config`` (or the defaults) with ``tumour_class``, validated; unsupported methods
    and combinations refused (one line) before any work."""
    from liverctl.training.config import resolve

    config = resolve(train_config)
    if config.method not in CROSSTEST_METHODS:
        raise ConfigError(
            f"crosstest --method {config.method} is not supported (it needs unlabelled scans per source); "
            f"use one of {', '.join(CROSSTEST_METHODS)}"
        )
    if tumour_class and config.method == "di2in-an":
        raise ConfigError("--tumour-class: --method di2in-an segments the whole liver only (a sigmoid liver map)")
    # resolved (the recipe's network named), as config.json records it, so reruns compare equal
    return resolve(dataclasses.replace(config, tumour_class=tumour_class))


def _preprocess_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The preprocessing of raw datasets: ``normalization`` defaults to ``"ct"`` (nnU-Net's CT scheme,
    He et al. 2021), or to ``"dataset"`` (the windowed z-score) when a HU window is given."""
    from liverctl.preprocessing import resolve_window

    opts = dict(options or {})
    if opts.get("normalization") is None:
        opts["normalization"] = "ct" if resolve_window(opts.get("window", "none")) is None else "dataset"
    return opts


def _target_recipes(
    sets: Sequence[Any], preprocess_options: dict[str, Any], progress: ProgressCallback | None
) -> dict[str, Any]:
    """Per dataset, the intensity recipe of its own preprocessing plan (a raw dataset whose model was
    reused is preprocessed again, resumably, when its plan is missing)."""
    from liverctl.preprocessing import Plan, preprocess
    from liverctl.training.export import intensity_recipe

    recipes = {}
    for s in sets:
        plan_path = Path(s.preprocessed) / "plan.json"
        if not plan_path.is_file() and s.raw:
            preprocess(s.folder, s.preprocessed, progress=progress, **preprocess_options)
        recipes[s.name] = intensity_recipe(Plan.load(plan_path).to_dict())
    return recipes


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
    target_crop: str = "paper",
    tumour_class: bool = False,
    target_normalization: str = "target",
) -> CrosstestResult:
    """Cross-dataset test: one model per dataset, tested on every other dataset (:mod:`liverctl.crosstest`).

    Args:
        datasets: two or more raw or preprocessed dataset folders.
        output_dir: the output folder (created; rerunning in it resumes).
        train_config: a :class:`liverctl.training.TrainConfig` (folds are ignored: each
            source trains on all its scans); ``None`` = the defaults. ``train_config.method``
            is the recipe of every source model (:data:`CROSSTEST_METHODS`), trained by
            :func:`liverctl.training.train` as ``liverctl train`` does.
        metrics: metric names of :data:`liverctl.metrics.METRIC_NAMES` (Dice is always
            included), as a list or ``"dice,assd"``.
        preprocess_options: keyword arguments of :func:`liverctl.preprocessing.preprocess`
            for the raw datasets (``target_spacing``, ``window``, ``normalization``...);
            ``normalization`` defaults to ``"ct"``, nnU-Net's CT scheme as He et al. 2021
            (``"dataset"`` when a ``window`` is given).
        predict_options: a :class:`liverctl.predict.PredictOptions`; default: the
            training device and precision, everything else as ``liverctl predict``.
        liver_only: accept datasets with different label sets (compared on the liver region).
        plot: write the heatmap PNGs.
        progress: receives the progress of preprocessing, training, each cell
            (``"S -> T"``) and ``("crosstest", cells done, cells)``.
        target_crop: ``"paper"`` (default): every target scan and its reference are cropped
            in z to the reference liver widened by 60 mm, as He et al. 2021 preprocess every
            scan; ``"none"``: the raw scan (:func:`~liverctl.crosstest.cells.crop_target`).
        tumour_class: train tumour labels as a class of their own; ``False`` (default, the
            paper's) merges them into the liver (``TrainConfig.tumour_class``).
        target_normalization: ``"target"`` (default): every target scan is normalised with its
            own dataset's intensity statistics (the plan of its preprocessing; the paper
            normalises per dataset); ``"source"``: with the source model's, as ``predict`` does.

    Returns:
        A :class:`CrosstestResult`; the files are listed in ``result.files``.

    Raises:
        ConfigError: fewer than two datasets, the same dataset twice, different label sets,
            an unknown metric or target crop, an unsupported method or combination, an output
            folder holding models trained with other options.
        InputError, DatasetError: a missing or unreadable dataset.
    """
    start = time.perf_counter()
    wanted, out = _check_inputs(datasets, output_dir, metrics)
    if target_crop not in TARGET_CROPS:
        raise ConfigError(f"--target-crop must be one of {', '.join(TARGET_CROPS)}, got {target_crop!r}")
    if target_normalization not in TARGET_NORMALIZATIONS:
        raise ConfigError(
            f"--target-normalization must be one of {', '.join(TARGET_NORMALIZATIONS)}, got {target_normalization!r}"
        )
    preprocess_options = _preprocess_options(preprocess_options)
    config = _train_config(train_config, tumour_class)
    # a label warning names our caller; whole-liver models need no agreement on tumour labels
    sets = open_sources(datasets, out, liver_only, stacklevel=3, whole_liver=not config.tumour_class)
    names = [s.name for s in sets]
    out.mkdir(parents=True, exist_ok=True)
    result = CrosstestResult(out, names, wanted, {}, {}, {}, method=config.method, target_crop=target_crop)
    result.target_normalization = target_normalization

    # 1. one model per source (a raw source is preprocessed first, when it must be trained)
    models, result.trained, result.reused_models = train_sources(sets, out, config, preprocess_options, progress)

    # 2. the cells
    from liverctl.predict import PredictOptions

    options = predict_options or PredictOptions(device=config.device, precision=config.precision)
    recipes = _target_recipes(sets, preprocess_options, progress) if target_normalization == "target" else None
    result.cells, result.computed, result.reused = run_cells(
        sets, out, models, options, wanted, progress, target_crop, recipes
    )

    # 3. matrices, best sources, files
    write_matrices(result, out)
    if plot:
        write_heatmaps(result, out)
    result.files["json"] = out / "crosstest.json"
    result.seconds = time.perf_counter() - start
    write_json(out / "crosstest.json", result.to_dict())
    return result
