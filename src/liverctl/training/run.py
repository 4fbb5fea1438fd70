"""The one run loop every training recipe drives: :class:`TrainingRun` and its prologue :func:`open_recipe`.

A recipe (:mod:`liverctl.training.recipes`) says what one iteration does (:class:`Steps`);
:class:`TrainingRun` does the rest, the same for every method:

- ``config.json``: the :class:`~liverctl.training.config.TrainConfig`, the datasets and what
  the recipe adds;
- epochs of ``iterations_per_epoch`` iterations; ``last.pt`` at every epoch end and every
  ``checkpoint_every`` iterations inside an epoch (resume continues from there exactly: the
  weights after iteration ``g`` are bit-identical on the CPU to those of a run never stopped);
- ``train_log.csv``: one row per epoch (the columns of
  :data:`~liverctl.training.common.LOG_COLUMNS` plus the recipe's own), and ``loss_curve.png``;
- model selection (``config.select_on``, recorded in ``config.json`` as ``model_selection``):
  by default the exported weights are the final epoch's (nnU-Net's convention);
  ``"inner:F"`` chooses the epoch with the best mean Dice on an inner validation split carved
  from the training cases (:attr:`~liverctl.training.data.TrainingData.select`, written to
  ``selected.pt``, logged as ``select_dice``); ``"iteration:N"`` keeps the weights after
  iteration N (``selected.pt``; SD-Net's default, N = 1000). The held-out fold of ``--folds``
  never chooses anything: its mean Dice is logged (``val_dice``) for monitoring only, so the
  exported weights do not depend on its labels;
- the export (``model.safetensors`` + ``weights.toml``, :mod:`liverctl.training.export`)
  and the :class:`~liverctl.training.common.TrainResult`.

Determinism: every random choice of iteration ``g`` comes from generators seeded with
``(seed, rank, g, ...)`` (:func:`~liverctl.training.common.seed_int`), so no random state
is saved. Under ``torchrun`` (he2021 only) the epoch's mean loss is averaged over the ranks,
rank 0 validates and writes every file.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverctl.errors import LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.progress import ProgressCallback, report_values
from liverctl.training.checkpoint import save_checkpoint
from liverctl.training.common import LOG_COLUMNS, TrainResult, export_plans, plot_log, validate_dice, write_log
from liverctl.training.config import TrainConfig, parse_selection
from liverctl.training.data import TrainingData
from liverctl.training.distributed import DistContext
from liverctl.training.export import HE2021_CITATION

__all__ = ["CITATIONS", "Steps", "TrainingRun", "backward_step", "load_parts", "open_recipe"]

CITATIONS = {
    "he2021": HE2021_CITATION,
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


def load_parts(state: Mapping[str, Any] | None, **parts: Any) -> None:
    """Load each ``name=object`` (a module, optimizer, scaler; ``None`` is skipped) from
    ``state[name]`` of a resumed run's ``last.pt`` (nothing on a fresh run, ``state=None``)."""
    if state is None:
        return
    for key, part in parts.items():
        if part is not None and state.get(key) is not None:
            part.load_state_dict(state[key])


@dataclass
class Steps:
    """What a recipe gives the run loop.

    Attributes:
        step: does global iteration ``g``; returns ``{"loss": ..., column: ...}`` (a column
            missing from some iterations is averaged over the others).
        parts: the recipe's state for ``last.pt`` (``model`` at least, optimizers...).
        best_parts: what ``selected.pt`` keeps (``model`` at least).
        lr: the learning rate now (logged for the epoch, read at its start).
        validate: the mean Dice of the given cases (per dataset: the held-out fold, or the inner
            selection split), see :meth:`TrainingRun.validator`; ``None``: never validated.
        eligible: whether the model at the end of this epoch may be validated and be selected
            (H-DenseUNet, PIPO-FAN: only in their last stage); ``None``: always.
        end_epoch: called with the epoch's mean training loss (a scheduler step); returns
            ``True`` to stop the run (He 2021's stop rule); ``None``: nothing to do.
    """

    step: Callable[[int], Mapping[str, float]]
    parts: Callable[[], dict[str, Any]]
    best_parts: Callable[[], dict[str, Any]]
    lr: Callable[[], float]
    validate: Callable[[Sequence[Sequence[str]]], float] | None = None
    eligible: Callable[[], bool] | None = None
    end_epoch: Callable[[float], bool] | None = None


class TrainingRun:
    """Paths, counters, epochs, log, checkpoints, best model, export and result of one run (module docs).

    Args:
        out: the run folder.
        config: the run's options (resolved, :func:`~liverctl.training.config.resolve`).
        state: the ``last.pt`` dict to resume from, or ``None``.
        data: the run's :class:`~liverctl.training.data.TrainingData`.
        extra_columns: the recipe's own log columns.
        dist: the torchrun context (``None``: one process).
        device: the device (``None``: ``config.device`` resolved).
        progress: called with ``("training", g, total)`` and the epoch values.
    """

    def __init__(
        self,
        out: Path,
        config: TrainConfig,
        state: dict[str, Any] | None,
        data: TrainingData,
        *,
        extra_columns: Sequence[str] = (),
        dist: DistContext | None = None,
        device: torch.device | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        from liverctl.device import resolve_device, resolve_precision

        self.out, self.config, self.state, self.data, self.progress = out, config, state, data, progress
        self.dist = dist if dist is not None else DistContext()
        self.device = device if device is not None else resolve_device(config.device)
        self.precision = resolve_precision(self.device, config.precision)
        self.selection = parse_selection(config.select_on or "final")
        self.extra_columns = (*(("select_dice",) if self.selection[0] == "inner" else ()), *extra_columns)
        self.columns = (*LOG_COLUMNS, *self.extra_columns)
        self.last_path, self.selected_path = out / "last.pt", out / "selected.pt"
        self.log_path, self.curve_path = out / "train_log.csv", out / "loss_curve.png"
        self.epoch, self.it0, self.g = 0, 0, 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.epoch_losses: list[float] = []
        self.rows: list[dict[str, Any]] = []
        self.best_metric, self.best_epoch = -math.inf, -1
        self.finished, self.stop_reason = False, "max epochs"
        if state is not None:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        """The counters of ``last.pt`` and the cases it had skipped."""
        self.epoch, self.it0 = int(state["epoch"]), int(state.get("iteration_in_epoch", 0))
        self.g = int(state["global_iteration"])
        self.sums = {str(k): float(v) for k, v in dict(state.get("epoch_sums", {})).items()}
        self.counts = {str(k): int(v) for k, v in dict(state.get("epoch_counts", {})).items()}
        self.epoch_losses = [float(v) for v in state["epoch_losses"]]
        self.rows = [dict(r) for r in state["log"]]
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        self.finished = bool(state.get("finished", False))
        self.stop_reason = str(state.get("stop_reason", "max epochs"))
        data = self.data
        for d_name, case, reason in state.get("skipped", []):
            if d_name in data.names:
                d = data.names.index(d_name)
                if not data.is_bad(d, case):
                    data._bad.add((d, case))
                    data.skipped.append((d_name, case, reason))

    def scaler(self) -> Any:
        """A ``GradScaler`` for float16 autocast on CUDA, else ``None``."""
        if self.precision == "fp16" and self.device.type == "cuda":
            return torch.amp.GradScaler("cuda")
        return None

    @property
    def model_selection(self) -> str | list[str]:
        """What chose the exported weights: ``"final"``, ``"iteration:N"`` or the inner split's case names."""
        kind, value = self.selection
        if kind == "inner":
            return [n for names in self.data.select for n in names]
        return "final" if kind == "final" else f"iteration:{int(value)}"

    def write_config(self, datasets: Sequence[Any], **extra: Any) -> None:
        """``config.json`` (rank 0): the config, the datasets, ``model_selection`` and the
        recipe's ``extra`` entries."""
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config.to_dict(),
            "datasets": [str(d) for d in datasets],
            "model_selection": self.model_selection,
            "held_out": [n for names in self.data.val for n in names],
            "intensity": [_intensity_of(p) for p in self.data.plans],
            **extra,
        }
        write_text_atomic(self.out / "config.json", json.dumps(payload, indent=2) + "\n")

    def train(self, steps: Steps) -> None:
        """Run the remaining epochs (until ``epochs`` or the recipe's stop rule)."""
        while not self.finished and self.epoch < self.config.epochs:
            t0 = time.perf_counter()
            lr_used = steps.lr()
            self._iterations(steps)
            self._end_epoch(steps, lr_used, t0)

    def _iterations(self, steps: Steps) -> None:
        """The rest of the current epoch's iterations (from ``it0`` after a resume inside it)."""
        cfg, main = self.config, self.dist.is_main
        ipe = cfg.iterations_per_epoch
        total = cfg.epochs * ipe
        for it in range(self.it0, ipe):
            values = steps.step(self.g)
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + float(v)
                self.counts[k] = self.counts.get(k, 0) + 1
            if not math.isfinite(float(values.get("loss", 0.0))):
                warnings.warn(f"non-finite training loss at iteration {self.g + 1}", LiverctlWarning, stacklevel=4)
            self.g += 1
            if self.selection == ("iteration", self.g) and main:
                self.best_epoch = self.epoch + 1
                save_checkpoint(
                    {**steps.best_parts(), "iteration": self.g, "epoch": self.epoch + 1}, self.selected_path
                )
            if self.progress is not None and main:
                self.progress("training", self.g, total)
            if cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < ipe and main:
                save_checkpoint(self.snapshot(steps.parts(), it + 1), self.last_path)
        self.it0 = 0

    def _end_epoch(self, steps: Steps, lr_used: float, t0: float) -> None:
        """Scheduler, validation, best model, stop rule, log row and checkpoints of an epoch."""
        cfg = self.config
        means = {k: v / self.counts[k] for k, v in self.sums.items() if self.counts.get(k)}
        mean_loss = self.dist.all_mean(means.get("loss", float("nan")), self.device)
        self.epoch_losses.append(mean_loss)
        self.sums, self.counts = {}, {}
        stop = bool(steps.end_epoch(mean_loss)) if steps.end_epoch is not None else False
        due = (steps.eligible is None or steps.eligible()) and bool(cfg.val_every)
        due = due and ((self.epoch + 1) % max(cfg.val_every, 1) == 0 or self.epoch + 1 == cfg.epochs)
        val = self._validate(steps, self.data.val) if due else float("nan")  # monitoring only
        metric = self._validate(steps, self.data.select) if due and self.selection[0] == "inner" else float("nan")
        improved = math.isfinite(metric) and metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, self.epoch + 1
        if stop:
            self.finished, self.stop_reason = True, "stop rule"
        means = {**means, "select_dice": metric} if math.isfinite(metric) else means
        self._log_row(means, mean_loss, val, lr_used, t0)
        self.epoch += 1
        if self.epoch == cfg.epochs:
            self.finished = True
        if self.dist.is_main:
            if improved:
                save_checkpoint({**steps.best_parts(), "epoch": self.epoch, "metric": metric}, self.selected_path)
            save_checkpoint(self.snapshot(steps.parts()), self.last_path)
            write_log(self.log_path, self.rows, self.columns)
            plot_log(self.rows, self.curve_path)

    def _validate(self, steps: Steps, cases: Sequence[Sequence[str]]) -> float:
        """Mean Dice of ``cases``, the same on every rank; NaN without cases or a validator. Under
        torchrun each rank scores its share of the cases and the means are all-reduced
        (:meth:`~liverctl.training.distributed.DistContext.validate_shared`), so no rank waits in
        a collective while one validates alone."""
        if steps.validate is None or not any(cases):
            return float("nan")
        validate = steps.validate
        return self.dist.validate_shared(
            lambda shard, device: validate(shard.val), _Cases(self.data, cases), self.device
        )

    def _log_row(self, means: Mapping[str, float], mean_loss: float, val: float, lr_used: float, t0: float) -> None:
        """The epoch's row of ``train_log.csv`` (and its report to ``progress``, rank 0)."""
        row = {
            "epoch": self.epoch + 1,
            "iteration": self.g,
            "train_loss": f"{mean_loss:.6f}",
            "val_dice": "" if math.isnan(val) else f"{val:.6f}",
            "lr": f"{lr_used:.3g}",
            "seconds": f"{time.perf_counter() - t0:.2f}",
            "skipped": ";".join(f"{d}/{c}" for d, c, _ in self.data.skipped),
        }
        for k in self.extra_columns:
            row[k] = f"{means[k]:.6f}" if k in means else ""
        self.rows.append(row)
        if self.dist.is_main:
            report_values(
                self.progress,
                "epoch",
                epoch=self.epoch + 1,
                epochs=self.config.epochs,
                loss=mean_loss,
                val_dice=None if math.isnan(val) else val,
                lr=lr_used,
                seconds=float(row["seconds"]),
            )

    def snapshot(self, parts: dict[str, Any], iteration_in_epoch: int = 0) -> dict[str, Any]:
        """The ``last.pt`` dict (see :mod:`liverctl.training.checkpoint`)."""
        return {
            "format": "liverctl-train-2",
            **parts,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "iteration_in_epoch": iteration_in_epoch,
            "global_iteration": self.g,
            "epoch_sums": dict(self.sums),
            "epoch_counts": dict(self.counts),
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

    def load_selected(self) -> dict[str, Any] | None:
        """``selected.pt`` of a run that selects (inner split or iteration); ``None`` with the
        final epoch's weights (a warning when an inner split never gave a finite Dice)."""
        if self.selection[0] == "final":
            return None
        if not self.selected_path.exists():
            warnings.warn(
                f"no epoch was selected on the inner split ({self.selected_path.name} missing): exporting the final"
                " weights",
                LiverctlWarning,
                stacklevel=3,
            )
            return None
        return torch.load(self.selected_path, map_location="cpu", weights_only=True)

    def selected_model(self, model: nn.Module, key: str = "model") -> nn.Module:
        """The weights to export: ``model`` itself (final), or a copy of it with the ``key``
        weights of ``selected.pt``."""
        selected = self.load_selected()
        if selected is None:
            return model
        exported = copy.deepcopy(model)
        exported.load_state_dict(selected[key])
        return exported

    def export(
        self,
        model: nn.Module,
        *,
        architecture: str,
        kwargs: Mapping[str, Any],
        labels: Mapping[str, int] | None = None,
        liver_channel: int | None = None,
        decision: str = "argmax",
        description: str = "",
    ) -> tuple[Path, Path]:
        """:func:`~liverctl.training.export.export_model` of ``model`` with the method's citation;
        ``labels`` / ``liver_channel`` default to the data's classes and its ``liver`` class."""
        from liverctl.training.export import export_model

        data = self.data
        plans, _ = export_plans(data)
        if labels is None:
            labels = data.labels
        if liver_channel is None:
            liver_channel = data.labels.get("liver", data.liver_channels[0])
        return export_model(
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

    def result(self, model: nn.Module, model_path: Path | None, toml_path: Path | None, validated: bool) -> TrainResult:
        """The run's :class:`~liverctl.training.common.TrainResult`."""
        monitored = [float(r["val_dice"]) for r in self.rows if r.get("val_dice") not in (None, "")]
        selects = self.selection[0] != "final"
        return TrainResult(
            output_dir=self.out,
            model_path=model_path,
            toml_path=toml_path,
            last_checkpoint=self.last_path,
            selected_checkpoint=self.selected_path if selects and self.selected_path.exists() else None,
            log_path=self.log_path,
            curve_path=self.curve_path,
            epochs=self.epoch,
            iterations=self.g,
            train_losses=list(self.epoch_losses),
            model_selection=self.model_selection,
            selected_epoch=self.best_epoch if selects else self.epoch,
            selection_dice=self.best_metric if math.isfinite(self.best_metric) else None,
            val_dice=monitored[-1] if validated and monitored else None,
            stop_reason=self.stop_reason,
            skipped=list(self.data.skipped),
            model=model,
        )

    def validator(self, model: nn.Module, sigmoid: bool = False) -> Callable[[Sequence[Sequence[str]]], float]:
        """``cases -> mean Dice`` of ``model`` on them (eval mode while it runs;
        :func:`~liverctl.training.common.validate_dice`)."""

        def validate(cases: Sequence[Sequence[str]]) -> float:
            model.eval()
            value = validate_dice(
                model, self.data, self.config, self.device, self.progress, sigmoid=sigmoid, cases=cases
            )
            model.train()
            return value

        return validate

    @property
    def validating(self) -> bool:
        """Whether this run monitors a held-out fold (validation cases and ``val_every`` > 0)."""
        return bool(any(self.data.val) and self.config.val_every)


def _intensity_of(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The intensity scheme of a dataset's preprocessing plan, as ``config.json`` records it."""
    return {k: plan.get(k) for k in ("normalization", "window_name", "window", "mean", "std")}


def open_recipe(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
    *,
    columns: Sequence[str] = (),
    dist: DistContext | None = None,
    device: torch.device | None = None,
    **data_options: Any,
) -> TrainingRun:
    """Every recipe's prologue: its training data (``data_options`` go to
    :class:`~liverctl.training.data.TrainingData`; the dataset names are recorded in ``config``)
    and its :class:`TrainingRun`."""
    kind, fraction = parse_selection(config.select_on or "final")
    data = TrainingData(
        datasets,
        folds=config.folds,
        fold=config.fold,
        names=config.dataset_names or None,
        inner_fraction=fraction if kind == "inner" else None,
        inner_seed=config.seed,
        **data_options,
    )
    if not config.dataset_names:
        config.dataset_names = list(data.names)
    return TrainingRun(out, config, state, data, extra_columns=columns, dist=dist, device=device, progress=progress)


class _Cases:
    """``data`` with ``val`` replaced by the cases to validate (what
    :meth:`~liverctl.training.distributed.DistContext.validate_shared` shards)."""

    def __init__(self, data: Any, cases: Sequence[Sequence[str]]) -> None:
        self._data = data
        self.val = [list(names) for names in cases]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data, name)
