"""``predict`` over files, folders and DICOM series: inputs, outputs, read-ahead, resume, summary.

:func:`predict` is what ``liverctl predict`` calls: it expands the inputs (:func:`expand_inputs`,
``--shard``), decides and checks every output before any download (:func:`output_paths`,
:mod:`liverctl.io.manifest`), loads the model once, reads the next scan in a background thread
while the current one is in the network (:func:`_prefetched`), keeps an earlier run's results
with ``resume`` (:func:`_earlier_result`) and rewrites the summary CSV after every scan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, InputError, LiverctlError
from liverctl.io import (
    Image,
    check_not_input,
    check_output_suffix,
    check_writable,
    image_stem,
    image_suffix,
    write_image,
    write_mask,
    write_text_atomic,
)
from liverctl.io.ct import read_ct
from liverctl.io.manifest import Manifest, real_path
from liverctl.predict.model import LiverModel
from liverctl.predict.options import PredictOptions
from liverctl.predict.report import read_summary, write_summary
from liverctl.predict.results import CaseResult, PredictResult
from liverctl.predict.retry import result_key, segment_retrying
from liverctl.predict.shards import SharedManifest, shard_summary_name
from liverctl.predict.space import ModelSpace
from liverctl.progress import ProgressCallback

__all__ = ["expand_inputs", "output_paths", "parse_paths", "predict"]


def expand_inputs(inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False) -> list[Path]:
    """Files, folders of images, and DICOM series folders -> the list of scans to segment.

    A folder that holds image files stands for those files; a folder that holds a DICOM
    series stands for that series; zips and single DICOM files are resolved too (see
    :func:`liverctl.io.inputs.resolve_inputs`). A path that does not exist is kept
    (:func:`predict` refuses it before loading a model).
    """
    from liverctl.io.inputs import resolve_inputs

    return resolve_inputs(inputs, recursive=recursive)[0]


def _shard(scans: list[Path], shard: tuple[int, int] | None) -> list[Path]:
    if shard is None:
        return scans
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {index}/{count}")
    return [s for i, s in enumerate(sorted(scans)) if i % count == index]


def _scan_name(path: Path) -> str:
    return image_stem(path) if path.is_file() or image_suffix(path) else path.name


def output_paths(
    scans: list[Path],
    output: str | os.PathLike[str] | None,
    names: dict[Path, str] | None = None,
    output_format: str | None = None,
) -> list[Path]:
    """Where each scan's mask goes.

    No ``output``: ``<name>_liver.nii.gz`` in the current folder. An ``output`` with an image
    suffix: that file (one scan only). Otherwise a folder: ``<output>/<name>.nii.gz``, the
    same name as the scan, so that ``liverctl evaluate`` pairs it with a reference by name.
    ``names``: the name of each scan (:func:`liverctl.io.inputs.resolve_inputs`); the suffix
    follows ``output_format`` (:func:`liverctl.predict.outputs.mask_suffix`).
    """
    from liverctl.predict.outputs import check_output_format, mask_suffix

    check_output_format(output_format, scans, output)
    named = {**{s: _scan_name(s) for s in scans}, **(names or {})}
    seg_file = output is not None and str(output).lower().endswith(".dcm") and not Path(output).is_dir()
    if output is not None and not seg_file:
        check_output_suffix(output)
    if output is None:
        paths = [Path.cwd() / f"{named[s]}_liver{mask_suffix(s, output_format)}" for s in scans]
    elif seg_file or (image_suffix(output) is not None and not Path(output).is_dir()):
        if len(scans) != 1:
            raise ConfigError(f"-o {output} is a file, but there are {len(scans)} scans: give a folder")
        paths = [Path(output)]
    else:
        paths = [Path(output) / f"{named[s]}{mask_suffix(s, output_format)}" for s in scans]
    names = [p.resolve() for p in paths]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two scans would be written to the same file {dup}: give them distinct names")
    for out in paths:
        check_not_input(out, scans)
    return paths


def _sidecar(mask_path: Path, suffix: str) -> Path:
    from liverctl.predict.outputs import mask_stem

    return mask_path.with_name(mask_stem(mask_path) + suffix)


def _case_files(mask: Path, options: PredictOptions) -> list[Path]:
    """What :func:`predict` writes for one scan: the mask, its report, its probabilities."""
    files = [mask, _sidecar(mask, ".json")]
    files += [_sidecar(mask, "_probabilities.nii.gz")] if options.save_probabilities else []
    return [*files, _sidecar(mask, "_preview.png")] if options.preview else files


def _check_outputs(files: Sequence[Path]) -> dict[Path, Manifest]:
    """Check every output before any download or computation: writable, and replacing
    nothing liverctl did not write. Returns the manifest of each output folder."""
    manifests: dict[Path, Manifest] = {}
    for f in files:
        check_writable(f)
        folder = real_path(f).parent
        if folder not in manifests:
            manifests[folder] = SharedManifest(folder)  # shards of a cohort share the folder
        manifests[folder].check_replaceable([f])
    return manifests


def _remove_stale_temporaries(files: Sequence[Path]) -> None:
    """Temporary files a killed run left beside these outputs (liverctl's own naming, see
    :func:`liverctl.io.atomic_path`)."""
    for f in files:
        if f.parent.is_dir():
            for tmp in f.parent.glob(f".{glob_escape(f.name)}.*.tmp*"):
                tmp.unlink(missing_ok=True)


def _earlier_result(case: CaseResult, files: Sequence[Path], model: LiverModel, options: PredictOptions) -> bool:
    """``resume``: fill ``case`` from an earlier run's files if they hold this model's result
    with these options (and liverctl wrote them); ``False`` if the scan must be segmented."""
    manifest = Manifest(files[0].parent)
    if not all(f.is_file() and manifest.owns(f) for f in files):
        return False
    try:
        report = json.loads(files[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("input") != case.input:
        return False
    shas = [r.sha256 for r in model.resolved]
    earlier = report.get("model") or {}
    earlier_shas = [m.get("sha256") for m in earlier.get("ensemble") or [earlier]]
    if earlier_shas != shas or report.get("options") != result_key(model, options):
        return False
    case.mask, case.report_path, case.report, case.skipped = files[0], files[1], report, True
    case.probabilities = files[2] if options.save_probabilities else None
    return True


Prepared = tuple[Image, ModelSpace, list[str]]


def _prepare(model: LiverModel, path: Path, series_uid: str | None, exact: bool) -> Prepared:
    """Read a scan, check it is CT, and bring it to model space (runs in the read-ahead thread)."""
    image, notes = read_ct(path, series_uid=series_uid)
    return image, model.to_model_space(image, exact=exact), notes


def _prefetched(
    model: LiverModel, scans: list[Path], series_uid: str | None, exact: bool = False
) -> Iterator[tuple[Path, Future[Prepared]]]:
    """Yield each scan with a future of its prepared data; the next scan is read while the
    current one is in the network (one background thread)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="liverctl-read") as pool:
        pending = pool.submit(_prepare, model, scans[0], series_uid, exact) if scans else None
        for i, scan in enumerate(scans):
            current = pending
            pending = pool.submit(_prepare, model, scans[i + 1], series_uid, exact) if i + 1 < len(scans) else None
            assert current is not None
            yield scan, current


# Long by its docstring (every argument documented, ~30 lines); the code is ~60 lines of named steps.
def predict(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str | Sequence[str] | None = None,
    weights: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    arch: str | None = None,
    options: PredictOptions | None = None,
    series_uid: str | None = None,
    shard: tuple[int, int] | None = None,
    summary: str | os.PathLike[str] | None = None,
    resume: bool = False,
    loaded: LiverModel | None = None,
    progress: ProgressCallback | None = None,
    on_case: Callable[[CaseResult], None] | None = None,
    recursive: bool = False,
    on_model: Callable[[LiverModel], None] | None = None,
) -> PredictResult:
    """Segment the liver in one or many CT scans and write masks, reports and a summary.

    Args:
        inputs: a scan file, a DICOM series folder, a folder of scans, or a list of these.
        output: mask file (one scan), or folder (see :func:`output_paths`).
        model: registry name(s) (``None`` = the default entry; several = an ensemble).
        weights: local weights file(s) instead of a download, or one nnU-Net v2 results folder
            (a folder holding ``plans.json``; see :meth:`LiverModel.load`).
        arch: architecture of local weights that have no ``.toml`` beside them.
        options: :class:`PredictOptions`.
        series_uid: the DICOM series to read from a folder that holds several.
        shard: ``(i, n)``: segment only every n-th scan starting at i (of the sorted list),
            to split a folder over machines.
        summary: where to write the summary CSV; default ``summary.csv`` in the output
            folder when there are several scans, none for a single scan; for a shard,
            ``summary.shard-I-of-N.csv`` (:mod:`liverctl.predict.shards`). It is rewritten after
            every scan, so a killed run leaves a truthful partial summary.
        resume: keep the mask and report of a scan that an earlier run wrote with the same
            model (sha256) and options (:meth:`PredictOptions.result_key`); such cases come
            back with ``skipped=True``.
        loaded: an already loaded :class:`LiverModel` (skips loading).
        progress: called per scan (``"scans"``) and per window batch (``"sliding window"``).
        on_case: called with each :class:`CaseResult` as soon as its files are written.
        recursive: also segment the scans in the folders below each input folder
            (:func:`liverctl.io.inputs.resolve_inputs`; zips and DICOM files are resolved too).
        on_model: called with the loaded :class:`LiverModel` before the first scan.

    Every option and output is checked before the weights are loaded (or downloaded): an
    output folder that cannot be written, or an existing file there that liverctl did not
    write (:mod:`liverctl.io.manifest`), is refused up front.

    Returns:
        :class:`PredictResult`. A scan that fails (unreadable, not CT, ...) does not stop the
        batch: its error is in its :class:`CaseResult` and in the summary.
    """
    options = options or PredictOptions()
    scans, names = _scans(inputs, shard, recursive)
    outputs = output_paths(scans, output, names, options.output_format)
    if summary is None and (len(scans) > 1 or shard is not None):  # a shard: its own summary, even of one scan
        summary = outputs[0].parent / shard_summary_name(shard)
    summary_path = None if summary is None else Path(summary)
    if summary_path is not None:
        check_not_input(summary_path, scans)
    files = [_case_files(out, options) for out in outputs]
    every_file = [f for group in files for f in group] + ([summary_path] if summary_path else [])
    manifests = _check_outputs(every_file)
    if loaded is None:
        from liverctl.device import resolve_device

        resolve_device(options.device)  # an absent device is refused before any download
    net = loaded or LiverModel.load(
        model,
        weights,
        arch=arch,
        dataset=options.dataset,
        progress=progress,
        device_config=options.device_config,
        exact=not options.shortcuts,
    )
    if on_model is not None:
        on_model(net)
    _remove_stale_temporaries(every_file)
    result = PredictResult()
    kept = _kept(scans, files, net, options) if resume else {}
    todo = [s for i, s in enumerate(scans) if i not in kept]
    prepared = _prefetched(net, todo, series_uid, exact=not options.shortcuts)
    for done, (out, group) in enumerate(zip(outputs, files, strict=True)):
        if done in kept:
            case = kept[done]
        else:
            scan, future = next(prepared)
            case = CaseResult(input=str(scan))
            _segment_case(net, case, future, group, options, manifests[real_path(out).parent], progress, series_uid)
        result.cases.append(case)
        if summary_path is not None:
            result.summary_csv = _write_summary(result.cases, summary_path, manifests[real_path(summary_path).parent])
        if on_case is not None:
            on_case(case)
        if progress is not None:
            progress("scans", done + 1, len(scans))
    return result


def _write_summary(cases: Sequence[CaseResult], path: Path, manifest: Manifest) -> Path:
    """Rewrite the summary under the folder's lock, keeping the rows another run (another
    process writing into this folder, or an earlier run) wrote there for other scans whose
    masks liverctl wrote and are still as it left them."""
    with manifest.locked():
        mine = {c.input for c in cases} | {str(real_path(c.input)) for c in cases}
        mine |= {str(real_path(c.mask)) for c in cases if c.mask}
        others = [r for r in read_summary(path) if _other_row(r, mine, manifest)] if manifest.owns(path) else []
        written = write_summary(cases, path, others)
        manifest.record([path], "predict")
    return written


def _other_row(row: dict[str, str], mine: set[str], manifest: Manifest) -> bool:
    if row["input"] in mine or str(real_path(row["input"])) in mine or not row.get("mask"):
        return False
    mask = real_path(row["mask"])
    try:
        return str(mask) not in mine and mask.is_file() and manifest.owns(mask)
    except InputError:  # a mask outside this folder (-o FILE with --summary elsewhere)
        return mask.is_file() and str(mask) not in mine


def _scans(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    shard: tuple[int, int] | None,
    recursive: bool = False,
) -> tuple[list[Path], dict[Path, str]]:
    """The scans of this shard of the inputs and their names, refused if any does not exist
    (before any download)."""
    from liverctl.io.inputs import resolve_inputs

    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if not items:
        raise InputError("no input scans given")
    found, names = resolve_inputs(items, recursive=recursive)
    scans = _shard(found, shard)
    if not scans:
        raise InputError("no scans to segment in this shard")
    missing = [s for s in scans if not s.exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"no such file or folder: {missing[0]}{more}")
    return scans, names


def _kept(
    scans: Sequence[Path], files: Sequence[Sequence[Path]], net: LiverModel, options: PredictOptions
) -> dict[int, CaseResult]:
    """``resume``: the results an earlier run left, by scan index (see :func:`_earlier_result`)."""
    kept = {}
    for i, (scan, group) in enumerate(zip(scans, files, strict=True)):
        case = CaseResult(input=str(scan))
        if _earlier_result(case, group, net, options):
            kept[i] = case
    return kept


def _segment_case(
    net: LiverModel,
    case: CaseResult,
    future: Future[Prepared],
    files: Sequence[Path],
    options: PredictOptions,
    manifest: Manifest,
    progress: ProgressCallback | None,
    series_uid: str | None = None,
) -> None:
    """Segment one scan, read ahead by ``future``, and write its files (recorded in the
    folder's manifest); errors go into ``case``."""
    out, report_path, scan = files[0], files[1], case.input
    try:
        image, model_space, notes = future.result()
        seg = segment_retrying(  # a CUDA out-of-memory error: retried with the sums on the CPU
            net, image, options, source=scan, prepared=model_space, ct_notes=notes, progress=progress
        )
        manifest.claim(files, "predict")
        case.mask = _write_mask(seg.mask, image, out, scan, series_uid)
        manifest.record([out])  # at once: a file there without a recorded size is never taken as ours
        if seg.probabilities is not None:
            case.probabilities = write_image(seg.probabilities, files[2])
            manifest.record([files[2]])
        seg.report = {"input": scan, "mask": str(out), "options": result_key(net, options), **seg.report}
        if case.probabilities is not None:
            seg.report["probabilities"] = str(case.probabilities)
        case.report_path = write_text_atomic(report_path, json.dumps(seg.report, indent=2) + "\n")
        case.report = seg.report
        if options.preview:
            _write_preview(image, seg.mask, files[-1], scan, seg.report)
        manifest.record(files)
    except LiverctlError as exc:
        case.error = str(exc)
    except MemoryError:
        case.error = "out of memory"


def _write_mask(mask: Any, image: Image, out: Path, scan: str, series_uid: str | None) -> Path:
    """The mask in the format its suffix names: a DICOM-SEG referencing the source series for ``.dcm``,
    an RT Structure Set for ``.rtstruct.dcm``."""
    if out.suffix.lower() != ".dcm":
        return write_mask(mask, image, out)
    from liverctl.io.dicom_seg import series_files, write_dicom_seg

    array = mask.array if isinstance(mask, Image) else mask
    if out.name.lower().endswith(".rtstruct.dcm"):
        from liverctl.io.rtstruct import write_rtstruct

        return write_rtstruct(array, image.geometry, series_files(scan, series_uid), out)
    return write_dicom_seg(array, image.geometry, series_files(scan, series_uid), out)


def _write_preview(image: Image, mask: Any, path: Path, scan: str, report: dict[str, Any]) -> None:
    from liverctl.predict.preview import write_preview

    qc = report.get("qc") or {}
    write_preview(
        image,
        mask,
        path,
        title=Path(scan).name,
        volume_ml=report.get("liver_volume_ml"),
        flags=qc.get("flags", []),
        lower_bound=bool(qc.get("volume_is_lower_bound")),
    )


def parse_paths(text: str) -> list[str]:
    """Paths from text, one a line (blank lines and ``#`` comments skipped): for ``predict -``."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
