"""The He et al. 2021 recipe (BMC Medical Imaging; reproduction page ``docs/studies/he2021.md``), ``TrainConfig(method="he2021")``: the default of
``liverctl train``.

One run, in ``output_dir``:

- ``config.json``: the :class:`~liverctl.training.config.TrainConfig` and the datasets;
- ``last.pt``: everything needed to continue (see :mod:`liverctl.training.checkpoint`),
  written atomically at the end of every epoch and every ``checkpoint_every`` iterations
  inside an epoch; ``train(..., resume=True)`` continues from it exactly: the weights after
  iteration ``g`` are bit-identical to those of a run that was never interrupted;
- ``selected.pt`` with ``--select-on inner:F`` only: the weights of the epoch with the best
  mean Dice on the inner split (by default the final weights are exported, nnU-Net's
  convention: see :mod:`liverctl.training.run`);
- ``train_log.csv``: one row per epoch (``epoch, iteration, train_loss, val_dice, lr,
  seconds, skipped``), rewritten atomically each epoch;
- ``loss_curve.png``: training loss (and validation Dice) per epoch;
- ``model.safetensors`` + ``weights.toml``: the exported model (see
  :mod:`liverctl.training.export`), usable as is by ``liverctl predict --weights``.

Network: ``unet3d`` with dropout after every convolution at
:data:`~liverctl.training.config.PAPER_DROPOUT` (0.5) by default, as the paper describes its
nnU-Net-style blocks (``--dropout none`` turns it off).

Labels: every class of the datasets, or with ``tumour_class=False`` (``--whole-liver``, the
paper's setting and the default of ``liverctl crosstest``) the whole liver: tumour labels are
folded into the liver and the network has no tumour class.

An iteration: the sampler picks the cases of the batch (:mod:`~liverctl.training.samplers`),
a patch is cut from each (foreground oversampling) and augmented
(:mod:`~liverctl.training.augmentation`), the network runs under autocast on CUDA, the
loss is Dice + cross-entropy (with deep-supervision weights if the network returns several
outputs), gradients are clipped to norm 12 (nnU-Net) and the optimizer steps. At the end of
an epoch the scheduler steps (ReduceLROnPlateau on the mean training loss, or poly),
validation runs every ``val_every`` epochs on the held-out fold (monitoring) and the inner split
(selection, with ``--select-on inner:F``) with the
sliding-window engine (:func:`liverctl.inference.sliding_window_inference`, the training
patch as window, overlap ``val_overlap``), and the stop rule is checked.

Determinism: all randomness of iteration ``g`` on rank ``r`` (cases, patch centres,
augmentation, dropout) comes from generators seeded with ``(seed, r, g)``; the model is
initialised from ``seed``. On the CPU two runs with the same seed and thread count give
identical weights. Under ``torchrun`` the run is data-parallel (:mod:`~liverctl.training.distributed`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError, LiverctlWarning
from liverctl.progress import ProgressCallback
from liverctl.spatial import xyz_text as _xyz
from liverctl.training.common import (
    GRAD_CLIP,
    TrainResult,
    build_training_model,
    load_init_weights,
    make_batch_fn,
    model_kwargs,
    poly_lr,
    seed_int,
)
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData
from liverctl.training.distributed import DistContext, init_from_env
from liverctl.training.losses import DeepSupervisionLoss, DiceCELoss, TargetAdaptiveLoss
from liverctl.training.run import Steps, TrainingRun, backward_step, open_recipe

__all__ = ["run"]


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    """The He 2021 run (module docs) of an opened run folder (see :func:`~liverctl.training.common.open_run`):
    the device, the torchrun process group when there is one, then the run loop."""
    from liverctl.device import resolve_device

    device = resolve_device(config.device)
    dist_ctx: DistContext = init_from_env(device)
    try:
        if dist_ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_ctx.local_rank)
        runner = open_recipe(
            datasets, out, config, state, progress, dist=dist_ctx, device=device,
            loss=config.loss, merge_tumour=not config.tumour_class,  # whole liver, as He et al. 2021 train it
        )  # fmt: skip
        return _train(runner, datasets, state)
    finally:
        dist_ctx.close()


def _loss_fn(config: TrainConfig, data: TrainingData):
    if config.loss == "dice_ce":
        base = DeepSupervisionLoss(DiceCELoss())

        def dice_ce(outputs, target, datasets):
            return base(outputs, target)

        return dice_ce
    tal = [DeepSupervisionLoss(TargetAdaptiveLoss(lab, dice_weight=1.0)) for lab in data.labelled]  # Dice + CE

    def tal_loss(outputs, target, datasets):
        total = None
        n = target.shape[0]
        for d in torch.unique(datasets).tolist():
            sel = (datasets == d).nonzero(as_tuple=True)[0]
            sub = [o[sel] for o in outputs] if isinstance(outputs, (list, tuple)) else outputs[sel]
            part = tal[d](sub, target[sel]) * (len(sel) / n)
            total = part if total is None else total + part
        return total

    return tal_loss


def _stop_rule(losses: Sequence[float], lr: float, config: TrainConfig) -> bool:
    w = config.stop_window
    if config.scheduler != "plateau" or len(losses) <= w or lr >= config.stop_min_lr:
        return False
    return min(losses[:-w]) - min(losses[-w:]) < config.stop_min_improvement


def _poly_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` under the poly schedule (per epoch)."""
    return poly_lr(config.initial_lr, epoch, config.epochs, config.poly_exponent)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer in (None, "adam"):
        return torch.optim.Adam(
            model.parameters(), lr=config.initial_lr, weight_decay=config.weight_decay, amsgrad=True
        )
    return torch.optim.SGD(
        model.parameters(), lr=config.initial_lr, momentum=0.99, nesterov=True, weight_decay=config.weight_decay
    )


def _network(config: TrainConfig, data: TrainingData, state: dict[str, Any] | None) -> nn.Module:
    """The run's 3D network (seeded from ``config.seed``; ``--init`` weights on a fresh run),
    refused when it is 2D or the patch is not a multiple of what it needs."""
    model = build_training_model(config, data.n_classes, len(data.datasets))
    if int(getattr(model, "spatial_dims", 3)) == 2:
        raise ConfigError(
            f"{config.architecture} is a 2D network, which the he2021 recipe does not train: use its own recipe"
            f" (train --method {config.architecture}, TrainConfig(method={config.architecture!r}))"
        )
    multiple = int(getattr(model, "min_input_multiple", 1) or 1)
    if any(p % multiple for p in config.patch_size):
        raise ConfigError(
            f"--patch {_xyz(config.patch_size)} (X,Y,Z) must be a multiple of {multiple} for this network"
            f" ({config.architecture} with these settings)"
        )
    if state is None and config.init_checkpoint:
        load_init_weights(model, config.init_checkpoint)
    return model


class _Parts:
    """The network, its optimizer, scheduler and scaler (what ``last.pt`` saves besides the counters)."""

    def __init__(self, runner: TrainingRun, state: dict[str, Any] | None) -> None:
        config = runner.config
        self.model = _network(config, runner.data, state).to(runner.device)
        self.optimizer = _optimizer(self.model, config)
        self.scheduler = None
        if config.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
            )
        self.scaler = runner.scaler()
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _train(runner: TrainingRun, datasets: Sequence[Any], state: dict[str, Any] | None) -> TrainResult:
    """The He 2021 epochs on ``runner`` (module docs), then the export (rank 0) and the result."""
    config, data = runner.config, runner.data
    _check_normalization(data)
    parts = _Parts(runner, state)
    model = parts.model
    net: nn.Module = model
    if runner.dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[runner.device.index] if runner.device.type == "cuda" else None,
            find_unused_parameters=config.dcm_from_level is not None,
        )
    runner.write_config(datasets)
    pool = concurrent.futures.ThreadPoolExecutor(config.num_workers) if config.num_workers > 0 else None
    try:
        steps = Steps(
            step=_step_fn(runner, parts, net, pool),
            parts=parts.state,
            best_parts=lambda: {"model": model.state_dict()},
            lr=parts.lr,
            validate=runner.validator(model),
            end_epoch=lambda mean_loss: _end_epoch(parts, runner, mean_loss),
        )
        runner.train(steps)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if runner.dist.enabled:  # DDP syncs buffers (batch-norm statistics) at each forward: finish in step
        for buf in model.buffers():
            torch.distributed.broadcast(buf, 0)
    model_path = toml_path = None
    if runner.dist.is_main:
        model_path, toml_path = runner.export(
            runner.selected_model(model),
            architecture=config.architecture,
            kwargs=model_kwargs(config, data.n_classes, len(data.datasets)),
        )
    runner.dist.barrier()
    return runner.result(model, model_path, toml_path, runner.validating)


def _check_normalization(data: TrainingData) -> None:
    """Warn when a preprocessed dataset was not normalised as the paper (nnU-Net's CT scheme)."""
    for name, plan in zip(data.names, data.plans, strict=True):
        scheme = plan.get("normalization")
        if scheme is not None and scheme != "ct":
            warnings.warn(
                f"dataset {name} was preprocessed with --normalization {scheme}: He et al. 2021 normalise as nnU-Net"
                " does for CT (preprocess --normalization ct)",
                LiverctlWarning,
                stacklevel=5,
            )


def _end_epoch(parts: _Parts, runner: TrainingRun, mean_loss: float) -> bool:
    """The scheduler step of an epoch (plateau on the mean loss, or the next epoch's poly lr);
    whether the stop rule ends the run."""
    config = runner.config
    if parts.scheduler is not None:
        parts.scheduler.step(mean_loss)
    else:
        for group in parts.optimizer.param_groups:
            group["lr"] = _poly_lr(config, runner.epoch + 1)
    return _stop_rule(runner.epoch_losses, parts.lr(), config)


def _step_fn(runner: TrainingRun, parts: _Parts, net: nn.Module, pool: Any):
    """Global iteration ``g``: its batch (computed here or by the prefetch threads), the
    forward pass under autocast, the loss, one clipped optimizer step."""
    from liverctl.device import autocast

    config, data, device = runner.config, runner.data, runner.device
    batch_fn = make_batch_fn(data, config, runner.dist.rank)
    loss_fn = _loss_fn(config, data)
    use_dcm = config.dcm_from_level is not None
    pending: collections.deque = collections.deque()

    def next_batch(gi: int):
        if pool is None:
            return batch_fn(gi)
        while len(pending) < config.num_workers + 1:
            nxt = gi + len(pending)
            pending.append((nxt, pool.submit(batch_fn, nxt)))
        got, fut = pending.popleft()
        assert got == gi
        return fut.result()

    def step(g: int) -> dict[str, float]:
        net.train()
        x, y, ds = next_batch(g)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        torch.manual_seed(seed_int(config.seed, runner.dist.rank, g, 1))
        with autocast(device, runner.precision):
            outputs = net(x, dataset_index=ds.to(device)) if use_dcm else net(x)
        loss = loss_fn(outputs, y, ds.to(device))
        backward_step(loss, parts.optimizer, list(parts.model.parameters()), parts.scaler, clip=GRAD_CLIP)
        return {"loss": float(loss.detach())}

    return step
