"""`liverctl preprocess`: fingerprint, plan and preprocess a dataset for `train`; unlabelled scans
(`--unlabelled DIR --like PREP`) and a labelled : unlabelled split (`--labelled-fraction F`) for SD-Net."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.cli._common import cli_command, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app
from liverctl.errors import ConfigError


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
    parts.append(_norm_sentence(s))
    return " ".join(parts)


def _norm_sentence(s: dict) -> str:
    """The plan's intensity scheme in one sentence."""
    w = s["window"]
    if s["normalization"] == "ct":
        return (
            f"nnU-Net CT normalisation: clip to the foreground 0.5/99.5 percentiles ({w[0]:g}..{w[1]:g} HU), "
            f"z-score with the foreground mean {s['mean']:.2f} and std {s['std']:.2f}."
        )
    if s["normalization"] == "window":
        return f"The HU window mapped linearly to [0, 1] ({w[0]:g} -> 0, {w[1]:g} -> 1)."
    if s["normalization"] == "dataset":
        after = " (after the window)" if w else ""
        return f"Z-score with the dataset liver mean {s['mean']:.2f} and std {s['std']:.2f}{after}."
    return "Z-score per image (its own mean and std)."


def _unlabelled_summary(s: dict) -> str:
    w = s["window"]
    window = f"HU window {s['window_name']} ({w[0]:g}..{w[1]:g})" if w else "no HU window"
    if s["normalization"] == "dataset":
        norm = f"z-score with the labelled liver mean {s['mean']:.2f} and std {s['std']:.2f}"
    elif s["normalization"] in ("ct", "window"):
        norm = _norm_sentence(s).rstrip(".")
    else:
        norm = "z-score per image"
    return (
        f"Preprocessed {s['cases']} unlabelled scan(s) of {s['source']} ({s['layout']} layout) into {s['output']}: "
        f"{s['processed']} processed, {s['skipped']} already done, in {s['seconds']:.1f} s. No label read: body crop, "
        f"then the plan of {s['like']}: spacing {_fmt_spacing(s['target_spacing'])} mm (x, y, z), {window}, {norm}. "
        f"Train with: liverctl train {s['like']} --method sdnet --unlabelled {s['output']}"
    )


def _split_summary(s: dict) -> str:
    sp = s["split"]
    n_lab, n_unl = len(sp["labelled"]), len(sp["unlabelled"])
    text = (
        f"Split {n_lab + n_unl} case(s) of {sp['dataset']} by name (seed {sp['split_seed']}) before reading any "
        f"label: {n_lab} labelled, {n_unl} unlabelled (split.json). " + _summary(s["labelled"])
    )
    if s["unlabelled"] is None:
        return text + " No unlabelled share (100:0)."
    u = s["unlabelled"]
    return (
        text
        + f" Unlabelled share: {u['cases']} scan(s) into {u['output']} (body crop, labelled plan; labels not read). "
        f"Train with: liverctl train {s['labelled']['output']} --method sdnet --unlabelled {u['output']}"
    )


_LIKE_OPTIONS = (
    "--spacing",
    "--window",
    "--crop-margin",
    "--no-crop",
    "--normalization",
    "--image-order",
    "--liver-label",
)


def _check_modes(dataset, unlabelled, like, fraction, split_seed, defaults_kept: bool) -> None:
    """One line for a combination of options that does not go together (before any work)."""
    if (dataset is None) == (unlabelled is None):
        raise ConfigError("give a DATASET to preprocess, or --unlabelled DIR with --like PREP (not both)")
    if unlabelled is not None:
        if like is None:
            raise ConfigError(
                "--unlabelled DIR needs --like PREP: the labelled preprocess output whose plan it follows"
            )
        if fraction is not None:
            raise ConfigError("--labelled-fraction splits a labelled DATASET; it does not go with --unlabelled")
        if not defaults_kept:
            raise ConfigError(f"with --unlabelled the recipe comes from --like; drop {', '.join(_LIKE_OPTIONS)}")
    elif like is not None:
        raise ConfigError("--like goes with --unlabelled DIR")
    if split_seed is not None and fraction is None:
        raise ConfigError("--split-seed goes with --labelled-fraction")


UNLABELLED = typer.Option(
    None,
    "--unlabelled",
    metavar="DIR",
    help="Scans without labels (a folder of scans, or a dataset whose labels are ignored): body crop, then "
    "the --like plan. For train --method sdnet --unlabelled.",
)

LIKE = typer.Option(
    None, "--like", metavar="PREP", help="With --unlabelled: the labelled preprocess output whose plan to apply."
)

LABELLED_FRACTION = typer.Option(
    None,
    "--labelled-fraction",
    metavar="F",
    help="Keep the labels of this fraction of the cases (picked by name with --split-seed) and preprocess the "
    "rest as unlabelled scans: OUT/labelled, OUT/unlabelled. 0.2 = SD-Net's 20:80; 1 = 100:0.",
)

SPLIT_SEED = typer.Option(None, "--split-seed", metavar="N", help="Seed of the --labelled-fraction split (default 0).")


# Long by its signature: the Typer options with their help texts; the body checks which options go
# together and calls one library function (preprocess, preprocess_split or preprocess_unlabelled).
@app.command(
    "preprocess",
    help="Fingerprint, plan and preprocess a CT dataset (MSD, LiTS or images/+labels/) for train; "
    "--unlabelled DIR --like PREP: unlabelled scans with PREP's plan (no label read); "
    "--labelled-fraction F: split the dataset by name first (SD-Net's labelled:unlabelled ratios).",
)
@cli_command
def preprocess(
    dataset: Path | None = typer.Argument(
        None,
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
        metavar="dataset|image|ct|window",
        help="dataset: z-score with the dataset's liver mean/std; image: per image; ct: nnU-Net's CT scheme "
        "(clip to the foreground 0.5/99.5 percentiles, z-score with the foreground mean/std; He et al. 2021); "
        "window: the --window mapped to [0, 1].",
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
    unlabelled: Path | None = UNLABELLED,
    like: Path | None = LIKE,
    labelled_fraction: float | None = LABELLED_FRACTION,
    split_seed: int | None = SPLIT_SEED,
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
    from liverctl import preprocessing as pp

    defaults = (spacing, window, crop_margin, no_crop, normalization, image_order, liver_label or None)
    _check_modes(
        dataset,
        unlabelled,
        like,
        labelled_fraction,
        split_seed,
        defaults == ("128-median", "none", 60.0, False, "dataset", 1, None),
    )
    options = {
        "target_spacing": spacing,
        "window": window,
        "normalization": normalization,
        "crop": not no_crop,
        "crop_margin_mm": crop_margin,
        "image_order": image_order,
        "liver_labels": liver_label or None,
    }
    common = {"workers": workers, "overwrite": overwrite}
    with reporter(progress, quiet, verbose) as callback:
        if unlabelled is not None:
            result = pp.preprocess_unlabelled(unlabelled, output, like, progress=callback, **common)
            render = _unlabelled_summary
        elif labelled_fraction is not None:
            result = pp.preprocess_split(
                dataset,
                output,
                labelled_fraction=labelled_fraction,
                split_seed=split_seed or 0,
                progress=callback,
                **options,
                **common,
            )
            render = _split_summary
        else:
            result = pp.preprocess(dataset, output, progress=callback, **options, **common)
            render = _summary
    summary = result.summary()
    typer.echo(json.dumps(summary, indent=2) if as_json else render(summary))
