"""The ``liverctl`` command line: a thin layer over the library.

Each subcommand lives in its own module, parses its options and calls the library
function of the same name. Command modules import the library inside the command body,
so that ``liverctl --help`` never imports torch.
"""

from __future__ import annotations

from liverctl.cli.app import app

# Each command module registers its @app.command when imported; the order here is the order in
# which `liverctl --help` lists them (the workflow's order).
from liverctl.cli import (  # noqa: F401
    cmd_preprocess,
    cmd_train,
    cmd_predict,
    cmd_gather,
    cmd_crosstest,
    cmd_demo,
    cmd_evaluate,
    cmd_postprocess,
    cmd_phantom,
    cmd_weights,
)

__all__ = ["app", "run"]


def run() -> None:
    """Console-script entry point."""
    app()
