"""The training methods by name (``TrainConfig.method``, ``liverctl train --method``) and
:func:`train`, the one entry point that opens a run folder and runs one of them.

=============  ==============================================  ===========================
method         recipe                                          module
=============  ==============================================  ===========================
``he2021``     He et al. 2021, cross-dataset 3D U-Net          :mod:`~liverctl.training.recipes.he2021`
``sdnet``      SD-Net, semi-supervised                         :mod:`~liverctl.training.recipes.sdnet`
``di2in-an``   DI2IN-AN, adversarial                           :mod:`~liverctl.training.recipes.di2in_an`
``hdenseunet`` H-DenseUNet, staged 2D / 3D + HFF               :mod:`~liverctl.training.recipes.hdenseunet`
``pipofan``    PIPO-FAN, pyramid supervision + fusion          :mod:`~liverctl.training.recipes.pipofan`
=============  ==============================================  ===========================

Each recipe exposes ``run(datasets, out, config, state, progress)`` and drives the one run
loop of :mod:`liverctl.training.run`; :data:`METHODS` maps the method name to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError
from liverctl.progress import ProgressCallback
from liverctl.training.common import TrainResult, open_run
from liverctl.training.config import TrainConfig, resolve
from liverctl.training.recipes.di2in_an import run as di2in_an_run
from liverctl.training.recipes.hdenseunet import run as hdenseunet_run
from liverctl.training.recipes.he2021 import run as he2021_run
from liverctl.training.recipes.pipofan import run as pipofan_run
from liverctl.training.recipes.sdnet import run as sdnet_run

__all__ = ["METHODS", "train", "train_di2in_an", "train_hdenseunet", "train_pipofan", "train_sdnet"]

RunFn = Callable[..., TrainResult]
METHODS: dict[str, RunFn] = {
    "he2021": he2021_run,
    "sdnet": sdnet_run,
    "di2in-an": di2in_an_run,
    "hdenseunet": hdenseunet_run,
    "pipofan": pipofan_run,
}
"""Method name -> ``run(datasets, out, config, state, progress)`` of its recipe."""


def train(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
    method: str | None = None,
    unlabelled: Sequence[Any] | None = None,
) -> TrainResult:
    """Train a network on one or more preprocessed datasets.

    Args:
        datasets: ``liverctl preprocess`` output folders (or dataset objects, see
            :mod:`liverctl.training.data`), in a fixed order: dataset ``i`` is DCM branch ``i``.
        output_dir: the run folder (created). A folder that already holds ``last.pt`` is
            refused unless ``resume`` is set; so is a folder that is, or lies inside, one of
            the dataset folders.
        config: the options; with ``resume`` the saved ``config.json`` is used instead,
            except ``device``, ``precision`` and ``num_workers``, taken from ``config``.
            ``config.method`` picks the recipe (:data:`METHODS`; unlabelled SD-Net data from
            ``config.unlabelled``).
        progress: called as ``progress("training", iterations done, total iterations)``
            after every iteration and ``progress("validation", cases done, total)``.
        resume: continue the run saved in ``output_dir/last.pt``.
        method: sets ``config.method`` (the ``train_*`` functions pass their own).
        unlabelled: SD-Net: more unlabelled datasets, added to ``config.unlabelled``.

    Returns:
        A :class:`~liverctl.training.common.TrainResult`.

    Raises:
        ConfigError: invalid options, a folder that holds another run, different label
            sets, too few cases for the fold count, a recipe other than he2021 under torchrun.
        InputError: ``output_dir`` is, or lies inside, a dataset folder.
        DatasetError: a dataset without any readable training case.
    """
    out = Path(output_dir)
    _check_output(out, [*datasets, *(config.unlabelled if config is not None else ()), *(unlabelled or ())])
    config, state = open_run(out, resolve(config, method), resume)
    config = resolve(config)  # a resumed run's saved config, checked as a new one is
    if config.method != "he2021" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(f"--method {config.method} trains in a single process (no torchrun / DDP)")
    run = METHODS[config.method]
    if unlabelled is not None:
        return run(datasets, out, config, state, progress, unlabelled)
    return run(datasets, out, config, state, progress)


def _check_output(out: Path, datasets: Sequence[Any]) -> None:
    """Refuse a run folder that is, or lies inside, one of the dataset folders (before any work)."""
    from liverctl.io import check_not_input_folder

    check_not_input_folder(out, [d for d in datasets if isinstance(d, (str, os.PathLike))])


def train_sdnet(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    unlabelled: Sequence[Any] | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """:func:`train` with ``method="sdnet"`` (:mod:`~liverctl.training.recipes.sdnet`):
    labelled ``datasets`` plus ``unlabelled`` data (pass them again on ``resume``);
    ``result.model`` is network A."""
    return train(datasets, output_dir, config, progress=progress, resume=resume, method="sdnet", unlabelled=unlabelled)


def train_di2in_an(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """:func:`train` with ``method="di2in-an"`` (:mod:`~liverctl.training.recipes.di2in_an`): a
    ``di2in`` generator, adversarially refined; ``result.model`` is the generator."""
    return train(datasets, output_dir, config, progress=progress, resume=resume, method="di2in-an")


def train_hdenseunet(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """:func:`train` with ``method="hdenseunet"`` (:mod:`~liverctl.training.recipes.hdenseunet`): H-DenseUNet
    in its three stages (3 classes for the paper's liver + tumour setting; 2 work too)."""
    return train(datasets, output_dir, config, progress=progress, resume=resume, method="hdenseunet")


def train_pipofan(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """:func:`train` with ``method="pipofan"`` (:mod:`~liverctl.training.recipes.pipofan`): PIPO-FAN
    with deep pyramid supervision, then the adaptive fusion alone; datasets with different
    label sets train one network through the target adaptive loss."""
    return train(datasets, output_dir, config, progress=progress, resume=resume, method="pipofan")
