"""The one skeleton every liver model segments a scan by: :class:`Segmenter`.

A model (a MONAI-style network, :class:`~liverctl.predict.model.LiverModel`; an nnU-Net results
folder, :class:`~liverctl.predict.nnunet_model.NnUNetLiverModel`) says only how it turns a scan into
a raw liver decision on the scan's own grid (:meth:`Segmenter.predict_raw`). The rest is shared and
happens in one order: options checked, the scan checked as CT, the raw decision cleaned (largest
component, holes filled), tumour kept only inside the cleaned liver, and the report written.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liverctl.io import Image
from liverctl.io.ct import check_ct, has_body
from liverctl.postprocessing import clean_liver_mask, tumour_in_liver
from liverctl.predict.options import PredictOptions
from liverctl.predict.report import case_report
from liverctl.predict.results import Segmentation
from liverctl.progress import ProgressCallback

__all__ = ["RawPrediction", "Segmenter"]

TUMOUR_LABEL = 2
"""The tumour's label in the masks of liver + tumour models (liver 1)."""


@dataclass
class RawPrediction:
    """A model's decision on a scan's own grid, before clean-up.

    Attributes:
        liver: boolean liver decision (tumour included), the scan's shape.
        stats: the report's ``inference`` statistics (an object with ``to_dict()``).
        probability: computes the liver probability map on the scan's grid, when asked for.
        tumour: boolean tumour decision, for liver + tumour models; ``None`` otherwise.
        extra: more fields for the report's ``inference`` section.
    """

    liver: np.ndarray
    stats: Any
    probability: Callable[[], np.ndarray] | None = None
    tumour: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Segmenter(ABC):
    """Segment the liver of one CT scan: the skeleton shared by every model."""

    def check_options(self, options: PredictOptions) -> None:  # noqa: B027 - a hook, empty by default
        """Refuse, with one :class:`~liverctl.errors.ConfigError`, options this model cannot honour."""

    @abstractmethod
    def predict_raw(
        self, image: Image, options: PredictOptions, prepared: Any, progress: ProgressCallback | None, body: bool
    ) -> RawPrediction:
        """The model's raw decision on ``image``'s grid; ``body`` is False for a scan without a
        body (its decision must then be empty)."""

    @abstractmethod
    def model_info(self) -> dict[str, Any]:
        """The ``model`` section of a report."""

    def segment(
        self,
        image: Image,
        options: PredictOptions | None = None,
        *,
        source: str = "image",
        prepared: Any = None,
        ct_notes: list[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Segmentation:
        """Segment the liver of one CT scan; the mask is on ``image``'s own grid.

        ``prepared`` is the model's own preparation of the scan (:meth:`LiverModel.to_model_space`)
        and ``ct_notes`` the result of :func:`~liverctl.io.ct.check_ct`, when the caller has already
        computed them (a batch run does this in a background thread).
        """
        options = options or PredictOptions()
        self.check_options(options)
        t0 = time.perf_counter()
        notes = check_ct(image, source) if ct_notes is None else ct_notes
        body = has_body(image)
        raw = self.predict_raw(image, options, prepared, progress, body)
        probabilities = None
        if options.save_probabilities and raw.probability is not None:
            probabilities = Image(np.asarray(raw.probability(), dtype=np.float32), image.geometry)
        cleaned, components = clean_liver_mask(raw.liver, keep_largest=options.postprocess)
        if raw.tumour is not None:  # liver 1, tumour 2: tumour kept only inside the cleaned liver region
            cleaned = tumour_in_liver(cleaned, raw.tumour)
        mask = Image(cleaned, image.geometry)
        report = case_report(
            image,
            mask,
            components,
            notes,
            raw.stats,
            time.perf_counter() - t0,
            body,
            self.model_info(),
            tumour_label=None if raw.tumour is None else TUMOUR_LABEL,
        )
        report["inference"].update(raw.extra)
        return Segmentation(mask, probabilities, report)
