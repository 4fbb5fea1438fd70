"""Shards of a cohort that share one output folder: which shard this is, and what keeps them apart.

``--shard I/N`` (0-based shard I of N) or ``--shard slurm``: I and N from a Slurm job array
(:func:`slurm_shard`: ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_MIN``/``MAX``, or
``SLURM_ARRAY_TASK_COUNT``). Shards writing into one folder never overwrite each other's files:

* each shard writes its own summary, ``summary.shard-I-of-N.csv`` (:func:`shard_summary_name`);
  ``liverctl gather`` (:mod:`liverctl.predict.cohort`) joins them into ``summary.csv``;
* one shard runs at a time per shard (:func:`claim_shard`: a lock file per shard, held while it
  runs): a second copy of shard I/N, or a shard of another split of the same folder, is refused
  in one line;
* the folder's record of what liverctl wrote (``.liverctl-manifest.json``,
  :mod:`liverctl.io.manifest`) is updated under a lock and merged with what other shards wrote
  meanwhile (:class:`SharedManifest`), so no shard drops another's files from it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from liverctl.errors import ConfigError, InputError
from liverctl.io.manifest import MANIFEST_NAME, Manifest

__all__ = [
    "PLAN_NAME",
    "SLURM",
    "SharedManifest",
    "SlurmArray",
    "claim_shard",
    "parse_shard",
    "shard_summary_name",
    "slurm_array",
    "slurm_shard",
]

#: The ``--shard`` value that reads the shard from a Slurm job array's environment.
SLURM = "slurm"
#: The cohort's plan in a sharded output folder (see :mod:`liverctl.predict.cohort`).
PLAN_NAME = ".liverctl-cohort.json"
_LOCK = re.compile(r"^\.liverctl-shard-(\d+)-of-(\d+)\.lock$")


def shard_summary_name(shard: tuple[int, int] | None) -> str:
    """``summary.csv`` for a whole run, ``summary.shard-I-of-N.csv`` for shard I of N."""
    return "summary.csv" if shard is None else f"summary.shard-{shard[0]}-of-{shard[1]}.csv"


def _int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--shard slurm: {key}={value!r} is not a number") from None


@dataclass(frozen=True)
class SlurmArray:
    """This task of a Slurm job array: its ``task`` id, the array's ``first`` id, ``step`` and ``count``."""

    task: int
    first: int
    step: int
    count: int

    @property
    def shard(self) -> tuple[int, int]:
        """``(I, N)``: this task's position in the array, and the array's size."""
        return (self.task - self.first) // self.step, self.count

    def rerun_of(self, first: int, step: int, count: int) -> tuple[int, int] | None:
        """``(I, N)`` of this task in an *earlier* array of ids ``first, first + step, ...``
        (``count`` tasks): a rerun of some of its tasks (``sbatch --array=3``) keeps their ids;
        ``None`` if this task id is not one of that array's."""
        index, offset = divmod(self.task - first, step)
        return (index, count) if offset == 0 and 0 <= index < count else None

    def to_dict(self) -> dict[str, int]:
        return {"first": self.first, "step": self.step, "count": self.count}


def slurm_array(env: Mapping[str, str] | None = None) -> SlurmArray:
    """This Slurm array task, from ``SLURM_ARRAY_TASK_ID`` with ``SLURM_ARRAY_TASK_MIN``/``MAX``
    (and ``STEP``), or ``SLURM_ARRAY_TASK_COUNT``.

    An array ``--array=A-B`` (step S) has tasks A, A+S, ..., B: N = (B - A) / S + 1 and
    I = (SLURM_ARRAY_TASK_ID - A) / S. Without MIN/MAX, ``SLURM_ARRAY_TASK_COUNT`` gives N and
    the task ids are taken to start at 0. Raises :class:`ConfigError` (one line) outside an array
    job, or for an array whose task ids are not one evenly spaced range.
    """
    env = os.environ if env is None else env
    task = _int(env, "SLURM_ARRAY_TASK_ID")
    if task is None:
        where = "inside a Slurm job but not an array job" if env.get("SLURM_JOB_ID") else "outside a Slurm job"
        raise ConfigError(
            f"--shard slurm: SLURM_ARRAY_TASK_ID is not set ({where}); submit with `sbatch --array=0-N` "
            "(see docs/slurm.md), or give --shard I/N"
        )
    lo, hi, count = (_int(env, k) for k in ("SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT"))
    step = _int(env, "SLURM_ARRAY_TASK_STEP") or 1
    if lo is not None and hi is not None:
        n = (hi - lo) // step + 1
        if count is not None and count != n:
            raise ConfigError(
                f"--shard slurm: the array's task ids are not one range ({count} tasks between {lo} and {hi}); "
                "submit with --array=0-N (a % limit is fine), or give --shard I/N"
            )
    elif count is not None:
        lo, n = 0, count
    else:
        raise ConfigError(
            "--shard slurm: neither SLURM_ARRAY_TASK_MIN/MAX nor SLURM_ARRAY_TASK_COUNT is set; give --shard I/N"
        )
    array = SlurmArray(task, lo, step, n)
    if array.rerun_of(lo, step, n) is None:
        raise ConfigError(f"--shard slurm: task {task} is not in the array {lo}-{hi} (step {step})")
    return array


def slurm_shard(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(I, N)`` of this Slurm array task (:func:`slurm_array`)."""
    return slurm_array(env).shard


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The value of ``--shard``: ``None``, ``"I/N"`` (0-based shard I of N) or ``"slurm"`` (from the
    array job's environment, :func:`slurm_shard`) -> ``(I, N)`` or ``None``."""
    if text is None:
        return None
    if text.strip().lower() == SLURM:
        return slurm_shard(env)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects I/N (e.g. 0/4) or slurm, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard I/N needs 0 <= I < N, got {text}")
    return i, n


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or ``None`` if another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:  # a file system without locks (some Lustre mounts): run unguarded rather than not at all
        return fd
    return fd


@contextlib.contextmanager
def claim_shard(folder: str | os.PathLike[str], shard: tuple[int, int]) -> Iterator[None]:
    """Hold shard I/N of ``folder`` while the block runs (a lock file ``.liverctl-shard-I-of-N.lock``,
    released when the process ends, however it ends).

    Raises :class:`InputError` (one line) when the same shard already runs there, or when a shard
    of another split (another N) runs there: both would write the same scans.
    """
    index, count = shard
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    mine = root / f".liverctl-shard-{index}-of-{count}.lock"
    fd = _try_lock(mine)
    if fd is None:
        raise InputError(
            f"shard {index}/{count} is already running in {root} (another process holds {mine.name}); "
            "wait for it to finish, or cancel it before running this shard again"
        )
    try:
        for other in root.iterdir():
            match = _LOCK.match(other.name)
            if match and int(match.group(2)) != count:
                probe = _try_lock(other)
                if probe is None:
                    raise InputError(
                        f"a run with --shard {match.group(1)}/{match.group(2)} is writing into {root}; shards of "
                        f"another split ({count}) would write the same scans: use the same N, or another -o"
                    )
                os.close(probe)
        yield
    finally:
        os.close(fd)


class SharedManifest(Manifest):
    """A :class:`~liverctl.io.manifest.Manifest` that the shards of a cohort update at once: in a
    folder that holds a cohort plan (:data:`PLAN_NAME`, written before any shard segments), each
    save takes a lock (``.liverctl-manifest.json.lock``), reads the manifest again, applies only
    this process's changes to it and writes the result. Elsewhere it is a plain manifest."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(folder)
        self._baseline = dict(self._files)

    def save(self) -> None:
        if not (self.folder / PLAN_NAME).is_file():
            super().save()
            return
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / f"{MANIFEST_NAME}.lock")):
            disk = Manifest(self.folder)  # what the other processes wrote meanwhile
            merged = dict(disk._files)
            for key, value in self._files.items():
                if key not in self._baseline or self._baseline[key] != value:
                    merged[key] = value
            for key in set(self._baseline) - set(self._files):
                merged.pop(key, None)
            self._files = merged
            self.commands = [*disk.commands, *(c for c in self.commands if c not in disk.commands)]
            super().save()
            self._baseline = dict(self._files)
