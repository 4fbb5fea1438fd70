"""`liverctl phantom`: write synthetic CT phantoms in the MSD layout."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.cli import app
from liverctl.cli._common import cli_command, err, progress_bar

DOMAIN_HELP = "contrast, plain, tumour, recumbent, pneumoperitoneum or porcine."


def _triple(text: str | None, what: str, cast: type) -> tuple | None:
    from liverctl.errors import ConfigError

    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"{what} must be three comma-separated numbers, got {text!r}")
    return values


@app.command("phantom", help="Write synthetic abdominal CT phantoms with liver/tumour labels (MSD layout).")
@cli_command
def phantom(
    outdir: Path = typer.Argument(..., help="Dataset folder to create (imagesTr/, labelsTr/, dataset.json)."),
    domain: str = typer.Option("contrast", "--domain", "-d", help=f"Domain: {DOMAIN_HELP}"),
    count: int = typer.Option(10, "-n", "--count", help="Number of phantoms."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; the same seed gives identical files."),
    shape: str | None = typer.Option(None, "--shape", help="Array shape Z,Y,X (default 64,96,96)."),
    spacing: str | None = typer.Option(None, "--spacing", help="Voxel spacing X,Y,Z in mm (default 4,4,5)."),
    noise: float | None = typer.Option(None, "--noise", help="Noise SD in HU (default: random 10-18 per case)."),
    organs: bool = typer.Option(False, "--organs", help="Also label spleen, kidneys, stomach... (codes 3-11)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing phantom files."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the folder."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
) -> None:
    """Write COUNT phantoms of one domain to OUTDIR and print OUTDIR."""
    import json

    from liverctl.phantoms import PhantomConfig
    from liverctl.phantoms import phantom as make_dataset

    size = _triple(shape, "--shape", int) or PhantomConfig.shape
    mm = _triple(spacing, "--spacing", float) or PhantomConfig.spacing
    with progress_bar(progress) as callback:
        out = make_dataset(
            outdir,
            domain=domain,
            n=count,
            seed=seed,
            shape=size,
            spacing=mm,
            noise_hu=noise,
            include_organs=organs,
            overwrite=overwrite,
            progress=callback,
        )
    if json_out:
        meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
        summary = {
            "dataset": str(out),
            "domain": domain,
            "n": count,
            "seed": seed,
            "shape_zyx": list(size),
            "spacing_xyz": list(mm),
            "labels": meta["labels"],
            "cases": [item["image"] for item in meta["training"]],
        }
        typer.echo(json.dumps(summary, indent=2))
    else:
        err(f"wrote {count} {domain} phantoms")
        typer.echo(str(out))
