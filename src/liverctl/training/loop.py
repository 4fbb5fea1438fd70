"""The training loop behind ``liverctl train``: :func:`train`.

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
identical weights.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import copy
import csv
import io
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liverctl.errors import ConfigError, DatasetError, LiverctlError, LiverctlWarning
from liverctl.io import write_text_atomic
from liverctl.metrics import dice
from liverctl.progress import ProgressCallback
from liverctl.training.augmentation import Augmentation, choose_center, extract_patch, foreground_slots
from liverctl.training.checkpoint import load_checkpoint, save_checkpoint
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData
from liverctl.training.distributed import DistContext, init_from_env
from liverctl.training.losses import DeepSupervisionLoss, DiceCELoss, TargetAdaptiveLoss
from liverctl.training.samplers import make_sampler

__all__ = [
    "LOG_COLUMNS",
    "TrainResult",
    "build_training_model",
    "export_plans",
    "load_init_weights",
    "make_batch_fn",
    "open_run",
    "plot_log",
    "seed_int",
    "train",
    "validate_dice",
    "write_log",
]

LOG_COLUMNS = ("epoch", "iteration", "train_loss", "val_dice", "lr", "seconds", "skipped")
GRAD_CLIP = 12.0


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output_dir: the run folder.
        model_path, toml_path: exported ``model.safetensors`` and ``weights.toml`` (``None``
            on ranks other than 0).
        last_checkpoint, best_checkpoint: ``last.pt`` and ``best.pt``.
        log_path, curve_path: ``train_log.csv`` and ``loss_curve.png``.
        epochs: epochs completed; iterations: iterations completed.
        train_losses: mean training loss per epoch.
        best_metric: best validation Dice (or ``None`` without validation); best_epoch.
        stop_reason: ``"max epochs"`` or ``"stop rule"``.
        skipped: ``(dataset, case, reason)`` of every case left out.
        model: the network with its final weights (the exported file holds the best ones).
    """

    output_dir: Path
    model_path: Path | None
    toml_path: Path | None
    last_checkpoint: Path
    best_checkpoint: Path
    log_path: Path
    curve_path: Path
    epochs: int
    iterations: int
    train_losses: list[float]
    best_metric: float | None
    best_epoch: int
    stop_reason: str
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


def _seed_int(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def build_training_model(config: TrainConfig, n_classes: int, n_datasets: int) -> nn.Module:
    """The network of a run: ``config.architecture`` with ``config.arch_kwargs``, one input
    channel, ``n_classes`` outputs and, with ``dcm_from_level``, one branch per dataset."""
    from liverctl.models import build_model

    kwargs = dict(config.arch_kwargs)
    kwargs.setdefault("in_channels", 1)
    kwargs["out_channels"] = n_classes
    if config.dcm_from_level is not None:
        kwargs["dcm_from_level"] = config.dcm_from_level
        kwargs["n_datasets"] = n_datasets
    torch.manual_seed(config.seed)
    return build_model(config.architecture, **kwargs)


def model_kwargs(config: TrainConfig, n_classes: int, n_datasets: int) -> dict[str, Any]:
    """The constructor arguments :func:`build_training_model` uses (for the export)."""
    kwargs = dict(config.arch_kwargs)
    kwargs.setdefault("in_channels", 1)
    kwargs["out_channels"] = n_classes
    if config.dcm_from_level is not None:
        kwargs["dcm_from_level"] = config.dcm_from_level
        kwargs["n_datasets"] = n_datasets
    return kwargs


def make_batch_fn(data: TrainingData, config: TrainConfig, rank: int = 0):
    """A function ``g -> (images (B,1,z,y,x), labels (B,z,y,x) long, dataset indices (B,))``
    giving the batch of global iteration ``g`` on ``rank``: a pure function of
    ``(config.seed, rank, g)`` (and the set of unreadable cases)."""
    sampler = make_sampler(config.sampler, data.sizes, config.batch_size)
    slots = foreground_slots(config.batch_size, config.foreground_fraction)
    augment = Augmentation() if config.augment else None
    patch = config.patch_size

    def load(d: int, c: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Any]:
        for _ in range(len(data.info[d]) + 1):
            info = data.info[d][c]
            if not data.is_bad(d, info.name):
                try:
                    image, label = data.load_arrays(d, info.name)
                    return image, label, info
                except (LiverctlError, OSError, ValueError, EOFError) as exc:
                    data.mark_bad(d, info.name, " ".join(str(exc).split()) or type(exc).__name__)
            good = [i for i, inf in enumerate(data.info[d]) if not data.is_bad(d, inf.name)]
            if not good:
                raise DatasetError(f"dataset {data.names[d]} has no readable training case left")
            c = good[int(rng.integers(0, len(good)))]
        raise DatasetError(f"dataset {data.names[d]} has no readable training case left")

    def batch(g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([config.seed, rank, g])
        plan = sampler(g, rng)
        images, labels, datasets = [], [], []
        for slot, (d, c) in zip(slots, plan.items, strict=True):
            image, label, info = load(d, c, rng)
            center = choose_center(image.shape, rng, info.foreground if slot else None)
            img, lab = extract_patch(image, label, center, patch)
            lab = data.luts[d][lab]
            img_t, lab_t = torch.from_numpy(img), torch.from_numpy(lab.astype(np.int64))
            if augment is not None:
                img_t, lab_t = augment(img_t, lab_t, rng)
            images.append(img_t)
            labels.append(lab_t)
            datasets.append(d)
        return torch.stack(images)[:, None].contiguous(), torch.stack(labels), torch.tensor(datasets)

    return batch


class _Branch(nn.Module):
    """A DCM model with its dataset branch fixed (for the inference engine)."""

    def __init__(self, model: nn.Module, dataset_index: int | None) -> None:
        super().__init__()
        self.model = model
        self.dataset_index = dataset_index
        self.min_input_multiple = getattr(model, "min_input_multiple", None)
        self.spatial_dims = getattr(model, "spatial_dims", 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dataset_index is None:
            return self.model(x)
        return self.model(x, dataset_index=self.dataset_index)


def _validate(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    sigmoid: bool = False,
) -> float:
    from liverctl.device import resolve_precision
    from liverctl.inference import SlidingWindow, sliding_window_inference

    window = SlidingWindow(
        roi=tuple(config.patch_size),
        overlap=config.val_overlap,
        adaptive_roi=True,
        crop_body=False,
        argmax=not sigmoid,
        channels=(0,),
        precision=resolve_precision(device, config.precision),  # training's policy: fp32 on the CPU
        batch_size=1,
        activation="sigmoid" if sigmoid else "softmax",
    )
    liver = data.liver_channels
    scores: list[float] = []
    cases = [(d, n) for d, names in enumerate(data.val) for n in names]
    for i, (d, name) in enumerate(cases):
        if data.is_bad(d, name):
            continue
        try:
            image, label = data.load_arrays(d, name)
        except (LiverctlError, OSError, ValueError, EOFError) as exc:
            data.mark_bad(d, name, " ".join(str(exc).split()) or type(exc).__name__)
            continue
        net = _Branch(model, d if config.dcm_from_level is not None else None)
        result = sliding_window_inference(np.asarray(image, np.float32)[None], net, window, device)
        pred = result.channel(0) > 0.5 if sigmoid else np.isin(result.labels, liver)
        ref = np.isin(data.luts[d][np.asarray(label)], liver)
        scores.append(float(dice(pred, ref)))
        if progress is not None:
            progress("validation", i + 1, len(cases))
    return float(np.mean(scores)) if scores else float("nan")


def _loss_fn(config: TrainConfig, data: TrainingData):
    if config.loss == "dice_ce":
        base = DeepSupervisionLoss(DiceCELoss())

        def dice_ce(outputs, target, datasets):
            return base(outputs, target)

        return dice_ce
    tal = [DeepSupervisionLoss(TargetAdaptiveLoss(lab)) for lab in data.labelled]

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


def _write_log(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = LOG_COLUMNS) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in columns})
    write_text_atomic(path, buf.getvalue())


def _stop_rule(losses: Sequence[float], lr: float, config: TrainConfig) -> bool:
    w = config.stop_window
    if config.scheduler != "plateau" or len(losses) <= w or lr >= config.stop_min_lr:
        return False
    return min(losses[:-w]) - min(losses[-w:]) < config.stop_min_improvement


def _poly_lr(config: TrainConfig, epoch: int) -> float:
    return config.initial_lr * (1 - min(epoch, config.epochs) / config.epochs) ** config.poly_exponent


def _load_init(model: nn.Module, path: str) -> None:
    from liverctl.models import load_state_dict_checked

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--init: no such checkpoint {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except Exception as exc:
            raise ConfigError(f"--init: unreadable weights {p}: {exc}") from None
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"--init: unreadable checkpoint {p}: {type(exc).__name__}") from None
    load_state_dict_checked(model, sd)


def _plans_and_orientation(data: TrainingData) -> tuple[list[dict[str, Any]], str]:
    orientation = "LPS"
    with contextlib.suppress(Exception):
        from liverctl.preprocessing import orientation_of

        d = 0
        image, _ = data.load_images(d, data.info[d][0].name)
        orientation = orientation_of(image.geometry)
    plans = []
    for p in data.plans:
        q = dict(p)
        q.setdefault("orientation", orientation)
        plans.append(q)
    return plans, orientation


def open_run(out: Path, config: TrainConfig | None, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The configuration and saved state of a run in ``out``: with ``resume`` the config saved in
    ``out/last.pt`` (``device``, ``precision``, ``num_workers`` taken from ``config``) and that
    checkpoint; else ``config`` and ``None``, refusing a folder that already holds ``last.pt``."""
    last_path = out / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(last_path)
        saved = TrainConfig.from_dict(state["config"])
        if config is not None:
            saved.device, saved.precision, saved.num_workers = config.device, config.precision, config.num_workers
        config = saved
    else:
        if config is None:
            config = TrainConfig()
        if last_path.exists():
            raise ConfigError(
                f"{out} already holds a training run (last.pt): pass --resume to continue it or choose another folder"
            )
    config.validate()
    return config, state


def train(
    datasets: Sequence[Any],
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a network on one or more preprocessed datasets (module docs).

    Args:
        datasets: ``liverctl preprocess`` output folders (or dataset objects, see
            :mod:`liverctl.training.data`), in a fixed order: dataset ``i`` is DCM branch ``i``.
        output_dir: the run folder (created). A folder that already holds ``last.pt`` is
            refused unless ``resume`` is set.
        config: the options; with ``resume`` the saved ``config.json`` is used instead,
            except ``device``, ``precision`` and ``num_workers``, taken from ``config``.
            ``config.method`` other than ``"he2021"`` runs that recipe instead
            (:mod:`~liverctl.training.semisupervised`, :mod:`~liverctl.training.adversarial`,
            :mod:`~liverctl.training.staged`; unlabelled SD-Net data from ``config.unlabelled``).
        progress: called as ``progress("training", iterations done, total iterations)``
            after every iteration and ``progress("validation", cases done, total)``.
        resume: continue the run saved in ``output_dir/last.pt``.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: invalid options, a folder that holds another run, different label
            sets, too few cases for the fold count.
        DatasetError: a dataset without any readable training case.
    """
    out = Path(output_dir)
    config, state = open_run(out, config, resume)
    if config.method != "he2021":  # the recipes of METHODS §2-§4 (single process)
        return _run_recipe(datasets, out, config, state, progress)

    from liverctl.device import resolve_device, resolve_precision

    device = resolve_device(config.device)
    dist_ctx: DistContext = init_from_env(device.type)
    try:
        if dist_ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", dist_ctx.local_rank)
        precision = resolve_precision(device, config.precision)
        return _run(datasets, out, config, state, device, precision, dist_ctx, progress)
    finally:
        dist_ctx.close()


def _run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    device: torch.device,
    precision: str,
    dist_ctx: DistContext,
    progress: ProgressCallback | None,
) -> TrainResult:
    last_path, best_path = out / "last.pt", out / "best.pt"
    log_path, curve_path = out / "train_log.csv", out / "loss_curve.png"
    data = TrainingData(
        datasets, folds=config.folds, fold=config.fold, loss=config.loss, names=config.dataset_names or None
    )
    if not config.dataset_names:
        config.dataset_names = list(data.names)
    n_datasets = len(data.datasets)

    model = build_training_model(config, data.n_classes, n_datasets)
    multiple = int(getattr(model, "min_input_multiple", 1) or 1)
    bad = [p for p in config.patch_size if p % multiple]
    if bad:
        raise ConfigError(
            f"patch size {tuple(config.patch_size)} must be a multiple of {multiple} for this network"
            f" ({config.architecture} with these settings)"
        )
    if state is None and config.init_checkpoint:
        _load_init(model, config.init_checkpoint)
    model.to(device)

    lr0 = config.initial_lr
    if config.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            model.parameters(), lr=lr0, weight_decay=config.weight_decay, amsgrad=True
        )
    else:
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr0, momentum=0.99, nesterov=True, weight_decay=config.weight_decay
        )
    scheduler = None
    if config.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience
        )
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None

    epoch, it0, g = 0, 0, 0
    loss_sum, loss_n = 0.0, 0
    epoch_losses: list[float] = []
    rows: list[dict[str, Any]] = []
    best_metric, best_epoch = -math.inf, -1
    finished, stop_reason = False, "max epochs"
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, it0, g = int(state["epoch"]), int(state["iteration_in_epoch"]), int(state["global_iteration"])
        loss_sum, loss_n = float(state["epoch_loss_sum"]), int(state["epoch_loss_count"])
        epoch_losses = [float(v) for v in state["epoch_losses"]]
        rows = [dict(r) for r in state["log"]]
        best_metric, best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        finished, stop_reason = bool(state["finished"]), str(state.get("stop_reason", "max epochs"))
        for d_name, case, reason in state.get("skipped", []):
            if d_name in data.names:
                d = data.names.index(d_name)
                if not data.is_bad(d, case):
                    data._bad.add((d, case))
                    data.skipped.append((d_name, case, reason))

    net: nn.Module = model
    if dist_ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.dcm_from_level is not None,
        )
    main = dist_ctx.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            out / "config.json",
            json.dumps({"config": config.to_dict(), "datasets": [str(d) for d in datasets]}, indent=2) + "\n",
        )

    batch_fn = make_batch_fn(data, config, dist_ctx.rank)
    loss_fn = _loss_fn(config, data)
    use_dcm = config.dcm_from_level is not None
    ipe = config.iterations_per_epoch
    total = config.epochs * ipe

    def snapshot(iteration_in_epoch: int, ep: int) -> dict[str, Any]:
        return {
            "format": "liverctl-train-1",
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "config": config.to_dict(),
            "epoch": ep,
            "iteration_in_epoch": iteration_in_epoch,
            "global_iteration": g,
            "epoch_loss_sum": loss_sum,
            "epoch_loss_count": loss_n,
            "epoch_losses": list(epoch_losses),
            "log": [dict(r) for r in rows],
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "skipped": [list(s) for s in data.skipped],
            "finished": finished,
            "stop_reason": stop_reason,
            "dataset_names": list(data.names),
            "labels": dict(data.labels),
        }

    pool = concurrent.futures.ThreadPoolExecutor(config.num_workers) if config.num_workers > 0 else None
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

    try:
        while not finished and epoch < config.epochs:
            t_epoch = time.perf_counter()
            net.train()
            for it in range(it0, ipe):
                x, y, ds = next_batch(g)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                torch.manual_seed(_seed_int(config.seed, dist_ctx.rank, g, 1))
                from liverctl.device import autocast

                with autocast(device, precision):
                    outputs = net(x, dataset_index=ds.to(device)) if use_dcm else net(x)
                loss = loss_fn(outputs, y, ds.to(device))
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                    optimizer.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    warnings.warn(f"non-finite training loss at iteration {g + 1}", LiverctlWarning, stacklevel=2)
                loss_sum += value
                loss_n += 1
                g += 1
                if progress is not None and main:
                    progress("training", g, total)
                if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0 and it + 1 < ipe and main:
                    save_checkpoint(snapshot(it + 1, epoch), last_path)
            it0 = 0
            mean_loss = dist_ctx.all_mean(loss_sum / max(loss_n, 1), device)
            epoch_losses.append(mean_loss)
            lr_used = float(optimizer.param_groups[0]["lr"])
            loss_sum, loss_n = 0.0, 0
            if scheduler is not None:
                scheduler.step(mean_loss)
            else:
                for group in optimizer.param_groups:
                    group["lr"] = _poly_lr(config, epoch + 1)
            val = float("nan")
            last_epoch = epoch + 1 == config.epochs
            if config.val_every and any(data.val) and ((epoch + 1) % config.val_every == 0 or last_epoch):
                if main:
                    val = _validate(model, data, config, device, progress)
                val = dist_ctx.broadcast_float(val, device)
            metric = val if any(data.val) and config.val_every else -mean_loss
            improved = math.isfinite(metric) and metric > best_metric
            if improved:
                best_metric, best_epoch = metric, epoch + 1
            lr_now = float(optimizer.param_groups[0]["lr"])
            if _stop_rule(epoch_losses, lr_now, config):
                finished, stop_reason = True, "stop rule"
            rows.append(
                {
                    "epoch": epoch + 1,
                    "iteration": g,
                    "train_loss": f"{mean_loss:.6f}",
                    "val_dice": "" if math.isnan(val) else f"{val:.6f}",
                    "lr": f"{lr_used:.3g}",
                    "seconds": f"{time.perf_counter() - t_epoch:.2f}",
                    "skipped": ";".join(f"{d}/{c}" for d, c, _ in data.skipped),
                }
            )
            epoch += 1
            if epoch == config.epochs:
                finished = True
            if main:
                if improved:
                    save_checkpoint({"model": model.state_dict(), "epoch": epoch, "metric": metric}, best_path)
                save_checkpoint(snapshot(0, epoch), last_path)
                _write_log(log_path, rows)
                _plot(rows, curve_path)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    if dist_ctx.enabled:  # DDP syncs buffers (batch-norm statistics) at each forward: finish in step
        for buf in model.buffers():
            torch.distributed.broadcast(buf, 0)
    model_path = toml_path = None
    if main:
        from liverctl.training.export import export_model

        exported = model
        if best_path.exists():
            exported = copy.deepcopy(model)
            exported.load_state_dict(torch.load(best_path, map_location=device, weights_only=True)["model"])

        plans, _ = _plans_and_orientation(data)
        liver = data.labels.get("liver", data.liver_channels[0])
        model_path, toml_path = export_model(
            exported,
            out,
            name=f"{out.name or 'liverctl-model'}",
            architecture=config.architecture,
            kwargs=model_kwargs(config, data.n_classes, n_datasets),
            plans=plans,
            dataset_names=data.names,
            labels=data.labels,
            liver_channel=int(liver),
            patch_size=config.patch_size,
            overlap=config.val_overlap,
        )
    dist_ctx.barrier()
    return TrainResult(
        output_dir=out,
        model_path=model_path,
        toml_path=toml_path,
        last_checkpoint=last_path,
        best_checkpoint=best_path,
        log_path=log_path,
        curve_path=curve_path,
        epochs=epoch,
        iterations=g,
        train_losses=epoch_losses,
        best_metric=best_metric if any(data.val) and config.val_every and math.isfinite(best_metric) else None,
        best_epoch=best_epoch,
        stop_reason=stop_reason,
        skipped=list(data.skipped),
        model=model,
    )


def _plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    try:
        from liverctl.plots import loss_curve

        loss_curve(rows, path)
    except ImportError:  # matplotlib missing: the CSV log still holds everything
        warnings.warn("matplotlib is not available: no loss curve plotted", LiverctlWarning, stacklevel=2)


def _run_recipe(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
) -> TrainResult:
    import importlib

    module = {
        "sdnet": "liverctl.training.semisupervised",
        "di2in-an": "liverctl.training.adversarial",
        "hdenseunet": "liverctl.training.staged",
    }[config.method]
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError(f"--method {config.method} trains in a single process (no torchrun / DDP)")
    return importlib.import_module(module).run(datasets, out, config, state, progress)


# Shared with the recipes of METHODS §2-§4 (liverctl.training.semisupervised, .adversarial, .staged).
seed_int = _seed_int
"""``seed_int(*values)``: a 63-bit seed derived from integers (seed, rank, iteration, ...)."""
validate_dice = _validate
"""``validate_dice(model, data, config, device, progress, sigmoid=False)``: mean liver Dice of
the validation cases (sliding window over the training patch; ``sigmoid``: 1-channel output
thresholded at 0.5)."""
write_log = _write_log
"""``write_log(path, rows, columns=LOG_COLUMNS)``: write the CSV log atomically."""
plot_log = _plot
"""``plot_log(rows, path)``: the loss curve PNG (a warning if matplotlib is missing)."""
export_plans = _plans_and_orientation
"""``export_plans(data) -> (plans, orientation)``: the plans for :func:`export_model`."""
load_init_weights = _load_init
"""``load_init_weights(model, path)``: load ``--init`` weights (.pt or .safetensors)."""
