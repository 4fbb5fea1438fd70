"""Deprecated: the former training loop module, split in three (issue 9).

- :mod:`liverctl.training.methods`: :func:`train` and the table of methods (``METHODS``);
- :mod:`liverctl.training.he2021`: the He et al. 2021 recipe (``../shared/docs/METHODS.md`` §1) that was ``_run`` here;
- :mod:`liverctl.training.common`: what the recipes share (:class:`TrainResult`,
  :func:`make_batch_fn`, :func:`validate_dice`, :func:`poly_lr`, ...).

The public names of the former module are re-exported here for one release.
"""

from __future__ import annotations

from liverctl.training.common import (
    LOG_COLUMNS,
    TrainResult,
    build_training_model,
    export_plans,
    load_init_weights,
    make_batch_fn,
    model_kwargs,
    open_run,
    plot_log,
    seed_int,
    validate_dice,
    write_log,
)
from liverctl.training.methods import train

__all__ = [
    "LOG_COLUMNS",
    "TrainResult",
    "build_training_model",
    "export_plans",
    "load_init_weights",
    "make_batch_fn",
    "model_kwargs",
    "open_run",
    "plot_log",
    "seed_int",
    "train",
    "validate_dice",
    "write_log",
]
