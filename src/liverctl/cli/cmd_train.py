"""`liverctl train`: train a network on `liverctl preprocess` output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from liverctl.cli._common import cli_command, parse_xyz, progress_option, quiet_option, reporter, verbose_option
from liverctl.cli.app import app


def _patch(text: str) -> tuple[int, int, int]:
    """``--patch X,Y,Z`` (or one size) -> the patch in array order (z, y, x), as TrainConfig keeps it."""
    return tuple(parse_xyz(text, "--patch", int, one=True)[::-1])  # type: ignore[return-value]


def _numbers(text: str | None, option: str, kind: type = float) -> list | None:
    from liverctl.errors import ConfigError

    if text is None:
        return None
    try:
        return [kind(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated numbers, got {text!r}") from None


def _arch_kwargs(text: str | None, base_features: int | None, levels: int | None, dropout: str | None = None) -> dict:
    from liverctl.errors import ConfigError
    from liverctl.training.config import parse_dropout

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
    rate = parse_dropout(dropout)
    if rate is not None:
        kwargs["dropout"] = rate
    return kwargs


NETWORK, SCHEDULE, DATA, RUN, RECIPES = "Network", "Schedule", "Data", "Run", "Recipes (--method)"


def _opt(default, *names: str, metavar: str | None = None, panel: str = RUN, help: str) -> Any:
    return typer.Option(default, *names, metavar=metavar, rich_help_panel=panel, help=help)


# Options by group (the help shows one panel per group); the command body passes each group
# to one helper below, which returns its TrainConfig fields.
ARCH = _opt(
    "unet3d", "--arch", metavar="NAME", panel=NETWORK, help="Architecture (liverctl.models.available_models())."
)
ARCH_KWARGS = _opt(
    None, "--arch-kwargs", metavar="JSON", panel=NETWORK, help="Network arguments as JSON, e.g. '{\"dropout\": 0.1}'."
)
BASE_FEATURES = _opt(None, "--base-features", metavar="N", panel=NETWORK, help="Features at level 0 (unet3d: 32).")
LEVELS = _opt(None, "--levels", metavar="N", panel=NETWORK, help="Number of U-Net levels (unet3d: 6).")
DCM_FROM_LEVEL = _opt(
    None, "--dcm-from-level", metavar="N", panel=NETWORK, help="GELN_DCM: dataset-wise encoder levels >= N."
)
DROPOUT = _opt(
    None,
    "--dropout",
    metavar="paper|none|P",
    panel=NETWORK,
    help="Dropout after every conv (unet3d): paper (0.5; the he2021 default), none, or a rate in [0, 1).",
)
INIT = _opt(None, "--init", metavar="FILE", panel=NETWORK, help="Start from these weights (.pt or .safetensors).")
EPOCHS = _opt(
    None, "--epochs", metavar="N", panel=SCHEDULE, help="Maximum number of epochs (default 400; di2in-an 300)."
)
ITERATIONS = _opt(250, "--iterations-per-epoch", metavar="N", panel=SCHEDULE, help="Iterations per epoch.")
PATCH = _opt(
    None,
    "--patch",
    metavar="X,Y,Z",
    panel=SCHEDULE,
    help="Patch size in voxels along x, y, z (or one size); default the method's paper: 128,128,128; "
    "hdenseunet 224,224,12; pipofan 224,224,1 (one slice seen with its two neighbours).",
)
BATCH = _opt(
    None,
    "--batch-size",
    metavar="N",
    panel=SCHEDULE,
    help="Patches per iteration (per process with torchrun); default: the method's (di2in-an 4, else 2).",
)
OPTIMIZER = _opt(
    None,
    "--optimizer",
    metavar="adam|sgd|rmsprop",
    panel=SCHEDULE,
    help="adam (+ plateau, default) or sgd (+ poly); pipofan: rmsprop (default), adam or sgd, with its step decay; "
    "di2in-an: sgd (default) or adam, lr / 10 half-way through pre-training.",
)
SCHEDULER = _opt(
    None, "--scheduler", metavar="plateau|poly", panel=SCHEDULE, help="Default: plateau for adam, poly for sgd."
)
LR = _opt(
    None,
    "--lr",
    metavar="LR",
    panel=SCHEDULE,
    help="Initial learning rate (default 3e-4 adam, 1e-2 sgd; the recipe's).",
)
FINETUNE_LR = _opt(None, "--finetune-lr", metavar="LR", panel=SCHEDULE, help="Learning rate with --init (1e-6).")
VAL_EVERY = _opt(10, "--val-every", metavar="N", panel=SCHEDULE, help="Validate every N epochs (0: never).")
CHECKPOINT_EVERY = _opt(
    50, "--checkpoint-every", metavar="N", panel=SCHEDULE, help="Also save last.pt every N iterations."
)
FOLDS = _opt(None, "--folds", metavar="K", panel=DATA, help="k-fold cross-validation on sorted case names (2 or 5).")
FOLD = _opt(0, "--fold", metavar="I", panel=DATA, help="Which fold to train (0-based).")
SAMPLER = _opt("dos", "--sampler", metavar="dos|rsd|rs", panel=DATA, help="Hybrid training sampler.")
LOSS = _opt("dice_ce", "--loss", metavar="dice_ce|tal", panel=DATA, help="tal: datasets with different label sets.")
NO_AUGMENT = _opt(
    None,
    "--augment/--no-augment",
    panel=DATA,
    help="Data augmentation on or off (default: on; off for di2in-an, whose paper states none).",
)
FOREGROUND = _opt(
    None,
    "--foreground-fraction",
    metavar="F",
    panel=DATA,
    help="Fraction of each batch centred on a foreground voxel (default 1/3; di2in-an 0; pipofan 1: slices "
    "that contain the organ).",
)
TUMOUR_CLASS = _opt(
    None,
    "--tumour-class/--whole-liver",
    panel=DATA,
    help="Train the tumour as its own class, or merged into the liver (default for he2021 and sdnet, as their papers).",
)
WORKERS = _opt(0, "--workers", "-j", metavar="N", panel=DATA, help="Threads preparing batches ahead (0: in the loop).")
RESUME = _opt(False, "--resume", help="Continue the run in --output from its last.pt.")
SEED = _opt(0, "--seed", metavar="N", help="Random seed (same seed, same weights on the CPU).")
DEVICE = _opt("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.")
PRECISION = _opt("auto", "--precision", metavar="PRECISION", help="auto (fp16 autocast on CUDA), fp32, bf16, fp16.")
AS_JSON = _opt(False, "--json", help="Print a JSON summary instead of the model path.")
METHOD = _opt(
    "he2021",
    "--method",
    metavar="NAME",
    panel=RECIPES,
    help="Training recipe: he2021, sdnet, di2in-an, hdenseunet or pipofan.",
)
UNLABELLED = _opt(
    None,
    "--unlabelled",
    metavar="DIR",
    panel=RECIPES,
    help="sdnet: preprocessed folder of unlabelled data (repeatable): preprocess --unlabelled, or the "
    "unlabelled/ of preprocess --labelled-fraction.",
)
PRETRAIN = _opt(
    None,
    "--pretrain-iterations",
    metavar="N",
    panel=RECIPES,
    help="di2in-an: generator-only iterations first (default: 2/3 of the run, the paper's 200 of 300 passes); "
    "hdenseunet: the 2D warm-up without UNet connections (default: half of stage 1; 0: none).",
)
LR_STEP = _opt(
    None,
    "--lr-step",
    metavar="N",
    panel=RECIPES,
    help="di2in-an: lr / 10 N iterations into each phase (default: half the pre-training); sdnet: lr / 10 every N "
    "iterations (200).",
)
D_STEPS = _opt(10, "--d-steps", metavar="N", panel=RECIPES, help="di2in-an: discriminator steps per generator step.")
D_BATCH = _opt(8, "--d-batch-size", metavar="N", panel=RECIPES, help="di2in-an: patches per discriminator step.")
ADV_WEIGHT = _opt(0.01, "--adv-weight", metavar="W", panel=RECIPES, help="di2in-an: weight of the adversarial term.")
DISC_WITH_IMAGE = _opt(
    False,
    "--disc-with-image",
    panel=RECIPES,
    help="di2in-an: the discriminator sees the image too (paper: labels only).",
)
STAGE_ITERATIONS = _opt(
    None,
    "--stage-iterations",
    metavar="N1,N2",
    panel=RECIPES,
    help="hdenseunet: iterations of stage 1 and stage 2; pipofan: of phase 1 and phase 2 (adding up to the run).",
)
CLASS_WEIGHTS = _opt(
    None,
    "--class-weights",
    metavar="W,W,W",
    panel=RECIPES,
    help="hdenseunet / pipofan: cross-entropy class weights (hdenseunet 0.78,0.65,8.57; pipofan 0.2,1.2).",
)
COARSE_ITERATIONS = _opt(
    0,
    "--coarse-iterations",
    metavar="N",
    panel=RECIPES,
    help="hdenseunet: train the coarse liver-ROI network N iterations first; its box crops the fine stages (0: none).",
)
ENCODER_INIT = _opt(
    None,
    "--encoder-init",
    metavar="imagenet|PATH",
    panel=RECIPES,
    help="hdenseunet: 2D encoder from torchvision's ImageNet DenseNet-161 file (imagenet: the torch hub cache).",
)
SELECT_ON = _opt(
    None,
    "--select-on",
    metavar="final|inner:F|iteration:N",
    panel=SCHEDULE,
    help="Which weights are exported: final (default; sdnet: iteration:1000, the paper's), the best epoch on an "
    "inner split of a fraction F of the training cases, or the weights after iteration N. The held-out fold "
    "never chooses: its Dice is only logged.",
)
REMOVED_LABELLED_FRACTION = typer.Option(None, "--labelled-fraction", hidden=True)  # removed; see _removed()
DICE_WEIGHT = _opt(
    0.0, "--dice-weight", metavar="W", panel=RECIPES, help="pipofan: add W x soft Dice to the TAL (paper: 0)."
)


def _removed(labelled_fraction: float | None) -> None:
    """Options that were removed, refused with a pointer to what replaced them."""
    from liverctl.errors import ConfigError

    if labelled_fraction is not None:
        raise ConfigError(
            "train --labelled-fraction was removed (it split cases after label-derived preprocessing): split "
            "first with `liverctl preprocess DATASET -o OUT --labelled-fraction F`, then "
            "`liverctl train OUT/labelled --unlabelled OUT/unlabelled --method sdnet`"
        )


def _network(arch: str, arch_kwargs: str | None, base_features, levels, dropout, dcm_from_level, init) -> dict:
    return {
        "architecture": arch,
        "arch_kwargs": _arch_kwargs(arch_kwargs, base_features, levels, dropout),
        "dcm_from_level": dcm_from_level,
        "init_checkpoint": str(init) if init else None,
    }


def _schedule(epochs, iterations, patch, batch_size, optimizer, scheduler, lr, finetune_lr, val_every, every) -> dict:
    return {
        "epochs": epochs,
        "iterations_per_epoch": iterations,
        "patch_size": _patch(patch) if patch is not None else None,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "scheduler": scheduler or ("poly" if optimizer == "sgd" else "plateau"),
        "lr": lr,
        "finetune_lr": finetune_lr,
        "val_every": val_every,
        "checkpoint_every": every,
    }


def _data(folds, fold, sampler, loss, augment, tumour_class, workers, seed, device, precision) -> dict:
    return {
        "tumour_class": tumour_class,
        "folds": folds,
        "fold": fold,
        "sampler": sampler,
        "loss": loss,
        "augment": augment,
        "num_workers": workers,
        "seed": seed,
        "device": device,
        "precision": precision,
    }


def _recipe(method, unlabelled, pretrain, lr_step, d_steps, d_batch, adv, with_image, stages, weights) -> dict:
    return {
        "lr_step": lr_step,
        "method": method,
        "unlabelled": [str(u) for u in unlabelled or []],
        "pretrain_iterations": pretrain,
        "d_steps": d_steps,
        "d_batch_size": d_batch,
        "adv_weight": adv,
        "disc_with_image": with_image,
        "stage_iterations": _numbers(stages, "--stage-iterations", int),
        "class_weights": _numbers(weights, "--class-weights"),
    }


def _summary(result: Any) -> dict:
    return {
        "model": str(result.model_path),
        "weights_toml": str(result.toml_path),
        "output_dir": str(result.output_dir),
        "epochs": result.epochs,
        "iterations": result.iterations,
        "final_train_loss": result.train_losses[-1] if result.train_losses else None,
        "model_selection": result.model_selection,
        "selected_epoch": result.selected_epoch,
        "selection_dice": result.selection_dice,
        "last_val_dice": result.val_dice,
        "stop_reason": result.stop_reason,
        "skipped": [list(s) for s in result.skipped],
    }


@app.command(
    "train",
    help="Train a network (3D U-Net by default) on one or more `liverctl preprocess` outputs; "
    "prints the exported model path. --method picks the recipe: he2021 (3D U-Net, DCM, hybrid "
    "samplers), sdnet (semi-supervised V-Net + residual V-Net), di2in-an (adversarial DI2IN), "
    "hdenseunet (staged 2D/3D H-DenseUNet) or pipofan (2D PIPO-FAN, partially labelled datasets). With --resume, only --device, --precision and --workers may change.",
)
@cli_command
def train(
    datasets: list[Path] = typer.Argument(
        ..., metavar="DATASET...", help="Preprocessed dataset folder(s); several = hybrid training (DCM branch i)."
    ),
    output: Path = typer.Option(..., "-o", "--output", metavar="DIR", help="Run folder: checkpoints, log, model."),
    arch: str = ARCH,
    arch_kwargs: str = ARCH_KWARGS,
    base_features: int = BASE_FEATURES,
    levels: int = LEVELS,
    dropout: str = DROPOUT,
    dcm_from_level: int = DCM_FROM_LEVEL,
    init: Path = INIT,
    epochs: int = EPOCHS,
    iterations: int = ITERATIONS,
    patch: str = PATCH,
    batch_size: int = BATCH,
    optimizer: str = OPTIMIZER,
    scheduler: str = SCHEDULER,
    lr: float = LR,
    finetune_lr: float = FINETUNE_LR,
    val_every: int = VAL_EVERY,
    checkpoint_every: int = CHECKPOINT_EVERY,
    folds: int = FOLDS,
    fold: int = FOLD,
    sampler: str = SAMPLER,
    loss: str = LOSS,
    augment: bool | None = NO_AUGMENT,
    foreground_fraction: float | None = FOREGROUND,
    tumour_class: bool | None = TUMOUR_CLASS,
    workers: int = WORKERS,
    method: str = METHOD,
    unlabelled: list[Path] = UNLABELLED,
    pretrain_iterations: int = PRETRAIN,
    lr_step: int = LR_STEP,
    d_steps: int = D_STEPS,
    d_batch_size: int = D_BATCH,
    adv_weight: float = ADV_WEIGHT,
    disc_with_image: bool = DISC_WITH_IMAGE,
    stage_iterations: str = STAGE_ITERATIONS,
    class_weights: str = CLASS_WEIGHTS,
    dice_weight: float = DICE_WEIGHT,
    coarse_iterations: int = COARSE_ITERATIONS,
    encoder_init: str = ENCODER_INIT,
    select_on: str = SELECT_ON,
    labelled_fraction: float = REMOVED_LABELLED_FRACTION,
    resume: bool = RESUME,
    seed: int = SEED,
    device: str = DEVICE,
    precision: str = PRECISION,
    as_json: bool = AS_JSON,
    progress: bool | None = progress_option(),
    quiet: bool = quiet_option(),
    verbose: bool = verbose_option(),
) -> None:
    from liverctl.training import TrainConfig
    from liverctl.training import train as run_train

    _removed(labelled_fraction)
    config = TrainConfig(
        **_network(arch, arch_kwargs, base_features, levels, dropout, dcm_from_level, init),
        **_schedule(
            epochs, iterations, patch, batch_size, optimizer, scheduler, lr, finetune_lr, val_every, checkpoint_every
        ),
        **_data(folds, fold, sampler, loss, augment, tumour_class, workers, seed, device, precision),
        foreground_fraction=foreground_fraction,
        **_recipe(
            method,
            unlabelled,
            pretrain_iterations,
            lr_step,
            d_steps,
            d_batch_size,
            adv_weight,
            disc_with_image,
            stage_iterations,
            class_weights,
        ),
        dice_weight=dice_weight,
        coarse_iterations=coarse_iterations,
        encoder_init=encoder_init,
        select_on=select_on,
    )
    with reporter(progress, quiet, verbose) as callback:
        result = run_train(datasets, output, config, progress=callback, resume=resume)
    if result.model_path is None:  # not rank 0 under torchrun
        return
    typer.echo(json.dumps(_summary(result), indent=2) if as_json else str(result.model_path))
