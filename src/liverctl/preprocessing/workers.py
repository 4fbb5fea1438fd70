"""The worker map of the dataset pipeline: one call per case, in processes, in order.

:func:`map_cases` runs a function over jobs with a pool of ``spawn``-ed processes (each with
its share of the CPU's threads for SimpleITK), re-issues the :class:`LiverctlWarning` s the
workers raised, reports progress, and turns a dead worker into a one-line error.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import SimpleITK as sitk

from liverctl.errors import InputError, LiverctlWarning
from liverctl.progress import ProgressCallback

__all__ = ["map_cases"]


def _init_worker(threads: int) -> None:
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, threads))


def _call_capturing(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, LiverctlWarning)]


def map_cases(
    func: Callable[..., Any],
    jobs: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    *,
    workers: int,
    progress: ProgressCallback | None,
    description: str,
) -> list[Any]:
    """Run ``func(*args, **kwargs)`` for each job, in order of the results, with ``workers`` processes."""
    total = len(jobs)
    results: list[Any] = [None] * total
    if progress is not None:
        progress(description, 0, total)

    def finish(i: int, value: tuple[Any, list[str]], done: int) -> None:
        results[i] = value[0]
        for message in value[1]:
            warnings.warn(message, LiverctlWarning, stacklevel=4)
        if progress is not None:
            progress(description, done, total)

    if workers <= 1 or total <= 1:
        for i, (args, kwargs) in enumerate(jobs):
            finish(i, _call_capturing(func, args, kwargs), i + 1)
        return results
    n = min(workers, total)
    threads = max(1, (os.cpu_count() or 1) // n)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_init_worker, initargs=(threads,))
    try:
        pending = {pool.submit(_call_capturing, func, args, kwargs): i for i, (args, kwargs) in enumerate(jobs)}
        done = 0
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in finished:
                i = pending.pop(fut)
                value = fut.result()  # re-raises a worker's LiverctlError
                done += 1
                finish(i, value, done)
    except BrokenProcessPool:
        raise InputError("a worker process died (out of memory?); retry with fewer --workers") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
