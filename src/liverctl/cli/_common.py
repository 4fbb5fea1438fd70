"""What every subcommand shares: one-line errors, warnings and progress on stderr.

Kept free of heavy imports (no torch, no SimpleITK) so that ``liverctl --help`` and the
commands that do not need a network start fast.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def err(message: str) -> None:
    """Print one line to stderr."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err(f"liverctl: warning: {' '.join(str(message).split())}")


def cli_command(func: F) -> F:
    """Wrap a command body: expected errors become one line on stderr and a non-zero exit.

    ``LiverctlError`` -> its message, exit code 2 (or the error's own); a missing or
    unwritable path (``OSError``) -> one line, exit 2; Ctrl-C -> exit 130; anything else is
    a bug and is reported as one line too, with ``LIVERCTL_DEBUG=1`` to see the traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from liverctl.errors import LiverctlError

        warnings.showwarning = _show_warning
        if not os.environ.get("LIVERCTL_DEBUG"):
            # huggingface_hub logs every retry of an unreachable Hub (read when it is imported);
            # liverctl reports the outcome in one line
            os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except LiverctlError as exc:
            err(f"liverctl: error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err("liverctl: interrupted")
            raise typer.Exit(130) from None
        except OSError as exc:
            if os.environ.get("LIVERCTL_DEBUG"):
                raise
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            err(f"liverctl: error: {exc.strerror or exc}{where}")
            raise typer.Exit(2) from None
        except MemoryError:
            err("liverctl: error: out of memory")
            raise typer.Exit(2) from None
        except Exception as exc:
            if os.environ.get("LIVERCTL_DEBUG"):
                raise
            msg = " ".join(str(exc).split()) or type(exc).__name__
            err(f"liverctl: internal error: {type(exc).__name__}: {msg} (set LIVERCTL_DEBUG=1 for a traceback)")
            raise typer.Exit(3) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """A :class:`liverctl.progress.ProgressCallback` that draws a rich progress bar on stderr.

    Disabled (yields ``None``) when ``enabled`` is false or ``LIVERCTL_NO_PROGRESS`` is set.
    One bar per distinct description.
    """
    if not enabled or os.environ.get("LIVERCTL_NO_PROGRESS"):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    tasks: dict[str, Any] = {}

    def callback(description: str, completed: int, total: int | None) -> None:
        if description not in tasks:
            tasks[description] = progress.add_task(description, total=total)
        progress.update(tasks[description], completed=completed, total=total)

    with progress:
        yield callback


def not_available(command: str, issue: str) -> None:
    err(f"liverctl: error: '{command}' is not available yet in this version of liverctl ({issue})")
    raise typer.Exit(2)
