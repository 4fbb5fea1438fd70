"""Cross-dataset testing (the protocol of He et al. 2021, :mod:`liverctl.training.recipes.he2021`): train on all of dataset S, test on every other T.

:func:`crosstest` runs the protocol of He et al. (2021) end to end:

1. **Datasets.** Each ``DATASET`` is a raw dataset folder (any layout of
   :func:`liverctl.io.datasets.discover_dataset`; it is preprocessed into
   ``OUT/preprocessed/<name>`` with :func:`liverctl.preprocessing.preprocess`, which skips
   cases it already did, when its model has to be trained) or a folder written by
   ``liverctl preprocess``. ``<name>`` is the dataset's name (``dataset.json``), or its
   folder name when two datasets share a name.
2. **Sources.** One model per dataset, trained on *all* its scans (no validation split)
   with :func:`liverctl.training.train` (the recipe of ``train_config.method``: he2021 by
   default, or di2in-an, hdenseunet, pipofan, as ``liverctl train --method`` trains them) into
   ``OUT/models/<name>/``, on the whole liver (tumour labels folded into the liver, as the paper
   trains; ``tumour_class=True`` keeps the tumour as its own class); a finished model
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
on the scan's own grid against the raw reference label map. Target crop (``target_crop``):
``"paper"`` (default) first crops the scan and its reference in z as He et al. 2021
preprocess every scan, the reference liver's first to last slice widened by 60 mm on each
side (bounded by the volume); ``"none"`` segments and scores the whole raw scan.

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

Layout. :mod:`~liverctl.crosstest.sources` (datasets, names, label checks, one model per
source), :mod:`~liverctl.crosstest.cells` (running and scoring one S x T cell, resumably),
:mod:`~liverctl.crosstest.matrix` (matrices, best sources, CSV, heatmaps) and
:mod:`~liverctl.crosstest.study` (:func:`crosstest` as named steps). Every name this module
exported before the split (issue 9) is still importable from ``liverctl.crosstest``.
"""

from __future__ import annotations

from liverctl.crosstest.cells import CELL_FORMAT
from liverctl.crosstest.matrix import best_sources, matrix_csv
from liverctl.crosstest.sources import LIVER_NAMES, SourceDataset, open_dataset, parse_metrics
from liverctl.crosstest.study import CrosstestResult, crosstest

__all__ = [
    "CELL_FORMAT",
    "LIVER_NAMES",
    "CrosstestResult",
    "SourceDataset",
    "best_sources",
    "crosstest",
    "matrix_csv",
    "open_dataset",
    "parse_metrics",
]
