"""A scan that runs the device out of memory is retried, not lost; and the key ``--resume`` compares.

:func:`segment_retrying` is how :func:`liverctl.predict.predict` segments each scan of a batch:
a ``torch.OutOfMemoryError`` (CUDA's; a large scan, or another process on the GPU) empties the
allocator's cache and runs the scan again with the weighted window sums on the CPU
(``accumulate_on="cpu"``: the network stays on the GPU, only the sums move, as nnUNetPredictor
falls back), and the report says so under ``inference.out_of_memory_fallback``. A second
out-of-memory error fails that scan alone (:class:`OutOfDeviceMemory`, recorded in its
``CaseResult``); the batch goes on. Python's ``MemoryError`` (host memory) is not retried.

:func:`runs_as` is what a model resolves ``device`` and ``precision`` to, for reports and for
the ``--resume`` key (:meth:`~liverctl.predict.options.PredictOptions.result_key`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from liverctl.errors import LiverctlError
from liverctl.predict.options import PredictOptions

__all__ = ["OutOfDeviceMemory", "result_key", "runs_as", "segment_retrying"]


class OutOfDeviceMemory(LiverctlError):
    """The device ran out of memory for a scan, also with the window sums on the CPU."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def segment_retrying(net: Any, image: Any, options: PredictOptions, **kwargs: Any) -> Any:
    """``net.segment(image, options, **kwargs)``, retried once with the sums on the CPU after a
    device out-of-memory error (module docs). Raises :class:`OutOfDeviceMemory` if the retry
    runs out of memory too."""
    from liverctl.device import OutOfMemoryError, empty_cache

    device = getattr(net, "device", None)
    first = None
    try:
        return net.segment(image, options, **kwargs)
    except OutOfMemoryError as exc:
        first = _first_line(exc)  # leave the except block: its frames (and tensors) are freed
    if device is not None:
        empty_cache(device)
    try:
        seg = net.segment(image, dataclasses.replace(options, accumulate_on="cpu"), **kwargs)
    except OutOfMemoryError as exc:
        message = f"out of device memory, also with the window sums on the CPU: {_first_line(exc)}"
    else:
        seg.report["inference"]["out_of_memory_fallback"] = {"retried_with": "accumulate_on=cpu", "error": first}
        return seg
    if device is not None:
        empty_cache(device)
    raise OutOfDeviceMemory(message)


def runs_as(net: Any, options: PredictOptions) -> dict[str, str]:
    """The resolved ``device`` and ``precision`` of ``net`` for ``options`` (``{}`` for a model
    object that does not say)."""
    method = getattr(net, "runs_as", None)
    return method(options) if method is not None else {}


def result_key(net: Any, options: PredictOptions) -> dict[str, Any]:
    """The ``options`` a report records and ``--resume`` compares: the options that change a
    mask, with the precision and device they resolve to on ``net``."""
    return options.result_key(runs_as(net, options))
