"""`liverctl train`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("train", help="Not available yet.")
def train() -> None:
    not_available("train", "issue 4")
