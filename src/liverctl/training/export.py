"""Export a trained network as a weights file plus its ``weights.toml`` entry.

:func:`export_model` writes, into a folder:

- ``model.safetensors``: the state dict only (tensors), readable with
  :func:`safetensors.torch.load_file` and without any pickle;
- ``model.safetensors.sha256``: its sha256 (hex) followed by the file name;
- ``weights.toml``: one ``[models.NAME]`` entry, a :class:`~liverctl.weights.ModelEntry`
  written by :func:`liverctl.weights.save_registry` (the schema ``load_registry`` reads):
  ``filename`` is the sibling file and ``repo_id`` / ``revision`` are empty (a local model),
  ``sha256`` the file's hash, the architecture and its constructor ``kwargs``, the ``spacing``
  (x, y, z) and ``orientation`` of the preprocessed data, the ``window-zscore`` intensity
  recipe (window, mean, std) of the preprocessing plan, ``labels`` / ``liver_channel`` /
  ``n_classes``, the sliding-window ``roi`` (the training patch, given in (z, y, x) and stored
  in (x, y, z) by :meth:`~liverctl.weights.WindowRecipe.from_zyx`), and ``datasets``: the
  names of the DCM branches, in branch order (``predict --dataset NAME`` picks the branch).

The preprocessing plan's dataset-specific statistics (mean/std) are those of the first
dataset; with several datasets, the plans of all datasets are listed under
``[models.NAME.datasets_intensity]`` (one inline table per dataset name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from liverctl.io import atomic_path, write_text_atomic
from liverctl.weights.pins import sha256_file
from liverctl.weights.registry import IntensityRecipe, ModelEntry, WindowRecipe, save_registry
from liverctl.weights.tables import toml_value

__all__ = ["export_model", "intensity_from_plan", "intensity_recipe", "sha256_file", "toml_value"]


def _first(d: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def intensity_from_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The intensity recipe of a preprocessing plan: ``window-zscore`` (``window``, ``mean``,
    ``std``), or ``window-image-zscore`` (``window``) for ``normalization = "image"``."""
    norm = plan.get("normalization") if isinstance(plan.get("normalization"), Mapping) else {}
    window = _first(plan, "window", "clip", default=None) or _first(norm, "window", "clip", default=None)
    mean = _first(plan, "mean", "intensity_mean", default=None)
    std = _first(plan, "std", "intensity_std", default=None)
    if mean is None:
        mean = _first(norm, "mean", default=0.0)
    if std is None:
        std = _first(norm, "std", default=1.0)
    image = str(plan.get("normalization", "dataset")) == "image"
    out: dict[str, Any] = {"method": "window-image-zscore" if image else "window-zscore"}
    if window is not None:
        out["window"] = [float(w) for w in window]
    if image:  # each scan z-scored with its own statistics, at training and at predict time
        return out
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
    entry = ModelEntry(
        name=name,
        repo_id="",
        filename=weights.name,
        revision="",
        sha256=digest,
        architecture=architecture,
        kwargs={k: v for k, v in kwargs.items() if v is not None},
        spacing=_spacing_xyz(plan),  # type: ignore[arg-type]  # None: data without a plan spacing
        orientation=str(_first(plan, "orientation", default="LPS")),
        interpolation="linear",
        intensity=_recipe(plan),
        n_classes=max(labels.values()) + 1,
        liver_channel=int(liver_channel),
        decision=decision,
        labels={k: int(v) for k, v in labels.items() if k != "background"},
        sliding_window=WindowRecipe.from_zyx(patch_size, overlap=float(overlap)),
        datasets=tuple(dataset_names),
        datasets_intensity=(
            {n: _recipe(p) for n, p in zip(dataset_names, plans, strict=True)} if len(plans) > 1 else {}
        ),
        license="as the training data",
        citation=citation,
        description=(description or f"{architecture} trained with liverctl train") + _scheme_note(plan),
    )
    comment = "Written by `liverctl train` (liverctl.training.export_model)."
    toml_path = save_registry(out / "weights.toml", [entry], name, comment=comment)
    return weights, toml_path


def _scheme_note(plan: Mapping[str, Any]) -> str:
    """The plan's named intensity scheme, for the entry's description (the recipe holds its numbers)."""
    scheme = plan.get("normalization")
    if scheme == "ct":
        return (
            "; intensities: nnU-Net CT normalisation of the training data (clip to its foreground 0.5/99.5"
            " percentiles, z-score with its foreground mean/std)"
        )
    if scheme == "window":
        return "; intensities: the HU window mapped to [0, 1]"
    return ""


def _spacing_xyz(plan: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The plan's target spacing in (x, y, z) (``target_spacing``, or ``target_spacing_zyx`` reversed)."""
    spacing_xyz = _first(plan, "target_spacing", "spacing", default=None)
    spacing_zyx = _first(plan, "target_spacing_zyx", default=None)
    if spacing_xyz is None and spacing_zyx is not None:
        spacing_xyz = list(spacing_zyx)[::-1]
    return None if spacing_xyz is None else tuple(float(s) for s in spacing_xyz)  # type: ignore[return-value]


def intensity_recipe(plan: Mapping[str, Any]) -> IntensityRecipe:
    """The :class:`~liverctl.weights.IntensityRecipe` that redoes a preprocessing plan's intensity
    scheme on a scan (what ``predict`` applies; :func:`intensity_from_plan`)."""
    return _recipe(plan)


def _recipe(plan: Mapping[str, Any]) -> IntensityRecipe:
    r = intensity_from_plan(plan)
    window = tuple(r["window"]) if "window" in r else None
    return IntensityRecipe(r["method"], window=window, mean=r.get("mean"), std=r.get("std"))  # type: ignore[arg-type]
