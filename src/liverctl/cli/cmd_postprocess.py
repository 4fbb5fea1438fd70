"""`liverctl postprocess`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("postprocess", help="Not available yet.")
def postprocess() -> None:
    not_available("postprocess", "issue 2")
