"""Registers every subcommand on the app (one module per command)."""

from __future__ import annotations

from liverctl.cli import (  # noqa: F401  (imported for their @app.command side effect)
    cmd_preprocess,
    cmd_train,
    cmd_predict,
    cmd_crosstest,
    cmd_demo,
    cmd_evaluate,
    cmd_postprocess,
    cmd_phantom,
    cmd_weights,
)
