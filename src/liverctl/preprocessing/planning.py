"""The preprocessing plan: chosen from a dataset's fingerprint, redone on any new scan.

:func:`plan` turns a :class:`~liverctl.preprocessing.fingerprinting.Fingerprint` into a
:class:`Plan` (target spacing, HU window, z-score statistics, crop, interpolation orders,
labels), saved as ``plan.json``; :func:`apply_plan` redoes its spacing and intensity recipe
on a scan. ``target_spacing`` is (x, y, z) mm like :attr:`~liverctl.io.Geometry.spacing`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl import __version__
from liverctl.errors import ConfigError, DatasetError, InputError
from liverctl.io import Image
from liverctl.preprocessing.fingerprinting import Fingerprint
from liverctl.preprocessing.intensity import resolve_window, window_name
from liverctl.preprocessing.spacing import parse_spacing
from liverctl.preprocessing.spacing import target_spacing as _compute_target_spacing  # plan() has an arg of that name
from liverctl.spatial import interpolation_order, resample

__all__ = ["NORMALIZATIONS", "Plan", "apply_plan", "ct_statistics", "plan"]

NORMALIZATIONS: tuple[str, ...] = ("dataset", "image", "ct", "window")
"""The intensity schemes of a plan (:class:`Plan`): ``dataset`` (z-score with the dataset's liver
statistics), ``image`` (each scan's own z-score), ``ct`` (nnU-Net's CT normalisation, He et al.
2021) and ``window`` (the HU window mapped linearly to [0, 1], SD-Net)."""


@dataclass
class Plan:
    """Everything needed to redo a preprocessing on a new scan (see :func:`apply_plan`).

    ``target_spacing`` is (x, y, z) mm. ``window`` is (low, high) HU or ``None``.
    ``normalization`` is ``"dataset"`` (z-score with ``mean``/``std`` of all the dataset's
    liver voxels, clipped to the window, at the scans' own resolution), ``"image"`` (z-score with each image's own mean/std, over all
    its voxels after window and resampling, so it also works on an unlabelled scan), ``"ct"``
    (nnU-Net's ``CTNormalization``, :func:`ct_statistics`: ``window`` holds the 0.5 and 99.5
    percentiles of the dataset's foreground (liver) intensities, ``mean``/``std`` that
    foreground's mean and std, every case weighted equally as nnU-Net samples them) or
    ``"window"`` (the HU ``window`` mapped linearly to [0, 1]: ``mean`` = its low end,
    ``std`` = its width). ``dataset``, ``ct`` and ``window`` plans are applied the same way:
    clip to ``window``, subtract ``mean``, divide by ``std``.
    """

    dataset: str
    target_spacing: tuple[float, float, float]
    spacing_rule: str = "128-median"
    window: tuple[float, float] | None = None
    window_name: str = "none"
    normalization: str = "dataset"
    mean: float | None = None
    std: float | None = None
    crop: bool = True
    crop_margin_mm: float | None = 60.0
    liver_labels: list[int] | None = None
    image_order: int = 1
    label_order: int = 0
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0, "liver": 1})
    liverctl_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_spacing"] = list(self.target_spacing)
        d["window"] = None if self.window is None else list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["target_spacing"] = tuple(float(v) for v in d["target_spacing"])
        known["window"] = None if d.get("window") is None else tuple(float(v) for v in d["window"])
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        p = Path(path)
        try:
            return cls.from_json(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"no such plan file: {p}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{p} is not a liverctl plan: {exc}") from None

    def differences(self, other: Plan) -> list[str]:
        """Names of the settings that differ from ``other`` (the version is ignored)."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k != "liverctl_version" and a[k] != b.get(k)]


def plan(
    fingerprint: Fingerprint,
    *,
    target_spacing: str | Sequence[float] = "128-median",
    window: str | Sequence[float] | None = "none",
    normalization: str = "dataset",
    image_order: int | str = 1,
    labels: dict[str, int] | None = None,
) -> Plan:
    """Choose the preprocessing of a dataset from its fingerprint.

    The crop (margin, liver labels) is the one the fingerprint was made with.

    Args:
        fingerprint: from :func:`fingerprint`.
        target_spacing: ``"128-median"`` (He et al. 2021), ``"median"`` or (x, y, z) mm.
        window: HU window preset or bounds (see :func:`window`).
        normalization: ``"dataset"``, ``"image"``, ``"ct"`` or ``"window"`` (see :class:`Plan`).
        image_order: 1 (linear) or 3 (cubic B-spline) for the images; labels use nearest.
        labels: label name -> value to record (default background 0, liver 1).
    """
    rule = parse_spacing(target_spacing)
    spacing = _compute_target_spacing(fingerprint.spacings, fingerprint.cropped_shapes, rule)
    bounds = resolve_window(window)
    norm = str(normalization).strip().lower()
    if norm not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
    order = interpolation_order(image_order)
    if order == 0:
        raise ConfigError("images need linear (1) or cubic (3) interpolation; nearest is for label maps")
    bounds, name, mean, std = _intensity(fingerprint, norm, bounds, window_name(window))
    return Plan(
        dataset=fingerprint.dataset,
        target_spacing=spacing,
        spacing_rule=rule if isinstance(rule, str) else "given",
        window=bounds,
        window_name=name,
        normalization=norm,
        mean=mean,
        std=std,
        crop=fingerprint.crop_margin_mm is not None,
        crop_margin_mm=fingerprint.crop_margin_mm,
        liver_labels=fingerprint.liver_labels,
        image_order=order,
        labels=dict(labels) if labels else {"background": 0, "liver": 1},
    )


def _intensity(
    fingerprint: Fingerprint, norm: str, bounds: tuple[float, float] | None, name: str
) -> tuple[tuple[float, float] | None, str, float | None, float | None]:
    """``(window, window name, mean, std)`` of a plan with normalisation ``norm``."""
    if norm == "image":
        return bounds, name, None, None
    if norm == "window":
        if bounds is None:
            raise ConfigError("--normalization window maps the HU window to [0, 1]: give a --window")
        return bounds, name, bounds[0], bounds[1] - bounds[0]
    if norm == "ct":
        if bounds is not None:
            raise ConfigError(
                "--normalization ct clips to the 0.5 and 99.5 percentiles of the dataset's foreground (nnU-Net's CT"
                " scheme): leave --window at none"
            )
        stats = ct_statistics(fingerprint)
        return (stats["p0.5"], stats["p99.5"]), "ct-percentiles", stats["mean"], stats["std"]
    stats = fingerprint.liver_intensity(bounds)
    if stats is None or not stats["std"] > 0:
        raise DatasetError(
            f"dataset {fingerprint.dataset} has no liver voxels with varying intensity to normalise with; "
            "use --normalization image"
        )
    return bounds, name, stats["mean"], stats["std"]


def ct_statistics(fingerprint: Fingerprint) -> dict[str, float]:
    """nnU-Net's CT normalisation statistics of a dataset: the 0.5 / 99.5 percentiles, mean and
    std of its foreground (liver region) intensities in HU.

    nnU-Net's fingerprint draws the same number of foreground voxels from every training case
    (with replacement, 10^8 / cases each) and pools them, so every case weighs the same whatever
    the size of its liver. This computes the statistics that sampling estimates, without the
    sampling noise: each case's liver intensities (exact histograms for whole-number HU, else
    the fingerprint's samples) weighted ``1 / (its voxel count * cases with liver)``; the
    percentiles are the weighted inverse distribution function. ``mean`` and ``std`` are of
    the unclipped intensities, as nnU-Net's.

    Raises:
        DatasetError: no case with liver voxels, or no spread in them.
    """
    parts = []
    for case in fingerprint.cases:
        if case.moments[0] <= 0:
            continue
        hist = fingerprint.histograms.get(case.name)
        if hist is not None:
            values = float(hist[0]) + np.arange(hist.size - 1, dtype=np.float64)
            parts.append((values, hist[1:].astype(np.float64)))
        elif case.name in fingerprint.samples:
            values = np.sort(np.asarray(fingerprint.samples[case.name], dtype=np.float64))
            parts.append((values, np.ones(values.size)))
    parts = [(v, c) for v, c in parts if c.sum() > 0]
    if not parts:
        raise DatasetError(f"dataset {fingerprint.dataset} has no liver voxels to compute the CT normalisation from")
    values = np.concatenate([v for v, _ in parts])
    weights = np.concatenate([c / c.sum() / len(parts) for _, c in parts])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    mean = float(np.dot(values, weights))
    std = float(np.sqrt(max(float(np.dot((values - mean) ** 2, weights)), 0.0)))
    if not std > 0:
        raise DatasetError(f"dataset {fingerprint.dataset}: its liver voxels all have the same intensity")
    cdf = np.cumsum(weights)
    lo, hi = (float(values[min(int(np.searchsorted(cdf, q, side="left")), values.size - 1)]) for q in (0.005, 0.995))
    return {"p0.5": lo, "p99.5": hi, "mean": mean, "std": std, "cases": float(len(parts))}


def apply_plan(image: Image, plan: Plan) -> Image:
    """Apply a plan's intensity and spacing recipe to a scan (no crop: that needs a label).

    Steps, in this order: resample to ``plan.target_spacing`` (``plan.image_order``), clip
    to ``plan.window``, z-score (dataset mean/std, or the image's own). Result float32.
    Resampling first keeps the memory low (the int16 scan is never copied to float).
    """
    out = resample(image, plan.target_spacing, interpolator=plan.image_order)
    array = out.array
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    if plan.window is not None:
        np.clip(array, plan.window[0], plan.window[1], out=array)
    if plan.normalization in ("dataset", "ct", "window"):
        if plan.mean is None or plan.std is None:
            raise ConfigError(f"plan with {plan.normalization} normalization has no mean/std")
        mean, std = float(plan.mean), float(plan.std)
    else:
        mean, std = float(array.mean(dtype=np.float64)), float(array.std(dtype=np.float64))
        if not std > 0:
            std = 1.0
    if not std > 0:
        raise ConfigError(f"plan std must be positive, got {std}")
    array -= np.float32(mean)
    array /= np.float32(std)
    return Image(array, out.geometry)
