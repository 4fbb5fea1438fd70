"""`liverctl train`: train a network on `liverctl preprocess` output."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from liverctl.cli import app
from liverctl.cli._common import cli_command, progress_bar


def _patch(text: str) -> tuple[int, int, int]:
    from liverctl.errors import ConfigError

    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--patch must be Z,Y,X or one size, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ConfigError(f"--patch must be Z,Y,X or one size, got {text!r}")
    return tuple(values)  # type: ignore[return-value]


def _numbers(text: str | None, option: str, kind: type = float) -> list | None:
    from liverctl.errors import ConfigError

    if text is None:
        return None
    try:
        return [kind(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _arch_kwargs(text: str | None, base_features: int | None, levels: int | None) -> dict:
    from liverctl.errors import ConfigError

    kwargs: dict = {}
    if text:
        try:
            kwargs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--arch-kwargs is not valid JSON: {exc.msg}") from None
        if not isinstance(kwargs, dict):
            raise ConfigError("--arch-kwargs must be a JSON object, e.g. '{\"base_features\": 16}'")
    if base_features is not None:
        kwargs["base_features"] = base_features
    if levels is not None:
        kwargs["n_levels"] = levels
    return kwargs


@app.command(
    "train",
    help="Train a network (3D U-Net by default) on one or more `liverctl preprocess` outputs; "
    "prints the exported model path. --method picks the recipe: he2021 (3D U-Net, DCM, hybrid "
    "samplers), sdnet (semi-supervised V-Net + residual V-Net), di2in-an (adversarial DI2IN) or "
    "hdenseunet (staged 2D/3D H-DenseUNet).",
)
@cli_command
def train(
    datasets: list[Path] = typer.Argument(
        ..., help="Preprocessed dataset folder(s); several = hybrid training (dataset i = DCM branch i)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder: checkpoints, log, plot, exported model."),
    arch: str = typer.Option("unet3d", "--arch", help="Architecture name (liverctl.models.available_models())."),
    arch_kwargs: str = typer.Option(
        None, "--arch-kwargs", help="Network arguments as JSON, e.g. '{\"dropout\": 0.1}'."
    ),
    base_features: int = typer.Option(None, "--base-features", help="Features at level 0 (unet3d: 32)."),
    levels: int = typer.Option(None, "--levels", help="Number of U-Net levels (unet3d: 6)."),
    epochs: int = typer.Option(400, "--epochs", help="Maximum number of epochs."),
    iterations: int = typer.Option(250, "--iterations-per-epoch", help="Iterations per epoch."),
    patch: str = typer.Option("128,128,128", "--patch", help="Patch size Z,Y,X in voxels (or one size)."),
    batch_size: int = typer.Option(2, "--batch-size", help="Patches per iteration (per process with torchrun)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (+ ReduceLROnPlateau) or sgd (+ poly)."),
    scheduler: str = typer.Option(
        None, "--scheduler", help="plateau or poly (default: plateau for adam, poly for sgd)."
    ),
    lr: float = typer.Option(None, "--lr", help="Initial learning rate (default 3e-4 adam, 1e-2 sgd)."),
    folds: int = typer.Option(None, "--folds", help="k-fold cross-validation on sorted case names (2 or 5)."),
    fold: int = typer.Option(0, "--fold", help="Which fold to train (0-based)."),
    val_every: int = typer.Option(10, "--val-every", help="Validate every N epochs (0: never)."),
    sampler: str = typer.Option("dos", "--sampler", help="Hybrid training sampler: dos, rsd or rs."),
    dcm_from_level: int = typer.Option(None, "--dcm-from-level", help="GELN_DCM: dataset-wise encoder levels >= N."),
    loss: str = typer.Option("dice_ce", "--loss", help="dice_ce, or tal for datasets with different label sets."),
    init: Path = typer.Option(None, "--init", help="Start from these weights (.pt checkpoint or .safetensors)."),
    finetune_lr: float = typer.Option(None, "--finetune-lr", help="Learning rate with --init (METHODS: 1e-6)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Switch data augmentation off."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Also save last.pt every N iterations."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last.pt."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same weights on the CPU)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 autocast on CUDA), fp32, bf16, fp16."),
    workers: int = typer.Option(0, "--workers", "-j", help="Threads preparing batches ahead (0: in the loop)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of the model path."),
    method: str = typer.Option(
        "he2021", "--method", help="Training recipe: he2021, sdnet, di2in-an or hdenseunet (METHODS §1-§4)."
    ),
    unlabelled: list[Path] = typer.Option(
        None, "--unlabelled", help="sdnet: preprocessed folder used as unlabelled data (repeatable; labels ignored)."
    ),
    labelled_fraction: float = typer.Option(
        None, "--labelled-fraction", help="sdnet: keep this fraction of the cases labelled, the rest unlabelled."
    ),
    pretrain_iterations: int = typer.Option(
        0, "--pretrain-iterations", help="di2in-an: generator-only iterations before the adversarial phase."
    ),
    d_steps: int = typer.Option(10, "--d-steps", help="di2in-an: discriminator steps per generator step (k_D)."),
    d_batch_size: int = typer.Option(8, "--d-batch-size", help="di2in-an: patches per discriminator step."),
    adv_weight: float = typer.Option(0.01, "--adv-weight", help="di2in-an: weight lambda of the adversarial term."),
    disc_with_image: bool = typer.Option(
        False, "--disc-with-image", help="di2in-an: the discriminator sees the image too (paper: label map only)."
    ),
    stage_iterations: str = typer.Option(
        None, "--stage-iterations", help="hdenseunet: iterations of stage 1 (2D) and 2 (3D+HFF) as N1,N2."
    ),
    class_weights: str = typer.Option(
        None, "--class-weights", help="hdenseunet: cross-entropy class weights (default 0.78,0.65,8.57)."
    ),
) -> None:
    """Train; with --resume, only --device, --precision and --workers may change."""
    from liverctl.training import TrainConfig
    from liverctl.training import train as run_train

    config = TrainConfig(
        architecture=arch,
        arch_kwargs=_arch_kwargs(arch_kwargs, base_features, levels),
        patch_size=_patch(patch),
        batch_size=batch_size,
        epochs=epochs,
        iterations_per_epoch=iterations,
        optimizer=optimizer,
        scheduler=scheduler or ("poly" if optimizer == "sgd" else "plateau"),
        lr=lr,
        folds=folds,
        fold=fold,
        val_every=val_every,
        sampler=sampler,
        dcm_from_level=dcm_from_level,
        loss=loss,
        init_checkpoint=str(init) if init else None,
        finetune_lr=finetune_lr,
        augment=not no_augment,
        checkpoint_every=checkpoint_every,
        seed=seed,
        device=device,
        precision=precision,
        num_workers=workers,
        method=method,
        unlabelled=[str(u) for u in unlabelled or []],
        labelled_fraction=labelled_fraction,
        pretrain_iterations=pretrain_iterations,
        d_steps=d_steps,
        d_batch_size=d_batch_size,
        adv_weight=adv_weight,
        disc_with_image=disc_with_image,
        stage_iterations=_numbers(stage_iterations, "--stage-iterations", int),
        class_weights=_numbers(class_weights, "--class-weights"),
    )
    with progress_bar() as progress:
        result = run_train(datasets, output, config, progress=progress, resume=resume)
    if result.model_path is None:  # not rank 0 under torchrun
        return
    if as_json:
        summary = {
            "model": str(result.model_path),
            "weights_toml": str(result.toml_path),
            "output_dir": str(result.output_dir),
            "epochs": result.epochs,
            "iterations": result.iterations,
            "final_train_loss": result.train_losses[-1] if result.train_losses else None,
            "best_val_dice": result.best_metric,
            "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason,
            "skipped": [list(s) for s in result.skipped],
        }
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(str(result.model_path))
