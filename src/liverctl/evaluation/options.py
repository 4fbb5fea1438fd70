"""How cases are scored: :class:`EvaluateOptions`, the options :func:`~liverctl.evaluation.evaluate`
and :func:`~liverctl.evaluation.evaluate_images` share, checked once into a
:class:`~liverctl.evaluation.scoring.ScoringPlan`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from liverctl.errors import ConfigError
from liverctl.evaluation.regions import lesion_labels, resolve_regions
from liverctl.evaluation.scoring import ScoringPlan
from liverctl.metrics.conventions import check_conventions
from liverctl.metrics.lesions import DEFAULT_MIN_DICE, check_lesion_options
from liverctl.metrics.surface_dice import parse_tolerances

__all__ = ["EvaluateOptions", "RegionSpec", "parse_labels"]

RegionSpec = str | Mapping[str, Sequence[int]] | None


@dataclass(frozen=True)
class EvaluateOptions:
    """What is scored and by which conventions; options that travel together.

    Attributes:
        labels: labels to evaluate one by one (``[1, 2]`` or ``"1,2"``); ``None`` = every
            non-zero label present anywhere in the dataset. Excludes ``regions``.
        regions: named unions of labels, each scored as one mask, for both sides:
            ``"liver=1+2,tumour=2"``, ``{"liver": [1, 2]}`` or a preset (``"lits"``,
            ``"msd-liver"``, ``"totalseg"``); see :mod:`liverctl.evaluation.regions`.
        pred_regions: the same for the prediction only, replacing the labels of the regions it
            names there (``pred_regions="liver=5"`` for a TotalSegmentator map).
        ref_regions: the same for the reference only.
        lesions: the regions that get lesion detection and tumour burden (names; ``"none"``);
            ``None`` = regions named tumour/tumor/lesion(s). In per-label scoring, labels.
        nsd: normalised surface Dice tolerances in mm (``"1,2"``, ``[1, 2]``, ``1``).
        surface: ``"medpy"`` (6-connected border, default) or ``"lits"`` (18-connected).
        hd95: ``"pooled"`` (MedPy, default) or ``"directed-max"`` (MONAI).
        lesion_connectivity: 6, 18 or 26 (default) for lesion components.
        lesion_min_dice: a reference lesion is detected above this Dice (0.2, LiTS).
        resample_pred: resample a prediction whose grid differs from its reference onto
            the reference grid (nearest neighbour); otherwise a
            :class:`~liverctl.errors.GeometryError`.
    """

    labels: str | Sequence[int] | None = None
    regions: RegionSpec = None
    pred_regions: RegionSpec = None
    ref_regions: RegionSpec = None
    lesions: str | Sequence[str] | None = None
    nsd: str | float | Sequence[float] | None = None
    surface: str = "medpy"
    hd95: str = "pooled"
    lesion_connectivity: int = 26
    lesion_min_dice: float = DEFAULT_MIN_DICE
    resample_pred: bool = False

    def plan(self) -> ScoringPlan:
        """The checked plan every case is scored by; a :class:`~liverctl.errors.ConfigError`
        names the first option that does not hold."""
        check_conventions(self.surface, self.hd95)
        check_lesion_options(self.lesion_connectivity, self.lesion_min_dice)
        wanted = parse_labels(self.labels)
        resolved = resolve_regions(self.regions, pred=self.pred_regions, ref=self.ref_regions, lesions=self.lesions)
        if resolved is not None and wanted is not None:
            raise ConfigError("labels and regions exclude each other: name single labels as regions, e.g. tumour=2")
        return ScoringPlan(
            regions=resolved,
            labels=wanted,
            lesion_set=frozenset(lesion_labels(self.lesions)) if resolved is None else frozenset(),
            surface=self.surface,
            hd95=self.hd95,
            nsd=tuple(parse_tolerances(self.nsd)) if self.nsd is not None else (),
            connectivity=self.lesion_connectivity,
            min_dice=float(self.lesion_min_dice),
        )


def parse_labels(labels: str | Sequence[int] | None) -> list[int] | None:
    """``"1,2"`` / ``[1, 2]`` -> ``[1, 2]``; ``None`` stays ``None`` (all labels present)."""
    if labels is None:
        return None
    if isinstance(labels, str):
        parts = [p.strip() for p in labels.split(",") if p.strip()]
        try:
            out = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"labels must be comma-separated whole numbers such as 1,2; got {labels!r}") from None
    else:
        out = [int(v) for v in labels]
    if not out:
        raise ConfigError("no label given; use e.g. 1 or 1,2")
    if any(v < 1 or v > 65535 for v in out):
        raise ConfigError(f"labels must be between 1 and 65535 (0 is the background); got {labels}")
    return list(dict.fromkeys(out))
