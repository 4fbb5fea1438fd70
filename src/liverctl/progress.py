"""Progress reporting without printing.

Library functions that run long accept ``progress: ProgressCallback | None``. They call
it as ``progress(description, completed, total)``; the CLI turns those calls into a rich
progress bar on stderr, a script may log them, and ``None`` means silence. The library
itself never prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
