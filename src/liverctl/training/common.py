"""What every training recipe shares: the run's result, its folder, its batches, validation,
the CSV log and loss curve, the export plans, ``--init`` weights and the poly learning rate.

Used by every recipe of :mod:`liverctl.training.recipes` and by the run loop of
:mod:`liverctl.training.run`.
"""

from __future__ import annotations

import contextlib
import csv
import io
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
from liverctl.models.dcm import DatasetBranch
from liverctl.progress import ProgressCallback
from liverctl.training.augmentation import Augmentation, choose_center, extract_patch, foreground_slots
from liverctl.training.checkpoint import load_checkpoint
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData
from liverctl.training.samplers import make_sampler

__all__ = [
    "GRAD_CLIP",
    "LOG_COLUMNS",
    "TrainResult",
    "build_training_model",
    "export_plans",
    "load_init_weights",
    "make_batch_fn",
    "model_kwargs",
    "open_run",
    "plot_log",
    "poly_lr",
    "seed_int",
    "stage_of",
    "validate_dice",
    "write_log",
]

LOG_COLUMNS = ("epoch", "iteration", "train_loss", "val_dice", "lr", "seconds", "skipped")
GRAD_CLIP = 12.0
"""Gradient norm clip of every recipe (nnU-Net's 12)."""


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output_dir: the run folder.
        model_path, toml_path: exported ``model.safetensors`` and ``weights.toml`` (``None``
            on ranks other than 0).
        last_checkpoint: ``last.pt``; selected_checkpoint: ``selected.pt`` (``None`` when the
            final weights are exported).
        log_path, curve_path: ``train_log.csv`` and ``loss_curve.png``.
        epochs: epochs completed; iterations: iterations completed.
        train_losses: mean training loss per epoch.
        model_selection: ``"final"``, ``"iteration:N"`` or the inner split's case names
            (:mod:`liverctl.training.run`); selected_epoch: the epoch of the exported weights.
        selection_dice: the inner split's mean Dice of the selected epoch (``None`` otherwise).
        val_dice: the held-out fold's mean Dice at the last validation (monitoring only; ``None``
            without a held-out fold).
        stop_reason: ``"max epochs"`` or ``"stop rule"``.
        skipped: ``(dataset, case, reason)`` of every case left out.
        model: the network with its final weights (the exported file holds the selected ones).
    """

    output_dir: Path
    model_path: Path | None
    toml_path: Path | None
    last_checkpoint: Path
    selected_checkpoint: Path | None
    log_path: Path
    curve_path: Path
    epochs: int
    iterations: int
    train_losses: list[float]
    model_selection: str | list[str]
    selected_epoch: int
    selection_dice: float | None
    val_dice: float | None
    stop_reason: str
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


def seed_int(*values: int) -> int:
    """A 63-bit seed derived from integers (seed, rank, iteration, ...)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def poly_lr(lr0: float, i: int, n: int, exponent: float = 0.9) -> float:
    """Poly decay: ``lr0 * (1 - i / n)^exponent`` (``i`` clamped to ``n``): per epoch in
    He et al. 2021 (nnU-Net), per iteration of a stage in H-DenseUNet."""
    return lr0 * (1 - min(i, n) / max(n, 1)) ** exponent


def stage_of(g: int, lengths: Sequence[int]) -> tuple[int, int, int]:
    """``(stage 1..3, iteration in the stage, stage length)`` of global iteration ``g``."""
    start = 0
    for s, n in enumerate(lengths, start=1):
        if g < start + n or s == len(lengths):
            return s, g - start, n
        start += n
    raise AssertionError("unreachable")


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


def make_batch_fn(data: TrainingData, config: TrainConfig, rank: int = 0, augmentation: Augmentation | None = None):
    """A function ``g -> (images (B,1,z,y,x), labels (B,z,y,x) long, dataset indices (B,))``
    giving the batch of global iteration ``g`` on ``rank``: a pure function of
    ``(config.seed, rank, g)`` (and the set of unreadable cases). ``augmentation``: the
    transforms applied with ``config.augment`` (default: :class:`Augmentation`'s)."""
    sampler = make_sampler(config.sampler, data.sizes, config.batch_size)
    slots = foreground_slots(config.batch_size, config.foreground_fraction)
    augment = (augmentation or Augmentation()) if config.augment else None
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


def validate_dice(
    model: nn.Module,
    data: TrainingData,
    config: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    sigmoid: bool = False,
    cases: Sequence[Sequence[str]] | None = None,
) -> float:
    """Mean liver Dice of ``cases`` (per dataset; default ``data.val``, the held-out fold): the
    sliding-window engine over the training patch (``sigmoid``: a 1-channel output thresholded
    at 0.5); NaN without cases."""
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
    todo = [(d, n) for d, names in enumerate(data.val if cases is None else cases) for n in names]
    for i, (d, name) in enumerate(todo):
        if data.is_bad(d, name):
            continue
        try:
            image, label = data.load_arrays(d, name)
        except (LiverctlError, OSError, ValueError, EOFError) as exc:
            data.mark_bad(d, name, " ".join(str(exc).split()) or type(exc).__name__)
            continue
        net = DatasetBranch(model, d) if config.dcm_from_level is not None else model
        result = sliding_window_inference(np.asarray(image, np.float32)[None], net, window, device)
        pred = result.channel(0) > 0.5 if sigmoid else np.isin(result.labels, liver)
        ref = np.isin(data.luts[d][np.asarray(label)], liver)
        scores.append(float(dice(pred, ref)))
        if progress is not None:
            progress("validation", i + 1, len(todo))
    return float(np.mean(scores)) if scores else float("nan")


def write_log(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = LOG_COLUMNS) -> None:
    """Write the CSV log ``rows`` (``columns`` in order) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in columns})
    write_text_atomic(path, buf.getvalue())


def recipe_class_weights(config: TrainConfig, data: Any, paper: Sequence[float]) -> list[float]:
    """Cross-entropy class weights: ``config.class_weights``, else the paper's (``paper``) when
    the data has as many classes, else 1 for every class."""
    k = data.n_classes
    weights = config.class_weights
    if weights is None:
        weights = list(paper) if len(paper) == k else [1.0] * k
    if len(weights) != k:
        raise ConfigError(f"{len(weights)} class weights for {k} classes ({', '.join(data.labels)})")
    return [float(w) for w in weights]


def build_recipe_network(
    config: TrainConfig,
    n_classes: int,
    state: dict[str, Any] | None,
    method: str,
    required: Sequence[str],
    check: Any = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A recipe's network and its kwargs: seeded from ``config.seed``, refused unless it has the
    ``required`` attributes of ``method``'s architecture, ``check(model)`` (e.g. the patch size),
    then the ``--init`` weights loaded on a fresh run."""
    from liverctl.models import build_model

    kwargs = dict(config.arch_kwargs)
    kwargs.setdefault("in_channels", 1)
    kwargs["out_channels"] = n_classes
    torch.manual_seed(config.seed)
    model = build_model(config.architecture, **kwargs)
    if not all(hasattr(model, name) for name in required):
        raise ConfigError(f"--method {method} trains the {method} architecture, not {config.architecture}")
    if check is not None:
        check(model)
    if state is None and config.init_checkpoint:
        load_init_weights(model, config.init_checkpoint)
    return model, kwargs


def load_init_weights(model: nn.Module, path: str) -> None:
    """Load ``--init`` weights (``.pt`` or ``.safetensors``) into ``model``."""
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


def export_plans(data: TrainingData) -> tuple[list[dict[str, Any]], str]:
    """The plans for :func:`~liverctl.training.export.export_model` (each with the data's
    ``orientation``, read from the first training case; LPS when it cannot be read)."""
    orientation = "LPS"
    with contextlib.suppress(Exception):
        from liverctl.spatial import orientation_of

        d = 0
        image, _ = data.load_images(d, data.info[d][0].name)
        orientation = orientation_of(image.geometry)
    plans = []
    for p in data.plans:
        q = dict(p)
        q.setdefault("orientation", orientation)
        plans.append(q)
    return plans, orientation


def open_run(out: Path, config: TrainConfig, resume: bool) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The configuration and saved state of a run in ``out``: with ``resume`` the config saved in
    ``out/last.pt`` (``device``, ``precision``, ``num_workers`` taken from ``config``) and that
    checkpoint; else ``config`` and ``None``, refusing a folder that already holds ``last.pt``."""
    last_path = out / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(last_path)
        saved = TrainConfig.from_dict(state["config"])
        saved.device, saved.precision, saved.num_workers = config.device, config.precision, config.num_workers
        config = saved
    elif last_path.exists():
        raise ConfigError(
            f"{out} already holds a training run (last.pt): pass --resume to continue it or choose another folder"
        )
    return config, state


def plot_log(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """The loss curve PNG of the log ``rows`` (a warning when matplotlib is missing)."""
    try:
        from liverctl.plots import loss_curve

        loss_curve(rows, path)
    except ImportError:  # matplotlib missing: the CSV log still holds everything
        warnings.warn("matplotlib is not available: no loss curve plotted", LiverctlWarning, stacklevel=2)
