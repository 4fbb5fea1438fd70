"""`liverctl crosstest`: train on each dataset, test on every other one (He et al. 2021's protocol)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from liverctl.cli._common import cli_command, parse_xyz, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app


def _table(result: Any, metric: str) -> str:
    """The S x T matrix as a plain-text table; the best source per target is starred."""
    names = result.names
    mat = result.matrices[metric]
    best = result.best[metric]
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"{metric} (rows: trained on, columns: tested on; * best source per target)"]
    lines.append("source \\ target".ljust(width) + "".join(n.rjust(width) for n in names))
    for i, s in enumerate(names):
        cells = []
        for j, t in enumerate(names):
            v = mat[i, j]
            text = "-" if i == j else ("n/a" if not math.isfinite(v) else f"{v:.4f}")
            if best.get(t) == s and i != j:
                text += "*"
            cells.append(text.rjust(width))
        lines.append(s.ljust(width) + "".join(cells))
    return "\n".join(lines)


# The options of the He et al. 2021 protocol and the recipes (issue 11).
METHOD = typer.Option(
    "he2021",
    "--method",
    metavar="NAME",
    help="Training recipe of every source model: he2021, di2in-an, hdenseunet or pipofan (as train --method).",
)
ARCH_KWARGS = typer.Option(
    None, "--arch-kwargs", metavar="JSON", help="Network arguments as JSON, e.g. '{\"n_scales\": 3}'."
)
DROPOUT = typer.Option(
    None,
    "--dropout",
    metavar="paper|none|P",
    help="Dropout after every conv (unet3d): paper (0.5, the he2021 default), none, or a rate in [0, 1).",
)
NORMALIZATION = typer.Option(
    None,
    "--normalization",
    metavar="ct|dataset|image|window",
    help="Intensity scheme of raw datasets (as preprocess): ct, nnU-Net's CT normalisation per dataset (default, "
    "as He et al. 2021; dataset when a --window is given).",
)
TARGET_NORMALIZATION = typer.Option(
    "target",
    "--target-normalization",
    metavar="target|source",
    help="target: each target dataset normalised with its own statistics (default: the paper normalises per "
    "dataset); source: with the source model's, as predict.",
)
SELECT_ON = typer.Option(
    None,
    "--select-on",
    metavar="final|inner:F",
    help="Exported weights of each source: final (default) or the best epoch on an inner split of its scans.",
)
TUMOUR_CLASS = typer.Option(
    False,
    "--tumour-class/--whole-liver",
    help="Train the tumour as its own class, or merged into the liver (default, as He et al. 2021).",
)
TARGET_CROP = typer.Option(
    "paper",
    "--target-crop",
    metavar="paper|none",
    help="paper: crop each target scan in z to its liver +- 60 mm, as He et al. 2021 (default); none: raw scans.",
)
BATCH = typer.Option(
    None, "--batch-size", metavar="N", help="Patches per iteration (default: the method's, 2; di2in-an 4)."
)
OPTIMIZER = typer.Option(
    None,
    "--optimizer",
    metavar="adam|sgd|rmsprop",
    help="Default: the recipe's (he2021 adam, di2in-an sgd, pipofan rmsprop).",
)


# Long by its signature: the Typer options with their help texts (issue 9).
@app.command("crosstest")
@cli_command
def crosstest(
    datasets: list[Path] = typer.Argument(
        ..., metavar="DATASET...", help="Two or more raw or preprocessed dataset folders."
    ),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Output folder (rerun in it to resume)."),
    epochs: int = typer.Option(400, "--epochs", metavar="N", help="Maximum epochs per source model."),
    iterations_per_epoch: int = typer.Option(250, "--iterations-per-epoch", metavar="N", help="Iterations per epoch."),
    method: str = METHOD,
    arch: str = typer.Option("unet3d", "--arch", metavar="NAME", help="Network architecture (see liverctl.models)."),
    arch_kwargs: str | None = ARCH_KWARGS,
    base_features: int | None = typer.Option(
        None, "--base-features", metavar="N", help="Features at level 0 (unet3d: 32)."
    ),
    n_levels: int | None = typer.Option(None, "--levels", metavar="N", help="Encoder levels (unet3d: 6)."),
    dropout: str | None = DROPOUT,
    tumour_class: bool = TUMOUR_CLASS,
    target_crop: str = TARGET_CROP,
    patch: str = typer.Option(
        "128,128,128", "--patch", metavar="X,Y,Z", help="Training patch in voxels along x, y, z (or one size)."
    ),
    batch_size: int | None = BATCH,
    lr: float | None = typer.Option(None, "--lr", metavar="LR", help="Learning rate (default 3e-4 for Adam)."),
    optimizer: str | None = OPTIMIZER,
    scheduler: str = typer.Option("plateau", "--scheduler", metavar="plateau|poly", help="plateau or poly."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without augmentation."),
    metrics: str = typer.Option(
        "dice", "--metrics", metavar="M,M", help="Comma-separated metrics (dice always included)."
    ),
    spacing: str = typer.Option(
        "128-median",
        "--spacing",
        metavar="RULE|X,Y,Z",
        help="Preprocessing spacing of raw datasets: 128-median, median or X,Y,Z mm.",
    ),
    window: str = typer.Option(
        "none", "--window", metavar="NAME|LO,HI", help="HU window preset of raw datasets (liver, abdomen, none...)."
    ),
    normalization: str = NORMALIZATION,
    target_normalization: str = TARGET_NORMALIZATION,
    select_on: str | None = SELECT_ON,
    liver_only: bool = typer.Option(
        False, "--liver-only", help="Accept datasets with different label sets (compared on the liver region)."
    ),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Training seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of tables."),
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    """Train one model per dataset on all its scans and test it on every other dataset.

    Writes OUTPUT/matrix_<metric>.csv and .png (best source per target boxed),
    OUTPUT/crosstest.json, the models (OUTPUT/models/<name>/) and one file per finished
    cell (OUTPUT/cells/); a rerun skips everything already done. Target scans are
    segmented from their raw files with the source model's spacing, normalised with their own
    dataset's statistics (--target-normalization source: the model's, as `liverctl predict`),
    after the paper's z-crop to their reference liver +- 60 mm (--target-crop none: whole scans).
    """
    from liverctl.cli.cmd_train import _arch_kwargs
    from liverctl.crosstest import crosstest as run_crosstest
    from liverctl.crosstest import parse_metrics
    from liverctl.training import TrainConfig

    wanted = parse_metrics(metrics)
    config = TrainConfig(
        method=method,
        architecture=arch,
        arch_kwargs=_arch_kwargs(arch_kwargs, base_features, n_levels, dropout),
        patch_size=parse_xyz(patch, "--patch", int, one=True)[::-1],  # TrainConfig: array order (z, y, x)
        batch_size=batch_size,
        epochs=epochs,
        iterations_per_epoch=iterations_per_epoch,
        optimizer=optimizer,
        lr=lr,
        scheduler=scheduler,
        augment=not no_augment,
        val_every=10 if select_on and select_on.startswith("inner") else 0,
        select_on=select_on,
        device=device,
        seed=seed,
    )
    from liverctl.preprocessing import parse_spacing

    with reporter(progress, quiet, verbose) as callback:
        result = run_crosstest(
            [str(d) for d in datasets],
            output,
            train_config=config,
            metrics=wanted,
            preprocess_options={
                "target_spacing": parse_spacing(spacing),
                "window": window,
                "normalization": normalization,
            },
            liver_only=liver_only,
            progress=callback,
            target_crop=target_crop,
            tumour_class=tumour_class,
            target_normalization=target_normalization,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    for m in wanted:
        typer.echo(_table(result, m))
        typer.echo("")
    typer.echo(
        f"cells computed {len(result.computed)}, reused {len(result.reused)}; "
        f"models trained {len(result.trained)}, reused {len(result.reused_models)}"
    )
    for key, path in result.files.items():
        typer.echo(f"{key}: {path}")
