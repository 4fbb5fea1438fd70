"""Read and validate an nnU-Net v2 results folder's ``plans.json`` and ``dataset.json``.

An nnU-Net v2 results folder (``<trainer>__<plans>__<configuration>/``) holds ``plans.json``
(how images are preprocessed and which network reads them), ``dataset.json`` (channels and
labels) and ``fold_N/checkpoint_*.pth``. :func:`read_plans` turns the two JSON files into one
:class:`NnUNetPlans` with everything inference needs, resolving a configuration's
``inherits_from`` chain the way nnU-Net's ``PlansManager`` does, and refuses, with a one-line
:class:`~liverctl.errors.WeightsError`, what liverctl cannot run faithfully: 2D and cascade
configurations, region-based (sigmoid) label maps, more than one input channel, normalisation
schemes or resampling functions nnU-Net does not define by default, and label maps with no
label named ``liver``.

Axis conventions (nnU-Net's, kept here): ``spacing`` and ``patch_size`` are in the order of the
*transposed* array, i.e. after ``transpose_forward`` is applied to the array as SimpleITK returns
it, (z, y, x). ``transpose_forward[i]`` is the source axis of transposed axis ``i``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import WeightsError
from liverctl.io.datasets import LIVER_REGION_NAMES, liver_region_values

__all__ = [
    "LIVER_LABEL_NAMES",
    "NORMALIZATION_SCHEMES",
    "RESAMPLING_FUNCTIONS",
    "NnUNetPlans",
    "Resampling",
    "liver_labels",
    "plans_from_dicts",
    "read_plans",
]

NORMALIZATION_SCHEMES: tuple[str, ...] = (
    "CTNormalization",
    "ZScoreNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
)
"""nnU-Net v2's default normalisation classes (``default_normalization_schemes.py``) that
liverctl reimplements; RGBTo01Normalization (natural images) is not for CT."""

RESAMPLING_FUNCTIONS: tuple[str, ...] = ("resample_data_or_seg_to_shape",)
"""Resampling functions of ``nnunetv2.preprocessing.resampling`` that liverctl reimplements
(the one every default planner writes)."""

LIVER_LABEL_NAMES: tuple[str, ...] = LIVER_REGION_NAMES
"""Label names whose classes form the liver region: :data:`liverctl.io.datasets.LIVER_REGION_NAMES`,
the list the MONAI entries use too (MSD Task03: liver 1, cancer 2)."""

_CT_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


@dataclass(frozen=True)
class Resampling:
    """One of the plans' resampling functions: its name and keyword arguments."""

    fn: str
    is_seg: bool = False
    order: int = 3
    order_z: int = 0
    force_separate_z: bool | None = None
    anisotropy_threshold: float = 3.0


@dataclass(frozen=True)
class NnUNetPlans:
    """Everything inference needs from ``plans.json`` + ``dataset.json`` for one configuration.

    Attributes:
        configuration: the configuration name, e.g. ``"3d_fullres"``.
        spacing: target spacing (mm) along the transposed array axes.
        patch_size: network window along the transposed array axes.
        transpose_forward / transpose_backward: axis permutations (nnU-Net's).
        normalization: the scheme of the (single) input channel.
        use_mask_for_norm: whether ZScoreNormalization is computed inside the nonzero mask.
        intensity: the channel's foreground intensity properties (``mean``, ``std``,
            ``percentile_00_5``, ``percentile_99_5``; CTNormalization needs all four).
        resampling_data / resampling_probabilities: the image and the probability resampling.
        network_class: dotted class name of the network (``architecture.network_class_name``).
        arch_kwargs: the network's keyword arguments, as in the plans.
        kw_requires_import: the ``arch_kwargs`` that name a class to import.
        labels: ``{name: value}`` from ``dataset.json`` (ignore label excluded).
        num_classes: output channels of the network (one per label, background included).
        liver_labels: label values (= output channels) that form the liver region.
        dataset_name, plans_name, image_reader_writer: provenance.
    """

    configuration: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    normalization: str
    use_mask_for_norm: bool
    intensity: dict[str, float]
    resampling_data: Resampling
    resampling_probabilities: Resampling
    network_class: str
    arch_kwargs: dict[str, Any]
    kw_requires_import: tuple[str, ...]
    labels: dict[str, int]
    num_classes: int
    liver_labels: tuple[int, ...]
    dataset_name: str = ""
    plans_name: str = ""
    image_reader_writer: str = "SimpleITKIO"
    file_ending: str = ".nii.gz"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for reports)."""
        return {
            "configuration": self.configuration,
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "transpose_forward": list(self.transpose_forward),
            "normalization": self.normalization,
            "network_class": self.network_class,
            "labels": dict(self.labels),
            "liver_labels": list(self.liver_labels),
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_name,
        }


def _fail(where: str, message: str) -> WeightsError:
    return WeightsError(f"{where}: {message}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"not an nnU-Net results folder: {path.name} missing in {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path} does not hold a JSON object")
    return data


def read_plans(folder: str | Path, configuration: str | None = None) -> NnUNetPlans:
    """Read ``plans.json`` and ``dataset.json`` of a results folder.

    Args:
        folder: the results folder (``<trainer>__<plans>__<configuration>``).
        configuration: the configuration to use; ``None`` = the one the folder's name ends with
            (``__3d_fullres``), else the checkpoint's (see :mod:`liverctl.nnunet.checkpoint`),
            else ``3d_fullres``.

    Raises:
        WeightsError: a missing or malformed file, or a model liverctl cannot run (one line).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"nnU-Net results folder not found: {folder}")
    plans = _read_json(folder / "plans.json")
    dataset = _read_json(folder / "dataset.json")
    if configuration is None:
        parts = folder.name.split("__")
        configuration = parts[-1] if len(parts) == 3 and parts[-1] in plans.get("configurations", {}) else "3d_fullres"
    return plans_from_dicts(plans, dataset, configuration, where=str(folder / "plans.json"))


def _resolve_configuration(plans: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise _fail(where, "no 'configurations' table")
    chain: list[str] = []
    merged: dict[str, Any] = {}
    current: str | None = name
    while current is not None:
        if current not in configurations:
            known = ", ".join(configurations)
            raise _fail(where, f"configuration '{current}' not found (the plans have {known})")
        if current in chain:
            raise _fail(where, f"configuration inheritance loops: {' -> '.join([*chain, current])}")
        chain.append(current)
        config = configurations[current]
        if not isinstance(config, dict):
            raise _fail(where, f"configuration '{current}' is not a table")
        merged = {**config, **merged}  # the child's keys win over its parent's
        parent = config.get("inherits_from")
        current = parent if isinstance(parent, str) else None
    merged.pop("inherits_from", None)
    return merged


def _resampling(config: dict[str, Any], key: str, where: str) -> Resampling:
    fn = config.get(key)
    if fn not in RESAMPLING_FUNCTIONS:
        raise _fail(where, f"{key} = {fn!r} is not supported (liverctl runs {', '.join(RESAMPLING_FUNCTIONS)})")
    kwargs = config.get(f"{key}_kwargs", {})
    if not isinstance(kwargs, dict):
        raise _fail(where, f"{key}_kwargs must be a table")
    unknown = set(kwargs) - {"is_seg", "order", "order_z", "force_separate_z", "separate_z_anisotropy_threshold"}
    if unknown:
        raise _fail(where, f"{key}_kwargs: unknown argument '{sorted(unknown)[0]}'")
    order, order_z = kwargs.get("order", 3), kwargs.get("order_z", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 5 for v in (order, order_z)):
        raise _fail(where, f"{key}_kwargs: order and order_z must be integers 0-5")
    force = kwargs.get("force_separate_z")
    if force is not None and not isinstance(force, bool):
        raise _fail(where, f"{key}_kwargs: force_separate_z must be true, false or null")
    return Resampling(
        fn=fn,
        is_seg=bool(kwargs.get("is_seg", False)),
        order=order,
        order_z=order_z,
        force_separate_z=force,
        anisotropy_threshold=float(kwargs.get("separate_z_anisotropy_threshold", 3.0)),
    )


def _numbers(value: Any, n: int, where: str, what: str, kind: type = float) -> tuple:
    ok = isinstance(value, list) and len(value) == n
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value
    )
    if not ok or (kind is int and not all(float(v).is_integer() for v in value)):
        raise _fail(where, f"{what} must be {n} positive {'integers' if kind is int else 'numbers'}, not {value!r}")
    return tuple(kind(v) for v in value)


def _permutation(value: Any, where: str, what: str) -> tuple[int, int, int]:
    if not isinstance(value, list) or sorted(value) != [0, 1, 2]:
        raise _fail(where, f"{what} must be a permutation of [0, 1, 2], not {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def _labels(dataset: dict[str, Any], where: str) -> tuple[dict[str, int], int]:
    raw = dataset.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise _fail(where, "dataset.json has no 'labels' table")
    labels: dict[str, int] = {}
    for name, value in raw.items():
        if isinstance(value, list | tuple):
            raise _fail(where, f"label '{name}' is a region {value!r}; region-based (sigmoid) models are not supported")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(where, f"label '{name}' must be a non-negative integer, not {value!r}")
        if name != "ignore":
            labels[str(name)] = value
    if labels.get("background") != 0:
        raise _fail(where, "dataset.json must name label 0 'background' (as nnU-Net requires)")
    values = sorted(set(labels.values()))
    if values != list(range(len(values))):
        raise _fail(where, f"label values must be 0..N without gaps, not {values}")
    return labels, len(values)


def liver_labels(labels: dict[str, int]) -> tuple[int, ...]:
    """Label values of the liver region in a ``{name: value}`` map
    (:func:`liverctl.io.datasets.liver_region_values`); empty when no label is named ``liver``."""
    return tuple(liver_region_values(labels))


def _intensity(plans: dict[str, Any], scheme: str, where: str) -> dict[str, float]:
    table = plans.get("foreground_intensity_properties_per_channel")
    if table is None:
        table = plans.get("foreground_intensity_properties_by_modality")
    props = table.get("0") if isinstance(table, dict) else None
    if props is None:
        if scheme == "CTNormalization":
            raise _fail(where, "CTNormalization needs foreground_intensity_properties_per_channel['0']")
        return {}
    if not isinstance(props, dict):
        raise _fail(where, "foreground_intensity_properties_per_channel['0'] must be a table")
    out = {k: float(v) for k, v in props.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if scheme == "CTNormalization":
        missing = [k for k in _CT_KEYS if k not in out or not math.isfinite(out[k])]
        if missing:
            raise _fail(where, f"CTNormalization needs foreground intensity '{missing[0]}'")
        if out["percentile_00_5"] > out["percentile_99_5"]:
            raise _fail(where, "foreground intensity percentile_00_5 is above percentile_99_5")
    return out


def _architecture(config: dict[str, Any], where: str) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    arch = config.get("architecture")
    if not isinstance(arch, dict):
        raise _fail(
            where, "the configuration has no 'architecture' table (plans older than nnU-Net 2.4 are not supported)"
        )
    name = arch.get("network_class_name")
    kwargs = arch.get("arch_kwargs")
    req = arch.get("_kw_requires_import", [])
    if not isinstance(name, str) or not name:
        raise _fail(where, "architecture.network_class_name must be a dotted class name")
    if not isinstance(kwargs, dict):
        raise _fail(where, "architecture.arch_kwargs must be a table")
    if not isinstance(req, list) or not all(isinstance(k, str) for k in req):
        raise _fail(where, "architecture._kw_requires_import must be a list of argument names")
    return name, dict(kwargs), tuple(req)


def plans_from_dicts(
    plans: dict[str, Any], dataset: dict[str, Any], configuration: str = "3d_fullres", *, where: str = "plans.json"
) -> NnUNetPlans:
    """Validate parsed ``plans.json`` / ``dataset.json`` dicts for ``configuration``; see :func:`read_plans`."""
    config = _resolve_configuration(plans, configuration, where)
    where_c = f"{where}: configuration '{configuration}'"
    if config.get("previous_stage") is not None:
        raise _fail(where_c, "cascade stages (previous_stage) are not supported; use 3d_fullres or 3d_lowres")
    patch = config.get("patch_size")
    if not isinstance(patch, list) or len(patch) != 3:
        raise _fail(where_c, f"only 3D configurations are supported (patch_size {patch!r})")
    patch_size = _numbers(patch, 3, where_c, "patch_size", int)
    spacing = _numbers(config.get("spacing"), 3, where_c, "spacing")
    forward = _permutation(plans.get("transpose_forward"), where, "transpose_forward")
    backward = _permutation(plans.get("transpose_backward"), where, "transpose_backward")
    if tuple(forward[b] for b in backward) != (0, 1, 2):
        raise _fail(where, f"transpose_backward {list(backward)} does not undo transpose_forward {list(forward)}")
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise _fail(where, f"dataset.json must name exactly one input channel (CT), not {channels!r}")
    schemes = config.get("normalization_schemes")
    if not isinstance(schemes, list) or len(schemes) != 1:
        raise _fail(where_c, f"normalization_schemes must name one scheme for the one channel, not {schemes!r}")
    scheme = schemes[0]
    if scheme not in NORMALIZATION_SCHEMES:
        raise _fail(where_c, f"normalization scheme {scheme!r} is not supported ({', '.join(NORMALIZATION_SCHEMES)})")
    mask_norm = config.get("use_mask_for_norm", [False])
    if not isinstance(mask_norm, list) or len(mask_norm) != 1 or not isinstance(mask_norm[0], bool | None):
        raise _fail(where_c, f"use_mask_for_norm must be [true] or [false], not {mask_norm!r}")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader != "SimpleITKIO":
        raise _fail(where, f"image_reader_writer {reader!r} is not supported (liverctl reproduces SimpleITKIO)")
    labels, num_classes = _labels(dataset, where)
    liver = liver_labels(labels)
    if not liver:
        raise _fail(where, f"dataset.json names no 'liver' label (labels: {', '.join(labels)})")
    network_class, arch_kwargs, requires = _architecture(config, where_c)
    return NnUNetPlans(
        configuration=configuration,
        spacing=spacing,
        patch_size=patch_size,
        transpose_forward=forward,
        transpose_backward=backward,
        normalization=scheme,
        use_mask_for_norm=bool(mask_norm[0]),
        intensity=_intensity(plans, scheme, where),
        resampling_data=_resampling(config, "resampling_fn_data", where_c),
        resampling_probabilities=_resampling(config, "resampling_fn_probabilities", where_c),
        network_class=network_class,
        arch_kwargs=arch_kwargs,
        kw_requires_import=requires,
        labels=labels,
        num_classes=num_classes,
        liver_labels=liver,
        dataset_name=str(plans.get("dataset_name", "")),
        plans_name=str(plans.get("plans_name", "")),
        image_reader_writer=reader,
        file_ending=str(dataset.get("file_ending", ".nii.gz")),
        raw={"plans": plans, "dataset": dataset},
    )
