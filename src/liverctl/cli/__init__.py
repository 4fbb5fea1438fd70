"""The ``liverctl`` command line: a thin layer over the library.

Each subcommand lives in its own module, parses its options and calls the library
function of the same name. Command modules import the library inside the command body,
so that ``liverctl --help`` never imports torch.
"""

from __future__ import annotations

import typer

from liverctl import __version__

app = typer.Typer(
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


def _register() -> None:
    # Imported here, in this order, so that `liverctl --help` lists commands in workflow order.
    from liverctl.cli import commands  # noqa: F401


_register()


def run() -> None:
    """Console-script entry point."""
    app()
