"""The bookkeeping shared by the training recipes of ``../shared/docs/METHODS.md`` §2-§4.

:mod:`~liverctl.training.semisupervised` (SD-Net), :mod:`~liverctl.training.adversarial`
(DI2IN-AN) and :mod:`~liverctl.training.staged` (H-DenseUNet) each define what one
iteration does; :class:`RecipeRun` does the rest, as :func:`liverctl.training.train` does
for ``../shared/docs/METHODS.md`` §1: the device (:mod:`liverctl.device`), ``config.json``, epochs of
``iterations_per_epoch`` iterations, the ``train_log.csv`` rows (the columns of
:data:`~liverctl.training.common.LOG_COLUMNS` plus the recipe's own), ``loss_curve.png``,
``last.pt`` at every epoch end (resume continues from there, bit-identical on the CPU),
``best.pt`` (best validation Dice; without validation, lowest mean training loss) and the
export (``model.safetensors`` + ``weights.toml``).

Determinism: every random choice of iteration ``g`` comes from generators seeded with
``(seed, g, ...)`` (:func:`~liverctl.training.common.seed_int`), so no random state is saved.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.progress import ProgressCallback, report_values
from liverctl.training.checkpoint import save_checkpoint
from liverctl.training.common import LOG_COLUMNS, TrainResult, export_plans, plot_log, write_log
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData

__all__ = ["CITATIONS", "RecipeRun", "backward_step", "recipe_setup"]

CITATIONS = {
    "sdnet": "Huang et al., SD-Net semi-supervised liver segmentation (2024); trained with liverctl",
    "di2in-an": "Yang D. et al., DI2IN-AN adversarial liver segmentation (MICCAI 2017); trained with liverctl",
    "hdenseunet": "Li X. et al., H-DenseUNet (IEEE TMI 2018); trained with liverctl",
    "pipofan": "Fang X. and Yan P., PIPO-FAN (IEEE TMI 2020); trained with liverctl",
}


def backward_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor] | None = None,
    scaler: Any = None,
    clip: float | None = 12.0,
) -> None:
    """``zero_grad``, backward, optional gradient clipping of ``params``, optimizer step
    (through a CUDA ``GradScaler`` when given)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if clip and params:
            torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip and params:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()


def recipe_setup(
    datasets: Sequence[Any], config: TrainConfig, method: str, architecture: str, **data_options: Any
) -> tuple[TrainConfig, TrainingData]:
    """A recipe's config (its ``method``, and its own network unless one was chosen) and its
    training data; ``data_options`` go to :class:`~liverctl.training.data.TrainingData`."""
    config = dataclasses.replace(config, method=method)
    if config.architecture == "unet3d":
        config.architecture = architecture
    data = TrainingData(
        datasets, folds=config.folds, fold=config.fold, names=config.dataset_names or None, **data_options
    )
    if not config.dataset_names:
        config.dataset_names = list(data.names)
    return config, data


class RecipeRun:
    """Epochs, log, checkpoints, best model and export of one recipe run (module docs).

    Args:
        out: the run folder.
        config: the run's options (already validated).
        state: the ``last.pt`` dict to resume from, or ``None``.
        extra_columns: the recipe's own log columns (means over the epoch of the numbers
            its step function returns under those names).
    """

    def __init__(
        self, out: Path, config: TrainConfig, state: dict[str, Any] | None, extra_columns: Sequence[str] = ()
    ) -> None:
        from liverctl.device import resolve_device, resolve_precision

        self.out = out
        self.config = config
        self.state = state
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(self.device, config.precision)
        self.columns = (*LOG_COLUMNS, *extra_columns)
        self.extra_columns = tuple(extra_columns)
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        self.log_path, self.curve_path = out / "train_log.csv", out / "loss_curve.png"
        self.epoch, self.g = 0, 0
        self.epoch_losses: list[float] = []
        self.rows: list[dict[str, Any]] = []
        self.best_metric, self.best_epoch = -math.inf, -1
        if state is not None:
            self.epoch, self.g = int(state["epoch"]), int(state["global_iteration"])
            self.epoch_losses = [float(v) for v in state["epoch_losses"]]
            self.rows = [dict(r) for r in state["log"]]
            self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])

    def scaler(self) -> Any:
        """A ``GradScaler`` for float16 autocast on CUDA, else ``None``."""
        if self.precision == "fp16" and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    def write_config(self, datasets: Sequence[Any], **extra: Any) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {"config": self.config.to_dict(), "datasets": [str(d) for d in datasets], **extra}
        write_text_atomic(self.out / "config.json", json.dumps(payload, indent=2) + "\n")

    def run(
        self,
        step: Callable[[int], dict[str, float]],
        parts: Callable[[], dict[str, Any]],
        best_parts: Callable[[], dict[str, Any]],
        lr: Callable[[], float],
        validate: Callable[[], float] | None,
        progress: ProgressCallback | None,
        eligible: Callable[[], bool] | None = None,
    ) -> None:
        """Run the remaining epochs.

        Args:
            step: does global iteration ``g``; returns ``{"loss": ..., column: ...}`` (a column
                missing from some iterations is averaged over the others).
            parts: the recipe's state for ``last.pt`` (``model`` at least, optimizers...).
            best_parts: what ``best.pt`` keeps (``model`` at least).
            lr: the learning rate now (logged).
            validate: mean validation Dice, or ``None`` when there is no validation.
            eligible: whether the model at the end of this epoch may be validated and become
                ``best.pt`` (H-DenseUNet: only in its last stage); ``None``: always.
        """
        cfg = self.config
        ipe = cfg.iterations_per_epoch
        total = cfg.epochs * ipe
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            lr_used = lr()
            for _ in range(ipe):
                values = step(self.g)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
                if not math.isfinite(values.get("loss", 0.0)):
                    warnings.warn(f"non-finite training loss at iteration {self.g + 1}", LiverctlWarning, stacklevel=2)
                self.g += 1
                if progress is not None:
                    progress("training", self.g, total)
            means = {k: v / counts[k] for k, v in sums.items()}
            mean_loss = means.get("loss", float("nan"))
            self.epoch_losses.append(mean_loss)
            val = float("nan")
            last = self.epoch + 1 == cfg.epochs
            ok = eligible is None or eligible()
            if ok and validate is not None and cfg.val_every and ((self.epoch + 1) % cfg.val_every == 0 or last):
                val = validate()
            metric = val if validate is not None and cfg.val_every else -mean_loss
            improved = ok and math.isfinite(metric) and metric > self.best_metric
            if improved:
                self.best_metric, self.best_epoch = metric, self.epoch + 1
            row = {
                "epoch": self.epoch + 1,
                "iteration": self.g,
                "train_loss": f"{mean_loss:.6f}",
                "val_dice": "" if math.isnan(val) else f"{val:.6f}",
                "lr": f"{lr_used:.3g}",
                "seconds": f"{time.perf_counter() - t0:.2f}",
                "skipped": "",
            }
            for k in self.extra_columns:
                row[k] = f"{means[k]:.6f}" if k in means else ""
            self.rows.append(row)
            report_values(
                progress,
                "epoch",
                epoch=self.epoch + 1,
                epochs=cfg.epochs,
                loss=mean_loss,
                val_dice=None if math.isnan(val) else val,
                lr=lr_used,
                seconds=float(row["seconds"]),
            )
            self.epoch += 1
            if improved:
                save_checkpoint({**best_parts(), "epoch": self.epoch, "metric": metric}, self.best_path)
            save_checkpoint(self.snapshot(parts()), self.last_path)
            write_log(self.log_path, self.rows, self.columns)
            plot_log(self.rows, self.curve_path)

    def snapshot(self, parts: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": "liverctl-recipe-1",
            **parts,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "iteration_in_epoch": 0,
            "global_iteration": self.g,
            "epoch_losses": list(self.epoch_losses),
            "log": [dict(r) for r in self.rows],
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "finished": self.epoch >= self.config.epochs,
        }

    def load_best(self, key: str = "model") -> dict[str, torch.Tensor] | None:
        """The ``key`` state dict of ``best.pt`` (``None`` when there is none)."""
        if not self.best_path.exists():
            return None
        return torch.load(self.best_path, map_location="cpu", weights_only=True)[key]

    def best_model(self, model: nn.Module, key: str = "model") -> nn.Module:
        """A copy of ``model`` with the weights of ``best.pt`` (``model`` itself when there is none)."""
        best = self.load_best(key)
        if best is None:
            return model
        exported = copy.deepcopy(model)
        exported.load_state_dict(best)
        return exported

    def export(
        self,
        model: nn.Module,
        data: TrainingData,
        *,
        architecture: str,
        kwargs: Mapping[str, Any],
        labels: Mapping[str, int],
        liver_channel: int,
        decision: str = "argmax",
        description: str = "",
    ) -> tuple[Path, Path]:
        """:func:`~liverctl.training.export.export_model` with the recipe's ``decision`` and citation."""
        from liverctl.training.export import export_model

        plans, _ = export_plans(data)
        model_path, toml_path = export_model(
            model,
            self.out,
            name=f"{self.out.name or 'liverctl-model'}",
            architecture=architecture,
            kwargs=kwargs,
            plans=plans,
            dataset_names=data.names,
            labels=labels,
            liver_channel=int(liver_channel),
            patch_size=self.config.patch_size,
            overlap=self.config.val_overlap,
            description=description,
            decision=decision,
            citation=CITATIONS[self.config.method],
        )
        return model_path, toml_path

    def result(
        self, model: nn.Module, model_path: Path, toml_path: Path, data: TrainingData, validated: bool
    ) -> TrainResult:
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
            train_losses=list(self.epoch_losses),
            best_metric=self.best_metric if validated and math.isfinite(self.best_metric) else None,
            best_epoch=self.best_epoch,
            stop_reason="max epochs",
            skipped=list(data.skipped),
            model=model,
        )
