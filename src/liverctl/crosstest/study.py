"""The cross test end to end: :func:`crosstest` and its :class:`CrosstestResult`.

:func:`crosstest` runs the protocol described in :mod:`liverctl.crosstest` as named steps:
check the inputs, open the sources (:mod:`~liverctl.crosstest.sources`), train or reuse one
model per source, run or reuse every cell (:mod:`~liverctl.crosstest.cells`), then write the
matrices, heatmaps (:mod:`~liverctl.crosstest.matrix`) and ``crosstest.json``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.crosstest.cells import run_cells, write_json
from liverctl.crosstest.matrix import write_heatmaps, write_matrices
from liverctl.crosstest.sources import open_sources, parse_metrics, train_sources
from liverctl.errors import ConfigError, InputError
from liverctl.jsonsafe import json_safe
from liverctl.progress import ProgressCallback

__all__ = ["CrosstestResult", "crosstest"]


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


def _train_config(train_config: Any) -> Any:
    """``train_config`` (or the defaults), validated."""
    from liverctl.training import TrainConfig

    config = train_config if train_config is not None else TrainConfig()
    config.validate()
    return config


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
    """Cross-dataset test: one model per dataset, tested on every other dataset (:mod:`liverctl.crosstest`).

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
    wanted, out = _check_inputs(datasets, output_dir, metrics)
    config = _train_config(train_config)
    sets = open_sources(datasets, out, liver_only, stacklevel=3)  # a label warning names our caller
    names = [s.name for s in sets]
    out.mkdir(parents=True, exist_ok=True)
    result = CrosstestResult(out, names, wanted, {}, {}, {})

    # 1. one model per source (a raw source is preprocessed first, when it must be trained)
    models, result.trained, result.reused_models = train_sources(sets, out, config, preprocess_options, progress)

    # 2. the cells
    from liverctl.predict import PredictOptions

    options = predict_options or PredictOptions(device=config.device, precision=config.precision)
    result.cells, result.computed, result.reused = run_cells(sets, out, models, options, wanted, progress)

    # 3. matrices, best sources, files
    write_matrices(result, out)
    if plot:
        write_heatmaps(result, out)
    result.files["json"] = out / "crosstest.json"
    result.seconds = time.perf_counter() - start
    write_json(out / "crosstest.json", result.to_dict())
    return result
