"""Training liver segmentation networks: one run loop, five recipes named by ``--method``.

>>> from liverctl.training import TrainConfig, train          # doctest: +SKIP
>>> cfg = TrainConfig(patch_size=(64, 64, 64), epochs=2, iterations_per_epoch=10)
>>> result = train(["prep/lits"], "runs/lits", cfg)             # doctest: +SKIP
>>> result.model_path                                            # doctest: +SKIP

Modules: :mod:`~liverctl.training.config` (:class:`TrainConfig` and :func:`~liverctl.training.config.resolve`,
the one place a run's options are resolved), :mod:`~liverctl.training.data` (datasets, k-fold
splits, label sets), :mod:`~liverctl.training.samplers` (DOS, RSD, RS),
:mod:`~liverctl.training.augmentation` (patches, foreground oversampling, augmentation),
:mod:`~liverctl.training.losses` (Dice + CE, deep supervision, TAL, SD-Net terms),
:mod:`~liverctl.training.methods` (:func:`train`: method name -> recipe),
:mod:`~liverctl.training.run` (the run loop every recipe drives: epochs, log, checkpoints,
resume, model selection, export), :mod:`~liverctl.training.common` (batches, validation,
the log, the run folder), :mod:`~liverctl.training.checkpoint`, :mod:`~liverctl.training.export`,
:mod:`~liverctl.training.distributed` (torchrun / DDP).

The recipes, in :mod:`liverctl.training.recipes`, one module per ``--method``:
:mod:`~liverctl.training.recipes.he2021` (the default, He et al. 2021),
:mod:`~liverctl.training.recipes.sdnet` (SD-Net, :func:`train_sdnet`),
:mod:`~liverctl.training.recipes.di2in_an` (DI2IN-AN, :func:`train_di2in_an`),
:mod:`~liverctl.training.recipes.hdenseunet` (H-DenseUNet, :func:`train_hdenseunet`, with its
coarse liver-ROI stage in :mod:`~liverctl.training.recipes.cascade`) and
:mod:`~liverctl.training.recipes.pipofan` (PIPO-FAN, :func:`train_pipofan`).
"""

from __future__ import annotations

from liverctl.training.common import TrainResult
from liverctl.training.config import TrainConfig
from liverctl.training.data import ArrayDataset, TrainingData, kfold_split
from liverctl.training.export import export_model
from liverctl.training.methods import train, train_di2in_an, train_hdenseunet, train_pipofan, train_sdnet

__all__ = [
    "ArrayDataset",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "export_model",
    "kfold_split",
    "train",
    "train_di2in_an",
    "train_hdenseunet",
    "train_pipofan",
    "train_sdnet",
]
