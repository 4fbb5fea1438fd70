"""Training liver segmentation networks (``../shared/docs/METHODS.md`` §1, with the losses of §3 and §5).

>>> from liverctl.training import TrainConfig, train          # doctest: +SKIP
>>> cfg = TrainConfig(patch_size=(64, 64, 64), epochs=2, iterations_per_epoch=10)
>>> result = train(["prep/lits"], "runs/lits", cfg)             # doctest: +SKIP
>>> result.model_path                                            # doctest: +SKIP

Modules: :mod:`~liverctl.training.config` (:class:`TrainConfig`),
:mod:`~liverctl.training.data` (datasets, k-fold splits, label sets),
:mod:`~liverctl.training.samplers` (DOS, RSD, RS), :mod:`~liverctl.training.augmentation`
(patches, foreground oversampling, augmentation), :mod:`~liverctl.training.losses`
(Dice + CE, deep supervision, TAL, SD-Net terms), :mod:`~liverctl.training.methods`
(:func:`train`: method name -> recipe), :mod:`~liverctl.training.he2021` (the default
recipe), :mod:`~liverctl.training.common` (what the recipes share),
:mod:`~liverctl.training.checkpoint`, :mod:`~liverctl.training.export`,
:mod:`~liverctl.training.distributed` (torchrun / DDP).

The recipes of the other studies (``TrainConfig(method=...)``, or their own functions):
:mod:`~liverctl.training.semisupervised` (SD-Net, :func:`train_sdnet`, ``../shared/docs/METHODS.md`` §3),
:mod:`~liverctl.training.adversarial` (DI2IN-AN, :func:`train_di2in_an`, §2),
:mod:`~liverctl.training.staged` (H-DenseUNet, :func:`train_hdenseunet`, §4) and
:mod:`~liverctl.training.pipofan` (PIPO-FAN, :func:`train_pipofan`, §5), sharing the
bookkeeping of :mod:`~liverctl.training.recipe`.
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
