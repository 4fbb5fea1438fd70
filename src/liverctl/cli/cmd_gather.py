"""`liverctl gather`: join the summaries of a cohort's shards into one summary.csv."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.cli._common import cli_command, err
from liverctl.cli.app import app


@app.command("gather")
@cli_command
def gather(
    folder: Path = typer.Argument(..., metavar="OUT", help="The output folder the shards of `predict --shard` share."),
    summary: Path | None = typer.Option(
        None, "--summary", metavar="FILE", help="Where to write the joined summary (default: OUT/summary.csv)."
    ),
) -> None:
    """Join the shards' summary.shard-I-of-N.csv into one summary.csv (one row per scan of the cohort) and list
    the scans no shard finished (on stderr; exit 1 if there are any)."""
    from liverctl.predict.cohort import gather as gather_shards

    result = gather_shards(folder, summary=summary)
    typer.echo(str(result.summary))
    for i in result.shards_without_summary:
        err(f"liverctl: note: shard {i} wrote no summary (it never ran, or was killed before its first scan)")
    unfinished = result.failed + result.missing
    for scan in unfinished:
        err(f"liverctl: unfinished: {scan}")
    total = len(result.finished) + len(unfinished)
    if unfinished:
        err(
            f"liverctl: {len(unfinished)} of {total} scan(s) not finished ({len(result.failed)} failed, "
            f"{len(result.missing)} missing); rerun their shards with --resume"
        )
        raise typer.Exit(1)
    err(f"liverctl: all {total} scan(s) finished")
