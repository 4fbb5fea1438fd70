"""A cohort split over shards (Slurm array tasks, or machines) into one output folder, and gathered.

:func:`predict_cohort` is what ``liverctl predict`` calls: without a shard it is
:func:`liverctl.predict.predict`; with one (``--shard I/N`` or ``--shard slurm``) it first
writes the cohort's plan into the output folder (``.liverctl-cohort.json``: every scan of the
whole cohort and the shard it belongs to, the same in every shard), holds the shard's lock
(:func:`liverctl.predict.shards.claim_shard`) and runs the shard, which writes its own
``summary.shard-I-of-N.csv``. A rerun of a failed shard with ``resume=True`` keeps what it
finished and computes only the rest.

:func:`gather` (``liverctl gather OUT``) joins the shards' summaries into ``summary.csv``, one
row per scan of the plan in its order, and names the scans no shard finished (status
``missing``): those of a shard that never ran, was killed, or failed on them.

Example::

    from liverctl.predict.cohort import gather, predict_cohort
    for i in range(4):                       # or one Slurm array task each: shard="slurm"
        predict_cohort(["scans/"], "masks/", shard=(i, 4), resume=True)
    result = gather("masks/")
    print(result.summary, result.missing)
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError, InputError
from liverctl.io import image_suffix, write_text_atomic
from liverctl.predict.report import SUMMARY_FIELDS
from liverctl.predict.results import PredictResult
from liverctl.predict.shards import (
    PLAN_NAME,
    SLURM,
    SharedManifest,
    SlurmArray,
    claim_shard,
    parse_shard,
    shard_summary_name,
    slurm_array,
)

__all__ = ["PLAN_NAME", "GatherResult", "gather", "predict_cohort"]

_VERSION = 1


def _shard_folder(output: str | os.PathLike[str] | None) -> Path:
    """The folder a shard writes into: ``output``, or the current folder."""
    if output is None:
        return Path.cwd()
    out = Path(output)
    if not out.is_dir() and (image_suffix(out) is not None or out.suffix.lower() == ".dcm"):
        raise ConfigError(f"--shard writes into a folder that all shards share: give -o FOLDER, not the file {out}")
    return out


def _plan(
    inputs: Sequence[str | os.PathLike[str]], recursive: bool, count: int, array: SlurmArray | None
) -> dict[str, Any]:
    """Every scan of the cohort with its shard (the split :func:`liverctl.predict.predict` makes)."""
    from liverctl.io.inputs import resolve_inputs
    from liverctl.predict.batch import _shard

    found, names = resolve_inputs(list(inputs), recursive=recursive)
    if not found:
        raise InputError("no input scans given")
    missing = [s for s in found if not s.exists()]
    if missing:  # refused before the plan is written, as predict would refuse it
        raise InputError(f"no such file or folder: {missing[0]}")
    from liverctl.predict.batch import _scan_name

    shard_of = {scan: i for i in range(count) for scan in _shard(found, (i, count))}
    plan: dict[str, Any] = {"liverctl_cohort": _VERSION, "shards": count}
    if array is not None:  # the array's task ids, for a later rerun of some of its tasks
        plan["slurm"] = array.to_dict()
    order = sorted(shard_of.items(), key=lambda kv: (kv[1], str(kv[0])))
    plan["scans"] = [{"input": str(s), "name": names.get(s) or _scan_name(s), "shard": i} for s, i in order]
    return plan


def _identity(plan: dict[str, Any]) -> tuple[Any, list[tuple[Any, Any]]]:
    """What every shard's plan must share: N and each scan's name (its mask's) and shard. Not the
    paths: a zipped series is extracted under each task's own $TMPDIR."""
    return plan.get("shards"), [(s.get("name"), s.get("shard")) for s in plan["scans"] if isinstance(s, dict)]


def _array_shard(array: SlurmArray, folder: Path) -> tuple[int, int]:
    """The shard of a Slurm array task: its place in its array; or, when the folder's plan was
    written by a larger array (this is a rerun of some of its tasks, ``sbatch --array=3``), its
    place in that array (the task ids stay the same)."""
    earlier = _read_plan(folder) if folder.is_dir() else None
    origin = (earlier or {}).get("slurm")
    if earlier is not None and isinstance(origin, dict) and earlier.get("shards") != array.count:
        try:
            found = array.rerun_of(int(origin["first"]), int(origin["step"]), int(earlier["shards"]))
        except (KeyError, TypeError, ValueError):
            found = None
        if found is not None:
            return found
    return array.shard


def _read_plan(folder: Path) -> dict[str, Any] | None:
    path = folder / PLAN_NAME
    if not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} ({exc}); move it away to start the cohort again") from None
    if not isinstance(plan, dict) or plan.get("liverctl_cohort") != _VERSION or not isinstance(plan.get("scans"), list):
        raise InputError(f"{path} is not a liverctl cohort plan; move it away to start the cohort again")
    return plan


def _write_plan(folder: Path, plan: dict[str, Any]) -> None:
    """Write the plan, or check that the folder's plan is this one (every shard writes the same)."""
    earlier = _read_plan(folder)
    if earlier is None:
        write_text_atomic(folder / PLAN_NAME, json.dumps(plan, indent=1) + "\n")
    elif _identity(earlier) != _identity(plan):
        raise InputError(
            f"{folder} holds a sharded run of other scans or another split ({earlier.get('shards')} shards, "
            f"{len(earlier['scans'])} scans; this one: {plan['shards']} shards, {len(plan['scans'])} scans); "
            "give another -o, or move its .liverctl-cohort.json away to start over"
        )


def predict_cohort(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    shard: str | tuple[int, int] | None = None,
    recursive: bool = False,
    **kwargs: Any,
) -> PredictResult:
    """:func:`liverctl.predict.predict`, for one shard of a cohort when ``shard`` is given.

    ``shard``: ``(I, N)``, ``"I/N"`` or ``"slurm"`` (from the Slurm array's environment,
    :func:`liverctl.predict.shards.slurm_array`; a rerun of some tasks of the array that wrote
    the folder's plan, ``sbatch --array=3``, keeps their shard of that array). The shard, its folder and the plan are checked
    before anything is loaded; every other argument is :func:`~liverctl.predict.predict`'s.
    Raises :class:`ConfigError` outside a Slurm array for ``"slurm"``, :class:`InputError` when
    the same shard (or a shard of another split) already runs in the folder.
    """
    from liverctl.predict.batch import predict

    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    if shard is None:
        return predict(items, output, recursive=recursive, **kwargs)
    folder = _shard_folder(output)
    array = slurm_array() if isinstance(shard, str) and shard.strip().lower() == SLURM else None
    chosen = _array_shard(array, folder) if array is not None else shard
    chosen = parse_shard(chosen) if isinstance(chosen, str) else chosen
    assert chosen is not None
    plan = _plan(items, recursive, chosen[1], array)
    with claim_shard(folder, chosen):
        _write_plan(folder, plan)
        return predict(items, output, shard=chosen, recursive=recursive, **kwargs)


@dataclass
class GatherResult:
    """What :func:`gather` wrote: the summary, and the scans by outcome (their input paths)."""

    summary: Path
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shards_without_summary: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every scan of the cohort has a finished result."""
        return not self.failed and not self.missing


def _shard_rows(folder: Path, count: int) -> tuple[dict[str, dict[str, str]], list[int]]:
    """Every shard summary's rows, by input path and by mask name (``name:<name>``), and the
    shards that wrote no summary."""
    from liverctl.predict.outputs import mask_stem

    rows: dict[str, dict[str, str]] = {}
    absent = []
    for i in range(count):
        path = folder / shard_summary_name((i, count))
        if not path.is_file():
            absent.append(i)
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                rows[row.get("input", "")] = row
                if row.get("mask"):
                    rows[f"name:{mask_stem(row['mask'])}"] = row
    return rows, absent


def gather(folder: str | os.PathLike[str], *, summary: str | os.PathLike[str] | None = None) -> GatherResult:
    """Join the shard summaries of ``folder`` into ``summary`` (default ``folder/summary.csv``):
    one row per scan of the cohort's plan, status ``ok``, ``failed`` or ``missing`` (no shard
    finished it). Never replaces a ``summary.csv`` liverctl did not write.

    Raises :class:`InputError` when ``folder`` holds no sharded run.
    """
    root = Path(folder)
    plan = _read_plan(root) if root.is_dir() else None
    if plan is None:
        raise InputError(
            f"{root} holds no sharded run ({PLAN_NAME} missing): run `liverctl predict --shard I/N -o {root}` first"
        )
    out = Path(summary) if summary is not None else root / "summary.csv"
    manifest = SharedManifest(out.parent)
    manifest.check_replaceable([out])
    rows, absent = _shard_rows(root, int(plan["shards"]))
    result = GatherResult(out, shards_without_summary=absent)
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for item in plan["scans"]:
        scan = item["input"]
        row = (
            rows.get(scan)
            or rows.get(f"name:{item.get('name')}")
            or {
                "input": scan,
                "status": "missing",
                "error": f"shard {item['shard']} did not finish it",
            }
        )
        if row.get("status") == "ok" and row.get("mask") and not Path(row["mask"]).exists():
            row = {**row, "status": "missing", "error": f"its mask {row['mask']} is gone"}
        {"ok": result.finished, "failed": result.failed}.get(row.get("status", ""), result.missing).append(scan)
        writer.writerow({k: row.get(k, "") for k in SUMMARY_FIELDS})
    manifest.claim([out], "predict")
    write_text_atomic(out, buffer.getvalue())
    manifest.record([out])
    return result
