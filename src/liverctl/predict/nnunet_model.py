"""An nnU-Net v2 results folder behind ``predict``: :class:`NnUNetLiverModel`.

``liverctl predict SCAN --weights RESULTS_DIR`` (a folder holding ``plans.json``) loads the folder
with :class:`liverctl.nnunet.NnUNetModel`, and ``liverctl predict SCAN --model NAME`` does the same
for a ``format = "nnunetv2"`` registry entry after downloading and verifying its files
(:meth:`NnUNetLiverModel.from_entry`); both segment through this adapter, which offers what
:func:`liverctl.predict.predict` uses of a :class:`~liverctl.predict.model.LiverModel`:
``resolved`` (one item per fold checkpoint, with its ``sha256``, for ``--resume``), ``entry`` (name
and citation), ``to_model_space`` (the scan itself: nnU-Net's own preprocessing runs inside
:meth:`NnUNetModel.predict`), :meth:`segment` and :meth:`model_info`.

Options: ``--exact`` (``PredictOptions(shortcuts=False)``) loads the folder with
``NnUNetModel(exact=True)`` (nnUNetPredictor's numbers on this device: fp32 on the CPU, fp16
autocast with float16 sums on the GPU on CUDA; see :mod:`liverctl.nnunet.predictor`).
Mirroring: always, in both modes, over the checkpoint's allowed axes (nnUNetPredictor's default ``use_mirroring=True``), so ``--tta``
changes nothing: nnU-Net networks are trained and validated with it, and on the test folder the
default mode without mirroring agrees with nnUNetPredictor only to Dice 0.92-0.93 (0.9998-1.0 with
it). :meth:`NnUNetModel.predict(mirroring=False) <liverctl.nnunet.NnUNetModel.predict>` is the
faster unmirrored prediction from Python.
``--overlap``, ``--batch-size``, ``--fast`` and ``--dataset`` do not apply (nnU-Net's plans fix
the windows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from liverctl.errors import ConfigError
from liverctl.io import Image
from liverctl.predict.options import PredictOptions
from liverctl.predict.segmenter import RawPrediction, Segmenter
from liverctl.progress import ProgressCallback

if TYPE_CHECKING:
    from liverctl.device import DeviceConfig
    from liverctl.nnunet import NnUNetModel
    from liverctl.weights import NnUNetEntry

__all__ = ["CITATION", "NnUNetLiverModel", "nnunet_folder"]

CITATION = (
    "Isensee F. et al., nnU-Net: a self-configuring method for deep learning-based biomedical image "
    "segmentation, Nature Methods 2021, doi:10.1038/s41592-020-01008-z"
)


def nnunet_folder(weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> Path | None:
    """The nnU-Net results folder that ``weights`` names (one directory holding ``plans.json``), else ``None``.

    Several paths of which one is such a folder are refused (one folder = one model; its folds
    are the ensemble).
    """
    if weights is None:
        return None
    items = [weights] if isinstance(weights, str | os.PathLike) else list(weights)
    folders = [Path(w).expanduser() for w in items if (Path(w).expanduser() / "plans.json").is_file()]
    if not folders:
        return None
    if len(items) > 1:
        raise ConfigError("an nnU-Net results folder is one --weights: its folds are the ensemble")
    return folders[0]


@dataclass(frozen=True)
class NnUNetEntryInfo:
    """What the CLI and reports name of a results folder (the registry entry's role); for a
    registry entry, also where its files come from."""

    name: str
    citation: str = CITATION
    architecture: str = "nnunetv2"
    repo_id: str = ""
    revision: str = ""
    repo_folder: str = ""


@dataclass(frozen=True)
class NnUNetCheckpointItem:
    """One fold checkpoint of the folder, as ``resolved`` items are for ``--resume``."""

    path: Path
    sha256: str
    fold: str
    entry: NnUNetEntryInfo
    source: str = "local"


@dataclass(frozen=True)
class NnUNetStats:
    """:class:`NnUNetModel`'s stats in the fields :func:`~liverctl.predict.report.case_report` reads."""

    device: str
    precision: str
    windows: int
    skipped_windows: int
    window: tuple[int, ...]
    evaluated_voxels: int
    compute_amplification: float
    network_seconds: float
    tf32: bool = False
    accumulate_on: str = "device"


class NnUNetLiverModel(Segmenter):
    """An :class:`~liverctl.nnunet.NnUNetModel` with the interface ``predict`` uses of a ``LiverModel``."""

    def __init__(self, model: NnUNetModel, entry: NnUNetEntryInfo | None = None) -> None:
        self.model = model
        self.device = model.device
        self.entry = entry or NnUNetEntryInfo(f"{model.folder.parent.name}/{model.folder.name}")
        self.source = "hub" if self.entry.repo_id else "local"
        self.resolved = [
            NnUNetCheckpointItem(c.path, c.sha256, str(fold), self.entry, self.source)
            for c, fold in zip(model.checkpoints, model.folds, strict=True)
        ]

    @classmethod
    def from_entry(
        cls,
        entry: NnUNetEntry,
        *,
        exact: bool = False,
        device_config: DeviceConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> NnUNetLiverModel:
        """Download (or find in the cache) the files of a ``format = "nnunetv2"`` registry entry,
        verify each against its pin (a file that fails is removed and refused) and load them."""
        from liverctl.device import DeviceConfig
        from liverctl.nnunet import NnUNetModel
        from liverctl.weights.nnunet_files import download_folder

        config = device_config or DeviceConfig()
        config.resolve()  # an unusable device or precision is refused before any download
        folder = download_folder(entry, progress=progress)
        model = NnUNetModel.load(
            folder,
            entry.folds,
            entry.checkpoint,
            device=config.device,
            precision=config.precision,
            exact=exact,
            sha256=entry.sha256,  # checked again right before each file is parsed
        )
        citation = f"{entry.citation}; {CITATION}" if entry.citation else CITATION
        info = NnUNetEntryInfo(entry.name, citation, "nnunetv2", entry.repo_id, entry.revision, entry.folder)
        return cls(model, info)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        *,
        exact: bool = False,
        device_config: DeviceConfig | None = None,
        folds: Sequence[int | str] | None = None,
        checkpoint: str = "checkpoint_final.pth",
    ) -> NnUNetLiverModel:
        """Verify and load a results folder (``folds=None``: every fold with ``checkpoint``)."""
        from liverctl.device import DeviceConfig
        from liverctl.nnunet import NnUNetModel

        config = device_config or DeviceConfig()
        config.resolve()  # validates device and precision, applies threads
        model = NnUNetModel.load(
            folder, folds, checkpoint, device=config.device, precision=config.precision, exact=exact
        )
        return cls(model)

    @property
    def liver_labels(self) -> list[int]:
        return list(self.model.plans.liver_labels)

    def to_model_space(self, image: Image, exact: bool = False) -> Image:
        """The scan itself: nnU-Net's preprocessing runs inside :meth:`NnUNetModel.predict`."""
        return image

    def runs_as(self, options: PredictOptions) -> dict[str, str]:
        """The resolved ``device`` (with a GPU's index and name) and ``precision`` of this model
        (for reports and the ``--resume`` key; exact mode: nnUNetPredictor's on this device)."""
        from liverctl.device import device_label

        return {"device": device_label(self.device), "precision": self.model.precision}

    def mirroring(self, options: PredictOptions) -> bool:
        """Always (nnUNetPredictor's default, whatever ``options.tta`` says): see the module docs."""
        return True

    def check_options(self, options: PredictOptions) -> None:
        """One mode per loaded model, and folds averaged as nnUNetPredictor averages them."""
        if options.ensemble != "mean":
            raise ConfigError("--ensemble vote: an nnU-Net folder's folds are averaged, as nnUNetPredictor does")
        if options.shortcuts == self.model.exact:
            want = "--exact" if not options.shortcuts else "the default mode"
            raise ConfigError(
                f"this nnU-Net model was loaded for {'exact' if self.model.exact else 'default'} mode, not {want}"
            )

    def predict_raw(
        self, image: Image, options: PredictOptions, prepared: Any, progress: ProgressCallback | None, body: bool
    ) -> RawPrediction:
        """nnU-Net's own prediction of the scan (its preprocessing, windows and export), read as
        the liver labels (:class:`~liverctl.predict.segmenter.Segmenter` does the rest)."""
        result = self.model.predict(
            image, mirroring=self.mirroring(options), accumulate_on=options.accumulate_on, backend=options.backend
        )
        empty = np.zeros(image.shape, dtype=bool)
        keys = ("mirror_axes", "network_passes", "network_grid_shape", "preprocess_seconds", "export_seconds")
        return RawPrediction(
            liver=np.isin(result.labels.array, self.liver_labels) if body else empty,
            stats=self._stats(result.stats),
            probability=lambda: result.liver_probability.array if body else empty.astype(np.float32),
            extra={key: result.stats[key] for key in (*keys, "backend", "first_pass") if key in result.stats},
        )

    def _stats(self, stats: dict[str, Any]) -> NnUNetStats:
        plans = self.model.plans
        patch = plans.patch_size
        window = tuple(int(patch[a]) for a in plans.transpose_backward)  # network axes -> (z, y, x)
        evaluated = int(stats["network_passes"]) * int(np.prod(patch))
        grid = max(int(np.prod(stats["network_grid_shape"])), 1)
        return NnUNetStats(
            device=str(stats["device"]),
            precision=str(stats["precision"]),
            tf32=bool(stats["tf32"]),
            accumulate_on=str(stats["accumulate_on"]),
            windows=int(stats["windows"]),
            skipped_windows=int(stats["skipped_windows"]),
            window=window,
            evaluated_voxels=evaluated,
            compute_amplification=evaluated / grid,
            network_seconds=float(stats["network_seconds"]),
        )

    def model_info(self) -> dict[str, Any]:
        """The ``model`` section of a report: the folder, its folds and the sha256 of each file."""
        m = self.model
        first = self.resolved[0]
        return {
            "name": self.entry.name,
            "architecture": self.entry.architecture,
            "format": "nnunetv2",
            "folder": str(m.folder),
            "configuration": m.plans.configuration,
            "trainer": m.checkpoints[0].trainer_name,
            "folds": [r.fold for r in self.resolved],
            "exact": m.exact,
            "liver_labels": self.liver_labels,
            "sha256": first.sha256,
            "source": self.source,
            **(
                {"repo_id": self.entry.repo_id, "revision": self.entry.revision, "repo_folder": self.entry.repo_folder}
                if self.entry.repo_id
                else {}
            ),
            "files": dict(m.hashes),
            "ensemble": [{"path": str(r.path), "fold": r.fold, "sha256": r.sha256} for r in self.resolved]
            if len(self.resolved) > 1
            else None,
        }
