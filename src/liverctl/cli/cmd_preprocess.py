"""`liverctl preprocess`: fingerprint, plan and preprocess a dataset for `train`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.cli import app
from liverctl.cli._common import cli_command, progress_option, quiet_option, reporter, verbose_option


def _fmt_spacing(values: list[float]) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


def _summary(s: dict) -> str:
    parts = [
        f"Preprocessed {s['cases']} case(s) of dataset {s['dataset']} ({s['layout']} layout) into {s['output']}: "
        f"{s['processed']} processed, {s['skipped']} already done, in {s['seconds']:.1f} s.",
        f"Target spacing {_fmt_spacing(s['target_spacing'])} mm (x, y, z; rule {s['spacing_rule']});",
        f"median preprocessed shape {' x '.join(str(int(v)) for v in s['median_shape'][::-1])} (x, y, z).",
    ]
    crop = s["crop_margin_mm"]
    parts.append(f"Liver z-crop with a {crop:g} mm margin." if crop is not None else "No z-crop.")
    w = s["window"]
    parts.append(f"HU window {s['window_name']} ({w[0]:g}..{w[1]:g})." if w else "No HU window.")
    li = s["liver_intensity"]
    if li:
        parts.append(
            f"Liver HU over the dataset: mean {li['mean']:.1f}, std {li['std']:.1f}, "
            f"p0.5 {li['p0.5']:.1f}, p99.5 {li['p99.5']:.1f} ({li['n_voxels']} voxels)."
        )
    if s["normalization"] == "dataset":
        after = " (after the window)" if w else ""
        parts.append(f"Z-score with the dataset liver mean {s['mean']:.2f} and std {s['std']:.2f}{after}.")
    else:
        parts.append("Z-score per image (its own mean and std).")
    return " ".join(parts)


@app.command(
    "preprocess", help="Fingerprint, plan and preprocess a CT dataset (MSD, LiTS or images/+labels/) for train."
)
@cli_command
def preprocess(
    dataset: Path = typer.Argument(
        ...,
        metavar="DATASET",
        help="Dataset folder: imagesTr/+labelsTr/ (MSD, nnU-Net), LiTS volume-N/segmentation-N, or images/+labels/.",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", metavar="DIR", help="Output folder (what `liverctl train` reads)."
    ),
    spacing: str = typer.Option(
        "128-median",
        "--spacing",
        metavar="RULE|X,Y,Z",
        help="Target spacing: 128-median (METHODS.md §1), median, or X,Y,Z in mm.",
    ),
    window: str = typer.Option(
        "none",
        "--window",
        metavar="NAME|LO,HI",
        help="HU window: liver (-200..250), abdomen/sdnet (0..400), pipofan (-200..200), none, or LO,HI.",
    ),
    crop_margin: float = typer.Option(
        60.0, "--crop-margin", metavar="MM", help="Liver z-crop margin in mm on each side."
    ),
    no_crop: bool = typer.Option(False, "--no-crop", help="Keep the whole z range (no liver z-crop)."),
    normalization: str = typer.Option(
        "dataset",
        "--normalization",
        metavar="dataset|image",
        help="dataset: z-score with the dataset's liver mean/std; image: per image.",
    ),
    image_order: int = typer.Option(
        1, "--image-order", metavar="1|3", help="Image interpolation: 1 linear, 3 cubic B-spline."
    ),
    liver_label: list[int] = typer.Option(
        None,
        "--liver-label",
        metavar="LABEL",
        help="Label value(s) forming the liver region (repeatable). Default: every label >= 1.",
    ),
    workers: int = typer.Option(
        1, "--workers", "-j", min=1, metavar="N", help="Cases processed in parallel (processes)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an output folder made with another plan."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Preprocess a dataset: fingerprint.json, plan.json, cases.json, images/*.npy, labels/*.npy."""
    from liverctl.preprocessing import preprocess as run_preprocess

    with reporter(progress, quiet, verbose) as callback:
        result = run_preprocess(
            dataset,
            output,
            target_spacing=spacing,
            window=window,
            normalization=normalization,
            crop=not no_crop,
            crop_margin_mm=crop_margin,
            image_order=image_order,
            liver_labels=liver_label or None,
            workers=workers,
            overwrite=overwrite,
            progress=callback,
        )
    summary = result.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(_summary(summary))
