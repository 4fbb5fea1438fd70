"""`liverctl crosstest`."""

from __future__ import annotations

from liverctl.cli import app
from liverctl.cli._common import not_available


@app.command("crosstest", help="Not available yet.")
def crosstest() -> None:
    not_available("crosstest", "issue 4")
