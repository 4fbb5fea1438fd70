"""An nnU-Net v2 results folder as a liverctl model: :class:`NnUNetModel`.

>>> model = NnUNetModel.load("Dataset003_Liver/nnUNetTrainer__nnUNetPlans__3d_fullres", folds=(0, 1))  # doctest: +SKIP
>>> labels, liver_probability, stats = model.predict(image)  # doctest: +SKIP

``labels`` and ``liver_probability`` are on ``image``'s own grid (same array, same geometry).
``exact=True`` reproduces ``nnUNetPredictor`` on the same device (on the CPU: probabilities to
float16 rounding, identical label maps; on CUDA: nnU-Net's float16 autocast and float16 sums on
the GPU, see :mod:`liverctl.nnunet.predictor`); the default (``exact=False``) takes the measured shortcuts described in
:mod:`liverctl.nnunet.predictor` and returns only the liver labels in ``labels``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.device import device_label
from liverctl.errors import ConfigError, WeightsError
from liverctl.io import Image
from liverctl.nnunet.checkpoint import NnUNetCheckpoint, load_checkpoint
from liverctl.nnunet.first_pass import liver_box
from liverctl.nnunet.network import build_network, load_weights
from liverctl.nnunet.plans import NnUNetPlans, read_plans
from liverctl.nnunet.predictor import exact_precision, export, predict_logits
from liverctl.nnunet.preprocess import preprocess

__all__ = ["NnUNetModel", "NnUNetPrediction", "available_folds"]

Fold = int | str


@dataclass
class NnUNetPrediction:
    """``labels`` (uint8) and ``liver_probability`` (float32) on the scan's grid, ``stats`` (JSON-ready);
    ``probabilities`` (``(K, z, y, x)``) only when asked for in exact mode. Unpacks as the first three."""

    labels: Image
    liver_probability: Image
    stats: dict[str, Any]
    probabilities: np.ndarray | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.labels, self.liver_probability, self.stats))


def available_folds(folder: str | os.PathLike[str], checkpoint: str = "checkpoint_final.pth") -> list[Fold]:
    """Folds of a results folder that hold ``checkpoint`` (``fold_all`` left out, as nnU-Net does)."""
    found: list[Fold] = []
    for sub in sorted(Path(folder).glob("fold_*")):
        name = sub.name[len("fold_") :]
        if name.isdigit() and (sub / checkpoint).is_file():
            found.append(int(name))
    return sorted(found)  # type: ignore[type-var]


def _fold_path(folder: Path, fold: Fold, checkpoint: str) -> Path:
    if not (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 0) and fold != "all":
        raise ConfigError(f"fold must be a non-negative integer or 'all', not {fold!r}")
    return folder / f"fold_{fold}" / checkpoint


def _check_json_pins(folder: Path, sha256: Mapping[str, str]) -> dict[str, str]:
    from liverctl.weights import sha256_file

    seen = {}
    for name in ("plans.json", "dataset.json"):
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"not an nnU-Net results folder: {name} missing in {folder}")
        actual = sha256_file(path)
        expected = sha256.get(name)
        if expected and actual != expected.strip().lower():
            raise WeightsError(f"sha256 mismatch for {path}: got {actual}, expected {expected}; not using it")
        seen[name] = actual
    return seen


class NnUNetModel:
    """The networks of some folds of one results folder, with the plans that preprocess for them."""

    def __init__(
        self,
        folder: Path,
        plans: NnUNetPlans,
        checkpoints: Sequence[NnUNetCheckpoint],
        networks: Sequence[Any],
        device: Any,
        *,
        exact: bool,
        precision: str,
        hashes: Mapping[str, str],
    ) -> None:
        self.folder = folder
        self.plans = plans
        self.checkpoints = list(checkpoints)
        self.networks = list(networks)
        self.device = device
        self.exact = exact
        self.precision = precision
        self.hashes = dict(hashes)
        self.mirror_axes = self.checkpoints[0].mirror_axes
        self._backends: dict[str, tuple[list[Any], str]] = {}

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        folds: Sequence[Fold] | None = (0, 1, 2, 3, 4),
        checkpoint: str = "checkpoint_final.pth",
        *,
        configuration: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        exact: bool = False,
        sha256: Mapping[str, str] | None = None,
    ) -> NnUNetModel:
        """Verify and load a results folder.

        Args:
            folder: ``<trainer>__<plans>__<configuration>`` with ``plans.json``, ``dataset.json``
                and ``fold_N/<checkpoint>``.
            folds: the folds to ensemble; ``None`` = every fold that has ``checkpoint``.
            checkpoint: file name inside each fold folder.
            configuration: override the configuration (default: the checkpoint's ``init_args``,
                else the folder name's).
            device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` (:func:`liverctl.device.resolve_device`).
            precision: ``auto`` (fp32 on the CPU, fp16 on CUDA: :func:`liverctl.device.resolve_precision`)
                or fp32/bf16/fp16 (bf16: asked for explicitly); ignored when ``exact`` (nnUNetPredictor's:
                fp32 on the CPU, fp16 autocast on CUDA, :func:`~liverctl.nnunet.predictor.exact_precision`).
            exact: reproduce nnUNetPredictor's numbers on this device instead of the fast defaults.
            sha256: expected hex digests by path relative to ``folder`` (``"plans.json"``,
                ``"dataset.json"``, ``"fold_0/checkpoint_final.pth"``...), checked before any
                file is parsed; files without an entry are hashed for the report only.
        """
        from liverctl.device import prepare_network, resolve_device, resolve_precision

        root = Path(folder).expanduser()
        if not root.is_dir():
            raise WeightsError(f"nnU-Net results folder not found: {root}")
        pins = dict(sha256 or {})
        fold_list = available_folds(root, checkpoint) if folds is None else list(folds)
        if not fold_list:
            raise WeightsError(f"{root}: no fold_N/{checkpoint} found")
        torch_device = resolve_device(device)
        used = exact_precision(torch_device) if exact else resolve_precision(torch_device, precision, inference=True)
        hashes = _check_json_pins(root, pins)
        checkpoints = []
        for fold in fold_list:
            path = _fold_path(root, fold, checkpoint)
            rel = f"fold_{fold}/{checkpoint}"
            if not path.is_file():
                raise WeightsError(f"{root}: fold {fold} has no {checkpoint}")
            ckpt = load_checkpoint(path, pins.get(rel))
            hashes[rel] = ckpt.sha256
            checkpoints.append(ckpt)
        config = configuration or checkpoints[0].configuration
        plans = read_plans(root, config)
        networks = []
        for ckpt in checkpoints:
            net = load_weights(build_network(plans), ckpt.state_dict, str(ckpt.path))
            prepare_network(net, torch_device, used)
            networks.append(net)
        return cls(root, plans, checkpoints, networks, torch_device, exact=exact, precision=used, hashes=hashes)

    def backend_networks(self, backend: str) -> tuple[list[Any], str]:
        """The folds' networks on ``backend`` (built or read from the cache once per model) and
        the backend that runs them (``"torch"`` when any fold runs on torch)."""
        from liverctl.inference.backends import backend_network

        cache = self._backends
        if backend not in cache:
            shape = (1, int(getattr(self.plans, "num_input_channels", 1)), *self.plans.patch_size)
            test = self.exactness_test()
            pairs = [
                backend_network(net, backend, self.device, self.exact, ckpt.sha256, shape, test=test)
                for net, ckpt in zip(self.networks, self.checkpoints, strict=True)
            ]
            names = {name for _, name in pairs}
            cache[backend] = ([p for p, _ in pairs], names.pop() if len(names) == 1 else "torch")
        return cache[backend]

    def exactness_test(self) -> Any:
        """The windows a compiled runtime is tested on for this model
        (:func:`~liverctl.inference.exactness.phantom_windows`): a synthetic abdomen at the plans'
        spacing through nnU-Net's preprocessing (transposition, normalisation), patch-sized."""
        from liverctl.inference.exactness import phantom_windows

        p = self.plans
        spacing_zyx, shape_zyx = [0.0] * 3, [0] * 3
        for axis, source in enumerate(p.transpose_forward):  # transposed axis -> the (z, y, x) axis it comes from
            spacing_zyx[source] = float(p.spacing[axis])
            shape_zyx[source] = (5 * int(p.patch_size[axis]) + 3) // 4
        key = repr((p.normalization, p.use_mask_for_norm, sorted(p.intensity.items()), p.spacing, p.transpose_forward))
        return phantom_windows(key, lambda image: preprocess(image, p, exact=False).data, spacing_zyx[::-1], shape_zyx)

    @property
    def folds(self) -> list[Fold]:
        return [c.path.parent.name[len("fold_") :] for c in self.checkpoints]  # type: ignore[misc]

    def predict(
        self,
        image: Image,
        *,
        mirroring: bool = True,
        probabilities: bool = False,
        accumulate_on: str = "device",
        backend: str = "torch",
        first_pass_allowed: bool = True,
    ) -> NnUNetPrediction:
        """Segment one scan; everything comes back on ``image``'s grid.

        Args:
            image: the CT scan (array order as stored; the direction is not used, as in nnU-Net).
            mirroring: test-time mirroring over the checkpoint's allowed axes (nnU-Net's default).
            probabilities: also return every class's probabilities (exact mode only).
            accumulate_on: ``"device"`` (the sums where the network runs) or ``"cpu"`` (after an
                out-of-memory error, as nnUNetPredictor falls back).
            backend: what runs each fold's forward in the default mode on the CPU
                (:func:`liverctl.inference.backends.backend_network`; exact mode: torch).
            first_pass_allowed: in the default mode, evaluate windows only where a first pass
                says the liver can be (:mod:`liverctl.nnunet.first_pass`); the report's
                ``first_pass`` says what it found.
        """
        if probabilities and not self.exact:
            raise ConfigError("all-class probabilities are only computed in exact mode")
        t0 = time.perf_counter()
        pre = preprocess(image, self.plans, exact=self.exact, body=not self.exact)
        t1 = time.perf_counter()
        axes = self.mirror_axes if mirroring else None
        networks, ran = self.backend_networks(backend)
        region, first_pass = (None, None)
        if not self.exact and first_pass_allowed:
            region, first_pass = liver_box(pre, networks, self.plans, self.device, self.precision)
        logits, stats = predict_logits(
            pre,
            networks,
            self.plans,
            axes,
            self.device,
            exact=self.exact,
            precision=self.precision,
            accumulate_on=accumulate_on,
            region=region,
        )
        t2 = time.perf_counter()
        out = export(logits, pre, self.plans, exact=self.exact, probabilities=probabilities)
        report = self._report(pre, stats, axes, ran, (t0, t1, t2, time.perf_counter()))
        if first_pass is not None:
            report["first_pass"] = first_pass
        labels = Image(out.labels, image.geometry)
        liver = Image(out.liver_probability, image.geometry)
        return NnUNetPrediction(labels, liver, report, out.probabilities)

    def _report(
        self, pre: Any, stats: Any, axes: Sequence[int] | None, ran: str, times: tuple[float, float, float, float]
    ) -> dict[str, Any]:
        """What :meth:`predict` reports (``times``: start, preprocessed, predicted, exported)."""
        t0, t1, t2, t3 = times
        return {
            "format": "nnunetv2",
            "folder": str(self.folder),
            "configuration": self.plans.configuration,
            "trainer": self.checkpoints[0].trainer_name,
            "folds": self.folds,
            "exact": self.exact,
            "device": device_label(self.device),
            "precision": stats.precision,
            "tf32": stats.tf32,
            "accumulate_on": stats.accumulate_on,
            "mirror_axes": list(axes) if axes else [],
            "network_grid_shape": list(pre.data.shape[1:]),
            "windows": stats.windows,
            "skipped_windows": stats.skipped_windows,
            "network_passes": stats.network_passes,
            "network_seconds": round(stats.network_seconds, 3),
            "preprocess_seconds": round(t1 - t0, 3),
            "export_seconds": round(t3 - t2, 3),
            "seconds": round(t3 - t0, 3),
            "liver_labels": list(self.plans.liver_labels),
            "backend": ran,
            "sha256": dict(self.hashes),
        }
