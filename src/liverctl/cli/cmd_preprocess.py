"""`liverctl preprocess`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("preprocess", help="Not available yet.")
def preprocess() -> None:
    not_available("preprocess", "issue 2")
