"""Liver segmentation of CT scans with a pretrained network: the library behind ``liverctl predict``.

Data flow for one scan (every step takes and returns an :class:`~liverctl.io.Image`, so it
keeps its geometry)::

    io.read_image -> check_ct -> spatial.reorient to the model's orientation -> spatial.resample
    to the model's spacing -> preprocessing.intensity.normalise -> inference.predict_volume
    (sliding window, body crop) -> liver indicator back onto the scan's own grid
    (spatial.resample_to_reference) -> postprocessing.clean_liver_mask (largest component,
    hole filling) -> io.write_mask + a JSON report

Modules: :mod:`~liverctl.predict.options` (:class:`PredictOptions`), :mod:`~liverctl.predict.model`
(:class:`LiverModel`: load a network, segment one scan), :mod:`~liverctl.predict.report`
(the report, QC flags, summary CSV) and :mod:`~liverctl.predict.batch` (:func:`predict`:
files, folders, DICOM series, read-ahead, resume).

Use :class:`LiverModel` to load a network once and segment many images from Python::

    from liverctl.predict import LiverModel
    model = LiverModel.load()                      # the default entry of weights.toml
    seg = model.segment(read_image("scan.nii.gz"))
    seg.mask, seg.report["liver_volume_ml"]

and :func:`predict` for files, folders and DICOM series, as the CLI does.
"""

from __future__ import annotations

from liverctl.io.ct import check_ct
from liverctl.predict.batch import (
    expand_inputs,
    output_paths,
    parse_paths,
    predict,
)
from liverctl.predict.model import LiverModel
from liverctl.predict.options import PredictOptions
from liverctl.predict.report import LARGE_COMPONENT_ML, LIVER_VOLUME_RANGE_ML, SUMMARY_FIELDS, write_summary
from liverctl.predict.results import CaseResult, PredictResult, Segmentation
from liverctl.predict.shards import parse_shard

__all__ = [
    "LARGE_COMPONENT_ML",
    "LIVER_VOLUME_RANGE_ML",
    "SUMMARY_FIELDS",
    "CaseResult",
    "LiverModel",
    "PredictOptions",
    "PredictResult",
    "Segmentation",
    "check_ct",
    "expand_inputs",
    "output_paths",
    "parse_paths",
    "parse_shard",
    "predict",
    "write_summary",
]
