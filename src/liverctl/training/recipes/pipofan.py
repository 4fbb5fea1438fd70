"""PIPO-FAN training (Fang & Yan, IEEE TMI 2020): :func:`~liverctl.training.methods.train_pipofan`.

The ``pipofan`` network (:mod:`liverctl.models.pipofan`) is trained in two phases over the
run's ``epochs * iterations_per_epoch`` iterations (:func:`phase_lengths`):

1. ``stage_iterations[0]`` iterations of **deep pyramid supervision**: the loss is
   ``sum_s w_s * L(out_s, labels downsampled to 1/2**s)`` over **all** S pyramid outputs, with
   ``w`` the network's ``loss_weights[1:]`` (1 each, as the authors' code sums them); no
   output gets weight 0. The adaptive fusion is not in this loss, so its parameters do not move;
2. ``stage_iterations[1]`` iterations of the **adaptive fusion alone**: loss
   ``loss_weights[0] * L(fused)``; only :meth:`~liverctl.models.pipofan.PIPOFAN.fusion_parameters`
   are optimised. The rest of the network runs without gradients and in eval mode, so its
   weights and batch-norm statistics are bit-identical before and after the phase.

``stage_iterations=None`` follows the paper's protocol (:func:`protocol_of`): one organ (one
foreground class), 2500 epochs of which the first 2000 deep supervision: phase 1 is 4/5 of the
run; several organs, 4000 epochs, 2000 of them deep supervision: halves. ``L`` is the target adaptive loss
(:class:`~liverctl.training.losses.TargetAdaptiveLoss`): the cross-entropy of the softmax
probabilities with every class the batch's dataset does not label merged into background
(datasets with different label sets train one network over the union of their classes;
a fully labelled dataset gets plain cross-entropy). Classes: the paper's organs; the liver's
tumour is liver (``tumour_class`` defaults to ``False``: tumour labels are merged into the liver;
``--tumour-class`` keeps them). Class weights: ``class_weights``, or (0.2, 1.2) for one organ as
in the paper, else all 1 (multi-organ); ``dice_weight`` > 0 adds
a soft Dice term (not in the paper). With the default ``dos`` sampler every batch comes
from one dataset, the datasets taken in turn ("used alternately, one at a time").

2D training: each patch of ``patch_size`` (z, y, x) (the default, the paper's: one slice of 224 x 224,
``--patch 224,224,1``; with ``foreground_fraction`` 1, the default, every patch is centred on a
voxel of a labelled organ, so the supervised slice contains it, as the paper samples its
training slices) is read with ``slice_context`` more slices on each side, cut into
3-slice stacks (slice z-1, z, z+1 as channels) and only its own z slices are supervised,
so every slice sees its true neighbours, as at inference (a patch stays inside the volume, so a
scan's first and last slices are seen only as neighbours). Augmentation: random mirroring
(the authors' flips; ``--no-augment`` switches it off).

Optimizer: RMSprop with momentum 0.9 at the protocol's lr (:data:`PIPOFAN_LR`): 0.002 for one
organ, 0.0002 for several, in both phases, multiplied by 0.99 every 40 epochs of the phase (step
decay; a liverctl epoch is ``iterations_per_epoch`` batches of ``batch_size`` slices, where the
paper's epoch is one pass over its training slices). ``config.lr`` replaces it;
``optimizer="adam"`` or ``"sgd"`` (momentum 0.9) take the same lr and decay. Each phase starts a
fresh optimizer. ``config.json`` records the protocol, the lr and the class weights used. Gradients are clipped to norm 12 as in every
recipe. Validation and an inner-split selection consider only epochs that end in the last phase.
Export: the whole network, final weights by default (eval output: fused logits), ``decision =
"argmax"``, ``liver_channel`` = the ``liver`` class.

Preprocessing (HU window -200..200, z-score) is ``liverctl preprocess --window pipofan``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError
from liverctl.progress import ProgressCallback
from liverctl.training.augmentation import Augmentation
from liverctl.training.common import (
    TrainResult,
    build_recipe_network,
    make_batch_fn,
    recipe_class_weights,
    seed_int,
    stage_of,
)
from liverctl.training.config import TrainConfig
from liverctl.training.losses import DeepSupervisionLoss, TargetAdaptiveLoss
from liverctl.training.run import Steps, TrainingRun, backward_step, open_recipe

__all__ = ["PIPOFAN_CLASS_WEIGHTS", "PIPOFAN_LR", "phase_lengths", "phase_lr", "protocol_of", "slice_batch"]

PIPOFAN_LR = {"one organ": 2e-3, "multi-organ": 2e-4}
"""RMSprop learning rate of each protocol (Fang and Yan 2020: 0.002 for one organ, 0.0002 for several)."""
PIPOFAN_CLASS_WEIGHTS = (0.2, 1.2)
"""Cross-entropy weights (background, organ) of one-organ training (multi-organ: all 1)."""
PHASE_1_FRACTION = {"one organ": (2000, 2500), "multi-organ": (2000, 4000)}
"""The deep-supervision epochs of the paper's protocols, out of their epochs."""
LR_DECAY, LR_DECAY_EPOCHS = 0.99, 40
_COLUMNS = ("phase", "loss_pyramid", "loss_fused")


def protocol_of(n_classes: int) -> str:
    """``"one organ"`` for one foreground class (background + organ), else ``"multi-organ"``."""
    return "one organ" if n_classes <= 2 else "multi-organ"


def phase_lengths(config: TrainConfig, protocol: str = "multi-organ") -> tuple[int, int]:
    """Iterations of phase 1 (deep pyramid supervision) and phase 2 (adaptive fusion):
    ``stage_iterations``, else the protocol's share (:data:`PHASE_1_FRACTION`).

    Raises:
        ConfigError: ``stage_iterations`` that do not add up to the run's iterations.
    """
    total = config.epochs * config.iterations_per_epoch
    if config.stage_iterations is None:
        part, whole = PHASE_1_FRACTION[protocol]
        n1 = -(-total * part // whole)  # rounded up: a run of one iteration is all deep supervision
        return n1, total - n1
    n1, n2 = (int(n) for n in config.stage_iterations)
    if n1 + n2 != total:
        raise ConfigError(
            f"--stage-iterations {n1},{n2} must add up to the run's {total} iterations (epochs x iterations per epoch)"
        )
    return n1, n2


def phase_lr(lr0: float, i: int, iterations_per_epoch: int) -> float:
    """Step decay: ``lr0 * 0.99 ** (epoch // 40)``, ``epoch`` = iteration ``i`` of the phase // epoch length."""
    return lr0 * LR_DECAY ** ((i // max(iterations_per_epoch, 1)) // LR_DECAY_EPOCHS)


def slice_batch(
    x: torch.Tensor, y: torch.Tensor, datasets: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A patch batch read with ``context`` extra slices on each side -> the 2D batch of its inner slices.

    ``x`` (B, C, z + 2k, Y, X), ``y`` (B, z + 2k, Y, X), ``datasets`` (B,) -> slice stacks
    (B*z, (2k+1)*C, Y, X), their labels (B*z, Y, X) and datasets (B*z,).
    """
    from liverctl.models.slices import slice_stacks

    b, zt = x.shape[0], x.shape[2]
    z = zt - 2 * context
    if z < 1:
        raise ValueError(f"a patch of {zt} slices has no inner slice with {context} of context on each side")
    stacks = slice_stacks(x, context)
    stacks = stacks.reshape(b, zt, *stacks.shape[1:])[:, context : context + z].reshape(b * z, *stacks.shape[1:])
    labels = y[:, context : context + z].reshape(b * z, *y.shape[2:])
    return stacks, labels, datasets.repeat_interleave(z)


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    """The PIPO-FAN run behind :func:`~liverctl.training.methods.train_pipofan` and
    ``train(config.method="pipofan")``."""
    runner = open_recipe(
        datasets, out, config, state, progress, columns=_COLUMNS, loss="tal", merge_tumour=not config.tumour_class
    )  # --whole-liver: tumour labels folded into the liver
    data = runner.data
    protocol = protocol_of(data.n_classes)
    lengths = phase_lengths(config, protocol)
    weights = _class_weights(config, data)
    model, kwargs = _build(config, data.n_classes, state)
    model.to(runner.device)
    lr0 = config.lr if config.lr is not None else PIPOFAN_LR[protocol]
    lrs = (lr0, lr0)
    opt = _Optimizers(model, config, runner.scaler(), lr0)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load(state)
    runner.write_config(
        datasets, phase_lengths=list(lengths), protocol=protocol, learning_rate=lr0, class_weights=weights
    )
    losses = [TargetAdaptiveLoss(lab, dice_weight=config.dice_weight, class_weights=weights) for lab in data.labelled]
    context = int(model.slice_context)
    padded = dataclasses.replace(config, patch_size=(config.patch_size[0] + 2 * context, *config.patch_size[1:]))
    flips = Augmentation(p_scale=0.0, p_rotation=0.0, p_elastic=0.0, p_gamma=0.0, p_flip=0.5)
    batch_fn = make_batch_fn(data, padded, augmentation=flips)
    step = _step_fn(model, opt, batch_fn, losses, lengths, lrs, runner)

    def current_lr() -> float:
        phase, i, _ = stage_of(runner.g, lengths)
        return phase_lr(lrs[phase - 1], i, config.iterations_per_epoch)

    last_phase = 2 if lengths[1] > 0 else 1

    def in_last_phase() -> bool:  # before it the fusion is untrained
        return runner.g > 0 and stage_of(runner.g - 1, lengths)[0] == last_phase

    runner.train(
        Steps(
            step,
            lambda: {"model": model.state_dict(), **opt.state()},
            lambda: {"model": model.state_dict()},
            current_lr,
            runner.validator(model),
            eligible=in_last_phase,
        )
    )
    model_path, toml_path = runner.export(
        runner.selected_model(model),
        architecture=config.architecture,
        kwargs=kwargs,
        description="PIPO-FAN trained with liverctl train --method pipofan (deep pyramid supervision, then fusion)",
    )
    return runner.result(model, model_path, toml_path, runner.validating)


def _class_weights(config: TrainConfig, data: Any) -> list[float]:
    """The cross-entropy class weights: ``config.class_weights``, or the paper's: (0.2, 1.2) for
    one organ, all 1 for several."""
    return recipe_class_weights(config, data, PIPOFAN_CLASS_WEIGHTS)


def _build(config: TrainConfig, k: int, state: dict[str, Any] | None) -> tuple[nn.Module, dict[str, Any]]:
    """The ``pipofan`` network (seeded from ``config.seed``, ``--init`` weights loaded) and its kwargs."""

    def check(model: nn.Module) -> None:
        m = int(model.min_input_multiple)
        if any(p % m for p in config.patch_size[1:]):
            shown = ",".join(str(p) for p in config.patch_size[::-1])
            raise ConfigError(
                f"--patch {shown}: x and y must be multiples of {m} for this 2D network (z may be any size)"
            )

    return build_recipe_network(config, k, state, "pipofan", ("pyramid", "fusion_parameters"), check)


class _Optimizers:
    """The optimizer of the current phase: all parameters in phase 1, the fusion's in phase 2."""

    def __init__(self, model: Any, config: TrainConfig, scaler: Any, lr: float = PIPOFAN_LR["one organ"]) -> None:
        self.model, self.config, self.scaler, self.lr = model, config, scaler, lr
        self.phase = 1
        self.optimizer = self._make(1)

    def _make(self, phase: int) -> torch.optim.Optimizer:
        params = list(self.model.parameters()) if phase == 1 else self.model.fusion_parameters()
        name = self.config.optimizer or "rmsprop"
        if name == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        if name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.RMSprop(params, lr=self.lr, momentum=0.9)

    def use(self, phase: int) -> torch.optim.Optimizer:
        """The optimizer of ``phase`` (a fresh one when the phase changes)."""
        if phase != self.phase:
            self.phase, self.optimizer = phase, self._make(phase)
        return self.optimizer

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "optimizer_phase": self.phase,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.use(int(state.get("optimizer_phase", 1))).load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _step_fn(
    model: Any,
    opt: _Optimizers,
    batch_fn: Any,
    losses: Sequence[TargetAdaptiveLoss],
    lengths: Sequence[int],
    lrs: Sequence[float],
    runner: TrainingRun,
):
    """The function that does global iteration ``g``: the phase's loss, one optimizer step."""
    from liverctl.device import autocast

    config, device = runner.config, runner.device
    w_fused, *w_pyramid = model.loss_weights
    pyramid_losses = [DeepSupervisionLoss(loss, weights=w_pyramid) for loss in losses]
    context = int(model.slice_context)
    fusion = set(map(id, model.fusion_parameters()))

    def per_dataset(fns: Sequence[nn.Module], outputs: Any, target: torch.Tensor, dsets: torch.Tensor) -> torch.Tensor:
        total = None
        for d in torch.unique(dsets).tolist():
            sel = (dsets == d).nonzero(as_tuple=True)[0]
            sub = [o[sel] for o in outputs] if isinstance(outputs, list) else outputs[sel]
            part = fns[d](sub, target[sel]) * (len(sel) / len(dsets))
            total = part if total is None else total + part
        assert total is not None
        return total

    def step(g: int) -> dict[str, float]:
        phase, i, _ = stage_of(g, lengths)
        optimizer = opt.use(phase)
        for group in optimizer.param_groups:
            group["lr"] = phase_lr(lrs[phase - 1], i, config.iterations_per_epoch)
        x, y, d = batch_fn(g)
        stacks, target, dsets = slice_batch(x.to(device), y.to(device), d.to(device), context)
        for p in model.parameters():
            p.requires_grad_(phase == 1 or id(p) in fusion)
        model.train(phase == 1)
        if phase == 2:
            model.scorer.train()
        torch.manual_seed(seed_int(config.seed, 0, g, 1))
        with autocast(device, runner.precision):
            if phase == 1:
                outputs: Any = model.pyramid(stacks)
            else:
                with torch.no_grad():
                    pyramid = model.pyramid(stacks)
                outputs = model.fuse([o.detach() for o in pyramid], tuple(stacks.shape[2:]))
        if phase == 1:
            loss = per_dataset(pyramid_losses, [o.float() for o in outputs], target, dsets)
            values = {"phase": 1.0, "loss_pyramid": float(loss.detach())}
        else:
            loss = w_fused * per_dataset(losses, outputs.float(), target, dsets)
            values = {"phase": 2.0, "loss_fused": float(loss.detach())}
        params = [p for p in model.parameters() if p.requires_grad]
        backward_step(loss, optimizer, params, opt.scaler)
        for p in model.parameters():
            p.requires_grad_(True)
        values["loss"] = float(loss.detach())
        return values

    return step
