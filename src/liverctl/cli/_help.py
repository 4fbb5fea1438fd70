"""Help that tells the truth, and usage mistakes caught before they cost anything.

- Switches show no value: Typer 0.2x prints ``<bool>`` after every flag (inviting
  ``--tta true``), and ``{inputs}`` / ``<list[str]>`` for arguments. :func:`install` makes a
  flag show nothing and an argument show its metavar (``SCAN...``); every value option of
  liverctl names its value with a metavar (``FILE``, ``MM``, ``X,Y,Z``...), which a test checks.
- :func:`check_switch_values`: ``--tta true`` would make ``true`` a second scan; ``--json
  out.json`` on a command that has ``--json-file`` would make ``out.json`` an argument. Both are
  refused as one usage line before the command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0", "y", "n"})


def install() -> None:
    """Patch Typer's help rendering (a no-op on Typer versions that do not need it)."""
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - very old Typer
        return
    if getattr(TyperOption, "_liverctl_help", False):
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is not None:

        def display_type_rich(self: Any, ctx: Any) -> str | None:
            if (getattr(self, "is_flag", False) or getattr(self, "count", False)) and not self.metavar:
                return None
            return original(self, ctx)

        TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    if hasattr(TyperArgument, "_usage_display_name"):

        def _usage_display_name(self: Any) -> str:
            name = self.metavar or (self.name or "").upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")

        TyperArgument._usage_display_name = _usage_display_name  # type: ignore[method-assign]
    if hasattr(TyperArgument, "display_type_rich"):

        def argument_type(self: Any, ctx: Any) -> str | None:
            return None  # the metavar in the name column says it all

        TyperArgument.display_type_rich = argument_type  # type: ignore[method-assign]
    TyperOption._liverctl_help = True  # type: ignore[attr-defined]


def _flags(command: Any) -> dict[str, Any]:
    """Option string -> the switch (flag) it belongs to."""
    found = {}
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            for opt in [*param.opts, *param.secondary_opts]:
                found[opt] = param
    return found


def _options(command: Any) -> set[str]:
    return {opt for p in getattr(command, "params", []) for opt in getattr(p, "opts", [])}


def check_switch_values(command: Any, args: Sequence[str]) -> str | None:
    """A message if a switch of ``command`` is followed by what looks like its value."""
    flags = _flags(command)
    options = _options(command)
    for i, token in enumerate(args[:-1]):
        if token == "--":
            break
        if token not in flags:
            continue
        value = args[i + 1]
        if value.lower() in BOOL_WORDS:
            param = flags[token]
            off = next(iter(param.secondary_opts), None)
            alternative = f" (or {off})" if off else ""
            return f"{token} is a switch and takes no value, got {value!r}: write {token} alone{alternative}"
        file_option = f"{token}-file"
        if file_option in options and not value.startswith("-") and "." in value.rsplit("/", 1)[-1]:
            return (
                f"{token} is a switch that prints {token[2:].upper()} on stdout; "
                f"to write a file use {file_option} {value}"
            )
    return None
