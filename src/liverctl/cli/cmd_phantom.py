"""`liverctl phantom`: write synthetic CT phantoms in the MSD layout."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.cli._common import cli_command, note, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app

DOMAIN_HELP = "contrast, plain, tumour, recumbent, pneumoperitoneum or porcine."


def _triple(text: str | None, what: str, cast: type) -> tuple | None:
    """Three comma-separated numbers X,Y,Z, as given (x first)."""
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
    outdir: Path = typer.Argument(
        ..., metavar="OUTDIR", help="Dataset folder to create (imagesTr/, labelsTr/, dataset.json)."
    ),
    domain: str = typer.Option("contrast", "--domain", "-d", metavar="DOMAIN", help=f"Domain: {DOMAIN_HELP}"),
    count: int = typer.Option(10, "-n", "--count", metavar="N", help="Number of phantoms."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Dataset seed; the same seed gives identical files."),
    shape: str | None = typer.Option(None, "--shape", metavar="X,Y,Z", help="Voxels along x, y, z (default 96,96,64)."),
    spacing: str | None = typer.Option(
        None, "--spacing", metavar="X,Y,Z", help="Voxel spacing along x, y, z in mm (default 4,4,5)."
    ),
    noise: float | None = typer.Option(
        None, "--noise", metavar="HU", help="Noise SD in HU (default: random 10-18 per case)."
    ),
    organs: bool = typer.Option(False, "--organs", help="Also label spleen, kidneys, stomach... (codes 3-11)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing phantom files."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the folder."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Write COUNT phantoms of one domain to OUTDIR and print OUTDIR."""
    import json

    from liverctl.phantoms import PhantomConfig
    from liverctl.phantoms import phantom as make_dataset

    xyz = _triple(shape, "--shape", int)
    size = tuple(xyz[::-1]) if xyz else PhantomConfig.shape  # the library takes the array shape (z, y, x)
    mm = _triple(spacing, "--spacing", float) or PhantomConfig.spacing
    with reporter(progress, quiet, verbose) as callback:
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
            "shape_xyz": list(size[::-1]),
            "spacing_xyz": list(mm),
            "labels": meta["labels"],
            "cases": [item["image"] for item in meta["training"]],
        }
        typer.echo(json.dumps(summary, indent=2))
    else:
        note(f"wrote {count} {domain} phantoms")
        typer.echo(str(out))
