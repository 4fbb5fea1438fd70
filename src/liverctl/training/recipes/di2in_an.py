"""DI2IN-AN adversarial training (Yang et al., MICCAI 2017): :func:`~liverctl.training.methods.train_di2in_an`.

Generator: ``di2in`` with one output channel (liver vs background, sigmoid). Its
segmentation loss is deep-supervised binary cross-entropy: ``sum_i w_i * BCE(side_i) +
w_final * BCE(final)`` with every weight 1 (the model's ``loss_weights``); the target is
"liver" (every liver-like class: liver, tumour, lesion).

Discriminator: ``di2in_discriminator`` scores a label map as reference (1) or prediction
(0). As in the paper it sees the label map only (the reference one-hot foreground, or the
generator's sigmoid probabilities); ``disc_with_image=True`` concatenates the image patch
as a second channel (a common conditional-GAN variant).

Schedule, per iteration ``g`` of ``epochs * iterations_per_epoch``:

- ``g < pretrain_iterations``: one generator step on the segmentation loss alone;
- after that: ``d_steps`` (k_D = 10) discriminator steps, each on ``d_batch_size`` (8)
  patches: BCE of D on the references (target 1) and on the generator's predictions
  (target 0), the generator in eval mode without gradients (so discriminator steps never
  change the generator, batch-norm statistics included); then ``g_steps`` (k_G = 1)
  generator steps on ``batch_size`` patches (4 in the paper) with loss = segmentation BCE
  + ``adv_weight`` (lambda = 0.01) * ``BCE(D(G(x)), 1)``, the non-saturating form
  ``-log D(G(x))``. The discriminator's parameters get no gradient in generator steps and
  its batch-norm statistics are restored afterwards, so generator steps change only the
  generator.

Optimizers, as the paper trains: SGD (momentum 0.9, our choice: the paper gives none) at lr
0.01, divided by 10 ``lr_step`` iterations into each phase, each phase on its own schedule
(:func:`di2in_lr`: the adversarial phase starts again at 0.01), for the generator (weight decay
``config.weight_decay``) and, with the same lr, the discriminator. ``optimizer="adam"``
selects Adam (lr 3e-4 unless ``config.lr``; the discriminator with betas (0.5, 0.999), DCGAN)
with the same step. The paper's "iterations" (200 pre-training, lr step after 100, 100
adversarial) are read as passes over its ~1000 training volumes: the defaults
(:data:`~liverctl.training.config.METHOD_DEFAULTS`) run 300 epochs of 250 iterations of batch 4
(one epoch = 1000 volumes), the first 2/3 of the run pre-training (``pretrain_iterations``), the lr
step half-way through it (``lr_step``); ``config.json`` records the resolved values. Inputs: the
whole 3 mm volume (``preprocess --spacing 3``; the default 128^3 patch covers 384 mm, a whole
abdomen, padded where the volume is smaller), no augmentation, no foreground oversampling.
Generator gradients are clipped to norm 12 as in the main loop.

Export: the generator after the adversarial phase (the final weights by default; a run without an
adversarial iteration is refused, and an inner-split selection considers only epochs that end in
the adversarial phase). The discriminator is not used at inference: ``model.safetensors`` holds the generator and
``weights.toml`` says ``decision = "sigmoid"``, ``liver_channel = 0``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from liverctl.errors import ConfigError
from liverctl.progress import ProgressCallback
from liverctl.spatial import xyz_text as _xyz
from liverctl.training.common import TrainResult, make_batch_fn, seed_int
from liverctl.training.config import TrainConfig
from liverctl.training.run import Steps, backward_step, load_parts, open_recipe

__all__ = [
    "AdversarialSteps",
    "di2in_lr",
    "di2in_optimizers",
    "discriminator_loss",
    "generator_adversarial_loss",
    "segmentation_bce",
]

_COLUMNS = ("segmentation_bce", "adversarial", "discriminator")


def di2in_lr(lr0: float, g: int, step: int, pretrain: int = 0) -> float:
    """The learning rate of global iteration ``g``: each phase (pre-training: ``g < pretrain``,
    then the adversarial phase) on its own schedule, ``lr0`` divided by 10 from its ``step``-th
    iteration on (the paper: 0.01, / 10 after 100 of the 200 pre-training iterations; the
    adversarial phase starts again at 0.01)."""
    i = g if g < pretrain else g - pretrain
    return lr0 if i < step else lr0 / 10


def di2in_optimizers(
    gen: nn.Module, disc: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The generator's and the discriminator's optimizers (module docs) at ``config.lr``
    (``config`` with its method defaults filled in, :data:`~liverctl.training.config.METHOD_DEFAULTS`)."""
    lr0 = config.lr if config.lr is not None else (1e-2 if config.optimizer == "sgd" else 3e-4)
    if config.optimizer == "sgd":
        opt_g: torch.optim.Optimizer = torch.optim.SGD(
            gen.parameters(), lr=lr0, momentum=0.9, weight_decay=config.weight_decay
        )
        opt_d: torch.optim.Optimizer = torch.optim.SGD(disc.parameters(), lr=lr0, momentum=0.9)
    elif config.optimizer in (None, "adam"):  # None: a run folder of an earlier release (Adam)
        opt_g = torch.optim.Adam(gen.parameters(), lr=lr0, weight_decay=config.weight_decay)
        opt_d = torch.optim.Adam(disc.parameters(), lr=lr0, betas=(0.5, 0.999))
    else:
        raise ConfigError(f"--method di2in-an trains with sgd or adam, not {config.optimizer}")
    for opt in (opt_g, opt_d):
        for group in opt.param_groups:
            group["initial_lr"] = lr0  # the schedule's base (saved with the optimizer state)
    return opt_g, opt_d


def segmentation_bce(
    outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor, weights: Sequence[float] | None = None
) -> torch.Tensor:
    """Deep-supervised BCE: ``sum_i weights[i] * BCE(outputs[i], target)`` (weights 1 by
    default); ``outputs`` are (B, 1, z, y, x) logits, ``target`` (B, z, y, x) 0/1."""
    outs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    w = list(weights) if weights is not None else [1.0] * len(outs)
    if len(w) != len(outs):
        raise ValueError(f"{len(w)} loss weights for {len(outs)} outputs")
    t = target.float()[:, None]
    return sum(wi * F.binary_cross_entropy_with_logits(o.float(), t) for wi, o in zip(w, outs, strict=True))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE of the discriminator: references labelled 1, predictions 0 (mean over both)."""
    logits = torch.cat([real_logits, fake_logits]).float()
    target = torch.cat([torch.ones_like(real_logits), torch.zeros_like(fake_logits)]).float()
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating adversarial term ``mean(-log D(G(x)))`` = ``BCE(D(G(x)), 1)``."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits).float())


class AdversarialSteps:
    """The two kinds of DI2IN-AN optimisation step (module docs).

    Args:
        gen: the generator (on ``device``).
        disc: the discriminator (on ``device``).
        opt_g: the generator's optimizer.
        opt_d: the discriminator's optimizer.
        config: ``seed``, ``adv_weight`` and ``disc_with_image`` are used.
        device: where the networks run (:mod:`liverctl.device`).
        precision: how they run (:mod:`liverctl.device`).
        g_batch: ``index -> (images (B,1,z,y,x), labels (B,z,y,x), datasets)`` for the generator.
        d_batch: the same for the discriminator.
        liver_channels: label values counted as liver (the BCE target).
        scalers: CUDA ``GradScaler`` of each optimizer, or ``None``.
    """

    def __init__(
        self,
        gen: nn.Module,
        disc: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        config: TrainConfig,
        device: torch.device,
        precision: str,
        g_batch: Any,
        d_batch: Any,
        liver_channels: Sequence[int],
        scalers: tuple[Any, Any] = (None, None),
    ) -> None:
        self.gen, self.disc, self.opt_g, self.opt_d = gen, disc, opt_g, opt_d
        self.config, self.device, self.precision = config, device, precision
        self.g_batch, self.d_batch = g_batch, d_batch
        self.liver = torch.tensor(list(liver_channels))
        self.scaler_g, self.scaler_d = scalers
        self.weights = getattr(gen, "loss_weights", None)

    def _d_input(self, maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([maps, x], 1) if self.config.disc_with_image else maps

    def discriminator_step(self, index: int) -> float:
        """One discriminator step on batch ``index`` of ``d_batch``; the generator runs in eval
        mode without gradients and is not changed. Returns the discriminator loss."""
        from liverctl.device import autocast

        x, y, _ = self.d_batch(index)
        x = x.to(self.device)
        real = torch.isin(y, self.liver).float()[:, None].to(self.device)
        self.gen.eval()
        with torch.no_grad(), autocast(self.device, self.precision):
            fake = torch.sigmoid(self.gen(x).float())
        self.disc.train()
        torch.manual_seed(seed_int(self.config.seed, 0, index, 2))
        with autocast(self.device, self.precision):
            logits = self.disc(torch.cat([self._d_input(real, x), self._d_input(fake, x)]))
        loss = discriminator_loss(logits[: len(x)], logits[len(x) :])
        backward_step(loss, self.opt_d, None, self.scaler_d, clip=None)
        return float(loss.detach())

    def generator_step(self, index: int, adversarial: bool = True) -> tuple[float, float, float]:
        """One generator step on batch ``index`` of ``g_batch``: segmentation BCE (+ the
        adversarial term). The discriminator is not changed (no gradient to its parameters,
        batch-norm statistics restored). Returns ``(loss, segmentation BCE, adversarial)``."""
        from liverctl.device import autocast

        gen, disc = self.gen, self.disc
        x, y, _ = self.g_batch(index)
        x = x.to(self.device)
        target = torch.isin(y, self.liver).to(self.device)
        gen.train()
        torch.manual_seed(seed_int(self.config.seed, 0, index, 1))
        with autocast(self.device, self.precision):
            outputs = gen(x)
        seg = segmentation_bce(outputs, target, self.weights if not isinstance(outputs, torch.Tensor) else None)
        adv = seg.new_zeros(())
        saved = [b.detach().clone() for b in disc.buffers()]
        try:
            if adversarial:
                final = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
                disc.train()
                for p in disc.parameters():
                    p.requires_grad_(False)
                with autocast(self.device, self.precision):
                    fake_logits = disc(self._d_input(torch.sigmoid(final.float()), x))
                adv = generator_adversarial_loss(fake_logits)
            loss = seg + self.config.adv_weight * adv
            backward_step(loss, self.opt_g, list(gen.parameters()), self.scaler_g)
        finally:  # D's parameters got no gradient; its batch-norm statistics are put back
            for p in disc.parameters():
                p.requires_grad_(True)
            with torch.no_grad():
                for b, saved_b in zip(disc.buffers(), saved, strict=True):
                    b.copy_(saved_b)
        return float(loss.detach()), float(seg.detach()), float(adv.detach())


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    """The DI2IN-AN run behind :func:`~liverctl.training.methods.train_di2in_an` and ``train(config.method="di2in-an")``."""
    runner = open_recipe(datasets, out, config, state, progress, columns=_COLUMNS)
    data, device = runner.data, runner.device
    gen, disc, kwargs = _networks(config, state)
    gen.to(device)
    disc.to(device)
    opt_g, opt_d = di2in_optimizers(gen, disc, config)
    scaler_g, scaler_d = runner.scaler(), runner.scaler()
    load_parts(state, model=gen, discriminator=disc, optimizer=opt_g, optimizer_d=opt_d, scaler=scaler_g)
    load_parts(state, scaler_d=scaler_d)
    runner.write_config(datasets)

    g_batch = make_batch_fn(data, config)
    d_batch = make_batch_fn(
        data, dataclasses.replace(config, batch_size=config.d_batch_size, seed=seed_int(config.seed, 11))
    )
    steps = AdversarialSteps(
        gen, disc, opt_g, opt_d, config, device, runner.precision, g_batch, d_batch, data.liver_channels,
        scalers=(scaler_g, scaler_d),
    )  # fmt: skip
    step = _step_fn(steps, config)
    pretrain = int(config.pretrain_iterations or 0)

    def parts() -> dict[str, Any]:
        return {
            "model": gen.state_dict(),
            "discriminator": disc.state_dict(),
            "optimizer": opt_g.state_dict(),
            "optimizer_d": opt_d.state_dict(),
            "scaler": scaler_g.state_dict() if scaler_g is not None else None,
            "scaler_d": scaler_d.state_dict() if scaler_d is not None else None,
        }

    runner.train(
        Steps(
            step,
            parts,
            lambda: {"model": gen.state_dict()},
            lambda: di2in_lr(_base_lr(opt_g), runner.g, _lr_step(config), pretrain),  # the epoch's first lr
            runner.validator(gen, sigmoid=True),
            eligible=lambda: runner.g > pretrain,  # only generators trained adversarially are selected
        )
    )
    model_path, toml_path = runner.export(
        runner.selected_model(gen),
        architecture=config.architecture,
        kwargs=kwargs,
        labels={"liver": 0},
        liver_channel=0,
        decision="sigmoid",
        description="DI2IN generator trained with liverctl train --method di2in-an (sigmoid liver map)",
    )
    return runner.result(gen, model_path, toml_path, runner.validating)


def _networks(config: TrainConfig, state: dict[str, Any] | None) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """The generator (seeded from ``config.seed``; ``--init`` weights), the discriminator
    (seeded from ``(seed, 1)``) and the generator's kwargs."""
    from liverctl.models import build_model

    kwargs = dict(config.arch_kwargs)
    kwargs.setdefault("in_channels", 1)
    kwargs["out_channels"] = 1
    torch.manual_seed(config.seed)
    gen = build_model(config.architecture, **kwargs)
    if hasattr(gen, "side_levels"):  # recorded with the export: the deep-supervision branches it was built with
        kwargs["side_levels"] = list(gen.side_levels)
    multiple = int(getattr(gen, "min_input_multiple", 1) or 1)
    if any(p % multiple for p in config.patch_size):
        raise ConfigError(
            f"--patch {_xyz(config.patch_size)} (X,Y,Z) must be a multiple of {multiple} for {config.architecture}"
        )
    d_kwargs = dict(config.disc_kwargs)
    d_kwargs["in_channels"] = 1 + (kwargs["in_channels"] if config.disc_with_image else 0)
    torch.manual_seed(seed_int(config.seed, 1))
    disc = build_model("di2in_discriminator", **d_kwargs)
    if state is None and config.init_checkpoint:
        from liverctl.training.common import load_init_weights

        load_init_weights(gen, config.init_checkpoint)
    return gen, disc, kwargs


def _base_lr(opt: torch.optim.Optimizer) -> float:
    """The schedule's base lr of an optimizer (an earlier release's state has no ``initial_lr``)."""
    group = opt.param_groups[0]
    return float(group.get("initial_lr", group["lr"]))


def _lr_step(config: TrainConfig) -> int:
    return int(config.lr_step) if config.lr_step is not None else 100


def _step_fn(steps: AdversarialSteps, config: TrainConfig):
    """Global iteration ``g``: the learning rate of ``g`` (:func:`di2in_lr`), generator
    pre-training, then ``d_steps`` discriminator and ``g_steps`` generator steps."""
    d_step, g_step = steps.discriminator_step, steps.generator_step
    lr0 = {id(opt): _base_lr(opt) for opt in (steps.opt_g, steps.opt_d)}
    lr_step = _lr_step(config)
    pretrain = int(config.pretrain_iterations or 0)

    def step(g: int) -> dict[str, float]:
        for opt in (steps.opt_g, steps.opt_d):
            for group in opt.param_groups:
                group["lr"] = di2in_lr(lr0[id(opt)], g, lr_step, pretrain)
        if g < pretrain:
            loss, seg, _ = g_step(g * config.g_steps, adversarial=False)
            return {"loss": loss, "segmentation_bce": seg}
        d_losses = [d_step(g * config.d_steps + j) for j in range(config.d_steps)]
        results = [g_step(g * config.g_steps + j, adversarial=True) for j in range(config.g_steps)]
        n = len(results)
        return {
            "loss": sum(r[0] for r in results) / n,
            "segmentation_bce": sum(r[1] for r in results) / n,
            "adversarial": sum(r[2] for r in results) / n,
            "discriminator": sum(d_losses) / len(d_losses),
        }

    return step
