"""Export a trained network as a weights file plus its ``weights.toml`` entry.

:func:`export_model` writes, into a folder:

- ``model.safetensors``: the state dict only (tensors), readable with
  :func:`safetensors.torch.load_file` and without any pickle;
- ``model.safetensors.sha256``: its sha256 (hex) followed by the file name;
- ``weights.toml``: one ``[models.NAME]`` table in the schema of liverctl's registry
  (``weights.toml`` at the project root): ``filename`` is the sibling file and ``repo_id``
  / ``revision`` are empty (a local model), ``sha256`` the file's hash, the architecture
  and its constructor ``kwargs``, the ``spacing`` and ``orientation`` of the preprocessed
  data, the ``window-zscore`` intensity recipe (window, mean, std) of the preprocessing plan,
  ``labels`` / ``liver_channel`` / ``n_classes``, the sliding-window ``roi`` (the training
  patch, reversed to i, j, k), and ``datasets``: the names of the DCM branches, in branch
  order (``predict --dataset NAME`` picks the branch).

The preprocessing plan's dataset-specific statistics (mean/std) are those of the first
dataset; with several datasets, the plans of all datasets are listed under
``[models.NAME.datasets_intensity]`` (one inline table per dataset name).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from liverctl.errors import LiverctlWarning
from liverctl.io import atomic_path, write_text_atomic

__all__ = ["export_model", "intensity_from_plan", "sha256_file", "toml_value"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def toml_value(value: Any) -> str:
    """A TOML literal for a string, bool, number, list or mapping (inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", str(key)) else json.dumps(str(key))


def _first(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def intensity_from_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The ``window-zscore`` recipe of a preprocessing plan: ``window``, ``mean``, ``std``."""
    norm = plan.get("normalization") if isinstance(plan.get("normalization"), Mapping) else {}
    window = _first(plan, "window", "clip", default=None) or _first(norm, "window", "clip", default=None)
    mean = _first(plan, "mean", "intensity_mean", default=None)
    std = _first(plan, "std", "intensity_std", default=None)
    if mean is None:
        mean = _first(norm, "mean", default=0.0)
    if std is None:
        std = _first(norm, "std", default=1.0)
    out: dict[str, Any] = {"method": "window-zscore"}
    if window is not None:
        out["window"] = [float(w) for w in window]
    out["mean"] = float(mean)
    out["std"] = float(std)
    return out


HE2021_CITATION = (
    "He K. et al., Cross-dataset 3D U-Net liver segmentation (BMC Medical Imaging 2021); trained with liverctl"
)


def export_model(
    model: torch.nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    architecture: str,
    kwargs: Mapping[str, Any],
    plans: Sequence[Mapping[str, Any]],
    dataset_names: Sequence[str],
    labels: Mapping[str, int],
    liver_channel: int,
    patch_size: Sequence[int],
    overlap: float = 0.25,
    description: str = "",
    decision: str = "argmax",
    citation: str = HE2021_CITATION,
) -> tuple[Path, Path]:
    """Write ``model.safetensors`` and ``weights.toml`` into ``out_dir`` (module docs).

    ``decision`` is ``"argmax"`` (softmax classes) or ``"sigmoid"`` (independent channels, e.g.
    a one-channel generator); ``labels`` maps names to output channels (a label named
    ``background`` is left out of the entry).

    Returns:
        ``(weights path, toml path)``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(sd, str(tmp), metadata={"architecture": architecture, "name": name})
    digest = sha256_file(weights)
    write_text_atomic(out / "model.safetensors.sha256", f"{digest}  model.safetensors\n")

    plan = dict(plans[0]) if plans else {}
    if str(plan.get("normalization", "dataset")) == "image":
        warnings.warn(
            "the preprocessing plan z-scores each image with its own mean/std, which weights.toml's"
            " window-zscore recipe cannot express: the exported entry uses mean 0, std 1; edit it"
            " (or preprocess with --normalization dataset) before using the model with predict",
            LiverctlWarning,
            stacklevel=2,
        )
    spacing_zyx = _first(plan, "target_spacing_zyx", default=None)
    spacing_xyz = _first(plan, "target_spacing", "spacing", default=None)
    if spacing_xyz is None and spacing_zyx is not None:
        spacing_xyz = list(spacing_zyx)[::-1]
    orientation = _first(plan, "orientation", default="LPS")
    n_classes = max(labels.values()) + 1
    lines = [
        "# Written by `liverctl train` (liverctl.training.export_model).",
        f"default = {toml_value(name)}",
        "",
        f"[models.{_key(name)}]",
        f"description = {toml_value(description or f'{architecture} trained with liverctl train')}",
        'repo_id = ""',
        'filename = "model.safetensors"',
        'revision = ""',
        f"sha256 = {toml_value(digest)}",
        f"architecture = {toml_value(architecture)}",
    ]
    if spacing_xyz is not None:
        lines.append(f"spacing = {toml_value([float(s) for s in spacing_xyz])}")
    lines += [
        f"orientation = {toml_value(str(orientation))}",
        'interpolation = "linear"',
        f"intensity = {toml_value(intensity_from_plan(plan))}",
        f"n_classes = {n_classes}",
        f"liver_channel = {int(liver_channel)}",
        f"decision = {toml_value(decision)}",
        f"labels = {toml_value({k: int(v) for k, v in labels.items() if k != 'background'})}",
        f"datasets = {toml_value(list(dataset_names))}",
        'license = "as the training data"',
        f"citation = {toml_value(citation)}",
        "",
        f"[models.{_key(name)}.kwargs]",
    ]
    lines += [f"{_key(k)} = {toml_value(v)}" for k, v in kwargs.items() if v is not None]
    lines += [
        "",
        f"[models.{_key(name)}.sliding_window]",
        f"roi = {toml_value([int(p) for p in list(patch_size)[::-1]])}",
        f"overlap = {float(overlap)!r}",
        'mode = "gaussian"',
        'padding_mode = "constant"',
    ]
    if len(plans) > 1:
        lines += ["", f"[models.{_key(name)}.datasets_intensity]"]
        lines += [
            f"{_key(n)} = {toml_value(intensity_from_plan(p))}" for n, p in zip(dataset_names, plans, strict=True)
        ]
    toml_path = write_text_atomic(out / "weights.toml", "\n".join(lines) + "\n")
    return weights, toml_path
