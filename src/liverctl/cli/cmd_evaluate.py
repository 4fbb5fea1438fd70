"""`liverctl evaluate`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("evaluate", help="Not available yet.")
def evaluate() -> None:
    not_available("evaluate", "issue 2")
