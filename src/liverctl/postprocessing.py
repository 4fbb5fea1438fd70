"""Post-processing of label maps: connected components, hole filling, tumour-in-liver.

The three building blocks work on a NumPy array in (z, y, x) order or on an
:class:`~liverctl.io.Image`, and return the same kind of object they were given:

- :func:`largest_components` keeps the ``n`` largest connected components of a binary
  mask (optionally only those of at least ``min_volume_ml`` millilitres), with 6-, 18- or
  26-connectivity (26 by default: faces, edges and corners touch).
- :func:`fill_holes` fills the holes of a binary mask. A *hole* is a connected component
  of the background (6-connectivity, the dual of the 26-connected foreground) that does
  not touch the border of the volume; background that reaches the volume border is never
  a hole. ``slicewise=True`` fills 2D holes in each axial (z) slice instead (4-connected
  background), which also closes vessels that enter the liver from above or below.
- :func:`remove_outside` sets to 0 the tumour voxels that are not inside a liver: a
  tumour voxel is kept only if its connected component of (liver ∪ tumour) holds at
  least one liver voxel.

:func:`postprocess` applies a :class:`PostprocessConfig` (per-label rules plus the
tumour-in-liver rule) to an Image, an array, a mask file or a folder of mask files, and
reports components, voxels and volumes before and after, per label. Nothing here imports
torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import cc3d
import numpy as np

from liverctl.errors import ConfigError, DatasetError, InputError, LiverctlError
from liverctl.io import Geometry, Image
from liverctl.progress import ProgressCallback, track
from liverctl.spatial import bounding_box

CONNECTIVITIES: tuple[int, ...] = (6, 18, 26)

MaskLike = TypeVar("MaskLike", np.ndarray, Image)

__all__ = [
    "CONNECTIVITIES",
    "PRESETS",
    "CaseReport",
    "ComponentStats",
    "LabelReport",
    "LabelRule",
    "PostprocessConfig",
    "clean_liver_mask",
    "fill_holes",
    "largest_components",
    "parse_keep",
    "postprocess",
    "postprocess_image",
    "remove_outside",
]


# --------------------------------------------------------------------------- helpers


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return int(connectivity)


def _split(mask: np.ndarray | Image) -> tuple[np.ndarray, Geometry | None]:
    if isinstance(mask, Image):
        return mask.array, mask.geometry
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ConfigError(f"expected a 3D (z, y, x) array, got shape {array.shape}")
    return array, None


def _wrap(array: np.ndarray, geometry: Geometry | None) -> Any:
    return array if geometry is None else Image(array, geometry)


def _binary(array: np.ndarray) -> np.ndarray:
    return array if array.dtype == bool else array != 0


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d connected components of a bool array, as (labels, number of components).

    cc3d 4.1 fails ("maximum length exception", printed to stdout) on 26-connected arrays
    with two axes of length 1; padding such (thin, hence cheap) arrays to length 2 with
    background avoids it without changing any component.
    """
    pad = [(0, 1) if s == 1 else (0, 0) for s in binary.shape]
    if any(p[1] for p in pad):
        labels, n = cc3d.connected_components(
            np.pad(binary, pad), connectivity=connectivity, binary_image=True, return_N=True
        )
        return labels[tuple(slice(0, s) for s in binary.shape)], int(n)
    labels, n = cc3d.connected_components(binary, connectivity=connectivity, binary_image=True, return_N=True)
    return labels, int(n)


def _isin(array: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``np.isin`` for a few label values, several times faster on large volumes."""
    values = [int(v) for v in values]
    if len(values) > 4:
        return np.isin(array, values)
    out = array == values[0]
    for v in values[1:]:
        out |= array == v
    return out


def _voxel_volume_ml(geometry: Geometry | None, spacing_zyx: Sequence[float] | None) -> float | None:
    if spacing_zyx is not None:
        spacing = tuple(float(s) for s in spacing_zyx)
        if len(spacing) != 3 or not all(s > 0 for s in spacing):
            raise ConfigError(f"spacing_zyx must be 3 positive values, got {spacing_zyx}")
        return float(np.prod(spacing)) / 1000.0
    if geometry is not None:
        return geometry.voxel_volume_mm3 / 1000.0
    return None


# --------------------------------------------------------------------------- components


@dataclass(frozen=True)
class ComponentStats:
    """What :func:`largest_components` found and kept.

    ``sizes`` are the voxel counts of all components before filtering, largest first;
    ``kept`` is how many of them were kept. Volumes are ``None`` when no spacing was known.
    """

    sizes: tuple[int, ...]
    kept: int
    voxels_before: int
    voxels_after: int
    voxel_volume_ml: float | None = None

    @property
    def components_before(self) -> int:
        return len(self.sizes)

    @property
    def components_after(self) -> int:
        return self.kept

    @property
    def voxels_removed(self) -> int:
        return self.voxels_before - self.voxels_after


def largest_components(
    mask: MaskLike,
    n: int | None = 1,
    connectivity: int = 26,
    min_volume_ml: float | None = None,
    spacing_zyx: Sequence[float] | None = None,
) -> tuple[MaskLike, ComponentStats]:
    """Keep the ``n`` largest connected components of a binary mask.

    Parameters
    ----------
    mask
        3D array (z, y, x) or :class:`~liverctl.io.Image`; every non-zero voxel is foreground.
    n
        How many components to keep, largest first (``None``: all that pass
        ``min_volume_ml``). Ties in size are broken by component order (scan order).
    connectivity
        6 (faces), 18 (faces + edges) or 26 (faces + edges + corners).
    min_volume_ml
        Drop components smaller than this many millilitres before choosing the largest.
        Needs the voxel size: from the Image's geometry or ``spacing_zyx`` (mm, z, y, x).
    spacing_zyx
        Voxel spacing for a bare array (overrides the Image's geometry if both are given).

    Returns
    -------
    (mask, stats)
        A bool mask of the same kind as the input (an Image keeps its geometry) and a
        :class:`ComponentStats`.
    """
    connectivity = _check_connectivity(connectivity)
    if n is not None and n < 0:
        raise ConfigError(f"number of components to keep must be >= 0, got {n}")
    array, geometry = _split(mask)
    voxel_ml = _voxel_volume_ml(geometry, spacing_zyx)
    if min_volume_ml is not None:
        if min_volume_ml < 0:
            raise ConfigError(f"minimum component volume must be >= 0 mL, got {min_volume_ml}")
        if voxel_ml is None:
            raise ConfigError("a minimum volume in mL needs the voxel spacing: pass an Image or spacing_zyx")
    binary = _binary(array)
    out = np.zeros(binary.shape, dtype=bool)
    box = bounding_box(binary)
    if box is None:
        return _wrap(out, geometry), ComponentStats((), 0, 0, 0, voxel_ml)
    crop = binary[box]
    labels, n_found = _components(crop, connectivity)
    # Count over the foreground voxels only: much faster than a bincount of the whole label volume.
    counts = np.bincount(labels[crop], minlength=n_found + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    sizes = counts[order]
    chosen = order
    if min_volume_ml is not None:
        min_voxels = min_volume_ml / voxel_ml  # type: ignore[operator]
        chosen = chosen[sizes >= min_voxels * (1 - 1e-9)]
    if n is not None:
        chosen = chosen[:n]
    total = int(counts.sum())
    if chosen.size == n_found:
        out[box] = crop
        kept_voxels = total
    elif chosen.size:
        if chosen.size == 1:
            kept = labels == (chosen[0] + 1)
        else:
            lut = np.zeros(n_found + 1, dtype=bool)
            lut[chosen + 1] = True
            kept = lut[labels]
        out[box] = kept
        kept_voxels = int(counts[chosen].sum())
    else:
        kept_voxels = 0
    stats = ComponentStats(tuple(int(s) for s in sizes), int(chosen.size), total, kept_voxels, voxel_ml)
    return _wrap(out, geometry), stats


def fill_holes(mask: MaskLike, *, slicewise: bool = False) -> MaskLike:
    """Fill the holes of a binary mask.

    3D (default): a hole is a 6-connected background component that does not touch the
    border of the volume. ``slicewise=True``: the same in 2D, in each axial slice
    ``mask[z]``, with 4-connected background (a hole in a slice may be open in 3D).
    Returns a bool mask of the same kind as the input; it is always a superset of the
    input, and filling twice changes nothing.
    """
    array, geometry = _split(mask)
    binary = _binary(array)
    out = binary.copy()
    box = bounding_box(binary)
    if box is None:
        return _wrap(out, geometry)
    # Pad the bounding box by one background voxel: everything outside the box is
    # background connected to that pad (or is outside the volume), so background that
    # reaches a face of the box is "outside", exactly as in the full volume.
    padded = np.pad(binary[box], 1)
    if slicewise:
        filled = np.empty_like(padded)
        for z in range(padded.shape[0]):
            filled[z] = _fill_2d(padded[z])
    else:
        background, _ = _components(~padded, 6)
        filled = background != background[0, 0, 0]
    out[box] = filled[1:-1, 1:-1, 1:-1]
    return _wrap(out, geometry)


def _fill_2d(plane: np.ndarray) -> np.ndarray:
    if not plane.any():
        return plane
    background = cc3d.connected_components(~plane, connectivity=4, binary_image=True)
    return background != background[0, 0]


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


def remove_outside(
    labels: MaskLike,
    inner_label: int = 2,
    container_labels: Sequence[int] = (1, 2),
    connectivity: int = 26,
) -> MaskLike:
    """Set to 0 the ``inner_label`` voxels (tumour) that lie outside every container (liver).

    The union of ``container_labels`` is split into connected components; ``inner_label``
    voxels in a component that holds no voxel of another container label are removed.
    With the defaults: tumour (2) is kept only where it is part of, or touches, a liver (1)
    region. Returns a copy of the same kind as the input; other labels are untouched.
    """
    connectivity = _check_connectivity(connectivity)
    array, geometry = _split(labels)
    out = array.copy()
    outer = [int(v) for v in container_labels if int(v) != int(inner_label)]
    inner = array == inner_label
    box = bounding_box(inner)
    if box is None:
        return _wrap(out, geometry)
    if not outer:
        raise ConfigError(f"container labels {tuple(container_labels)} hold no label besides {inner_label}")
    # Components of the container that reach the tumour's box may extend beyond it, so work
    # on the container's own bounding box.
    container = _isin(array, [*outer, int(inner_label)])
    cbox = bounding_box(container)
    assert cbox is not None
    sub = array[cbox]
    comp, _ = _components(container[cbox], connectivity)
    liver_components = np.unique(comp[_isin(sub, outer)])
    outside = (sub == inner_label) & ~np.isin(comp, liver_components)
    out[cbox][outside] = 0
    return _wrap(out, geometry)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LabelRule:
    """What to do with one label.

    ``keep``: number of largest components to keep (``None``: all, subject to
    ``min_volume_ml``); ``fill_holes``: fill 3D holes (``"3d"``), per-slice 2D holes
    (``"2d"``) or none (``None``); ``region``: the labels that form this structure for the
    component analysis (default: the label alone; the liver preset uses (1, 2) so that
    liver and tumour are one organ). Removed voxels become 0; filled holes take the label,
    and only background (0) voxels are ever filled.
    """

    keep: int | None = 1
    min_volume_ml: float | None = None
    fill_holes: str | None = None
    region: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise ConfigError(f"keep must be >= 0 or None, got {self.keep}")
        if self.min_volume_ml is not None and self.min_volume_ml < 0:
            raise ConfigError(f"minimum volume must be >= 0 mL, got {self.min_volume_ml}")
        if self.fill_holes not in (None, "3d", "2d"):
            raise ConfigError(f"fill_holes must be '3d', '2d' or None, got {self.fill_holes!r}")


@dataclass(frozen=True)
class PostprocessConfig:
    """Per-label rules plus the tumour-in-liver rule, applied by :func:`postprocess`.

    ``rules`` maps a label value to its :class:`LabelRule`; labels without a rule are left
    alone. If ``tumour_label`` is set, tumour voxels outside the final liver
    (``liver_labels``) are removed after the per-label rules (see :func:`remove_outside`).
    ``names`` gives labels a name in reports.
    """

    rules: Mapping[int, LabelRule] = field(default_factory=dict)
    connectivity: int = 26
    tumour_label: int | None = None
    liver_labels: tuple[int, ...] = (1, 2)
    names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_connectivity(self.connectivity)
        for label in self.rules:
            if not 0 < int(label) <= 65535:
                raise ConfigError(f"rules apply to labels 1..65535, got {label}")

    @classmethod
    def preset(cls, name: str = "liver") -> PostprocessConfig:
        """A named configuration; see :data:`PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown post-processing preset {name!r}; choose one of {', '.join(PRESETS)}") from None

    def with_options(
        self,
        *,
        labels: Sequence[int] | None = None,
        keep: Mapping[int, int | None] | None = None,
        min_volume_ml: float | None = None,
        fill_holes: str | bool | None = True,
        tumour_in_liver: bool = True,
        connectivity: int | None = None,
    ) -> PostprocessConfig:
        """A copy changed the way the CLI options change it.

        ``labels``: process exactly these labels (existing rules kept, new ones keep the
        largest component); ``keep``: label -> N (``None`` = all), adding the label if
        needed; ``min_volume_ml``: applied to every rule; ``fill_holes``: ``False`` turns
        hole filling off everywhere, ``"2d"``/``"3d"`` switches the mode of the rules that
        fill holes; ``tumour_in_liver=False`` drops the tumour rule.
        """
        rules = dict(self.rules)
        if labels is not None:
            rules = {int(lab): rules.get(int(lab), LabelRule()) for lab in labels}
        for label, n in (keep or {}).items():
            rules[int(label)] = replace(rules.get(int(label), LabelRule()), keep=n)
        if min_volume_ml is not None:
            rules = {lab: replace(rule, min_volume_ml=min_volume_ml) for lab, rule in rules.items()}
        if fill_holes is False or fill_holes is None:
            rules = {lab: replace(rule, fill_holes=None) for lab, rule in rules.items()}
        elif fill_holes in ("2d", "3d"):
            rules = {
                lab: replace(rule, fill_holes=fill_holes if rule.fill_holes else None) for lab, rule in rules.items()
            }
        return replace(
            self,
            rules=rules,
            tumour_label=self.tumour_label if tumour_in_liver else None,
            connectivity=self.connectivity if connectivity is None else _check_connectivity(connectivity),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": {str(k): asdict(v) for k, v in sorted(self.rules.items())},
            "connectivity": self.connectivity,
            "tumour_label": self.tumour_label,
            "liver_labels": list(self.liver_labels),
        }


PRESETS: dict[str, PostprocessConfig] = {
    # Liver (1) and tumour (2), as LiTS / 3D-IRCADb: keep the largest liver (tumour counted
    # as liver), fill its holes, then drop tumour outside the liver.
    "liver": PostprocessConfig(
        rules={1: LabelRule(keep=1, fill_holes="3d", region=(1, 2))},
        tumour_label=2,
        liver_labels=(1, 2),
        names={1: "liver", 2: "tumour"},
    ),
    # TotalSegmentator's 117-class map: spleen 1, right kidney 2, left kidney 3, liver 5.
    # Its kidneys are separate labels, so each keeps one component.
    "totalseg": PostprocessConfig(
        rules={
            1: LabelRule(keep=1),
            2: LabelRule(keep=1),
            3: LabelRule(keep=1),
            5: LabelRule(keep=1, fill_holes="3d"),
        },
        names={1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"},
    ),
    # Nothing by default: build the rules with --labels / --keep.
    "none": PostprocessConfig(),
}


def parse_keep(text: str) -> tuple[int, int | None]:
    """Parse ``"LABEL:N"`` (``N`` a count, or ``all``) into ``(label, N)``."""
    label_text, sep, n_text = text.partition(":")
    try:
        label = int(label_text)
        n = None if n_text.strip().lower() == "all" else int(n_text)
    except ValueError:
        label, n, sep = -1, -1, ""
    if not sep or label <= 0 or (n is not None and n < 0):
        raise ConfigError(f"--keep expects LABEL:N with a label >= 1 and N >= 0 (or 'all'), got {text!r}")
    return label, n


# --------------------------------------------------------------------------- reports


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


# --------------------------------------------------------------------------- the pipeline


def _count_components(mask: np.ndarray, connectivity: int) -> int:
    box = bounding_box(mask)
    if box is None:
        return 0
    return _components(mask[box], connectivity)[1]


def postprocess_image(image: Image, config: PostprocessConfig | None = None) -> tuple[Image, CaseReport]:
    """Apply ``config`` (default: the ``liver`` preset) to one label map; returns a new Image and its report."""
    config = config or PostprocessConfig.preset("liver")
    from liverctl.io import as_label_array

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
    from liverctl.io import image_suffix

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
    an input, or any file liverctl did not write, is never overwritten (:mod:`liverctl.manifest`).
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

    from liverctl.io import (
        check_not_input,
        check_output_suffix,
        check_writable,
        image_suffix,
        list_images,
        read_label,
        write_mask,
    )
    from liverctl.manifest import Manifest

    source = Path(data)
    if output is None:
        raise ConfigError("an output file or folder is needed when the input is a file or folder")
    out = Path(output)
    if not source.exists():
        raise InputError(f"no such file or folder: {source}")
    check_output_suffix(out)
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise DatasetError(f"no image files ({', '.join(('.nii.gz', '.nii', '.nrrd', '.mha'))}) in folder {source}")
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
