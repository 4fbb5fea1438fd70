"""The He et al. 2021 recipe (``../shared/docs/METHODS.md`` §1), ``TrainConfig(method="he2021")``: the default of
``liverctl train``.

One run, in ``output_dir``:

- ``config.json``: the :class:`~liverctl.training.config.TrainConfig` and the datasets;
- ``last.pt``: everything needed to continue (see :mod:`liverctl.training.checkpoint`),
  written atomically at the end of every epoch and every ``checkpoint_every`` iterations
  inside an epoch; ``train(..., resume=True)`` continues from it exactly: the weights after
  iteration ``g`` are bit-identical to those of a run that was never interrupted;
- ``best.pt``: the weights of the best epoch (highest mean validation Dice; without
  validation, lowest mean training loss);
- ``train_log.csv``: one row per epoch (``epoch, iteration, train_loss, val_dice, lr,
  seconds, skipped``), rewritten atomically each epoch;
- ``loss_curve.png``: training loss (and validation Dice) per epoch;
- ``model.safetensors`` + ``weights.toml``: the exported best model (see
  :mod:`liverctl.training.export`), usable as is by ``liverctl predict --weights``.

Labels: every class of the datasets, or with ``tumour_class=False`` (``--whole-liver``, the
paper's setting and the default of ``liverctl crosstest``) the whole liver: tumour labels are
folded into the liver and the network has no tumour class.

An iteration: the sampler picks the cases of the batch (:mod:`~liverctl.training.samplers`),
a patch is cut from each (foreground oversampling) and augmented
(:mod:`~liverctl.training.augmentation`), the network runs under autocast on CUDA, the
loss is Dice + cross-entropy (with deep-supervision weights if the network returns several
outputs), gradients are clipped to norm 12 (nnU-Net) and the optimizer steps. At the end of
an epoch the scheduler steps (ReduceLROnPlateau on the mean training loss, or poly),
validation runs every ``val_every`` epochs on the fold's validation cases with the
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
import copy
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import ConfigError, LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.progress import ProgressCallback, report_values
from liverctl.training.checkpoint import save_checkpoint
from liverctl.training.common import (
    GRAD_CLIP,
    TrainResult,
    build_training_model,
    export_plans,
    load_init_weights,
    make_batch_fn,
    model_kwargs,
    plot_log,
    poly_lr,
    seed_int,
    validate_dice,
    write_log,
)
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData
from liverctl.training.distributed import DistContext, init_from_env
from liverctl.training.losses import DeepSupervisionLoss, DiceCELoss, TargetAdaptiveLoss

__all__ = ["run"]


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    """The He 2021 run (module docs) of an opened run folder (see :func:`~liverctl.training.common.open_run`):
    the device, the torchrun process group when there is one, then :class:`_Run`."""
    from liverctl.device import resolve_device, resolve_precision

    device = resolve_device(config.device)
    dist_ctx: DistContext = init_from_env(device)
    try:
        if dist_ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_ctx.local_rank)
        precision = resolve_precision(device, config.precision)
        return _Run(datasets, out, config, state, device, precision, dist_ctx, progress).train()
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


class _Run:
    """One He 2021 run: the network, its optimizer and the counters that ``last.pt`` saves."""

    def __init__(
        self,
        datasets: Sequence[Any],
        out: Path,
        config: TrainConfig,
        state: dict[str, Any] | None,
        device: torch.device,
        precision: str,
        dist_ctx: DistContext,
        progress: ProgressCallback | None,
    ) -> None:
        self.datasets, self.out, self.config = datasets, out, config
        self.device, self.precision, self.dist, self.progress = device, precision, dist_ctx, progress
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        self.log_path, self.curve_path = out / "train_log.csv", out / "loss_curve.png"
        self.data = data = TrainingData(
            datasets,
            folds=config.folds,
            fold=config.fold,
            loss=config.loss,
            names=config.dataset_names or None,
            merge_tumour=not config.tumour_class,  # whole liver, as He et al. 2021 train it
        )
        if not config.dataset_names:
            config.dataset_names = list(data.names)
        self.model = model = build_training_model(config, data.n_classes, len(data.datasets))
        if int(getattr(model, "spatial_dims", 3)) == 2:
            raise ConfigError(
                f"{config.architecture} is a 2D network, which the he2021 recipe does not train: use its own recipe"
                f" (train --method {config.architecture}, TrainConfig(method={config.architecture!r}))"
            )
        multiple = int(getattr(model, "min_input_multiple", 1) or 1)
        if any(p % multiple for p in config.patch_size):
            raise ConfigError(
                f"patch size {tuple(config.patch_size)} must be a multiple of {multiple} for this network"
                f" ({config.architecture} with these settings)"
            )
        if state is None and config.init_checkpoint:
            load_init_weights(model, config.init_checkpoint)
        model.to(device)
        self.optimizer = _optimizer(model, config)
        self.scheduler = None
        if config.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
            )
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
        self.epoch, self.it0, self.g = 0, 0, 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.epoch_losses: list[float] = []
        self.rows: list[dict[str, Any]] = []
        self.best_metric, self.best_epoch = -math.inf, -1
        self.finished, self.stop_reason = False, "max epochs"
        if state is not None:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from ``last.pt``: weights, optimizer, scheduler, scaler, counters, skipped cases."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.it0 = int(state["epoch"]), int(state["iteration_in_epoch"])
        self.g = int(state["global_iteration"])
        self.loss_sum, self.loss_n = float(state["epoch_loss_sum"]), int(state["epoch_loss_count"])
        self.epoch_losses = [float(v) for v in state["epoch_losses"]]
        self.rows = [dict(r) for r in state["log"]]
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        self.finished, self.stop_reason = bool(state["finished"]), str(state.get("stop_reason", "max epochs"))
        data = self.data
        for d_name, case, reason in state.get("skipped", []):
            if d_name in data.names:
                d = data.names.index(d_name)
                if not data.is_bad(d, case):
                    data._bad.add((d, case))
                    data.skipped.append((d_name, case, reason))

    def snapshot(self, iteration_in_epoch: int, epoch: int) -> dict[str, Any]:
        """The ``last.pt`` dict (see :mod:`liverctl.training.checkpoint`)."""
        return {
            "format": "liverctl-train-1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.config.to_dict(),
            "epoch": epoch,
            "iteration_in_epoch": iteration_in_epoch,
            "global_iteration": self.g,
            "epoch_loss_sum": self.loss_sum,
            "epoch_loss_count": self.loss_n,
            "epoch_losses": list(self.epoch_losses),
            "log": [dict(r) for r in self.rows],
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "skipped": [list(s) for s in self.data.skipped],
            "finished": self.finished,
            "stop_reason": self.stop_reason,
            "dataset_names": list(self.data.names),
            "labels": dict(self.data.labels),
        }

    def train(self) -> TrainResult:
        """The remaining epochs, then the export (rank 0) and the result."""
        config, model = self.config, self.model
        self.net: nn.Module = model
        if self.dist.enabled:
            self.net = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.dcm_from_level is not None,
            )
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            payload = {"config": config.to_dict(), "datasets": [str(d) for d in self.datasets]}
            write_text_atomic(self.out / "config.json", json.dumps(payload, indent=2) + "\n")
        self.batch_fn = make_batch_fn(self.data, config, self.dist.rank)
        self.loss_fn = _loss_fn(config, self.data)
        pool = concurrent.futures.ThreadPoolExecutor(config.num_workers) if config.num_workers > 0 else None
        self.pool, self.pending = pool, collections.deque()
        try:
            while not self.finished and self.epoch < config.epochs:
                t_epoch = time.perf_counter()
                self.net.train()
                self._iterations()
                self._end_epoch(t_epoch)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if self.dist.enabled:  # DDP syncs buffers (batch-norm statistics) at each forward: finish in step
            for buf in model.buffers():
                torch.distributed.broadcast(buf, 0)
        model_path, toml_path = self._export() if self.dist.is_main else (None, None)
        self.dist.barrier()
        return self._result(model_path, toml_path)

    def _next_batch(self, gi: int):
        """The batch of iteration ``gi``: computed here, or by the prefetch threads (``num_workers``)."""
        if self.pool is None:
            return self.batch_fn(gi)
        while len(self.pending) < self.config.num_workers + 1:
            nxt = gi + len(self.pending)
            self.pending.append((nxt, self.pool.submit(self.batch_fn, nxt)))
        got, fut = self.pending.popleft()
        assert got == gi
        return fut.result()

    def _iterations(self) -> None:
        """The rest of the current epoch's iterations (from ``it0`` after a resume inside it)."""
        from liverctl.device import autocast

        config, device, model = self.config, self.device, self.model
        use_dcm = config.dcm_from_level is not None
        ipe = config.iterations_per_epoch
        total = config.epochs * ipe
        for it in range(self.it0, ipe):
            x, y, ds = self._next_batch(self.g)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            torch.manual_seed(seed_int(config.seed, self.dist.rank, self.g, 1))
            with autocast(device, self.precision):
                outputs = self.net(x, dataset_index=ds.to(device)) if use_dcm else self.net(x)
            loss = self.loss_fn(outputs, y, ds.to(device))
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                self.optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                warnings.warn(f"non-finite training loss at iteration {self.g + 1}", LiverctlWarning, stacklevel=2)
            self.loss_sum += value
            self.loss_n += 1
            self.g += 1
            main = self.dist.is_main
            if self.progress is not None and main:
                self.progress("training", self.g, total)
            if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0 and it + 1 < ipe and main:
                save_checkpoint(self.snapshot(it + 1, self.epoch), self.last_path)
        self.it0 = 0

    def _end_epoch(self, t_epoch: float) -> None:
        """Scheduler step, validation, best model, stop rule, log row and checkpoints of an epoch."""
        config, data, device = self.config, self.data, self.device
        mean_loss = self.dist.all_mean(self.loss_sum / max(self.loss_n, 1), device)
        self.epoch_losses.append(mean_loss)
        lr_used = float(self.optimizer.param_groups[0]["lr"])
        self.loss_sum, self.loss_n = 0.0, 0
        if self.scheduler is not None:
            self.scheduler.step(mean_loss)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = _poly_lr(config, self.epoch + 1)
        val = float("nan")
        last_epoch = self.epoch + 1 == config.epochs
        if config.val_every and any(data.val) and ((self.epoch + 1) % config.val_every == 0 or last_epoch):
            shown = self.progress if self.dist.is_main else None  # each rank scores its shard of the cases
            val = self.dist.validate_shared(
                lambda shard, *a: validate_dice(self.model, shard, *a), data, config, device, shown
            )
        metric = val if any(data.val) and config.val_every else -mean_loss
        improved = math.isfinite(metric) and metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, self.epoch + 1
        if _stop_rule(self.epoch_losses, float(self.optimizer.param_groups[0]["lr"]), config):
            self.finished, self.stop_reason = True, "stop rule"
        self.rows.append(
            {
                "epoch": self.epoch + 1,
                "iteration": self.g,
                "train_loss": f"{mean_loss:.6f}",
                "val_dice": "" if math.isnan(val) else f"{val:.6f}",
                "lr": f"{lr_used:.3g}",
                "seconds": f"{time.perf_counter() - t_epoch:.2f}",
                "skipped": ";".join(f"{d}/{c}" for d, c, _ in data.skipped),
            }
        )
        if self.dist.is_main:
            row = self.rows[-1]
            report_values(
                self.progress,
                "epoch",
                epoch=self.epoch + 1,
                epochs=config.epochs,
                loss=mean_loss,
                val_dice=None if math.isnan(val) else val,
                lr=lr_used,
                seconds=float(row["seconds"]),
            )
        self.epoch += 1
        if self.epoch == config.epochs:
            self.finished = True
        if self.dist.is_main:
            if improved:
                save_checkpoint(
                    {"model": self.model.state_dict(), "epoch": self.epoch, "metric": metric}, self.best_path
                )
            save_checkpoint(self.snapshot(0, self.epoch), self.last_path)
            write_log(self.log_path, self.rows)
            plot_log(self.rows, self.curve_path)

    def _export(self) -> tuple[Path, Path]:
        """``model.safetensors`` + ``weights.toml`` of the best epoch (the last weights without ``best.pt``)."""
        from liverctl.training.export import export_model

        config, data, model = self.config, self.data, self.model
        exported = model
        if self.best_path.exists():
            exported = copy.deepcopy(model)
            best = torch.load(self.best_path, map_location=self.device, weights_only=True)
            exported.load_state_dict(best["model"])
        plans, _ = export_plans(data)
        liver = data.labels.get("liver", data.liver_channels[0])
        return export_model(
            exported,
            self.out,
            name=f"{self.out.name or 'liverctl-model'}",
            architecture=config.architecture,
            kwargs=model_kwargs(config, data.n_classes, len(data.datasets)),
            plans=plans,
            dataset_names=data.names,
            labels=data.labels,
            liver_channel=int(liver),
            patch_size=config.patch_size,
            overlap=config.val_overlap,
        )

    def _result(self, model_path: Path | None, toml_path: Path | None) -> TrainResult:
        validated = any(self.data.val) and self.config.val_every and math.isfinite(self.best_metric)
        return TrainResult(
            output_dir=self.out,
            model_path=model_path,
            toml_path=toml_path,
            last_checkpoint=self.last_path,
            best_checkpoint=self.best_path,
            log_path=self.log_path,
            curve_path=self.curve_path,
            epochs=self.epoch,
            iterations=self.g,
            train_losses=self.epoch_losses,
            best_metric=self.best_metric if validated else None,
            best_epoch=self.best_epoch,
            stop_reason=self.stop_reason,
            skipped=list(self.data.skipped),
            model=self.model,
        )
