"""``--backend auto``'s choice: the fastest candidate measured here that passes the exactness test.

The candidates are torch (the reference), torch with channels-last weights (where the caller's
engine can run it), and the installed runtimes. Which is fastest depends on the CPU and the
network: on a 2-core AVX2 CPU, one 96^3 window of the bundle-size SegResNet took 2.53 s
channels-last, 2.82 s in OpenVINO and 3.12 s in torch, while a narrower trained network of the
same layout ran fastest in OpenVINO. So ``auto`` ranks them by a timing made here: one window of
each after a warm-up run (which pays for oneDNN's and the runtime's first-call set-up). The
fastest is then tested first (:mod:`liverctl.inference.exactness`); the first that passes runs.

The timings and each tested candidate's exactness are kept beside the compiled models,
``<compiled cache>/<weights sha256>/timings-<network digest>/timings-<window>.json``,
for this machine (CPU model, torch's thread count), these versions and this exactness test;
another machine, thread count, version or test, or a file that cannot be read, is measured
again (a few windows' time, once). A timing can only change which candidate runs, never a
result beyond the exactness tolerance.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from liverctl.inference.exactness import TOLERANCE

__all__ = [
    "by_speed",
    "machine_id",
    "measured_seconds",
    "record_exactness",
    "recorded_exactness",
    "recorded_seconds",
    "timing_file",
]


def machine_id() -> str:
    """The CPU model and the threads torch uses: what the timings are valid for."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; {torch.get_num_threads()} threads"


def timing_file(folder: Path, shape: Sequence[int]) -> Path:
    """Where the timings on windows of ``shape`` are kept in a network's cache ``folder``."""
    return folder / f"timings-{'x'.join(str(int(s)) for s in shape)}.json"


def _key(shape: Sequence[int], versions: Mapping[str, str], test: str) -> dict[str, Any]:
    """What the timings are valid for: this machine, these versions, this window, this test."""
    return {
        "machine": machine_id(),
        "versions": dict(sorted(versions.items())),
        "window": [int(s) for s in shape],
        "exactness_test": test,
    }


def recorded_seconds(
    shape: Sequence[int], folder: Path, versions: Mapping[str, str], test: str
) -> dict[str, float] | None:
    """The seconds per window :func:`measured_seconds` recorded in ``folder`` for this machine,
    these versions (``versions``: every backend that may be timed) and exactness ``test``
    (its name), less the candidates that failed the test; ``None`` when there are none."""
    path = timing_file(folder, shape)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seconds = {str(k): float(v) for k, v in data["seconds"].items()}
        key = data["key"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if key != _key(shape, versions, test) or "torch" not in seconds:
        return None  # another machine, backend version, window or test
    failed = {name for name, d in recorded_exactness(shape, folder).items() if not d <= TOLERANCE}
    return {name: t for name, t in seconds.items() if name not in failed}


def recorded_exactness(shape: Sequence[int], folder: Path) -> dict[str, float]:
    """The exactness (largest probability difference from torch fp32) recorded for each
    candidate that was tested, from the timings in ``folder``."""
    try:
        data = json.loads(timing_file(folder, shape).read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in (data.get("exactness") or {}).items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def record_exactness(shape: Sequence[int], folder: Path, name: str, difference: float) -> None:
    """Note in the timings candidate ``name``'s exactness (``inf``: it could not run), so that
    ``auto`` neither tests it again nor, when it failed, loads it again to find that out."""
    path = timing_file(folder, shape)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("exactness", {})[name] = difference
        _write(path, data)
    except (OSError, ValueError, AttributeError, TypeError):
        pass


def _write(path: Path, data: Mapping[str, Any]) -> None:
    from liverctl.io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2))


def measured_seconds(
    candidates: Mapping[str, Callable[[torch.Tensor], Any]],
    shape: Sequence[int],
    folder: Path,
    versions: Mapping[str, str],
    test: str,
) -> dict[str, float]:
    """Seconds per window of each candidate (``{backend: run}``, ``versions``: each one's
    version; a backend that could not be built is in ``versions`` and not in ``candidates``),
    measured (after one warm-up run each) and written to :func:`timing_file` in ``folder``."""
    key = _key(shape, versions, test)
    path = timing_file(folder, shape)
    x = torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(24))
    seconds = {}
    with torch.inference_mode():
        for name, run in candidates.items():
            run(x)  # warm-up
            t0 = time.perf_counter()
            run(x)
            seconds[name] = round(time.perf_counter() - t0, 4)
    _write(path, {"key": key, "seconds": seconds})
    return seconds


def by_speed(seconds: Mapping[str, float]) -> list[str]:
    """The backends, fewest seconds per window first (a tie goes to torch: no runtime needed)."""
    return sorted(seconds, key=lambda name: (seconds[name], name != "torch"))
