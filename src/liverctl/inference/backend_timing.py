"""``--backend auto``'s choice: the fastest of torch and the installed runtimes, measured here.

Which backend is fastest depends on the CPU: on a 2-core AVX2 CPU, one 96^3 window of the
bundle's SegResNet took 2.19 s in torch channels-last, 2.59 s in OpenVINO and 3.48 s in ONNX
Runtime (``benchmarks/bench_backends.py``), while other measurements of the same kind on busier
or wider CPUs put OpenVINO first. So ``auto`` does not rank them by a fixed order: it times one
window of each candidate that passed the exactness test (after one warm-up run, which pays for
oneDNN's and the runtime's first-call set-up) and takes the fastest.

The timings are kept beside the compiled models,
``<compiled cache>/<weights sha256>/timings-<network digest>/timings-<window>.json``,
for this machine (CPU model, torch's thread count) and these versions; another machine, thread
count or version, or a file that cannot be read, is measured again (a few windows' time, once).
A timing can only change which backend runs, never a result beyond the exactness tolerance:
every candidate has passed the exactness test before it is timed.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["by_speed", "machine_id", "measured_seconds", "record_refused", "recorded_seconds", "timing_file"]


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


def recorded_seconds(shape: Sequence[int], folder: Path, versions: Mapping[str, str]) -> dict[str, float] | None:
    """The seconds per window :func:`measured_seconds` recorded in ``folder`` for this machine
    and these versions (``versions``: every backend that may be timed), or ``None``."""
    path = timing_file(folder, shape)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seconds = {str(k): float(v) for k, v in data["seconds"].items()}
        key = data["key"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(key, dict) or key.get("machine") != machine_id() or key.get("window") != [int(s) for s in shape]:
        return None
    if key.get("versions") != dict(sorted(versions.items())) or "torch" not in seconds:
        return None  # another backend installed, or another version of one
    refused = data.get("refused") or {}
    return {name: t for name, t in seconds.items() if name not in refused}


def record_refused(shape: Sequence[int], folder: Path, name: str, difference: float) -> None:
    """Note in the timings that runtime ``name`` failed the exactness test (by ``difference``),
    so that ``auto`` does not load it again to find that out."""
    path = timing_file(folder, shape)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.setdefault("refused", {})[name] = difference
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
) -> dict[str, float]:
    """Seconds per window of each candidate (``{backend: run}``, ``versions``: each one's
    version; a backend that could not be built is in ``versions`` and not in ``candidates``),
    measured (after one warm-up run each) and written to :func:`timing_file` in ``folder``."""
    key = {"machine": machine_id(), "versions": dict(sorted(versions.items())), "window": [int(s) for s in shape]}
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
