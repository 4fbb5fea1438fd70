"""Progress reporting without printing.

Library functions that run long accept ``progress: ProgressCallback | None``. They call
it as ``progress(description, completed, total)``; the CLI turns those calls into a rich
progress bar on stderr, a script may log them, and ``None`` means silence. The library
itself never prints.

:func:`report_values` passes the values of a finished step (an epoch's loss and validation
Dice) to a callback that wants them; :class:`LineLog` is a callback that writes one plain
line per step, as the CLI does when stderr is a log file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class ProgressCallback(Protocol):
    def __call__(self, description: str, completed: int, total: int | None) -> None: ...


def track(
    items: Iterable[T],
    description: str,
    progress: ProgressCallback | None,
    total: int | None = None,
) -> Iterator[T]:
    """Yield ``items``, reporting ``completed/total`` after each one to ``progress``."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if progress is not None:
        progress(description, 0, total)
    for done, item in enumerate(items, start=1):
        yield item
        if progress is not None:
            progress(description, done, total)


def report_values(progress: ProgressCallback | None, description: str, **values: float | int | str | None) -> None:
    """Tell ``progress`` the values of a finished step (an epoch's loss and validation Dice...).

    A callback that has a ``values(description, values)`` method (:class:`LineLog`, the CLI's
    bars) shows them; a plain callable is left alone, so every existing callback keeps working.
    """
    hook = getattr(progress, "values", None)
    if callable(hook):
        hook(description, dict(values))


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_values(values: dict[str, float | int | str | None]) -> str:
    """``loss 0.4123  val Dice 0.8012  lr 3e-04``: the values :func:`report_values` passes, for a log line."""
    names = {"loss": "loss", "val_dice": "val Dice", "dice": "Dice", "lr": "lr"}
    parts = []
    for key, value in values.items():
        if key in ("epoch", "epochs", "seconds") or value is None or value == "":
            continue
        label = names.get(key, key.replace("_", " "))
        if isinstance(value, float):
            text = f"{value:.3g}" if key == "lr" else f"{value:.4f}"
        else:
            text = str(value)
        parts.append(f"{label} {text}")
    return "  ".join(parts)


class LineLog:
    """A :class:`ProgressCallback` that writes one plain line per step, for a log file.

    Coarse steps (a scan, a case, a cell, a validation case...) get a line each; fine-grained
    ones (``"sliding window"``, ``"training"`` iterations, byte counts of downloads) a line at
    most every ``interval`` seconds and when they finish. :func:`report_values` steps (an
    epoch) get a line each, with their values and an ETA. ``write`` receives each line
    (without a newline).
    """

    FINE = ("sliding window", "training")

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "liverctl: ",
    ) -> None:
        self.write, self.interval, self.clock, self.prefix = write, interval, clock, prefix
        self._state: dict[str, list[float]] = {}  # description -> [start, start_done, last_time, last_done]
        self._born = clock()

    def _stamp(self) -> str:
        return f"{self.prefix}{time.strftime('%H:%M:%S')}"

    def __call__(self, description: str, completed: int, total: int | None) -> None:
        now = self.clock()
        state = self._state.get(description)
        if state is None or completed < state[3]:  # a new run of this step
            if completed == 0 or state is not None:
                self._state[description] = [now, completed, now, completed]
                return
            state = self._state[description] = [self._born, 0, self._born, 0]  # first heard of when done
        if completed == state[3]:
            return
        finished = total is not None and completed >= total
        fine = description in self.FINE or (total is not None and total > 10_000)
        if fine and not finished and now - state[2] < self.interval:
            return
        state[2], state[3] = now, completed
        elapsed = now - state[0]
        line = f"{self._stamp()} {description} {completed}"
        if total:
            line += f"/{total} ({100 * completed / total:.0f}%)"
        line += f"  elapsed {_duration(elapsed)}"
        done = completed - state[1]
        if total and not finished and done > 0 and elapsed > 0:
            line += f"  ETA {_duration((total - completed) * elapsed / done)}"
        self.write(line)

    def values(self, description: str, values: dict[str, float | int | str | None]) -> None:
        line = f"{self._stamp()} {description}"
        step, steps = values.get("epoch"), values.get("epochs")
        if step is not None:
            line += f" {step}/{steps}" if steps else f" {step}"
        text = format_values(values)
        if text:
            line += f"  {text}"
        seconds = values.get("seconds")
        if isinstance(seconds, int | float):
            line += f"  {float(seconds):.1f} s"
            if isinstance(step, int) and isinstance(steps, int) and steps > step:
                line += f"  ETA {_duration((steps - step) * float(seconds))}"
        self.write(line)
