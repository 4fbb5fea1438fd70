"""Post-processing of whole label maps and of ``predict``'s raw liver prediction.

:func:`postprocess` applies a :class:`~liverctl.postprocessing.config.PostprocessConfig` to an
Image, an array, a mask file or a folder of mask files (:func:`postprocess_image` for one
Image) and reports components, voxels and volumes before and after, per label
(:class:`CaseReport`, :class:`LabelReport`). :func:`clean_liver_mask` is the clean-up
``predict`` applies: largest component and its holes filled.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.errors import ConfigError, DatasetError, InputError, LiverctlError
from liverctl.io import (
    IMAGE_SUFFIXES,
    Geometry,
    Image,
    as_label_array,
    check_not_input,
    check_output_suffix,
    check_writable,
    image_suffix,
    list_images,
    read_label,
    write_mask,
)
from liverctl.io.manifest import Manifest
from liverctl.postprocessing.components import (
    MaskLike,
    _components,
    _isin,
    _split,
    _wrap,
    largest_components,
)
from liverctl.postprocessing.config import PostprocessConfig
from liverctl.postprocessing.holes import fill_holes
from liverctl.postprocessing.tumour import remove_outside
from liverctl.progress import ProgressCallback, track
from liverctl.spatial import bounding_box


def clean_liver_mask(raw: MaskLike, *, keep_largest: bool = True, connectivity: int = 26) -> tuple[MaskLike, list[int]]:
    """The clean-up ``predict`` applies to a raw liver prediction: keep its largest component
    and fill that component's holes (when ``keep_largest``; else the mask is unchanged).

    Returns a uint8 0/1 mask of the same kind as ``raw`` and the voxel counts of the raw
    prediction's components, largest first (``[]`` for an empty prediction). The work is
    done in the mask's bounding box grown by one voxel of background: components are the
    same, and a hole (background not connected to the border) is the same, because the
    one-voxel shell connects everything that reaches the box's edge to the outside.
    """
    array, geometry = _split(raw)
    mask = np.zeros(array.shape, dtype=np.uint8)
    box = bounding_box(array, margin=1)
    if box is None:
        return _wrap(mask, geometry), []
    kept, stats = largest_components(array[box], n=1 if keep_largest else None, connectivity=connectivity)
    if keep_largest and stats.kept:
        kept = fill_holes(kept)
    mask[box] = kept
    return _wrap(mask, geometry), list(stats.sizes)


@dataclass(frozen=True)
class LabelReport:
    """Before/after figures for one label of one case (volumes in mL).

    ``components_*`` count the components of the rule's region (for the liver preset:
    liver and tumour together); ``voxels_*`` count this label's own voxels, with
    ``voxels_after == voxels_before - voxels_removed + voxels_filled``.
    """

    label: int
    name: str
    components_before: int
    components_after: int
    voxels_before: int
    voxels_after: int
    volume_ml_before: float
    volume_ml_after: float
    voxels_removed: int = 0
    voxels_filled: int = 0


@dataclass(frozen=True)
class CaseReport:
    """What :func:`postprocess` did to one label map.

    ``tumour_voxels_removed_outside_liver`` counts tumour voxels dropped with the liver's
    small components plus those dropped by :func:`remove_outside`.
    """

    labels: tuple[LabelReport, ...]
    tumour_voxels_removed_outside_liver: int = 0
    input: str | None = None
    output: str | None = None
    error: str | None = None
    """Why this file of a folder run was not processed (the run goes on past it)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "input": self.input,
            "output": self.output,
            "labels": [asdict(r) for r in self.labels],
            "tumour_voxels_removed_outside_liver": self.tumour_voxels_removed_outside_liver,
        }
        return out if self.ok else {**out, "output": None, "error": self.error}


def _count_components(mask: np.ndarray, connectivity: int) -> int:
    box = bounding_box(mask)
    if box is None:
        return 0
    return _components(mask[box], connectivity)[1]


def postprocess_image(image: Image, config: PostprocessConfig | None = None) -> tuple[Image, CaseReport]:
    """Apply ``config`` (default: the ``liver`` preset) to one label map; returns a new Image and its report."""
    config = config or PostprocessConfig.preset("liver")
    labels = as_label_array(image.array)
    if labels is image.array:
        labels = labels.copy()
    voxel_ml = image.voxel_volume_ml
    conn = config.connectivity
    reports: list[LabelReport] = []
    tumour_removed = 0
    for label in sorted(config.rules):
        rule = config.rules[label]
        region = rule.region or (label,)
        mask = _isin(labels, region)
        before = int(np.count_nonzero(labels == label))
        kept, stats = largest_components(
            mask, n=rule.keep, connectivity=conn, min_volume_ml=rule.min_volume_ml, spacing_zyx=image.spacing_zyx
        )
        removed_own = 0
        if stats.voxels_removed:
            removed = mask & ~kept
            removed_values = labels[removed]
            removed_own = int(np.count_nonzero(removed_values == label))
            if config.tumour_label is not None and config.tumour_label != label and config.tumour_label in region:
                tumour_removed += int(np.count_nonzero(removed_values == config.tumour_label))
            labels[removed] = 0
        filled_voxels = 0
        if rule.fill_holes is not None and stats.kept:
            new = fill_holes(kept, slicewise=rule.fill_holes == "2d") & ~kept & (labels == 0)
            filled_voxels = int(np.count_nonzero(new))
            labels[new] = label
            kept |= new
        after = int(np.count_nonzero(labels == label))
        reports.append(
            LabelReport(
                label=int(label),
                name=config.names.get(label, f"label {label}"),
                components_before=stats.components_before,
                components_after=_count_components(kept, conn) if filled_voxels else stats.components_after,
                voxels_before=before,
                voxels_after=after,
                volume_ml_before=round(before * voxel_ml, 6),
                volume_ml_after=round(after * voxel_ml, 6),
                voxels_removed=removed_own,
                voxels_filled=filled_voxels,
            )
        )
    if config.tumour_label is not None:
        before = int(np.count_nonzero(labels == config.tumour_label))
        if before:
            labels = remove_outside(labels, config.tumour_label, config.liver_labels, conn)
            tumour_removed += before - int(np.count_nonzero(labels == config.tumour_label))
    return Image(labels, image.geometry), CaseReport(tuple(reports), tumour_removed)


def _output_for(source: Path, output: Path) -> Path:
    if output.is_dir() or image_suffix(output) is None:
        return output / source.name
    return output


def postprocess(
    data: Image | np.ndarray | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    config: PostprocessConfig | None = None,
    progress: ProgressCallback | None = None,
) -> Any:
    """Post-process a label map given as an Image, an array, a file or a folder of files.

    - ``Image`` -> ``(Image, CaseReport)``; a bare array -> ``(array, CaseReport)`` (unit
      spacing: volumes in the report are in voxels/1000, and ``min_volume_ml`` needs an Image).
    - a file -> writes ``output`` (a file name, or a folder to write ``<input name>`` into)
      and returns ``[CaseReport]``; a folder -> writes every image file of it under the
      same name into the ``output`` folder and returns one report per file.

    Files are written atomically as uint8 (uint16 past label 255) in the input's geometry;
    an input, or any file liverctl did not write, is never overwritten (:mod:`liverctl.io.manifest`).
    A folder run goes on past a file it cannot read; that file's report holds the ``error``. ``config`` defaults to the ``liver`` preset.
    """
    config = config or PostprocessConfig.preset("liver")
    if isinstance(data, Image):
        return postprocess_image(data, config)
    if isinstance(data, np.ndarray):
        if any(r.min_volume_ml is not None for r in config.rules.values()):
            raise ConfigError("a minimum volume in mL needs the voxel spacing: pass an Image, not an array")
        if data.ndim != 3:
            raise ConfigError(f"expected a 3D (z, y, x) array, got shape {data.shape}")
        result, report = postprocess_image(Image(data, Geometry((1.0, 1.0, 1.0))), config)
        return result.array, report

    source = Path(data)
    if output is None:
        raise ConfigError("an output file or folder is needed when the input is a file or folder")
    pairs, manifest = _file_pairs(source, Path(output))
    reports: list[CaseReport] = []
    for src, target in track(pairs, "post-processing", progress):
        try:
            image = read_label(src)
            result, report = postprocess_image(image, config)
        except LiverctlError as exc:
            if not source.is_dir():
                raise
            reports.append(CaseReport((), input=str(src), error=str(exc)))  # a folder run goes on past it
            continue
        manifest.claim([target], "postprocess")
        write_mask(result, image, target)
        manifest.record([target])
        reports.append(replace(report, input=str(src), output=str(target)))
    return reports


def _file_pairs(source: Path, out: Path) -> tuple[list[tuple[Path, Path]], Manifest]:
    """``(input, output)`` file pairs of a file or folder run and the output folder's manifest,
    every output checked before any work: writable, no input replaced, nothing replaced that
    liverctl did not write."""
    if not source.exists():
        raise InputError(f"no such file or folder: {source}")
    check_output_suffix(out)
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise DatasetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        if (out.exists() and not out.is_dir()) or (not out.exists() and image_suffix(out) is not None):
            raise InputError(f"the input is a folder, so the output must be a folder, but {out} is a file")
        if out.resolve() == source.resolve():
            raise InputError(f"refusing to write into the input folder {source}; choose another output folder")
        pairs = [(p, out / p.name) for p in inputs]
    else:
        pairs = [(source, _output_for(source, out))]
        if image_suffix(pairs[0][1]) is None:
            raise InputError(f"unknown image format for output {pairs[0][1]}")
    manifest = Manifest(out if source.is_dir() else pairs[0][1].parent)
    for _, target in pairs:
        check_not_input(target, [p for p, _ in pairs])
        check_writable(target)
    manifest.check_replaceable(t for _, t in pairs)  # before any work: never replace the user's files
    return pairs, manifest
