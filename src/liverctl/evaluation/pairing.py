"""Pairing prediction and reference files: two files, or the images of two folders by name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from liverctl.errors import DatasetError, InputError
from liverctl.io import IMAGE_SUFFIXES, image_stem, list_images

__all__ = ["CasePair", "check_pairs", "pair_cases"]


@dataclass(frozen=True)
class CasePair:
    """One case: its name, prediction path and reference path."""

    case: str
    pred: Path
    ref: Path


def pair_cases(pred: str | os.PathLike[str], ref: str | os.PathLike[str]) -> tuple[list[CasePair], list[str]]:
    """Pair two files, or the image files of two folders by name.

    Returns the pairs (sorted by case name) and the missing partners as
    ``"<case>: no prediction"`` / ``"<case>: no reference"``.
    """
    p, r = Path(pred), Path(ref)
    for path, what in ((p, "prediction"), (r, "reference")):
        if not path.exists():
            raise InputError(f"no such {what} file or folder: {path}")
    if p.is_dir() != r.is_dir():
        kind = "a folder" if p.is_dir() else "a file"
        raise InputError(f"prediction {p} is {kind} but reference {r} is not; give two files or two folders")
    if not p.is_dir():
        return [CasePair(image_stem(r), p, r)], []
    preds = {image_stem(f): f for f in list_images(p)}
    refs = {image_stem(f): f for f in list_images(r)}
    suffixes = ", ".join(IMAGE_SUFFIXES)
    if not refs:
        raise DatasetError(f"no image files ({suffixes}) in reference folder {r}")
    if not preds:
        raise DatasetError(f"no image files ({suffixes}) in prediction folder {p}")
    pairs = [CasePair(c, preds[c], refs[c]) for c in sorted(preds.keys() & refs.keys())]
    missing = [f"{c}: no prediction" for c in sorted(refs.keys() - preds.keys())]
    missing += [f"{c}: no reference" for c in sorted(preds.keys() - refs.keys())]
    return pairs, missing


def check_pairs(pairs: list[CasePair], missing: list[str], allow_missing: bool, where: str) -> None:
    """Raise :class:`~liverctl.errors.DatasetError` for missing partners (unless allowed) or no pair at all."""
    if missing and not allow_missing:
        shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} case(s) of {where} lack a partner ({shown}); "
            f"--allow-missing evaluates the {len(pairs)} complete pair(s)"
        )
    if not pairs:
        raise DatasetError(f"no prediction in {where} matches a reference by file name")
