"""``liverctl weights export NAME --format onnx|openvino -o DIR``: a registry entry's network as a
file another runtime loads, with what it takes to use it beside it.

Writes ``DIR/<name>.onnx`` (ONNX, opset 18, fp32, one fixed window ``(1, C, *window)``) or
``DIR/<name>.xml`` + ``DIR/<name>.bin`` (OpenVINO IR, fp32 weights), and ``DIR/<name>.json``:
the input's shape and axis order, the window recipe (size, overlap, blending, padding), spacing,
orientation, the intensity recipe, the labels and the decision, the weights' sha256 and the
check. For an nnU-Net entry, one file per fold (``<name>_fold_<f>``) and the plans' patch size
and normalisation.

Before anything is written, the exported network runs on one window of Gaussian noise in ONNX Runtime
(``onnx``; OpenVINO when ONNX Runtime is not installed) or OpenVINO (``openvino``) and every
class's softmax probability must be within 1e-4 of torch fp32; otherwise nothing is written and
a :class:`~liverctl.errors.WeightsError` says by how much it differs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, WeightsError

__all__ = ["FORMATS", "export_network", "export_weights"]

FORMATS = ("onnx", "openvino")


def _check_runtime(fmt: str) -> str:
    """The runtime that checks an export of ``fmt`` (refused before any download)."""
    from liverctl.inference.backends import available_backends

    if fmt not in FORMATS:
        raise ConfigError(f"unknown --format {fmt!r}: use one of {', '.join(FORMATS)}")
    installed = available_backends()
    wanted = ["openvino"] if fmt == "openvino" else ["onnxruntime", "openvino"]
    for name in wanted:
        if name in installed:
            return name
    raise ConfigError(f'--format {fmt}: needs {" or ".join(wanted)} and onnx; pip install "liverctl[cpu]"')


def export_network(
    network: Any, shape: Sequence[int], fmt: str, out_dir: Path, stem: str, sidecar: dict[str, Any]
) -> dict[str, Any]:
    """Export one network for windows of ``shape``, check it, write it and ``sidecar`` (+ the
    check and the file names) as ``<stem>.json``; returns the sidecar as written."""
    from liverctl.inference.backends import RuntimeNetwork, _runner, backend_version, export_onnx
    from liverctl.inference.exactness import TOLERANCE, noise_window, probability_difference

    runtime = _check_runtime(fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    building = out_dir / f".{stem}.building"
    shutil.rmtree(building, ignore_errors=True)
    try:
        export_onnx(network, shape, building / "model.onnx")
        runner = RuntimeNetwork(_runner(runtime, building), shape, network, runtime)
        difference = probability_difference(network, runner, shape, [noise_window(shape)])
        if difference > TOLERANCE:
            raise WeightsError(
                f"the {fmt} export of {stem} differs from torch fp32 by {difference:.1e} in probability "
                f"(more than {TOLERANCE:g}); nothing written"
            )
        if fmt == "openvino" and not (building / "model.xml").is_file():
            _runner("openvino", building)  # writes model.xml / model.bin
        suffixes = [".onnx"] if fmt == "onnx" else [".xml", ".bin"]
        files = []
        for suffix in suffixes:
            target = out_dir / f"{stem}{suffix}"
            shutil.move(str(building / f"model{suffix}"), target)
            files.append(target.name)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    check = {"runtime": runtime, "version": backend_version(runtime), "max_probability_difference": difference}
    info = {**sidecar, "format": fmt, "files": files, "input_shape": [int(s) for s in shape], "check": check}
    (out_dir / f"{stem}.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    return info


def _entry_sidecar(model: Any) -> tuple[list[tuple[str, Any]], tuple[int, ...], dict[str, Any]]:
    """(stem, network) pairs, the window input shape and the sidecar of a loaded LiverModel."""
    from liverctl.predict.options import PredictOptions

    e = model.entry
    window = model.window_config(PredictOptions())
    shape = (1, int(e.kwargs.get("in_channels", 1)), *window.roi)
    sidecar = {
        "name": e.name,
        "architecture": e.architecture,
        "weights_sha256": model.resolved[0].sha256,
        "input": {"name": "image", "axes": "C" + ("xyz" if e.network_axes == "xyz" else "zyx"), "dtype": "float32"},
        "output": {"name": "logits", "classes": e.n_classes, "activation": window.activation, "decision": e.decision},
        "window": {"roi": list(window.roi), "overlap": window.overlap, "mode": window.mode},
        "window_padding": window.padding_mode,
        "spacing_xyz_mm": list(e.spacing),
        "orientation": e.orientation,
        "grid": e.grid,
        "intensity": dataclasses.asdict(e.intensity),
        "labels": dict(e.labels),
        "liver_channel": e.liver_channel,
    }
    return [(e.name, model.networks[0])], shape, sidecar


def _nnunet_sidecar(model: Any) -> tuple[list[tuple[str, Any]], tuple[int, ...], dict[str, Any]]:
    """The same for an nnU-Net entry: one network per fold, the plans' patch and normalisation."""
    m, plans = model.model, model.model.plans
    shape = (1, int(getattr(plans, "num_input_channels", 1)), *plans.patch_size)
    sidecar = {
        "name": model.entry.name,
        "architecture": "nnunetv2",
        "configuration": plans.configuration,
        "input": {"name": "image", "axes": "C + transpose_forward of (z, y, x)", "dtype": "float32"},
        "transpose_forward": list(plans.transpose_forward),
        "spacing_mm": list(plans.spacing),
        "normalization": plans.normalization,
        "window": {"roi": list(plans.patch_size), "tile_step_size": 0.5, "mode": "gaussian"},
        "liver_labels": list(plans.liver_labels),
        "files_sha256": dict(m.hashes),
    }
    pairs = [(f"{model.entry.name}_fold_{f}", net) for f, net in zip(m.folds, m.networks, strict=True)]
    return pairs, shape, sidecar


def export_weights(name: str, fmt: str, out_dir: str | Path, *, progress: Any = None) -> list[dict[str, Any]]:
    """Export the network(s) of registry entry ``name`` (downloaded and verified first) into
    ``out_dir`` as ``fmt`` (see the module docs); returns what each ``.json`` holds."""
    from liverctl.predict.model import LiverModel
    from liverctl.predict.nnunet_model import NnUNetLiverModel

    _check_runtime(fmt)  # before any download
    model = LiverModel.load(model=name, device="cpu", progress=progress)
    pairs, shape, sidecar = _nnunet_sidecar(model) if isinstance(model, NnUNetLiverModel) else _entry_sidecar(model)
    return [export_network(net, shape, fmt, Path(out_dir), stem, sidecar) for stem, net in pairs]
