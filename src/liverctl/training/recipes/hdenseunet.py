"""H-DenseUNet staged training (Li et al., IEEE TMI 2018): :func:`~liverctl.training.methods.train_hdenseunet`.

The ``hdenseunet`` network (a 2D DenseUNet on 3-slice stacks, a 3D DenseUNet and the hybrid
feature fusion layer, :mod:`liverctl.models.hdenseunet`) is trained in three stages over
the run's ``epochs * iterations_per_epoch`` iterations (:func:`stage_of`):

1. ``stage_iterations[0]`` iterations: the 2D DenseUNet alone, loss on its logits
   (``logits_2d``); the 3D part and HFF are not run. Its first ``pretrain_iterations`` (default:
   the first half of the stage) are the paper's warm-up "without UNet connections" (the decoder
   without the encoder's skips, ``net2d.unet_connections = False``; 0: none), the rest with them (the 2D decoder's batch-norm
   statistics restart then and are averaged over that half);
2. ``stage_iterations[1]`` iterations: the 3D DenseUNet + HFF with the 2D part frozen
   (``freeze_2d()``: no gradients, and eval mode so its batch-norm statistics stay put: the
   2D part is bit-identical before and after the stage), loss on the hybrid output;
3. the rest: everything jointly with ``loss = L(hybrid) + 0.5 * L(2D)`` (the model's
   ``loss_weights``).

``stage_iterations=None`` gives each stage a third of the run (stage 3 the remainder). The
loss ``L`` is weighted cross-entropy, class weights ``class_weights`` or, for 3 classes
(background, liver, tumour), (0.78, 0.65, 8.57) as in the authors' code (all 1 otherwise).
Optimizer: SGD, momentum 0.9, no weight decay (the paper states none), lr 0.01 (``config.lr`` overrides it) with
poly decay ``lr0 * (1 - i / N)^0.9`` restarted at every stage (``i`` the iteration in the
stage, ``N`` its length); the momentum is reset at each stage start (each stage is a
training of its own in the paper); gradients clipped to norm 12 as in the main loop.

Augmentation (``config.augment``): the paper's "random mirror and scaling between 0.8 and 1.2"
only (:data:`HDENSEUNET_AUGMENTATION`). Network: the paper preset by default
(``--arch-kwargs '{"preset": "small"}'`` for CPU demos; see :mod:`liverctl.models.hdenseunet`).
The paper's HU window and resolution are preprocessing choices (``preprocess --window liver``; the
fine stage works at the scan's original resolution: do not resample). The cascade's
coarse liver-ROI network (``config.coarse_iterations`` > 0, :mod:`~liverctl.training.recipes.cascade`)
is trained before stage 1; its predicted liver boxes crop every case the three stages see,
and the export is then an ``hdenseunet_cascade`` (coarse + fine) that ``predict`` runs as a
cascade (:mod:`liverctl.inference.roi`). Without it the stages see whole preprocessed volumes.
Validation and an inner-split selection (``--select-on inner:F``) consider only epochs that end
in the last stage (before it, parts of the network are untrained). Export: the whole
``hdenseunet`` (eval output: hybrid logits), final weights by default (:mod:`liverctl.training.run`), ``decision = "argmax"``, ``liver_channel`` = the
``liver`` class.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.progress import ProgressCallback
from liverctl.spatial import xyz_text as _xyz
from liverctl.training.augmentation import Augmentation
from liverctl.training.common import (
    TrainResult,
    build_recipe_network,
    make_batch_fn,
    poly_lr,
    recipe_class_weights,
    seed_int,
    stage_of,
)
from liverctl.training.config import TrainConfig
from liverctl.training.run import Steps, TrainingRun, backward_step, load_parts, open_recipe

__all__ = ["HDENSEUNET_AUGMENTATION", "HDENSEUNET_CLASS_WEIGHTS", "poly_lr", "stage_lengths", "stage_of", "warm_up"]

HDENSEUNET_CLASS_WEIGHTS = (0.78, 0.65, 8.57)
_BN_MOMENTUM = 0.1  # torch's default, the networks' own
HDENSEUNET_AUGMENTATION = Augmentation(
    p_scale=1.0, scale_range=(0.8, 1.2), p_rotation=0.0, p_elastic=0.0, p_gamma=0.0, p_flip=0.5
)
"""Li et al.'s augmentation: random mirroring and a random scaling between 0.8 and 1.2, nothing else."""
_COLUMNS = ("stage", "loss_2d", "loss_hybrid")


def stage_lengths(config: TrainConfig) -> tuple[int, int, int]:
    """Iterations of stages 1, 2 and 3 (module docs).

    Raises:
        ConfigError: ``stage_iterations`` longer than the run.
    """
    total = config.epochs * config.iterations_per_epoch
    n1, n2 = config.stage_iterations if config.stage_iterations is not None else (total // 3, total // 3)
    if n1 + n2 > total:
        raise ConfigError(
            f"stage iterations {n1} + {n2} exceed the run's {total} iterations (epochs x iterations per epoch)"
        )
    if (config.pretrain_iterations or 0) > n1:
        raise ConfigError(
            f"--pretrain-iterations {config.pretrain_iterations} (the 2D warm-up) exceeds stage 1's {n1} iterations"
        )
    return int(n1), int(n2), int(total - n1 - n2)


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    """The H-DenseUNet run behind :func:`~liverctl.training.methods.train_hdenseunet` and
    ``train(config.method="hdenseunet")``."""
    if state is None and config.encoder_init:  # a missing file is refused before any data is read
        from liverctl.models.densenet_init import resolve_encoder_file

        resolve_encoder_file(config.encoder_init)
    lengths = stage_lengths(config)
    runner = open_recipe(datasets, out, config, state, progress, columns=_COLUMNS)
    data, device = runner.data, runner.device
    weights = _class_weights(config, data)
    model, kwargs = _build(config, data.n_classes, state)
    model.to(device)
    lr0 = config.lr if config.lr is not None else 0.01
    optimizer = torch.optim.SGD(model.parameters(), lr=lr0, momentum=0.9)
    scaler = runner.scaler()
    load_parts(state, model=model, optimizer=optimizer, scaler=scaler)
    coarse = None
    if config.coarse_iterations:  # the cascade: the coarse liver-ROI network first, its boxes crop the data
        from liverctl.training.recipes.cascade import coarse_stage

        coarse, data = coarse_stage(data, config, device, state, progress)
        runner.data = data
    counts = _parameter_counts(model)
    if coarse is not None:
        counts["coarse"] = sum(p.numel() for p in coarse.parameters())
    runner.write_config(datasets, stage_lengths=list(lengths), parameter_counts=counts)
    class_weights = torch.tensor(weights, dtype=torch.float32, device=device)
    batch_fn = make_batch_fn(data, config, augmentation=HDENSEUNET_AUGMENTATION)
    step = _step_fn(model, optimizer, scaler, batch_fn, class_weights, lengths, lr0, runner)

    def parts() -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "coarse": coarse.state_dict() if coarse is not None else None,
        }

    def current_lr() -> float:
        _, i, n = stage_of(runner.g, lengths)
        return poly_lr(lr0, i, n, config.poly_exponent)

    last_stage = max(s for s, n in enumerate(lengths, start=1) if n > 0 or s == 1)

    def in_last_stage() -> bool:  # earlier stages leave parts of the network untrained
        return runner.g > 0 and stage_of(runner.g - 1, lengths)[0] == last_stage

    steps = Steps(step, parts, lambda: {"model": model.state_dict()}, current_lr, runner.validator(model))
    steps.eligible = in_last_stage
    runner.train(steps)
    model_path, toml_path = _export(runner, model, kwargs, coarse)
    return runner.result(model, model_path, toml_path, runner.validating)


def warm_up(stage: int, i: int, warm: int) -> bool:
    """Whether iteration ``i`` of ``stage`` is in the 2D warm-up without UNet connections (the first
    ``warm`` iterations of stage 1: ``config.pretrain_iterations``)."""
    return stage == 1 and i < warm


def _decoder_statistics(net2d: nn.Module, reset: bool = False, cumulative: bool = False) -> None:
    """The batch-norm running statistics of the 2D decoder around the warm-up: ``reset`` them when
    the UNet connections are added (they describe a decoder without them), and average them
    ``cumulative``-ly over the rest of stage 1 (a few iterations of the usual momentum would leave
    them mostly at their reset values), with the usual momentum (0.1) otherwise."""
    for module in (net2d.decoder, net2d.skip_proj):
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if reset:
                    m.reset_running_stats()
                m.momentum = None if cumulative else _BN_MOMENTUM


def _class_weights(config: TrainConfig, data: Any) -> list[float]:
    """The cross-entropy class weights: ``config.class_weights``, or the authors' for 3 classes."""
    return recipe_class_weights(config, data, HDENSEUNET_CLASS_WEIGHTS)


def _parameter_counts(model: nn.Module) -> dict[str, int]:
    """The parameters of the network's parts (written to ``config.json``)."""
    from liverctl.models.hdenseunet import HDenseUNet, parameter_counts

    if isinstance(model, HDenseUNet):
        return parameter_counts(model)
    return {"total": sum(p.numel() for p in model.parameters())}


def _build(config: TrainConfig, k: int, state: dict[str, Any] | None) -> tuple[nn.Module, dict[str, Any]]:
    """The ``hdenseunet`` network (seeded from ``config.seed``, ``--init`` weights loaded) and its kwargs."""

    def check(model: nn.Module) -> None:
        multiples = getattr(model, "input_multiple_zyx", (model.min_input_multiple,) * 3)
        if any(p % m for p, m in zip(config.patch_size, multiples, strict=True)):
            raise ConfigError(f"--patch {_xyz(config.patch_size)} must be a multiple of {_xyz(multiples)} (X,Y,Z)")

    model, kwargs = build_recipe_network(config, k, state, "hdenseunet", ("net2d", "freeze_2d"), check)
    if state is None and config.encoder_init:
        from liverctl.models.densenet_init import load_densenet161_encoder

        load_densenet161_encoder(model, config.encoder_init)
    return model, kwargs


def _step_fn(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    batch_fn: Any,
    class_weights: torch.Tensor,
    lengths: Sequence[int],
    lr0: float,
    runner: TrainingRun,
):
    """The function that does global iteration ``g``: the stage's loss, one optimizer step."""
    from liverctl.device import autocast
    from liverctl.models.slices import slice_stacks, unstack_slices

    config, device = runner.config, runner.device
    w_hybrid, w_2d = getattr(model, "loss_weights", (1.0, 0.5))
    warm = int(config.pretrain_iterations or 0)

    def wce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=class_weights)

    def step(g: int) -> dict[str, float]:
        stage, i, n = stage_of(g, lengths)
        if i == 0 and g > 0:  # a new stage: fresh momentum
            optimizer.state = collections.defaultdict(dict)
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(lr0, i, n, config.poly_exponent)
        x, y, _ = batch_fn(g)
        x, y = x.to(device), y.to(device)
        model.train()
        model.freeze_2d(stage == 2)
        if stage == 2:
            model.net2d.eval()
        connected = model.net2d.unet_connections = not warm_up(stage, i, warm)
        if stage == 1 and i > 0 and connected and warm_up(stage, i - 1, warm):
            _decoder_statistics(model.net2d, reset=True)  # they describe a decoder without the connections
        _decoder_statistics(model.net2d, cumulative=stage == 1 and connected)
        torch.manual_seed(seed_int(config.seed, 0, g, 1))
        values: dict[str, float] = {"stage": float(stage)}
        with autocast(device, runner.precision):
            if stage == 1:
                _, logits2d = model.net2d(slice_stacks(x, context=1))
                outputs = [None, unstack_slices(logits2d, x.shape[0])]
            else:
                outputs = model(x)
        if stage == 1:
            loss = l2d = wce(outputs[1], y)
            values["loss_2d"] = float(l2d.detach())
        elif stage == 2:
            loss = lh = wce(outputs[0], y)
            values["loss_hybrid"] = float(lh.detach())
        else:
            lh, l2d = wce(outputs[0], y), wce(outputs[1], y)
            loss = w_hybrid * lh + w_2d * l2d
            values["loss_hybrid"], values["loss_2d"] = float(lh.detach()), float(l2d.detach())
        backward_step(loss, optimizer, [p for p in model.parameters() if p.requires_grad], scaler)
        model.freeze_2d(False)
        values["loss"] = float(loss.detach())
        return values

    return step


def _export(
    runner: TrainingRun, model: nn.Module, kwargs: dict[str, Any], coarse: nn.Module | None
) -> tuple[Path, Path]:
    """The whole network with its selected weights (final by default), ``argmax``;
    with a coarse stage, both in one ``hdenseunet_cascade``."""
    best, architecture = runner.selected_model(model), runner.config.architecture
    if coarse is not None:
        from liverctl.models.hdenseunet_cascade import HDenseUNetCascade

        fine = {k: v for k, v in kwargs.items() if k not in ("in_channels", "out_channels")}
        kwargs = {"in_channels": kwargs["in_channels"], "out_channels": kwargs["out_channels"], "fine": fine}
        cascade = HDenseUNetCascade(**kwargs)
        cascade.fine.load_state_dict(best.state_dict())
        cascade.coarse.load_state_dict(coarse.state_dict())
        best, architecture = cascade, "hdenseunet_cascade"
    return runner.export(
        best,
        architecture=architecture,
        kwargs=kwargs,
        description="H-DenseUNet trained with liverctl train --method hdenseunet (staged 2D / 3D + HFF / joint)",
    )
