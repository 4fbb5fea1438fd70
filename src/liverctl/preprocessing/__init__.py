"""Preprocessing of CT datasets for training, and the intensity recipes ``predict`` uses.

One concept per module:

- :mod:`~liverctl.preprocessing.intensity`: HU windows (:func:`window`, presets of the published
  methods), :func:`zscore`, and :func:`normalise`, a weights entry's model intensity recipe.
- :mod:`~liverctl.preprocessing.crop`: the liver z-crop of ``docs/studies/he2021.md``
  (:func:`liver_z_crop`: first/last liver slice widened by a margin in mm).
- :mod:`~liverctl.preprocessing.spacing`: target spacing rules (``"median"``, ``"128-median"``).
- :mod:`~liverctl.preprocessing.fingerprinting`: :func:`fingerprint`, what every case holds.
- :mod:`~liverctl.preprocessing.planning`: :func:`plan` from a fingerprint, :func:`apply_plan`
  on a new scan.
- :mod:`~liverctl.preprocessing.dataset`: :func:`preprocess` (fingerprint -> plan -> every case,
  nnU-Net's sequence) and :func:`load_preprocessed`, its output folder read back;
  :mod:`~liverctl.preprocessing.cases` reads one labelled case and
  :mod:`~liverctl.preprocessing.workers` maps a function over cases in processes.
- :mod:`~liverctl.preprocessing.unlabelled`: :func:`preprocess_unlabelled`, scans without labels
  (body crop, a labelled dataset's plan) for SD-Net; :mod:`~liverctl.preprocessing.split`:
  :func:`preprocess_split`, a labelled : unlabelled split made before any label is read.

Resampling and orientation live in :mod:`liverctl.spatial`.

Conventions. Spacings are in ITK's **(x, y, z)** order, in mm, like :attr:`Geometry.spacing`;
array shapes are **(z, y, x)**. The *liver region* of a label map is every voxel whose label is
in ``liver_labels``; ``None`` (the default) means every label >= 1, so that a LiTS label map
(liver 1, tumour 2) gives the whole liver including its tumours.
"""

from __future__ import annotations

from liverctl.preprocessing.cases import read_case
from liverctl.preprocessing.crop import crop_z, liver_region, liver_z_crop, liver_z_range
from liverctl.preprocessing.dataset import (
    PreprocessedDataset,
    PreprocessResult,
    load_preprocessed,
    preprocess,
    preprocess_case,
)
from liverctl.preprocessing.fingerprinting import (
    SAMPLES_PER_CASE,
    CaseFingerprint,
    Fingerprint,
    fingerprint,
    fingerprint_case,
)
from liverctl.preprocessing.intensity import WINDOW_PRESETS, normalise, resolve_window, window, window_name, zscore
from liverctl.preprocessing.planning import NORMALIZATIONS, Plan, apply_plan, plan
from liverctl.preprocessing.spacing import (
    MEDIAN_RULE_SIZE,
    SPACING_RULES,
    parse_spacing,
    spacing_for_shape,
    target_spacing,
)
from liverctl.preprocessing.split import SplitResult, labelled_split, preprocess_split
from liverctl.preprocessing.unlabelled import UnlabelledResult, image_cases, preprocess_unlabelled

__all__ = [
    "MEDIAN_RULE_SIZE",
    "NORMALIZATIONS",
    "SAMPLES_PER_CASE",
    "SPACING_RULES",
    "WINDOW_PRESETS",
    "CaseFingerprint",
    "Fingerprint",
    "Plan",
    "PreprocessResult",
    "PreprocessedDataset",
    "SplitResult",
    "UnlabelledResult",
    "apply_plan",
    "crop_z",
    "fingerprint",
    "fingerprint_case",
    "image_cases",
    "labelled_split",
    "liver_region",
    "liver_z_crop",
    "liver_z_range",
    "load_preprocessed",
    "normalise",
    "parse_spacing",
    "plan",
    "preprocess",
    "preprocess_case",
    "preprocess_split",
    "preprocess_unlabelled",
    "read_case",
    "resolve_window",
    "spacing_for_shape",
    "target_spacing",
    "window",
    "window_name",
    "zscore",
]
