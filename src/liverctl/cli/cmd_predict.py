"""`liverctl predict`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("predict", help="Not available yet.")
def predict() -> None:
    not_available("predict", "issue 3")
