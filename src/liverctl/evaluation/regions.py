"""Regions: named unions of labels, each scored as one binary mask.

A LiTS reference holds liver = 1 and tumour = 2, and the LiTS *liver* score is over
labels 1 and 2 together; TotalSegmentator writes the liver as label 5. A region names
the labels that make it up, separately for the prediction and the reference side where
they differ::

    parse_regions("liver=1+2,tumour=2")        # both sides
    resolve_regions("lits", pred="liver=5")      # LiTS reference, TotalSegmentator liver

Presets (:data:`PRESETS`): ``lits`` and ``msd-liver`` (liver = 1+2, tumour = 2; MSD
Task03 uses LiTS' labels), ``totalseg`` (liver = 5).

A region is a *lesion* region, scored with lesion detection
(:mod:`liverctl.metrics.lesions`), when it is named ``tumour``, ``tumor``, ``lesion`` or
``lesions`` unless the caller lists the lesion regions explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from liverctl.errors import ConfigError

__all__ = [
    "LESION_NAMES",
    "PRESETS",
    "Region",
    "lesion_labels",
    "lits_hint",
    "parse_regions",
    "per_label_regions",
    "region_mask",
    "resolve_regions",
]

Mapping_ = Mapping[str, Sequence[int]]

#: Region presets: name -> {region: labels}, the same labels on both sides.
PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    "lits": {"liver": (1, 2), "tumour": (2,)},
    "msd-liver": {"liver": (1, 2), "tumour": (2,)},
    "totalseg": {"liver": (5,)},
}

#: Region names that get lesion detection when no lesion regions are named explicitly.
LESION_NAMES: frozenset[str] = frozenset({"tumour", "tumor", "lesion", "lesions"})

#: The region whose volume is the denominator of the tumour burden.
ORGAN_NAME = "liver"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Region:
    """One scored region: its name, its labels in the prediction and in the reference.

    ``lesions``: the region also gets lesion detection (:mod:`liverctl.metrics.lesions`).
    """

    name: str
    pred_labels: tuple[int, ...]
    ref_labels: tuple[int, ...]
    lesions: bool = False

    @property
    def labels_text(self) -> str:
        """``"1+2"`` when both sides agree, else ``"pred 5 / ref 1+2"``."""
        ref, pred = _join(self.ref_labels), _join(self.pred_labels)
        return ref if ref == pred else f"pred {pred} / ref {ref}"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pred_labels": list(self.pred_labels),
            "ref_labels": list(self.ref_labels),
            "lesions": self.lesions,
        }


def _join(labels: Iterable[int]) -> str:
    return "+".join(str(v) for v in labels)


def _labels(text: str, name: str, spec: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split("+")]
    if not parts or any(not p.isdigit() for p in parts):
        raise ConfigError(f"region {name!r} in {spec!r}: labels must be whole numbers joined by '+', such as liver=1+2")
    values = [int(p) for p in parts]
    if any(v < 1 or v > 65535 for v in values):
        raise ConfigError(f"region {name!r} in {spec!r}: labels must be between 1 and 65535 (0 is the background)")
    return tuple(dict.fromkeys(values))


def parse_regions(spec: str | Mapping_) -> dict[str, tuple[int, ...]]:
    """``"liver=1+2,tumour=2"``, a preset name or a mapping -> ``{name: labels}`` (in order).

    Raises:
        ConfigError: an unknown preset, a malformed entry, a repeated name or a bad label.
    """
    if not isinstance(spec, str):
        out: dict[str, tuple[int, ...]] = {}
        for name, labels in spec.items():
            _check_name(str(name), str(dict(spec)))
            out[str(name)] = _labels("+".join(str(int(v)) for v in labels), str(name), str(dict(spec)))
        if not out:
            raise ConfigError("no region given")
        return out
    text = spec.strip()
    if text.lower() in PRESETS:
        return dict(PRESETS[text.lower()])
    if "=" not in text:
        presets = ", ".join(PRESETS)
        raise ConfigError(
            f"unknown region preset {spec!r}; choose one of {presets}, or give regions as liver=1+2,tumour=2"
        )
    out = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, sep, labels = (s.strip() for s in entry.partition("="))
        if not sep or not labels:
            raise ConfigError(f"region entry {entry!r} in {spec!r} is not NAME=LABELS such as liver=1+2")
        _check_name(name, spec)
        if name in out:
            raise ConfigError(f"region {name!r} is given twice in {spec!r}")
        out[name] = _labels(labels, name, spec)
    if not out:
        raise ConfigError("no region given; use e.g. liver=1+2,tumour=2 or a preset (lits, msd-liver, totalseg)")
    return out


def _check_name(name: str, spec: str) -> None:
    if not _NAME.match(name):
        raise ConfigError(
            f"region name {name!r} in {spec!r} must start with a letter or '_' and hold only letters, digits, '_', '-', '.'"
        )


def resolve_regions(
    regions: str | Mapping_ | None = None,
    *,
    pred: str | Mapping_ | None = None,
    ref: str | Mapping_ | None = None,
    lesions: str | Sequence[str] | None = None,
) -> list[Region] | None:
    """The regions to score, or ``None`` when none is given (per-label scoring).

    ``regions`` applies to both sides; ``pred`` / ``ref`` replace, for the prediction or
    the reference side, the labels of the regions they name (a region they add must be
    named for the other side too). ``lesions``: the lesion regions (names, comma-separated
    or a list; ``"none"`` or ``[]`` for none); ``None`` = the regions named as in
    :data:`LESION_NAMES`.
    """
    if regions is None and pred is None and ref is None:
        return None  # per-label scoring: see per_label_regions
    shared = parse_regions(regions) if regions is not None else {}
    side_p = parse_regions(pred) if pred is not None else {}
    side_r = parse_regions(ref) if ref is not None else {}
    names = list(dict.fromkeys([*shared, *side_p, *side_r]))
    out: list[Region] = []
    wanted = _lesion_names(lesions, names)
    for name in names:
        p = side_p.get(name, shared.get(name))
        r = side_r.get(name, shared.get(name))
        if p is None or r is None:
            side, flag = ("prediction", "--pred-regions") if p is None else ("reference", "--ref-regions")
            raise ConfigError(f"region {name!r} has no labels for the {side}; name it in --regions or {flag}")
        out.append(Region(name, p, r, lesions=name in wanted))
    return out


def _lesion_names(lesions: str | Sequence[str] | None, names: Sequence[str]) -> set[str]:
    if lesions is None:
        return {n for n in names if n.lower() in LESION_NAMES}
    items = [s.strip() for s in lesions.split(",")] if isinstance(lesions, str) else [str(s) for s in lesions]
    items = [s for s in items if s]
    if items in ([], ["none"]):
        return set()
    unknown = [s for s in items if s not in names]
    if unknown:
        raise ConfigError(f"lesion region(s) {', '.join(unknown)} not among the regions ({', '.join(names)})")
    return set(items)


def lesion_labels(lesions: str | Sequence[str] | None) -> set[int]:
    """The lesion labels of per-label scoring: ``"2"`` / ``["2"]`` -> ``{2}``; ``None``/``"none"`` -> none."""
    if lesions is None:
        return set()
    items = [s.strip() for s in lesions.split(",")] if isinstance(lesions, str) else [str(s) for s in lesions]
    items = [s for s in items if s and s != "none"]
    if any(not s.isdigit() or int(s) < 1 for s in items):
        raise ConfigError(
            f"without regions, lesion regions are label numbers such as 2; got {lesions!r} "
            "(name regions with --regions or --preset)"
        )
    return {int(s) for s in items}


def per_label_regions(labels: Iterable[int], lesion_set: set[int] | frozenset[int] = frozenset()) -> list[Region]:
    """One region per label, named by its number (the default, per-label scoring)."""
    return [Region(str(v), (v,), (v,), lesions=v in lesion_set) for v in sorted(set(labels))]


def region_mask(array: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Boolean mask of the voxels of ``array`` holding any of ``labels``."""
    if len(labels) == 1:
        return array == labels[0]
    if array.dtype in (np.uint8, np.uint16):
        lut = np.zeros(np.iinfo(array.dtype).max + 1, bool)
        lut[[v for v in labels if v <= np.iinfo(array.dtype).max]] = True
        return lut[array]
    return np.isin(array, labels)


def lits_hint(labels_seen: Iterable[int]) -> str | None:
    """The note given when per-label scoring meets maps holding exactly labels 1 and 2."""
    if set(labels_seen) != {1, 2}:
        return None
    return (
        "the maps hold labels 1 and 2 and each label is scored on its own; LiTS and MSD Task03 score the "
        "liver as labels 1+2 (liver with its tumours): ask for it with --preset lits or --regions "
        "liver=1+2,tumour=2 (regions='lits' in Python)"
    )
