"""Unlabelled scans preprocessed like a labelled dataset, for SD-Net: :func:`preprocess_unlabelled`.

Semi-supervised training (SD-Net, ``docs/studies/sdnet.md``) needs scans that have no
label map, preprocessed exactly as the network's labelled inputs, without any step that reads a
label. Per scan (:func:`preprocess_unlabelled_case`):

1. read it as CT in HU (:func:`~liverctl.io.ct.read_ct`; a scan without a body is refused);
2. **body crop** instead of the liver z-crop: the (z, y, x) bounding box of the body
   (:func:`~liverctl.inference.body.crop_to_body`: 3x3x3 mean, above -500 HU, specks under 1 %
   of the largest component ignored, widened by ``body_margin`` voxels), the crop ``predict``
   makes before its sliding window;
3. :func:`~liverctl.preprocessing.planning.apply_plan` with the plan of the *labelled*
   preprocessed dataset ``like``: its target spacing, HU window and z-score mean / std (the
   labelled cases' liver statistics; or each image's own with ``normalization = "image"``).

Sources (:func:`image_cases`): a folder of scans, or a dataset folder whose label maps are
ignored (never listed, never opened): MSD ``imagesTr/`` and ``imagesTs/``, ``images/``, or LiTS
``volume-N`` files. Output, read by :func:`~liverctl.preprocessing.load_preprocessed`
(``labelled`` is false: ``load`` refuses, ``load_image`` reads) and by
``train --method sdnet --unlabelled OUT``::

    OUT/unlabelled.json       what this is: source, the labelled dataset it follows, body crop
    OUT/plan.json             the labelled dataset's plan (the recipe applied)
    OUT/cases.json            one record per scan (shape, geometry, source, body box)
    OUT/images/<name>.npy     float32 (z, y, x)
    OUT/cases/<name>.json     the scan's record, written once its array is complete
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverctl import __version__
from liverctl.errors import ConfigError, DatasetError, InputError, LiverctlError
from liverctl.io import Image, atomic_path, image_stem, list_images, write_text_atomic
from liverctl.io.datasets import Case, Dataset, natural_key
from liverctl.io.manifest import Manifest, check_new_or_owned_folder
from liverctl.preprocessing.cases import source_stat
from liverctl.preprocessing.crop import crop_box
from liverctl.preprocessing.planning import Plan, apply_plan
from liverctl.preprocessing.workers import map_cases
from liverctl.progress import ProgressCallback

__all__ = [
    "UnlabelledResult",
    "check_scans",
    "image_cases",
    "preprocess_unlabelled",
    "preprocess_unlabelled_case",
    "read_scan",
]

MARKER = "unlabelled.json"
_CHANNEL = re.compile(r"^(?P<case>.+)_\d{4}$")
_LITS_VOLUME = re.compile(r"^volume-\d+$", re.IGNORECASE)


@dataclass
class UnlabelledResult:
    """What :func:`preprocess_unlabelled` did."""

    output: Path
    like: Path
    plan: Plan
    source: str
    layout: str
    cases: list[dict[str, Any]]
    processed: list[str]
    skipped: list[str]
    seconds: float

    def summary(self) -> dict[str, Any]:
        shapes = np.asarray([c["shape"] for c in self.cases], dtype=float)
        return {
            "output": str(self.output),
            "source": self.source,
            "layout": self.layout,
            "like": str(self.like),
            "cases": len(self.cases),
            "processed": len(self.processed),
            "skipped": len(self.skipped),
            "target_spacing": list(self.plan.target_spacing),
            "window": None if self.plan.window is None else list(self.plan.window),
            "window_name": self.plan.window_name,
            "normalization": self.plan.normalization,
            "mean": self.plan.mean,
            "std": self.plan.std,
            "median_shape": np.median(shapes, axis=0).tolist() if len(shapes) else None,
            "seconds": round(self.seconds, 2),
        }


def _scans(folder: Path, *, channel: bool) -> list[tuple[str, Path]]:
    out = []
    for p in list_images(folder):
        stem = image_stem(p)
        m = _CHANNEL.match(stem) if channel else None
        out.append((m.group("case") if m else stem, p))
    return out


def image_cases(folder: str | os.PathLike[str]) -> tuple[str, list[Case]]:
    """``(layout, cases without labels)`` of the scans in ``folder`` (module docs); no label file is listed."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"no such folder of scans: {root}")
    root = root.resolve()
    msd = [root / d for d in ("imagesTr", "imagesTs") if (root / d).is_dir()]
    if msd:
        layout, found = "msd", [s for d in msd for s in _scans(d, channel=True)]
    elif (root / "images").is_dir():
        layout, found = "pairs", _scans(root / "images", channel=False)
    else:
        folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
        lits = [(image_stem(p), p) for f in folders for p in list_images(f) if _LITS_VOLUME.match(image_stem(p))]
        layout, found = ("lits", lits) if lits else ("flat", _scans(root, channel=False))
    names = [n for n, _ in found]
    twice = sorted({n for n in names if names.count(n) > 1}, key=natural_key)
    if twice:
        raise DatasetError(f"{root}: several scans are named {', '.join(twice[:3])}; give each scan its own name")
    if not found:
        raise DatasetError(f"no image files in {root}")
    cases = sorted((Case(n, p, None) for n, p in found), key=lambda c: natural_key(c.name))
    return layout, cases


def read_scan(case: Case) -> Image:
    """Read and check one unlabelled scan: CT in HU (:func:`~liverctl.io.ct.read_ct`) with a body."""
    from liverctl.io.ct import NO_BODY, has_body, read_ct

    try:
        image, _ = read_ct(case.image_path)
    except LiverctlError as exc:
        raise type(exc)(f"scan {case.name}: {exc}") from None
    if image.array.ndim != 3:
        raise DatasetError(f"scan {case.name} ({Path(case.image_path).name}) is not a 3D image")
    if not has_body(image):
        raise DatasetError(f"scan {case.name} ({Path(case.image_path).name}) holds {NO_BODY}; remove it")
    return image


def _check_scan(case: Case) -> None:
    read_scan(case)


def check_scans(cases: Sequence[Case], *, workers: int = 1, progress: ProgressCallback | None = None) -> None:
    """Read every scan once and refuse a bad one (:func:`read_scan`), before anything is written."""
    map_cases(_check_scan, [((c,), {}) for c in cases], workers=workers, progress=progress, description="check")


def preprocess_unlabelled_case(
    case: Case, plan: Plan, output: str | os.PathLike[str], body_margin: int = 4
) -> dict[str, Any]:
    """Preprocess one scan into ``output`` (images/, cases/<name>.json) and return its record (module docs)."""
    from liverctl.inference.body import crop_to_body
    from liverctl.io.ct import BODY_HU

    out = Path(output)
    image = read_scan(case)
    source_geometry, source_shape = image.geometry, image.shape
    box = crop_to_body(image.array, threshold=BODY_HU, margin=body_margin)
    if box is None:  # has_body said there is tissue; keep everything rather than guess
        box = tuple(slice(0, n) for n in image.shape)
    result = apply_plan(crop_box(image, box), plan)
    del image
    record = {
        "name": case.name,
        "labelled": False,
        "shape": list(result.shape),
        "geometry": result.geometry.to_dict(),
        "source_image": str(case.image_path),
        "source_shape": list(source_shape),
        "source_geometry": source_geometry.to_dict(),
        "source_stat": source_stat(case),
        "body_box": [[int(b.start), int(b.stop)] for b in box],
    }
    image_path, record_path = _case_files(out, case.name)
    with atomic_path(image_path) as tmp:
        np.save(tmp, result.array, allow_pickle=False)
    write_text_atomic(record_path, json.dumps(record, indent=2) + "\n")
    return record


def _case_files(output: Path, name: str) -> list[Path]:
    return [output / "images" / f"{name}.npy", output / "cases" / f"{name}.json"]


def _case_done(output: Path, case: Case) -> dict[str, Any] | None:
    image_path, record_path = _case_files(output, case.name)
    if not (image_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = record.get("source_image") == str(case.image_path) and record.get("source_stat") == source_stat(case)
    return record if same else None


def _labelled_plan(like: str | os.PathLike[str] | Any) -> tuple[Path, Plan]:
    """The folder and plan of the labelled preprocessed dataset the scans must follow."""
    from liverctl.preprocessing.dataset import load_preprocessed

    prep = load_preprocessed(like)
    if not prep.labelled:
        raise ConfigError(f"--like {like} is itself unlabelled; give the labelled dataset's preprocess output")
    return prep.folder.resolve(), prep.plan


def _check_output(out: Path, source: Path, like: Path) -> None:
    resolved = out.resolve()
    for inp, what in ((source.resolve(), "the scans"), (like, "the labelled dataset")):
        if resolved == inp or inp.is_relative_to(resolved) or resolved.is_relative_to(inp):
            raise InputError(f"output folder {out} would hold or be inside {what} ({inp}); choose another folder")


def _source_cases(source: str | os.PathLike[str] | Dataset) -> tuple[Path, str, list[Case]]:
    """``(root, layout, cases without labels)`` of a folder of scans or of a dataset's cases."""
    if isinstance(source, Dataset):  # labels dropped: never opened
        return source.root, source.layout, [Case(c.name, c.image_path, None) for c in source.cases]
    layout, cases = image_cases(source)
    return Path(source).resolve(), layout, cases


def _check_plan(out: Path, manifest: Manifest, plan_: Plan, overwrite: bool) -> None:
    if (out / "plan.json").is_file() and manifest.owns(out / "plan.json") and not overwrite:
        diff = plan_.differences(Plan.load(out / "plan.json"))
        if diff:
            raise ConfigError(
                f"{out} was preprocessed following another plan (different {', '.join(diff)}); "
                "use --overwrite or another output folder"
            )


def preprocess_unlabelled(
    source: str | os.PathLike[str] | Dataset,
    output: str | os.PathLike[str],
    like: str | os.PathLike[str],
    *,
    body_margin: int = 4,
    workers: int = 1,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    check: bool = True,
) -> UnlabelledResult:
    """Preprocess unlabelled scans with the plan of the labelled preprocessed dataset ``like`` (module docs).

    Args:
        source: a folder of scans or a dataset folder (labels ignored), or a
            :class:`~liverctl.io.datasets.Dataset` whose label paths are dropped unread.
        output: the output folder (what ``train --method sdnet --unlabelled`` reads).
        like: a :func:`~liverctl.preprocessing.preprocess` output: its target spacing, window
            and z-score statistics are applied; nothing of the unlabelled scans enters them.
        body_margin: voxels added around the body box on every side.
        check: read every scan once before writing anything (:func:`check_scans`), so that a
            bad scan leaves no output; ``False`` when the caller did it already.

    A rerun skips the scans already done; a different ``like`` plan in an existing output
    folder is an error unless ``overwrite``, which removes only the files liverctl wrote.
    """
    start = time.perf_counter()
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    if body_margin < 0:
        raise ConfigError(f"body margin must be 0 or more voxels, got {body_margin}")
    like_dir, plan_ = _labelled_plan(like)
    root, layout, cases = _source_cases(source)
    out = Path(output)
    _check_output(out, root, like_dir)
    manifest = check_new_or_owned_folder(out, "preprocess")
    top = [out / MARKER, out / "plan.json", out / "cases.json"]
    manifest.check_replaceable(top + [p for c in cases for p in _case_files(out, c.name)])
    _check_plan(out, manifest, plan_, overwrite)
    if check:
        check_scans([c for c in cases if _case_done(out, c) is None], workers=workers, progress=progress)
    if overwrite:
        manifest.remove_owned()
    out.mkdir(parents=True, exist_ok=True)
    manifest.claim(top, "preprocess")
    marker = {
        "kind": "unlabelled",
        "source": str(root),
        "layout": layout,
        "like": str(like_dir),
        "body_crop": {"threshold_hu": -500.0, "margin_voxels": int(body_margin)},
        "liverctl_version": __version__,
    }
    write_text_atomic(out / MARKER, json.dumps(marker, indent=2) + "\n")
    write_text_atomic(out / "plan.json", plan_.to_json())
    manifest.record(top[:2])
    ordered, processed, skipped = _run_cases(out, cases, plan_, manifest, body_margin, workers, progress)
    return UnlabelledResult(
        output=out,
        like=Path(like),  # as given: the summary's train command uses the user's paths
        plan=plan_,
        source=str(source.root if isinstance(source, Dataset) else source),
        layout=layout,
        cases=ordered,
        processed=processed,
        skipped=skipped,
        seconds=time.perf_counter() - start,
    )


def _run_cases(
    out: Path,
    cases: list[Case],
    plan_: Plan,
    manifest: Manifest,
    body_margin: int,
    workers: int,
    progress: ProgressCallback | None,
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Preprocess the scans an earlier run did not finish, then write ``cases.json``:
    ``(records in order, names processed, names skipped)``."""
    records: dict[str, dict[str, Any]] = {}
    todo, skipped = [], []
    for case in cases:
        done = _case_done(out, case)
        if done is not None:
            records[case.name] = done
            skipped.append(case.name)
        else:
            todo.append(((case, plan_, str(out), body_margin), {}))
    manifest.claim(p for args, _ in todo for p in _case_files(out, args[0].name))
    for record in map_cases(
        preprocess_unlabelled_case, todo, workers=workers, progress=progress, description="preprocess"
    ):
        records[record["name"]] = record
        manifest.record(_case_files(out, record["name"]))
    ordered = [records[c.name] for c in cases]
    write_text_atomic(out / "cases.json", json.dumps(ordered, indent=2) + "\n")
    manifest.record([out / "cases.json"])
    return ordered, [args[0].name for args, _ in todo], skipped
