"""The ``liverctl`` Typer app: one-line usage errors, ``--version``; the commands register on it
from their own modules (:mod:`liverctl.cli`)."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # Typer 0.2x carries its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:  # older Typer uses click itself
    from click import exceptions as _click_errors

from liverctl import __version__
from liverctl.cli._help import check_switch_values, install

install()


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value) as one plain line on stderr, exit 2, as the
    commands' own errors are; Typer would draw a box of several lines."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(_click_errors, "NoArgsIsHelpError", ()) as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _click_errors.ClickException as exc:
            command = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else ""
            hint = f" (see 'liverctl{command} --help')" if isinstance(exc, _click_errors.UsageError) else ""
            sys.stderr.write(f"liverctl: error: {' '.join(exc.format_message().split())}{hint}\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("liverctl: interrupted\n")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            message = check_switch_values(command, rest)
            if message is not None:
                sub = type(ctx)(command, info_name=name, parent=ctx)
                raise _click_errors.UsageError(message, ctx=sub)
        return name, command, rest


app = typer.Typer(
    cls=_OneLineErrors,
    name="liverctl",
    help="Liver segmentation in CT: preprocess, train, predict, crosstest, evaluate, postprocess.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"liverctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Liver segmentation in CT."""
