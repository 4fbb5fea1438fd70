"""`liverctl postprocess`: connected components, hole filling and tumour-in-liver on label maps."""

from __future__ import annotations

from pathlib import Path

import typer

from liverctl.cli._common import cli_command, err, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app


@app.command(
    "postprocess",
    help=(
        "Clean label maps: keep the largest connected component(s) per label, drop small components, "
        "fill holes, remove tumour outside the liver. INPUT is a mask file or a folder of masks; "
        "OUTPUT a file or a folder (never an input). Prints each written path, or a JSON report with --json."
    ),
)
# Long by its signature: the Typer options with their help texts (issue 9).
@cli_command
def postprocess(
    input: Path = typer.Argument(
        ..., metavar="INPUT", help="Label map file (.nii.gz, .nii, .nrrd, .mha) or a folder of them."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="PATH", help="Output file, or folder (required for a folder input)."
    ),
    preset: str = typer.Option(
        "liver",
        "--preset",
        metavar="NAME",
        help="Rule set: 'liver' (1 = liver: largest component, holes filled; 2 = tumour: only inside the liver), "
        "'totalseg' (TotalSegmentator labels: liver 5, spleen 1, kidneys 2 and 3: largest each), 'none'.",
    ),
    labels: str | None = typer.Option(
        None,
        "--labels",
        metavar="LABELS",
        help="Comma-separated labels to process (default: the preset's), e.g. '1,5'.",
    ),
    keep: list[str] | None = typer.Option(
        None,
        "--keep",
        metavar="LABEL:N",
        help="LABEL:N keeps the N largest components of LABEL (N may be 'all'); repeatable.",
    ),
    connectivity: int = typer.Option(
        26, "--connectivity", "-c", metavar="6|18|26", help="Voxel connectivity: 6, 18 or 26."
    ),
    min_volume: float | None = typer.Option(
        None,
        "--min-volume",
        metavar="ML",
        help="Drop components smaller than this volume, in mL (every processed label).",
    ),
    no_fill_holes: bool = typer.Option(False, "--no-fill-holes", help="Do not fill holes."),
    holes_2d: bool = typer.Option(
        False, "--fill-holes-2d", help="Fill holes slice by slice (axial 2D) instead of in 3D."
    ),
    no_tumour_in_liver: bool = typer.Option(
        False, "--no-tumour-in-liver", help="Keep tumour voxels that lie outside the liver."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON report instead of the written paths."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl.errors import ConfigError
    from liverctl.postprocessing import PostprocessConfig, parse_keep
    from liverctl.postprocessing import postprocess as run_postprocess

    label_list = None
    if labels is not None:
        try:
            label_list = [int(v) for v in labels.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"--labels expects comma-separated integers, got {labels!r}") from None
    keep_map = dict(parse_keep(k) for k in keep or [])
    config = PostprocessConfig.preset(preset).with_options(
        labels=label_list,
        keep=keep_map,
        min_volume_ml=min_volume,
        fill_holes=False if no_fill_holes else ("2d" if holes_2d else "3d"),
        tumour_in_liver=not no_tumour_in_liver,
        connectivity=connectivity,
    )
    with reporter(progress, quiet, verbose) as callback:
        reports = run_postprocess(input, output, config=config, progress=callback)
    if json_output:
        import json

        typer.echo(json.dumps({"config": config.to_dict(), "cases": [r.to_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            if report.ok:
                typer.echo(report.output)
    failed = [r for r in reports if not r.ok]
    for report in failed:
        err(f"liverctl: error: {report.input}: {report.error}")
    if failed:
        err(f"liverctl: {len(failed)} of {len(reports)} file(s) failed")
        raise typer.Exit(1)
