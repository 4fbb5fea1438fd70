"""The dataset fingerprint (nnU-Net's first step): what every case holds, read once.

:func:`fingerprint` reads every labelled case of a dataset (:func:`fingerprint_case`, in
worker processes) and pools their geometry and liver intensities into a :class:`Fingerprint`,
from which :func:`liverctl.preprocessing.planning.plan` chooses the preprocessing. Spacings
are (x, y, z) mm like :attr:`~liverctl.io.Geometry.spacing`; shapes are (z, y, x).
"""

from __future__ import annotations

import math
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl import __version__
from liverctl.errors import DatasetError, LiverctlWarning
from liverctl.io import Image, atomic_path
from liverctl.io.datasets import Case, Dataset, discover_dataset
from liverctl.preprocessing.cases import read_case, source_stat
from liverctl.preprocessing.crop import liver_region, slab_of
from liverctl.preprocessing.spacing import target_spacing
from liverctl.preprocessing.workers import map_cases
from liverctl.progress import ProgressCallback

__all__ = ["SAMPLES_PER_CASE", "CaseFingerprint", "Fingerprint", "fingerprint", "fingerprint_case"]

#: At most this many liver voxels per case are kept for the dataset percentiles.
SAMPLES_PER_CASE = 10_000


@dataclass
class CaseFingerprint:
    """What :func:`fingerprint` learns about one case (shapes (z, y, x), spacing (x, y, z))."""

    name: str
    source_image: str
    source_label: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    crop: tuple[int, int]
    cropped_shape: tuple[int, int, int]
    liver_voxels: int
    label_values: list[int]
    intensity: dict[str, float] | None
    moments: tuple[int, float, float]  # (n, sum, sum of squares) of liver HU
    source_stat: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spacing"], d["shape"] = list(self.spacing), list(self.shape)
        d["crop"], d["cropped_shape"], d["moments"] = list(self.crop), list(self.cropped_shape), list(self.moments)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaseFingerprint:
        return cls(
            name=d["name"],
            source_image=d["source_image"],
            source_label=d["source_label"],
            spacing=tuple(d["spacing"]),  # type: ignore[arg-type]
            shape=tuple(d["shape"]),  # type: ignore[arg-type]
            crop=tuple(d["crop"]),  # type: ignore[arg-type]
            cropped_shape=tuple(d["cropped_shape"]),  # type: ignore[arg-type]
            liver_voxels=int(d["liver_voxels"]),
            label_values=list(d["label_values"]),
            intensity=d["intensity"],
            moments=tuple(d["moments"]),  # type: ignore[arg-type]
            source_stat=dict(d.get("source_stat", {})),
        )


@dataclass
class Fingerprint:
    """Dataset fingerprint: per-case geometry and pooled liver intensity statistics.

    ``histograms`` holds, per case whose liver intensities are whole numbers (CT in HU),
    the count of liver voxels at each value (``array[0]`` = lowest value, ``array[1:]`` =
    counts): with them the dataset statistics are exact, with or without a window.
    ``samples`` holds, per case, up to ``samples_per_case`` liver intensities drawn at
    random (seeded by the case name, so reproducible), used for cases with fractional
    intensities. Both are saved in ``fingerprint_samples.npz``.
    """

    dataset: str
    layout: str
    crop_margin_mm: float | None
    liver_labels: list[int] | None
    samples_per_case: int
    cases: list[CaseFingerprint]
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    histograms: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def spacings(self) -> list[tuple[float, float, float]]:
        return [c.spacing for c in self.cases]

    @property
    def cropped_shapes(self) -> list[tuple[int, int, int]]:
        return [c.cropped_shape for c in self.cases]

    def liver_intensity(self, window_bounds: tuple[float, float] | None = None) -> dict[str, float] | None:
        """Pooled liver statistics over the dataset, after clipping to ``window_bounds`` if given.

        n, mean, std, min, max and the 0.5/99.5 percentiles (NumPy's linear method). Exact
        when every case has a histogram (integer intensities); otherwise mean and std are
        exact without a window and the rest comes from the samples. ``None`` without liver.
        """
        n = sum(c.moments[0] for c in self.cases)
        if n == 0:
            return None
        with_liver = [c for c in self.cases if c.moments[0] > 0]
        if all(c.name in self.histograms for c in with_liver):
            values, counts = _merge_histograms([self.histograms[c.name] for c in with_liver])
            if window_bounds is not None:
                values = np.clip(values, *window_bounds)
            mean = float(np.dot(values, counts) / n)
            std = math.sqrt(max(float(np.dot((values - mean) ** 2, counts) / n), 0.0))
            p_lo, p_hi = (_hist_percentile(values, counts, q) for q in (0.5, 99.5))
            lo, hi = float(values[counts > 0][0]), float(values[counts > 0][-1])
            n_samples = int(n)
        else:
            pooled = np.concatenate([self.samples[c.name] for c in with_liver if c.name in self.samples] or [[]])
            pooled = pooled.astype(np.float64)
            if window_bounds is None:
                mean = sum(c.moments[1] for c in self.cases) / n
                std = math.sqrt(max(sum(c.moments[2] for c in self.cases) / n - mean * mean, 0.0))
            else:
                pooled = np.clip(pooled, *window_bounds)
                mean, std = float(pooled.mean()), float(pooled.std())
            lo = min(c.intensity["min"] for c in with_liver if c.intensity)
            hi = max(c.intensity["max"] for c in with_liver if c.intensity)
            if window_bounds is not None:
                lo, hi = float(np.clip(lo, *window_bounds)), float(np.clip(hi, *window_bounds))
            p_lo, p_hi = np.percentile(pooled, [0.5, 99.5]) if pooled.size else (math.nan, math.nan)
            n_samples = int(pooled.size)
        return {
            "n_voxels": int(n),
            "n_samples": n_samples,
            "mean": float(mean),
            "std": float(std),
            "min": float(lo),
            "max": float(hi),
            "p0.5": float(p_lo),
            "p99.5": float(p_hi),
        }

    def to_dict(self) -> dict[str, Any]:
        spacings = np.asarray(self.spacings, dtype=float)
        shapes = np.asarray([c.shape for c in self.cases], dtype=float)
        return {
            "liverctl_version": __version__,
            "dataset": self.dataset,
            "layout": self.layout,
            "n_cases": len(self.cases),
            "crop_margin_mm": self.crop_margin_mm,
            "liver_labels": self.liver_labels,
            "samples_per_case": self.samples_per_case,
            "spacing": {
                "median": np.median(spacings, axis=0).tolist(),
                "min": spacings.min(axis=0).tolist(),
                "max": spacings.max(axis=0).tolist(),
                "128-median": list(target_spacing(self.spacings, self.cropped_shapes, "128-median")),
            },
            "shape": {"median": np.median(shapes, axis=0).tolist()},
            "cropped_shape": {"median": np.median(np.asarray(self.cropped_shapes, float), axis=0).tolist()},
            "liver_intensity": self.liver_intensity(),
            "cases": [c.to_dict() for c in self.cases],
        }

    @classmethod
    def from_dict(
        cls,
        d: dict[str, Any],
        samples: dict[str, np.ndarray] | None = None,
        histograms: dict[str, np.ndarray] | None = None,
    ) -> Fingerprint:
        return cls(
            dataset=d["dataset"],
            layout=d["layout"],
            crop_margin_mm=d["crop_margin_mm"],
            liver_labels=d["liver_labels"],
            samples_per_case=int(d["samples_per_case"]),
            cases=[CaseFingerprint.from_dict(c) for c in d["cases"]],
            samples=dict(samples or {}),
            histograms=dict(histograms or {}),
        )

    def save_arrays(self, path: str | os.PathLike[str]) -> None:
        """Write ``samples`` and ``histograms`` to an ``.npz`` file, atomically."""
        arrays = {f"samples__{k}": v for k, v in self.samples.items()}
        arrays.update({f"hist__{k}": v for k, v in self.histograms.items()})
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)

    @staticmethod
    def load_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(samples, histograms)`` from a file written by :meth:`save_arrays`."""
        samples: dict[str, np.ndarray] = {}
        histograms: dict[str, np.ndarray] = {}
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                kind, _, name = key.partition("__")
                (samples if kind == "samples" else histograms)[name] = npz[key]
        return samples, histograms


def _merge_histograms(hists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of the sum of histograms stored as ``[lowest value, counts...]``."""
    lo = min(int(h[0]) for h in hists)
    hi = max(int(h[0]) + h.size - 1 for h in hists)
    counts = np.zeros(hi - lo, dtype=np.int64)
    for h in hists:
        start = int(h[0]) - lo
        counts[start : start + h.size - 1] += h[1:]
    return np.arange(lo, hi, dtype=np.float64), counts


def _hist_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(expanded, q)`` (linear method) of a histogram with sorted ``values``."""
    n = int(counts.sum())
    position = q / 100.0 * (n - 1)
    below, frac = math.floor(position), position - math.floor(position)
    cum = np.cumsum(counts)
    v0 = values[np.searchsorted(cum, below, side="right")]
    v1 = values[np.searchsorted(cum, min(below + 1, n - 1), side="right")]
    return float(v0 + (v1 - v0) * frac)


def fingerprint_case(
    case: Case,
    *,
    crop_margin_mm: float | None = 60.0,
    liver_labels: Sequence[int] | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
) -> tuple[CaseFingerprint, np.ndarray, np.ndarray | None]:
    """Fingerprint one case: ``(CaseFingerprint, sampled liver intensities as float32, histogram)``.

    The histogram (``[lowest value, counts...]``, see :class:`Fingerprint`) is ``None`` when
    the liver intensities are not whole numbers.
    """
    image, label = read_case(case)
    mask = liver_region(label, liver_labels)
    label_values = _label_values(label)
    del label
    values = image.array[mask]
    liver_voxels = int(values.size)
    crop = _case_crop(case, mask, image, crop_margin_mm)
    del mask
    intensity, moments = _intensity_stats(values)
    histogram = _histogram(values, intensity)
    values = _sampled(values, case.name, samples_per_case)
    record = CaseFingerprint(
        name=case.name,
        source_image=str(case.image_path),
        source_label=str(case.label_path),
        spacing=image.geometry.spacing,
        shape=image.shape,
        crop=crop,
        cropped_shape=(crop[1] - crop[0], image.shape[1], image.shape[2]),
        liver_voxels=liver_voxels,
        label_values=label_values,
        intensity=intensity,
        moments=moments,
        source_stat=source_stat(case),
    )
    return record, values.astype(np.float32), histogram


def _label_values(label: Image) -> list[int]:
    """The values present in a label map, counted slice by slice (no int64 copy of the whole map)."""
    counts = np.zeros(1, dtype=np.int64)
    for z in range(label.shape[0]):
        c = np.bincount(label.array[z].ravel())
        counts = np.pad(counts, (0, max(0, c.size - counts.size)))
        counts[: c.size] += c
    return [int(v) for v in np.flatnonzero(counts)]


def _case_crop(case: Case, mask: np.ndarray, image: Image, crop_margin_mm: float | None) -> tuple[int, int]:
    """The liver z-crop of a case; the whole z range (with a warning) for a case without liver."""
    if crop_margin_mm is None:
        return (0, image.shape[0])
    crop = slab_of(mask, image.geometry.spacing[2], crop_margin_mm)
    if crop is None:
        warnings.warn(
            f"case {case.name}: no liver voxels in {Path(case.label_path or '').name}; keeping the whole z range",
            LiverctlWarning,
            stacklevel=3,
        )
        return (0, image.shape[0])
    return crop


def _intensity_stats(values: np.ndarray) -> tuple[dict[str, float] | None, tuple[int, float, float]]:
    """``(statistics, moments)`` of a case's liver intensities; ``(None, (0, 0, 0))`` without liver."""
    if not values.size:
        return None, (0, 0.0, 0.0)
    v64 = values.astype(np.float64)
    moments = (int(values.size), float(v64.sum()), float(np.dot(v64, v64)))
    p_lo, p_hi = np.percentile(v64, [0.5, 99.5])
    intensity = {
        "mean": float(v64.mean()),
        "std": float(v64.std()),
        "min": float(v64.min()),
        "max": float(v64.max()),
        "p0.5": float(p_lo),
        "p99.5": float(p_hi),
    }
    return intensity, moments


def _histogram(values: np.ndarray, intensity: dict[str, float] | None) -> np.ndarray | None:
    """``[lowest value, counts...]`` of whole-number intensities; ``None`` for fractional ones."""
    if not values.size or intensity is None or intensity["max"] - intensity["min"] >= 1_000_000:
        return None
    lowest = math.floor(intensity["min"])
    if np.issubdtype(values.dtype, np.integer):
        shifted = values.astype(np.int64) - lowest
    elif np.array_equal(values, np.round(values)):
        shifted = np.round(values).astype(np.int64) - lowest
    else:
        return None
    return np.concatenate([[lowest], np.bincount(shifted)]).astype(np.int64)


def _sampled(values: np.ndarray, name: str, samples_per_case: int) -> np.ndarray:
    """At most ``samples_per_case`` of ``values``, drawn in order with a generator seeded by ``name``."""
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    if values.size > samples_per_case:
        values = values[np.sort(rng.choice(values.size, size=samples_per_case, replace=False))]
    return values


def fingerprint(
    dataset: Dataset | str | os.PathLike[str],
    *,
    crop_margin_mm: float | None = 60.0,
    liver_labels: Sequence[int] | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> Fingerprint:
    """Read every case once: spacing, shape, liver z-crop and liver intensity statistics.

    Every case is validated here (3D image, valid label map on the image's grid), so
    :func:`preprocess` writes nothing for a dataset with a bad case.

    Args:
        dataset: a :class:`~liverctl.io.datasets.Dataset` or a dataset folder.
        crop_margin_mm: margin of the liver z-crop; ``None`` for no crop.
        liver_labels: labels that make up the liver region (``None``: every label >= 1).
        samples_per_case: liver intensities kept per case for the percentiles.
        workers: processes to use.
        progress: called as ``progress("fingerprint", done, total)``.
    """
    ds = dataset if isinstance(dataset, Dataset) else discover_dataset(dataset)
    if not ds.labelled:
        raise DatasetError(f"dataset {ds.name} has unlabelled cases; preprocessing for training needs label maps")
    labels_list = None if liver_labels is None else sorted({int(v) for v in liver_labels})
    jobs = [
        ((case,), {"crop_margin_mm": crop_margin_mm, "liver_labels": labels_list, "samples_per_case": samples_per_case})
        for case in ds.cases
    ]
    results = map_cases(fingerprint_case, jobs, workers=workers, progress=progress, description="fingerprint")
    return Fingerprint(
        dataset=ds.name,
        layout=ds.layout,
        crop_margin_mm=crop_margin_mm,
        liver_labels=labels_list,
        samples_per_case=samples_per_case,
        cases=[r[0] for r in results],
        samples={r[0].name: r[1] for r in results},
        histograms={r[0].name: r[2] for r in results if r[2] is not None},
    )
