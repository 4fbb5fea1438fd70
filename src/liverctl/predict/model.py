"""A loaded network segments one scan: :class:`LiverModel`.

Data flow of :meth:`LiverModel.segment`, each step a method (or a function of another
module) that takes and returns plain values::

    to_model_space (predict.space: reorient + the entry's grid, liverctl.predict.monai_grid for MONAI
    bundles; preprocessing.intensity.normalise)
    -> inference.predict_volume (sliding window) -> the liver indicator in model space
    -> back onto the scan's grid (predict.space.ModelSpace.mask_on: Invertd's nearest neighbour
    for MONAI bundles, linear interpolation of the indicator otherwise)
    -> postprocessing.clean_liver_mask -> predict.report.case_report

Arrays are (z, y, x) throughout; a network trained on (x, y, z) arrays (MONAI's) gets its
input transposed at the engine's boundary and its output transposed back (:func:`_transposed`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverctl.errors import ConfigError
from liverctl.io import Image
from liverctl.predict.options import PredictOptions
from liverctl.predict.segmenter import RawPrediction, Segmenter
from liverctl.predict.space import ModelSpace
from liverctl.progress import ProgressCallback

if TYPE_CHECKING:
    from liverctl.device import DeviceConfig

__all__ = ["LiverModel"]


def _sibling_registry(weights: Path) -> Path | None:
    """A registry describing a local weights file: ``<file>.toml`` or ``weights.toml`` beside it."""
    for candidate in (weights.with_name(weights.name + ".toml"), weights.with_name("weights.toml")):
        if candidate.is_file():
            return candidate
    return None


class LiverModel(Segmenter):
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
        self._compiled: dict[tuple[Any, ...], tuple[list[Any], str]] = {}

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
        device_config: DeviceConfig | None = None,
        exact: bool = False,
    ) -> LiverModel:
        """Download (or find in the cache), verify and load the network(s).

        Args:
            model: registry name(s); several names make an ensemble. ``None`` = the default.
            weights: local weights file(s) instead of a download (``--weights``). Their recipe
                comes from a ``<file>.toml`` / ``weights.toml`` beside the file (as written by
                ``liverctl train``), else from the registry entry ``model``.
            arch: override the architecture of a local file's entry.
            device: see :class:`PredictOptions`.
            precision: see :class:`PredictOptions`.
            threads: see :class:`PredictOptions`.
            dataset: the DCM branch to use, by dataset name (models trained on several datasets).
            device_config: the three device fields at once (:attr:`PredictOptions.device_config`),
                instead of ``device``, ``precision`` and ``threads``.
            exact: for an nnU-Net v2 results folder (``weights`` = one folder holding
                ``plans.json``, or ``model`` = a ``format = "nnunetv2"`` registry entry, whose
                files are downloaded and verified first; both loaded as
                :class:`~liverctl.predict.nnunet_model.NnUNetLiverModel`):
                nnUNetPredictor's numbers (``--exact``); unused by other models.
        """
        from liverctl.device import DeviceConfig
        from liverctl.predict.nnunet_model import NnUNetLiverModel, nnunet_folder

        if device_config is None:
            device_config = DeviceConfig(device, precision, threads)
        elif (device, precision, threads) != ("auto", "auto", None):
            raise ConfigError("give either device_config or device/precision/threads to LiverModel.load, not both")
        if (folder := nnunet_folder(weights)) is not None:  # an nnU-Net v2 results folder
            return NnUNetLiverModel.load(folder, exact=exact, device_config=device_config)  # type: ignore[return-value]
        if (entry := _nnunet_entry(model, weights)) is not None:  # a format = "nnunetv2" registry entry
            return NnUNetLiverModel.from_entry(  # type: ignore[return-value]
                entry, exact=exact, device_config=device_config, progress=progress
            )
        torch_device = device_config.resolve()
        resolved = _resolve_weights(model, weights, arch, progress)
        _check_ensemble(resolved)
        networks = [_load_network(item, torch_device) for item in resolved]
        return cls(resolved, networks, torch_device, _dataset_index(resolved[0].entry, dataset))

    @property
    def liver_channels(self) -> list[int]:
        """Output channels that form the liver region: the liver channel plus any tumour or
        lesion channel the entry's label map names (the whole organ, as LiTS scores it)."""
        from liverctl.io.datasets import liver_region_values

        return sorted({self.entry.liver_channel, *liver_region_values(self.entry.labels)})

    @property
    def tumour_channel(self) -> int | None:
        """The output channel of the tumour (a label named tumour, tumor or lesion besides the
        liver), or ``None`` for a liver-only model. Models with one write label maps (liver 1,
        tumour 2) and report tumour volume and burden."""
        lower = {str(n).lower(): int(v) for n, v in self.entry.labels.items()}
        for name in ("tumour", "tumor", "lesion"):
            if name in lower and lower[name] not in (0, self.entry.liver_channel):
                return lower[name]
        return None

    # ---- the steps

    def to_model_space(self, image: Image, exact: bool = False) -> ModelSpace:
        """The scan in model space (:class:`~liverctl.predict.space.ModelSpace`): reoriented and
        resampled as the entry's ``grid`` says (MONAI's ``Spacingd`` grid for MONAI bundles,
        bit for bit when ``exact``), and normalised with the entry's intensity recipe."""
        return ModelSpace.of(image, self.entry, exact=exact)

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
            "ensemble": options.ensemble,
            "accumulate_on": options.accumulate_on,
        }
        if not options.shortcuts:
            return SlidingWindow.monai(**fields)
        if options.fast:
            return SlidingWindow.fast(**fields)
        return SlidingWindow(**fields)

    def engine_config(self, options: PredictOptions) -> Any:
        """:meth:`window_config` with the weights' layout the backend choice asks for:
        channels-last where ``auto`` found torch channels-last the fastest candidate that passes
        the exactness test (:func:`~liverctl.inference.backends.backend_network`)."""
        from liverctl.inference.backends import CHANNELS_LAST

        config = self.window_config(options)
        if self.dataset_index is not None or not options.shortcuts:
            return config
        return replace(config, channels_last=self.backend_predictors(options)[1] == CHANNELS_LAST)

    def runs_as(self, options: PredictOptions) -> dict[str, str]:
        """The resolved ``device`` (with a GPU's index and name) and ``precision`` that ``options``
        run with on this model (for reports and the ``--resume`` key)."""
        from liverctl.device import device_label, resolve_precision

        precision = resolve_precision(self.device, self.window_config(options).precision, inference=True)
        return {"device": device_label(self.device), "precision": precision}

    def _predictors(self, options: PredictOptions | None = None) -> list[Any]:
        """The networks as the engine calls them (with the DCM branch chosen), on the backend
        ``options`` ask for (:func:`liverctl.inference.backends.backend_network`)."""
        if self.dataset_index is not None:
            from liverctl.models.dcm import DatasetBranch

            return [DatasetBranch(net, self.dataset_index) for net in self.networks]
        if options is None:
            return list(self.networks)
        return self.backend_predictors(options)[0]

    def backend_predictors(self, options: PredictOptions) -> tuple[list[Any], str]:
        """The networks on their backend (built or read from the cache once per model) and the
        backend's name (``"torch"`` when the networks run on different ones;
        :data:`~liverctl.inference.backends.CHANNELS_LAST` when every one runs channels-last)."""
        from liverctl.inference.backends import backend_network

        exact = not options.shortcuts
        roi = self.window_config(options).roi
        shape = (1, int(self.entry.kwargs.get("in_channels", 1)), *roi)
        key = (options.backend, exact, shape)
        if key not in self._compiled:
            test = self.exactness_test(roi)
            pairs = [
                backend_network(
                    net, options.backend, self.device, exact, item.sha256, shape, test=test, channels_last=True
                )
                for net, item in zip(self.networks, self.resolved, strict=True)
            ]
            names = {name for _, name in pairs}
            self._compiled[key] = ([p for p, _ in pairs], names.pop() if len(names) == 1 else "torch")
        return self._compiled[key]

    def exactness_test(self, roi: Sequence[int]) -> Any:
        """The windows a faster backend is tested on for this model
        (:func:`~liverctl.inference.exactness.phantom_windows`): a synthetic abdomen through this
        model's grid, orientation and intensity recipe, windows of ``roi`` (engine axes)."""
        from liverctl.inference.exactness import phantom_windows

        e = self.entry
        xyz = e.network_axes == "xyz"
        roi_zyx = tuple(roi)[::-1] if xyz else tuple(roi)
        key = repr((e.grid, e.orientation, tuple(e.spacing), e.intensity, e.interpolation, e.network_axes))

        def to_input(image: Image) -> np.ndarray:
            net_input = ModelSpace.of(image, e).net_input
            return net_input.T if xyz else net_input

        return phantom_windows(key, to_input, e.spacing, [(5 * int(r) + 3) // 4 for r in roi_zyx])

    def predict_raw(
        self, image: Image, options: PredictOptions, prepared: Any, progress: ProgressCallback | None, body: bool
    ) -> RawPrediction:
        """The network(s) on the scan in model space (``prepared``, else made here), decisions
        brought back onto ``image``'s grid (:class:`~liverctl.predict.segmenter.Segmenter` does the rest)."""
        exact = not options.shortcuts
        space = prepared if prepared is not None else self.to_model_space(image, exact=exact)
        result, region, first_pass = self._infer_in_region(space, options, progress)
        inside = np.zeros(space.net_input.shape, bool)
        inside[region if region is not None else ...] = True
        liver = space.mask_on(image, self._liver_indicator(result, body) & inside, exact=exact)
        tumour = self.tumour_channel
        backend = self.backend_predictors(options)[1] if self.dataset_index is None else "torch"
        extra: dict[str, Any] = {"backend": backend}
        if first_pass is not None:
            extra["first_pass"] = first_pass
        return RawPrediction(
            liver=liver,
            stats=result.stats,
            probability=lambda: (
                space.probability_on(image, sum(result.channel(c) for c in self.liver_channels) * inside).array
            ),
            tumour=None
            if tumour is None
            else space.mask_on(image, self._class_indicator(result, tumour, body) & inside, exact=exact),
            extra=extra,
        )

    def _infer_in_region(
        self, space: ModelSpace, options: PredictOptions, progress: ProgressCallback | None
    ) -> tuple[Any, tuple[slice, slice, slice] | None, dict[str, Any] | None]:
        """:meth:`infer`, in the defaults only where the first pass says the liver can be
        (:mod:`liverctl.inference.liver_region`): the result, the region ((z, y, x) slices of
        model space, ``None`` = everywhere) and the first pass's report (``None``: none ran)."""
        from liverctl.inference.liver_region import liver_region, outside_as_air, worth_it
        from liverctl.inference.roi import has_coarse_stage

        xyz = self.entry.network_axes == "xyz"
        config = self.engine_config(options)
        shape = space.net_input.T.shape if xyz else space.net_input.shape
        plain = options.shortcuts and not options.fast and self.dataset_index is None
        if not plain or has_coarse_stage(self.networks) or not worth_it(shape, config.roi):
            return self.infer(space.net_input, space.hu, options, progress), None, None
        flip = (lambda a: a.T) if xyz else (lambda a: a)
        predictors = self._predictors(options)
        box, info = liver_region(
            flip(space.net_input), flip(space.hu.array), predictors, config, self.device, self.liver_channels
        )
        if box is None:
            return self.infer(space.net_input, space.hu, options, progress), None, info
        region = box[::-1] if xyz else box  # engine axes -> (z, y, x)
        info["box_zyx"] = [[s.start, s.stop] for s in region]
        del info["box"]
        hu = Image(outside_as_air(space.hu.array, region), space.hu.geometry)
        return self.infer(space.net_input, hu, options, progress), region, info

    def infer(
        self, net_input: np.ndarray, hu: Image, options: PredictOptions, progress: ProgressCallback | None
    ) -> Any:
        """The :class:`~liverctl.inference.InferenceResult` of the network(s) on a scan in model
        space, as (z, y, x) arrays."""
        from liverctl.inference import predict_volume
        from liverctl.inference.roi import has_coarse_stage, predict_in_roi

        # A network trained on (x, y, z) arrays (MONAI's) gets the volume in that order, so the
        # engine places, pads and blends its windows exactly as MONAI does; results come back
        # as (z, y, x) views.
        xyz = self.entry.network_axes == "xyz"
        if not xyz and has_coarse_stage(self.networks):  # H-DenseUNet's cascade: fine stages in the coarse box
            return predict_in_roi(
                net_input, self._predictors(), self.window_config(options), self.device, hu=hu.array, progress=progress
            )
        result = predict_volume(
            net_input.T if xyz else net_input,
            self._predictors(options),
            self.engine_config(options),
            self.device,
            hu=hu.array.T if xyz else hu.array,
            progress=progress,
        )
        return _transposed(result) if xyz else result

    def _liver_indicator(self, result: Any, body: bool) -> np.ndarray:
        """The network's liver decision in model space (bool); empty for a scan without a body."""
        if self.entry.decision == "argmax":
            indicator = np.isin(result.labels, self.liver_channels)
        else:
            indicator = np.any([result.channel(c) > 0.5 for c in self.liver_channels], axis=0)
        if not body:  # an all-air scan: whatever the network says, there is no liver
            indicator = np.zeros_like(indicator)
        return indicator

    def _class_indicator(self, result: Any, channel: int, body: bool) -> np.ndarray:
        """The network's decision for one class in model space (bool)."""
        if not body:
            return np.zeros(result.stats.volume_shape, bool)
        if self.entry.decision == "argmax":
            return result.labels == channel
        return result.channel(channel) > 0.5

    def model_info(self) -> dict[str, Any]:
        """The ``model`` section of a report: name, architecture, weights and their provenance."""
        first = self.resolved[0]
        return {
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
        }


# --------------------------------------------------------------------------- loading steps


def _resolve_weights(
    model: str | Sequence[str] | None,
    weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    arch: str | None,
    progress: ProgressCallback | None,
) -> list[Any]:
    """The :class:`~liverctl.weights.ResolvedWeights` of registry names or local weights files."""
    from liverctl import weights as hub

    names = [model] if model is None or isinstance(model, str) else list(model)
    files = [] if weights is None else [weights] if isinstance(weights, str | os.PathLike) else list(weights)
    if not files:
        return [hub.resolve_weights(name, progress=progress) for name in names]
    if len(names) > 1:
        raise ConfigError("give either several --model names or several --weights files, not both")
    resolved = []
    for f in files:
        path = Path(f).expanduser()
        sibling = _sibling_registry(path) if path.is_file() else None
        registry = hub.load_registry(sibling) if sibling else None
        if registry is not None and names[0] is not None and names[0] not in registry.models:
            raise ConfigError(
                f"--model {names[0]} and --weights {path}: these weights bring their own recipe ({sibling}), "
                "so --model would be ignored; give one of them"
            )
        item = hub.resolve_weights(None if sibling else names[0], path, registry=registry)
        if arch is not None:
            same = arch == item.entry.architecture  # another architecture: not the template's arguments
            item = replace(item, entry=replace(item.entry, architecture=arch, kwargs=item.entry.kwargs if same else {}))
        resolved.append(item)
    return resolved


def _nnunet_entry(
    model: str | Sequence[str] | None, weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
) -> Any:
    """The ``format = "nnunetv2"`` registry entry ``model`` names, else ``None`` (checked before
    any download: such an entry is one model, its folds the ensemble, and has no single file)."""
    from liverctl import weights as hub

    files = [] if weights is None else [weights] if isinstance(weights, str | os.PathLike) else list(weights)
    if files and model is None:  # local files: their recipe comes from beside them
        return None
    names = [model] if model is None or isinstance(model, str) else list(model)
    registry = hub.load_registry()
    if files and any(name not in registry.models for name in names):
        return None  # a name that only the registry beside the files knows: _resolve_weights decides
    entries = [registry.get(name) for name in names]
    found = [e for e in entries if isinstance(e, hub.NnUNetEntry)]
    if not found:
        return None
    if len(entries) > 1:
        raise ConfigError(f"nnU-Net model '{found[0].name}' is one --model: its folds are the ensemble")
    if files:
        raise ConfigError(
            f"--weights FILE with nnU-Net model '{found[0].name}': give --weights RESULTS_DIR (the folder) instead"
        )
    return found[0]


def _check_ensemble(resolved: Sequence[Any]) -> None:
    """Networks of an ensemble must share their preprocessing and label map."""
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


def _load_network(item: Any, torch_device: Any) -> Any:
    """Build a network from its entry and load its weights (sha256 re-checked right before)."""
    from liverctl import weights as hub
    from liverctl.models import build_model, load_state_dict_checked

    net = build_model(item.entry.architecture, **dict(item.entry.kwargs))
    state = hub.load_state_dict(item.path, item.sha256)  # re-checked right before loading
    load_state_dict_checked(net, state)
    net.eval()
    return net.to(torch_device)


def _dataset_index(entry: Any, dataset: str | None) -> int | None:
    """The index of the DCM branch named ``dataset`` (``None`` when no branch is asked for)."""
    datasets = list(getattr(entry, "datasets", ()) or entry.kwargs.get("dataset_names", ()) or ())
    if dataset is None:
        return None
    if not datasets:
        raise ConfigError(f"--dataset {dataset}: model {entry.name} has no dataset-wise branches")
    if dataset not in datasets:
        raise ConfigError(f"--dataset {dataset}: unknown dataset; this model knows {', '.join(datasets)}")
    return datasets.index(dataset)


# --------------------------------------------------------------------------- helpers


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
