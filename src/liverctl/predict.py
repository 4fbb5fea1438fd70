"""Liver segmentation of CT scans with a pretrained network: the library behind ``liverctl predict``.

Data flow for one scan (every step takes and returns an :class:`~liverctl.io.Image`, so it
keeps its geometry)::

    io.read_image -> check_ct -> reorient to the model's orientation -> resample to the model's
    spacing -> intensity recipe -> inference.predict_volume (sliding window, body crop)
    -> liver indicator back onto the scan's own grid -> post-processing (largest component,
    hole filling) -> io.write_mask + a JSON report

Use :class:`LiverModel` to load a network once and segment many images from Python::

    from liverctl.predict import LiverModel
    model = LiverModel.load()                      # the default entry of weights.toml
    seg = model.segment(read_image("scan.nii.gz"))
    seg.mask, seg.report["liver_volume_ml"]

and :func:`predict` for files, folders and DICOM series, as the CLI does.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

from liverctl import __version__
from liverctl.ct import NO_BODY, check_ct, has_body, read_ct
from liverctl.errors import ConfigError, InputError, LiverctlError
from liverctl.io import (
    Image,
    check_not_input,
    check_output_suffix,
    check_writable,
    image_stem,
    image_suffix,
    list_dicom_series,
    list_images,
    write_image,
    write_mask,
    write_text_atomic,
)
from liverctl.manifest import Manifest
from liverctl.progress import ProgressCallback

LARGE_COMPONENT_ML = 10.0
"""A component of the raw prediction at least this large, besides the largest, raises a QC flag."""

LIVER_VOLUME_RANGE_ML = (500.0, 5000.0)
"""Liver volumes outside this range raise a QC flag (adult livers are ~1.2-2.5 L)."""

SUMMARY_FIELDS = (
    "input",
    "mask",
    "status",
    "error",
    "liver_volume_ml",
    "voxel_count",
    "hu_mean",
    "hu_std",
    "components_before_cleanup",
    "bbox_min_mm",
    "bbox_max_mm",
    "qc_flags",
    "model",
    "sha256",
    "seconds",
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class PredictOptions:
    """How to run the network and what to write; options that travel together.

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"fp32"``, ``"fp16"``, ``"bf16"``. ``"auto"``: fp16 autocast on
            CUDA, bf16 autocast on a CPU that computes bfloat16 in hardware (AVX512-BF16 or AMX),
            fp32 elsewhere; fp32 whenever ``shortcuts`` is off (see :mod:`liverctl.device`).
        tta: mirror test-time augmentation along all three axes (8 passes).
        overlap: window overlap; ``None`` = the model entry's (0.25 for MONAI's bundle).
        batch_size: windows per forward pass; ``None`` = 4 on an accelerator, 1 on the CPU
            (where batching gains no speed and each window of a 105-class model holds ~0.4 GB).
        shortcuts: skip windows that hold only air, and let ``precision="auto"`` pick mixed
            precision. Every other window is MONAI's, so each voxel of the body gets the
            windows and weights MONAI's ``SlidingWindowInferer`` gives it. ``False``: every
            window, in fp32 unless ``precision`` says otherwise (MONAI's result to float
            rounding).
        fast: also crop to the body and shrink windows to what the volume needs (compute
            amplification ~1.6 instead of MONAI's 3-10). Faster, but the windows hold other
            content than MONAI's, and SegResNet's GroupNorm sees other statistics, so masks
            can differ from MONAI's (see the README's benchmark). Ignored without ``shortcuts``.
        postprocess: keep the largest liver component and fill its holes.
        save_probabilities: also write the liver probability map (float32, scan grid).
        dataset: branch of a dataset-wise (DCM) network to use, by dataset name.
        threads: CPU threads for torch (``None`` = torch's default).
    """

    device: str = "auto"
    precision: str = "auto"
    tta: bool = False
    overlap: float | None = None
    batch_size: int | None = None
    shortcuts: bool = True
    fast: bool = False
    postprocess: bool = True
    save_probabilities: bool = False
    dataset: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        from liverctl.device import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap:g}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be 1 or more, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {self.threads}")

    def result_key(self) -> dict[str, Any]:
        """The options that change a mask or a report (not where or how fast it runs)."""
        keep = ("precision", "tta", "overlap", "shortcuts", "fast", "postprocess", "save_probabilities", "dataset")
        return {k: getattr(self, k) for k in keep}


@dataclass
class Segmentation:
    """The result of :meth:`LiverModel.segment` for one scan, on the scan's own grid."""

    mask: Image
    probabilities: Image | None
    report: dict[str, Any]


# --------------------------------------------------------------------------- checks


# --------------------------------------------------------------------------- the model


def _sibling_registry(weights: Path) -> Path | None:
    """A registry describing a local weights file: ``<file>.toml`` or ``weights.toml`` beside it."""
    for candidate in (weights.with_name(weights.name + ".toml"), weights.with_name("weights.toml")):
        if candidate.is_file():
            return candidate
    return None


class LiverModel:
    """One network (or an ensemble of networks sharing one recipe), loaded once, with the
    recipe from its ``weights.toml`` entry: orientation, spacing, intensities, windows, labels."""

    def __init__(self, resolved: Sequence[Any], networks: Sequence[Any], device: Any, dataset_index: int | None = None):
        if not resolved or len(resolved) != len(networks):
            raise ConfigError("LiverModel needs one resolved weights entry per network")
        self.resolved = list(resolved)
        self.networks = list(networks)
        self.device = device
        self.dataset_index = dataset_index
        self.entry = self.resolved[0].entry

    # ---- loading

    @classmethod
    def load(
        cls,
        model: str | Sequence[str] | None = None,
        weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        *,
        arch: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
        dataset: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> LiverModel:
        """Download (or find in the cache), verify and load the network(s).

        Args:
            model: registry name(s); several names make an ensemble. ``None`` = the default.
            weights: local weights file(s) instead of a download (``--weights``). Their recipe
                comes from a ``<file>.toml`` / ``weights.toml`` beside the file (as written by
                ``liverctl train``), else from the registry entry ``model``.
            arch: override the architecture of a local file's entry.
            device, precision, threads: see :class:`PredictOptions`.
            dataset: the DCM branch to use, by dataset name (models trained on several datasets).
        """
        from liverctl import hub
        from liverctl.device import DeviceConfig
        from liverctl.models import build_model, load_state_dict_checked

        torch_device = DeviceConfig(device, precision, threads).resolve()
        names = [model] if model is None or isinstance(model, str) else list(model)
        files = [] if weights is None else [weights] if isinstance(weights, str | os.PathLike) else list(weights)
        resolved = []
        if files:
            if len(names) > 1:
                raise ConfigError("give either several --model names or several --weights files, not both")
            for f in files:
                path = Path(f).expanduser()
                sibling = _sibling_registry(path) if path.is_file() else None
                registry = hub.load_registry(sibling) if sibling else None
                item = hub.resolve_weights(None if sibling else names[0], path, registry=registry)
                if arch is not None:
                    item = replace(item, entry=replace(item.entry, architecture=arch))
                resolved.append(item)
        else:
            resolved = [hub.resolve_weights(name, progress=progress) for name in names]

        first = resolved[0].entry
        for item in resolved[1:]:
            e = item.entry
            if (e.spacing, e.orientation, e.intensity, e.liver_channel, e.decision) != (
                first.spacing,
                first.orientation,
                first.intensity,
                first.liver_channel,
                first.decision,
            ):
                raise ConfigError(
                    f"cannot ensemble {first.name} and {e.name}: they need different preprocessing or label maps"
                )

        networks = []
        for item in resolved:
            net = build_model(item.entry.architecture, **dict(item.entry.kwargs))
            state = hub.load_state_dict(item.path, item.sha256)  # re-checked right before loading
            load_state_dict_checked(net, state)
            net.eval()
            networks.append(net.to(torch_device))

        dataset_index = None
        datasets = list(getattr(first, "datasets", ()) or first.kwargs.get("dataset_names", ()) or ())
        if dataset is not None:
            if not datasets:
                raise ConfigError(f"--dataset {dataset}: model {first.name} has no dataset-wise branches")
            if dataset not in datasets:
                raise ConfigError(f"--dataset {dataset}: unknown dataset; this model knows {', '.join(datasets)}")
            dataset_index = datasets.index(dataset)
        return cls(resolved, networks, torch_device, dataset_index)

    @property
    def liver_channels(self) -> list[int]:
        """Output channels that form the liver region: the liver channel plus any tumour or
        lesion channel the entry's label map names (the whole organ, as LiTS scores it)."""
        from liverctl.datasets import liver_region_values

        return sorted({self.entry.liver_channel, *liver_region_values(self.entry.labels)})

    # ---- the steps

    def to_model_space(self, image: Image) -> tuple[Image, np.ndarray]:
        """The scan in model space: ``(hu, network_input)``.

        ``hu`` is the image reoriented to the model's orientation and resampled to its
        spacing (float32 HU, with geometry); ``network_input`` is ``hu`` after the intensity
        recipe, as the network sees it.
        """
        from liverctl.preprocessing import reorient, resample

        e = self.entry
        hu = reorient(image, e.orientation)
        if hu.geometry.mismatch(replace(hu.geometry, spacing=tuple(e.spacing))) is not None:
            hu = resample(hu, e.spacing, interpolator=e.interpolation)
        elif hu.array.dtype != np.float32:
            hu = Image(hu.array.astype(np.float32), hu.geometry)
        return hu, normalise(hu.array, e.intensity)

    def window_config(self, options: PredictOptions) -> Any:
        """The :class:`liverctl.inference.SlidingWindow` for this model and ``options``."""
        from liverctl.inference import SlidingWindow

        e = self.entry
        sw = e.sliding_window
        # the entry's roi is along i, j, k = x, y, z; the engine runs in the network's axis order
        roi = tuple(int(r) for r in (sw.roi if e.network_axes == "xyz" else reversed(sw.roi)))
        precision = options.precision
        if not options.shortcuts and precision == "auto":
            precision = "fp32"
        fields = {
            "roi": roi,
            "overlap": sw.overlap if options.overlap is None else options.overlap,
            "mode": sw.mode,
            "padding_mode": sw.padding_mode,
            "batch_size": options.batch_size,
            "tta": options.tta,
            "precision": precision,
            "activation": "sigmoid" if e.decision == "sigmoid" else "softmax",
            # probabilities only where they are used: saved, or the sigmoid decision
            "channels": tuple(self.liver_channels) if options.save_probabilities or e.decision != "argmax" else (),
            "argmax": e.decision == "argmax",
        }
        if not options.shortcuts:
            return SlidingWindow.monai(**fields)
        if options.fast:
            return SlidingWindow.fast(**fields)
        return SlidingWindow(**fields)

    def _predictors(self) -> list[Any]:
        """The networks as the engine calls them (with the DCM branch chosen)."""
        if self.dataset_index is None:
            return list(self.networks)
        from liverctl.models.dcm import DatasetBranch

        return [DatasetBranch(net, self.dataset_index) for net in self.networks]

    def segment(
        self,
        image: Image,
        options: PredictOptions | None = None,
        *,
        source: str = "image",
        prepared: tuple[Image, np.ndarray] | None = None,
        ct_notes: list[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Segmentation:
        """Segment the liver of one CT scan; the mask is on ``image``'s own grid.

        ``prepared`` is the result of :meth:`to_model_space` and ``ct_notes`` that of
        :func:`check_ct` when the caller has already computed them (a batch run does this in
        a background thread).
        """
        from liverctl.inference import predict_volume
        from liverctl.preprocessing import resample_to_reference

        options = options or PredictOptions()
        t0 = time.perf_counter()
        notes = check_ct(image, source) if ct_notes is None else ct_notes
        hu, net_input = prepared if prepared is not None else self.to_model_space(image)
        e = self.entry
        # A network trained on (x, y, z) arrays (MONAI's) gets the volume in that order, so the
        # engine places, pads and blends its windows exactly as MONAI does; results come back
        # as (z, y, x) views.
        xyz = e.network_axes == "xyz"
        result = predict_volume(
            net_input.T if xyz else net_input,
            self._predictors(),
            self.window_config(options),
            self.device,
            hu=hu.array.T if xyz else hu.array,
            progress=progress,
        )
        if xyz:
            result = _transposed(result)
        if e.decision == "argmax":
            indicator = np.isin(result.labels, self.liver_channels)
        else:
            indicator = np.any([result.channel(c) > 0.5 for c in self.liver_channels], axis=0)
        body = has_body(image)
        if not body:  # an all-air scan: whatever the network says, there is no liver
            indicator = np.zeros_like(indicator)
        del net_input
        # The decision is made in model space and brought back with linear interpolation of the
        # 0/1 indicator (threshold 0.5): smoother than nearest neighbour, exact where grids coincide.
        back = resample_to_reference(
            Image(indicator.astype(np.float32), hu.geometry),
            image,
            interpolator="linear",
            default_value=0.0,
            support_only=True,  # only the box around the liver: the same result, far less work
        )
        raw = back.array > 0.5
        del back, indicator
        probabilities = None
        if options.save_probabilities:
            liver_prob = sum(result.channel(c) for c in self.liver_channels)
            p = resample_to_reference(Image(liver_prob, hu.geometry), image, interpolator="linear", default_value=0.0)
            probabilities = Image(np.clip(p.array, 0.0, 1.0).astype(np.float32), image.geometry)
        mask, components = _clean(raw, image, options.postprocess)
        report = self._report(image, mask, components, notes, result.stats, time.perf_counter() - t0, body)
        return Segmentation(mask, probabilities, report)

    def _report(
        self,
        image: Image,
        mask: Image,
        components: list[int],
        notes: list[str],
        stats: Any,
        seconds: float,
        body: bool = True,
    ) -> dict[str, Any]:
        liver = mask.array.astype(bool)
        count = int(np.count_nonzero(liver))
        voxel_ml = image.voxel_volume_ml
        hu_values = image.array[liver].astype(np.float64) if count else np.empty(0)
        bbox = _bbox_mm(liver, image) if count else None
        qc = _qc(liver, count * voxel_ml, components, voxel_ml, notes, body)
        first = self.resolved[0]
        return {
            "liver_volume_ml": round(count * voxel_ml, 3),
            "voxel_count": count,
            "hu_mean": round(float(hu_values.mean()), 2) if count else None,
            "hu_std": round(float(hu_values.std()), 2) if count else None,
            "components_before_cleanup": len(components),
            "component_volumes_ml": [round(c * voxel_ml, 3) for c in components[:10]],
            "bounding_box_mm": bbox,
            "qc": qc,
            "model": {
                "name": self.entry.name,
                "architecture": self.entry.architecture,
                "sha256": first.sha256,
                "source": first.source,
                "repo_id": self.entry.repo_id,
                "filename": self.entry.filename,
                "revision": self.entry.revision,
                "ensemble": [{"path": str(r.path), "sha256": r.sha256} for r in self.resolved]
                if len(self.resolved) > 1
                else None,
            },
            "image": {
                "shape_xyz": list(image.shape[::-1]),
                "spacing_mm": list(image.geometry.spacing),
                "origin_mm": list(image.geometry.origin),
                "direction": list(image.geometry.direction),
            },
            "inference": {
                "device": stats.device,
                "precision": stats.precision,
                "windows": stats.windows,
                "skipped_windows": stats.skipped_windows,
                "window_zyx": list(stats.window),
                "compute_amplification": round(stats.compute_amplification, 3),
                "network_seconds": round(stats.network_seconds, 3),
            },
            "seconds": round(seconds, 3),
            "liverctl_version": __version__,
        }


def _transposed(result: Any) -> Any:
    """An :class:`~liverctl.inference.InferenceResult` computed on (x, y, z) arrays, as (z, y, x)."""

    def flip(t: Any) -> Any:
        return None if t is None else tuple(t)[::-1]

    stats = result.stats
    stats = replace(
        stats,
        volume_shape=flip(stats.volume_shape),
        body_box=flip(stats.body_box),
        cropped_shape=flip(stats.cropped_shape),
        window=flip(stats.window),
    )
    return replace(
        result,
        probabilities=None if result.probabilities is None else result.probabilities.transpose(0, 3, 2, 1),
        logits=None if result.logits is None else result.logits.transpose(0, 3, 2, 1),
        labels=None if result.labels is None else result.labels.T,
        stats=stats,
    )


def normalise(array: np.ndarray, recipe: Any) -> np.ndarray:
    """Apply a weights-entry intensity recipe (see :class:`liverctl.hub.IntensityRecipe`) to HU values.

    ``nonzero-zscore-minmax`` is MONAI's ``NormalizeIntensity(nonzero=True)`` followed by
    ``ScaleIntensity(minv, maxv)``; ``window-zscore`` clips to a HU window and applies a fixed
    z-score (liverctl-trained models).
    """
    x = np.asarray(array, dtype=np.float32)
    if recipe.method == "nonzero-zscore-minmax":
        out = x.copy()
        nonzero = x != 0
        if nonzero.any():
            values = x[nonzero]
            mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
            out[nonzero] = (values - mean) / (std if std > 0 else 1.0)
        lo, hi = recipe.range or (0.0, 1.0)
        mn, mx = float(out.min()), float(out.max())
        if mx - mn > 0:
            out = (out - mn) / (mx - mn) * (hi - lo) + lo
        else:
            out = out - mn + lo
        return out.astype(np.float32, copy=False)
    if recipe.method == "window-zscore":
        lo, hi = recipe.window if recipe.window is not None else (-np.inf, np.inf)
        std = recipe.std if recipe.std else 1.0
        return ((np.clip(x, lo, hi) - (recipe.mean or 0.0)) / std).astype(np.float32, copy=False)
    raise ConfigError(f"unknown intensity recipe {recipe.method!r}")


def _clean(raw: np.ndarray, image: Image, enabled: bool) -> tuple[Image, list[int]]:
    """Largest liver component + hole filling (when ``enabled``); returns the mask and the
    voxel counts of the raw prediction's components, largest first."""
    from liverctl.postprocessing import fill_holes, largest_components

    # Work in the mask's bounding box grown by one voxel of background: components are the
    # same, and a hole (background not connected to the border) is the same, because the
    # one-voxel shell connects everything that reaches the box's edge to the outside.
    mask = np.zeros(raw.shape, dtype=np.uint8)
    box = _box(raw, margin=1)
    if box is None:
        return Image(mask, image.geometry), []
    kept, stats = largest_components(raw[box], n=1 if enabled else None, connectivity=26)
    if enabled and stats.kept:
        kept = fill_holes(kept)
    mask[box] = kept
    return Image(mask, image.geometry), list(stats.sizes)


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    box = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if idx.size == 0:
            return None
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _bbox_mm(mask: np.ndarray, image: Image) -> dict[str, list[float]]:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = np.array([i[0] for i in idx], dtype=float) - 0.5
    hi = np.array([i[-1] for i in idx], dtype=float) + 0.5
    corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    points = image.geometry.index_to_physical(corners)
    low, high = points.min(axis=0), points.max(axis=0)
    return {
        "min_mm": [round(float(v), 2) for v in low],
        "max_mm": [round(float(v), 2) for v in high],
        "size_mm": [round(float(v), 2) for v in high - low],
        "frame": "LPS patient coordinates (x, y, z) of the voxel-corner box",
    }


def _qc(
    liver: np.ndarray, volume_ml: float, components: list[int], voxel_ml: float, notes: list[str], body: bool = True
) -> dict[str, Any]:
    flags: list[str] = []
    messages = list(notes)
    if not body:
        flags.append("no_body")
        messages.append(f"{NO_BODY} in the scan: nothing to segment")
    touches = {}
    if liver.any():
        touches = {
            "first_slice": bool(liver[0].any()),
            "last_slice": bool(liver[-1].any()),
            "side": bool(liver[:, 0].any() or liver[:, -1].any() or liver[:, :, 0].any() or liver[:, :, -1].any()),
        }
        for where, hit in touches.items():
            if hit:
                flags.append(f"touches_{where}")
        if any(touches.values()):
            messages.append("the liver reaches the edge of the scan: the volume is a lower bound")
    else:
        flags.append("empty")
        messages.append("no liver found")
    large = [c for c in components[1:] if c * voxel_ml >= LARGE_COMPONENT_ML]
    if large:
        flags.append("multiple_large_components")
        messages.append(
            f"{len(large)} further component(s) of >= {LARGE_COMPONENT_ML:g} mL before cleanup "
            f"(largest {large[0] * voxel_ml:.0f} mL): check the mask"
        )
    lo, hi = LIVER_VOLUME_RANGE_ML
    if liver.any() and not lo <= volume_ml <= hi:
        flags.append("volume_out_of_range")
        messages.append(f"liver volume {volume_ml:.0f} mL outside {lo:.0f}-{hi:.0f} mL")
    if notes:
        flags.append("intensities_not_ct")
    return {
        "flags": flags,
        "volume_is_lower_bound": bool(touches and any(touches.values())),
        "messages": messages,
    }


# --------------------------------------------------------------------------- files and batches


@dataclass
class CaseResult:
    """One input of a :func:`predict` run: what was written, or why it failed."""

    input: str
    mask: Path | None = None
    report_path: Path | None = None
    probabilities: Path | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    skipped: bool = False
    """``resume``: the mask and report of an earlier run with the same model and options were kept."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PredictResult:
    """What a :func:`predict` run did: one :class:`CaseResult` per input and the summary CSV."""

    cases: list[CaseResult] = field(default_factory=list)
    summary_csv: Path | None = None

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.ok]


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files, folders of images, and DICOM series folders -> the list of scans to segment.

    A folder that holds image files stands for those files; a folder that holds a DICOM
    series stands for that series. A path that does not exist is kept (:func:`predict`
    refuses it before loading a model).
    """
    scans: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images = list_images(p)
            if images:
                scans.extend(images)
            elif list_dicom_series(p):
                scans.append(p)
            else:
                raise InputError(f"no images and no DICOM series in folder {p}")
        else:
            scans.append(p)
    return scans


def _shard(scans: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    if shard is None:
        return scans
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
    return [s for i, s in enumerate(sorted(scans)) if i % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (0-based shard I of N)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {text}")
    return i, n


def _scan_name(path: Path) -> str:
    return image_stem(path) if path.is_file() or image_suffix(path) else path.name


def output_paths(scans: list[Path], output: str | os.PathLike[str] | None) -> list[Path]:
    """Where each scan's mask goes.

    No ``output``: ``<name>_liver.nii.gz`` in the current folder. An ``output`` with an image
    suffix: that file (one scan only). Otherwise a folder: ``<output>/<name>.nii.gz``, the
    same name as the scan, so that ``liverctl evaluate`` pairs it with a reference by name.
    """
    if output is not None:
        check_output_suffix(output)
    if output is None:
        paths = [Path.cwd() / f"{_scan_name(s)}_liver.nii.gz" for s in scans]
    elif image_suffix(output) is not None and not Path(output).is_dir():
        if len(scans) != 1:
            raise ConfigError(f"-o {output} is a file, but there are {len(scans)} scans: give a folder")
        paths = [Path(output)]
    else:
        paths = [Path(output) / f"{_scan_name(s)}.nii.gz" for s in scans]
    names = [p.resolve() for p in paths]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two scans would be written to the same file {dup}: give them distinct names")
    for out in paths:
        check_not_input(out, scans)
    return paths


def _sidecar(mask_path: Path, suffix: str) -> Path:
    return mask_path.with_name(image_stem(mask_path) + suffix)


def _case_files(mask: Path, options: PredictOptions) -> list[Path]:
    """What :func:`predict` writes for one scan: the mask, its report, its probabilities."""
    files = [mask, _sidecar(mask, ".json")]
    return [*files, _sidecar(mask, "_probabilities.nii.gz")] if options.save_probabilities else files


def _check_outputs(files: Sequence[Path]) -> dict[Path, Manifest]:
    """Check every output before any download or computation: writable, and replacing
    nothing liverctl did not write. Returns the manifest of each output folder."""
    manifests: dict[Path, Manifest] = {}
    for f in files:
        check_writable(f)
        folder = f.parent.absolute()
        if folder not in manifests:
            manifests[folder] = Manifest(folder)
        manifests[folder].check_replaceable([f])
    return manifests


def _remove_stale_temporaries(files: Sequence[Path]) -> None:
    """Temporary files a killed run left beside these outputs (liverctl's own naming, see
    :func:`liverctl.io.atomic_path`)."""
    for f in files:
        if f.parent.is_dir():
            for tmp in f.parent.glob(f".{glob_escape(f.name)}.*.tmp*"):
                tmp.unlink(missing_ok=True)


def _earlier_result(case: CaseResult, files: Sequence[Path], model: LiverModel, options: PredictOptions) -> bool:
    """``resume``: fill ``case`` from an earlier run's files if they hold this model's result
    with these options (and liverctl wrote them); ``False`` if the scan must be segmented."""
    manifest = Manifest(files[0].parent)
    if not all(f.is_file() and manifest.owns(f) for f in files):
        return False
    try:
        report = json.loads(files[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("input") != case.input:
        return False
    shas = [r.sha256 for r in model.resolved]
    earlier = report.get("model") or {}
    earlier_shas = [m.get("sha256") for m in earlier.get("ensemble") or [earlier]]
    if earlier_shas != shas or report.get("options") != options.result_key():
        return False
    case.mask, case.report_path, case.report, case.skipped = files[0], files[1], report, True
    case.probabilities = files[2] if len(files) > 2 else None
    return True


Prepared = tuple[Image, tuple[Image, np.ndarray], list[str]]


def _prepare(model: LiverModel, path: Path, series_uid: str | None) -> Prepared:
    """Read a scan, check it is CT, and bring it to model space (runs in the read-ahead thread)."""
    image, notes = read_ct(path, series_uid=series_uid)
    return image, model.to_model_space(image), notes


def _prefetched(
    model: LiverModel, scans: list[Path], series_uid: str | None
) -> Iterator[tuple[Path, Future[Prepared]]]:
    """Yield each scan with a future of its prepared data; the next scan is read while the
    current one is in the network (one background thread)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="liverctl-read") as pool:
        pending = pool.submit(_prepare, model, scans[0], series_uid) if scans else None
        for i, scan in enumerate(scans):
            current = pending
            pending = pool.submit(_prepare, model, scans[i + 1], series_uid) if i + 1 < len(scans) else None
            assert current is not None
            yield scan, current


def _summary_row(case: CaseResult) -> dict[str, Any]:
    r = case.report or {}
    bbox = r.get("bounding_box_mm") or {}
    return {
        "input": case.input,
        "mask": str(case.mask) if case.mask else "",
        "status": "ok" if case.ok else "failed",
        "error": case.error or "",
        "liver_volume_ml": r.get("liver_volume_ml", ""),
        "voxel_count": r.get("voxel_count", ""),
        "hu_mean": r.get("hu_mean", ""),
        "hu_std": r.get("hu_std", ""),
        "components_before_cleanup": r.get("components_before_cleanup", ""),
        "bbox_min_mm": " ".join(str(v) for v in bbox.get("min_mm", [])),
        "bbox_max_mm": " ".join(str(v) for v in bbox.get("max_mm", [])),
        "qc_flags": " ".join((r.get("qc") or {}).get("flags", [])),
        "model": (r.get("model") or {}).get("name", ""),
        "sha256": (r.get("model") or {}).get("sha256", ""),
        "seconds": r.get("seconds", ""),
    }


def write_summary(cases: Sequence[CaseResult], path: str | os.PathLike[str]) -> Path:
    """One CSV row per case with the report's main fields (atomic write)."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerow(_summary_row(case))
    return write_text_atomic(path, buffer.getvalue())


def predict(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str | Sequence[str] | None = None,
    weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    arch: str | None = None,
    options: PredictOptions | None = None,
    series_uid: str | None = None,
    shard: tuple[int, int] | None = None,
    summary: str | os.PathLike[str] | None = None,
    resume: bool = False,
    loaded: LiverModel | None = None,
    progress: ProgressCallback | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
) -> PredictResult:
    """Segment the liver in one or many CT scans and write masks, reports and a summary.

    Args:
        inputs: a scan file, a DICOM series folder, a folder of scans, or a list of these.
        output: mask file (one scan), or folder (see :func:`output_paths`).
        model: registry name(s) (``None`` = the default entry; several = an ensemble).
        weights: local weights file(s) instead of a download (see :meth:`LiverModel.load`).
        arch: architecture of local weights that have no ``.toml`` beside them.
        options: :class:`PredictOptions`.
        series_uid: the DICOM series to read from a folder that holds several.
        shard: ``(i, n)``: segment only every n-th scan starting at i (of the sorted list),
            to split a folder over machines.
        summary: where to write the summary CSV; default ``summary.csv`` in the output
            folder when there are several scans, none for a single scan. It is rewritten after
            every scan, so a killed run leaves a truthful partial summary.
        resume: keep the mask and report of a scan that an earlier run wrote with the same
            model (sha256) and options (:meth:`PredictOptions.result_key`); such cases come
            back with ``skipped=True``.
        loaded: an already loaded :class:`LiverModel` (skips loading).
        progress: called per scan (``"scans"``) and per window batch (``"sliding window"``).
        on_case: called with each :class:`CaseResult` as soon as its files are written.

    Every option and output is checked before the weights are loaded (or downloaded): an
    output folder that cannot be written, or an existing file there that liverctl did not
    write (:mod:`liverctl.manifest`), is refused up front.

    Returns:
        :class:`PredictResult`. A scan that fails (unreadable, not CT, ...) does not stop the
        batch: its error is in its :class:`CaseResult` and in the summary.
    """
    options = options or PredictOptions()
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not items:
        raise InputError("no input scans given")
    scans = _shard(expand_inputs(items), shard)
    if not scans:
        raise InputError("no scans to segment in this shard")
    missing = [s for s in scans if not s.exists()]
    if missing:  # before any download
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"no such file or folder: {missing[0]}{more}")
    outputs = output_paths(scans, output)
    if summary is None and len(scans) > 1:
        summary = outputs[0].parent / "summary.csv"
    summary_path = None if summary is None else Path(summary)
    if summary_path is not None:
        check_not_input(summary_path, scans)
    files = [_case_files(out, options) for out in outputs]
    manifests = _check_outputs([f for group in files for f in group] + ([summary_path] if summary_path else []))
    if loaded is None:
        from liverctl.device import resolve_device

        resolve_device(options.device)  # an absent device is refused before any download
    net = loaded or LiverModel.load(
        model,
        weights,
        arch=arch,
        device=options.device,
        precision=options.precision,
        threads=options.threads,
        dataset=options.dataset,
        progress=progress,
    )
    _remove_stale_temporaries([f for group in files for f in group] + ([summary_path] if summary_path else []))
    result = PredictResult()
    kept = {}
    for i, (scan, group) in enumerate(zip(scans, files, strict=True)):
        case = CaseResult(input=str(scan))
        if resume and _earlier_result(case, group, net, options):
            kept[i] = case
    prepared = _prefetched(net, [s for i, s in enumerate(scans) if i not in kept], series_uid)
    for done, (out, group) in enumerate(zip(outputs, files, strict=True)):
        if done in kept:
            case = kept[done]
        else:
            scan, future = next(prepared)
            case = CaseResult(input=str(scan))
            _segment_case(net, case, future, group, options, manifests[out.parent.absolute()], progress)
        result.cases.append(case)
        if summary_path is not None:
            result.summary_csv = write_summary(result.cases, summary_path)
            manifests[summary_path.parent.absolute()].record([summary_path], "predict")
        if on_case is not None:
            on_case(case)
        if progress is not None:
            progress("scans", done + 1, len(scans))
    return result


def _segment_case(
    net: LiverModel,
    case: CaseResult,
    future: Future[Prepared],
    files: Sequence[Path],
    options: PredictOptions,
    manifest: Manifest,
    progress: ProgressCallback | None,
) -> None:
    """Segment one scan, read ahead by ``future``, and write its files (recorded in the
    folder's manifest); errors go into ``case``."""
    out, report_path, scan = files[0], files[1], case.input
    try:
        image, model_space, notes = future.result()
        seg = net.segment(image, options, source=scan, prepared=model_space, ct_notes=notes, progress=progress)
        manifest.claim(files, "predict")
        case.mask = write_mask(seg.mask, image, out)
        if seg.probabilities is not None:
            case.probabilities = write_image(seg.probabilities, files[2])
        seg.report = {"input": scan, "mask": str(out), "options": options.result_key(), **seg.report}
        if case.probabilities is not None:
            seg.report["probabilities"] = str(case.probabilities)
        case.report_path = write_text_atomic(report_path, json.dumps(seg.report, indent=2) + "\n")
        case.report = seg.report
        manifest.record(files)
    except LiverctlError as exc:
        case.error = str(exc)
    except MemoryError:
        case.error = "out of memory"


def parse_paths(text: str) -> list[str]:
    """Paths from text, one a line (blank lines and ``#`` comments skipped): for ``predict -``."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


__all__ = [
    "CaseResult",
    "LiverModel",
    "PredictOptions",
    "PredictResult",
    "Segmentation",
    "check_ct",
    "expand_inputs",
    "normalise",
    "output_paths",
    "parse_paths",
    "parse_shard",
    "predict",
    "write_summary",
]
