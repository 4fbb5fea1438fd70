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


def printable(text: str) -> str:
    """``text`` with control characters (NUL, ESC, newlines...) shown as escapes (``\\x00``), so that
    a path or name taken from the user never reaches the terminal raw or breaks the one line."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def err(message: str) -> None:
    """Print one line to stderr (control characters escaped: :func:`printable`)."""
    sys.stderr.write(printable(message.rstrip("\n")) + "\n")
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


VERBOSITY = {"level": 1}
"""0: ``--quiet`` (errors and warnings only), 1: normal, 2: ``--verbose``."""


def progress_option() -> Any:
    """``--progress/--no-progress``, the same on every command."""
    return typer.Option(
        None,
        "--progress/--no-progress",
        help="Progress on stderr: bars on a terminal, one plain line per step in a log file. "
        "Default: on (off with --quiet or LIVERCTL_NO_PROGRESS=1).",
    )


def quiet_option() -> Any:
    return typer.Option(
        False, "-q", "--quiet", help="Only errors and warnings on stderr: no progress, notes or citation."
    )


def verbose_option() -> Any:
    return typer.Option(False, "-v", "--verbose", help="More on stderr: progress lines every 5 s in a log file.")


def set_verbosity(quiet: bool = False, verbose: bool = False) -> int:
    """Record ``-q`` / ``-v`` for :func:`note`; both at once is a usage error."""
    if quiet and verbose:
        from liverctl.errors import ConfigError

        raise ConfigError("give --quiet or --verbose, not both")
    VERBOSITY["level"] = 0 if quiet else 2 if verbose else 1
    return VERBOSITY["level"]


def note(message: str) -> None:
    """A note on stderr (``liverctl: note: ...``), unless ``--quiet``."""
    if VERBOSITY["level"] >= 1:
        err(f"liverctl: note: {message}")


@contextlib.contextmanager
def reporter(
    progress: bool | None = None, quiet: bool = False, verbose: bool = False
) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """The :class:`liverctl.progress.ProgressCallback` of a command, after ``--progress/--no-progress``,
    ``-q`` and ``-v``: rich bars on a terminal (with the latest loss and Dice), one plain
    timestamped line per step when stderr is a file or a pipe (:class:`liverctl.progress.LineLog`),
    ``None`` when progress is off (``--no-progress``, ``--quiet``, ``LIVERCTL_NO_PROGRESS=1``)."""
    level = set_verbosity(quiet, verbose)
    enabled = progress if progress is not None else level > 0 and not os.environ.get("LIVERCTL_NO_PROGRESS")
    if not enabled:
        yield None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        from liverctl.progress import LineLog

        yield LineLog(err, interval=5.0 if level >= 2 else 60.0)
        return
    with _bars(console) as callback:
        yield callback


@contextlib.contextmanager
def _bars(console: Any) -> Iterator[Callable[[str, int, int | None], None]]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from liverctl.progress import format_values

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    class Bars:
        def __call__(self, description: str, completed: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total, info="")
            progress.update(tasks[description], completed=completed, total=total)

        def values(self, description: str, values: dict[str, Any]) -> None:
            info = format_values(values)
            target = "training" if "training" in tasks else description
            if target not in tasks:
                tasks[target] = progress.add_task(target, total=values.get("epochs"), info="")
            update: dict[str, Any] = {"info": info}
            if target == description and values.get("epoch") is not None:
                update["completed"] = values["epoch"]
            progress.update(tasks[target], **update)

    with progress:
        yield Bars()


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """Kept for callers of the earlier name: :func:`reporter` with ``--progress`` as ``enabled``
    (``LIVERCTL_NO_PROGRESS`` still switches it off)."""
    with reporter(None if enabled else False) as callback:
        yield callback


def not_available(command: str, issue: str) -> None:
    err(f"liverctl: error: '{command}' is not available yet in this version of liverctl ({issue})")
    raise typer.Exit(2)


def parse_xyz(text: str, option: str, cast: type = int, *, one: bool = False) -> tuple:
    """``X,Y,Z`` (x first, as :attr:`liverctl.io.Geometry.spacing`) -> a tuple in that order;
    ``one``: a single value stands for all three. The same order on every command."""
    from liverctl.errors import ConfigError

    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        values = ()
    if one and len(values) == 1:
        values = values * 3
    if len(values) != 3:
        also = " (or one value for all three)" if one else ""
        raise ConfigError(f"{option} must be three comma-separated numbers X,Y,Z{also}, got {text!r}")
    return values
