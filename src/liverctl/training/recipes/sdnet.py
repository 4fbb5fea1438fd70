"""SD-Net semi-supervised training (Huang et al. 2024; reproduction page ``docs/studies/sdnet.md``): :func:`~liverctl.training.methods.train_sdnet`.

Two *different* 3D networks, ``vnet`` (A) and ``resvnet`` (B) by default
(``config.architecture`` / ``config.second_architecture``), are trained together. Each
iteration takes ``batch_size`` labelled patches (foreground oversampling as
in :func:`~liverctl.training.train`) and ``batch_size`` unlabelled patches (random centres,
same augmentation; labels never read), 2 + 2 by default, and runs both networks on the
concatenated batch. The loss (:func:`sdnet_losses`) is

- supervised, on the labelled half: Dice + cross-entropy of A and of B
  (:class:`~liverctl.training.losses.DiceCELoss`), plus the "adaptive mask" term: on the
  voxels where A's and B's arg-max labels disagree, the MSE of each network's foreground
  probability (``1 - p_background``) to the reference foreground (0/1)
  (:func:`~liverctl.training.losses.masked_mse`). The paper only says "an MSE term restricted
  to the voxels where the two networks disagree"; we take the reference as its target so
  the term supervises exactly the voxels the networks are unsure about;
- unsupervised, on the unlabelled half: the network with the lower soft Dice loss on the
  labelled half (ties: B, the residual V-Net, as Algorithm 1 of the paper) is the teacher; its foreground probabilities, sharpened with
  ``T = sharpen_temperature`` (0.1), ``p^(1/T) / (p^(1/T) + (1-p)^(1/T))``, and detached,
  are the target of the other network's foreground probabilities under MSE
  (:func:`~liverctl.training.losses.consistency_mse`), weighted ``unsup_weight`` (1).

Optimizer (the paper): one SGD over both networks, momentum 0.9, weight decay 1e-4,
lr 0.01 (``config.lr`` overrides it) divided by 10 every ``lr_step`` (200) iterations;
gradients clipped to norm 12 as in the main loop. The paper runs 1200 iterations (and reports
the model of iteration 1000): ``epochs * iterations_per_epoch``.

Unlabelled data: ``config.unlabelled`` folders and ``unlabelled=`` dataset objects; only their
images are opened (``load_image``), never a label map. Really unlabelled scans come from
``liverctl preprocess --unlabelled DIR --like LABELLED_PREP`` (body crop, the labelled data's
plan), the paper's 20:80 ... 80:20 experiments from ``liverctl preprocess DATASET
--labelled-fraction F`` (:func:`~liverctl.preprocessing.preprocess_split`: the split by name
comes before any label-derived crop or statistic). Every unlabelled dataset must carry the plan
of a labelled one (target spacing, window, z-score statistics), so that both halves of a batch
are normalised alike. Without unlabelled data (100:0) a batch holds ``batch_size`` labelled
patches only and the unsupervised term is 0: both networks still train with the supervised and
disagreement terms.

Augmentation (:data:`SDNET_AUGMENTATION`): flips and rotations only, on both halves of the batch.

Export (``select_on``, :mod:`liverctl.training.run`): by default network A after iteration
1000 (``"iteration:1000"``: the paper reports "the model with 1000 iterations" of its 1200);
``"final"``: A's last weights; ``"inner:F"``: the network with the higher Dice on the inner
split at the epoch it chooses. Written as ``model.safetensors`` + ``weights.toml``.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liverctl.errors import ConfigError, DatasetError, LiverctlWarning
from liverctl.io import Image
from liverctl.preprocessing.split import labelled_split
from liverctl.progress import ProgressCallback
from liverctl.spatial import xyz_text as _xyz
from liverctl.training.augmentation import Augmentation, choose_center, extract_patch
from liverctl.training.common import TrainResult, make_batch_fn, seed_int
from liverctl.training.config import TrainConfig
from liverctl.training.data import TrainingData, plan_dict
from liverctl.training.losses import DiceCELoss, consistency_mse, masked_mse, soft_dice_loss
from liverctl.training.run import Steps, TrainingRun, backward_step, load_parts, open_recipe

__all__ = ["SDNET_AUGMENTATION", "labelled_split", "sdnet_losses", "sdnet_lr"]

_COLUMNS = ("supervised", "disagreement_mse", "unsupervised_mse", "teacher_b")
SDNET_AUGMENTATION = Augmentation(p_scale=0.0, p_elastic=0.0, p_gamma=0.0)
"""The paper's augmentation, "randomly flipped and rotated": liverctl's flips and rotations at their
usual probabilities (the paper gives none), no scaling, elastic deformation or gamma."""


def sdnet_lr(lr0: float, iteration: int, step: int = 200) -> float:
    """The learning rate of iteration ``iteration`` (0-based): ``lr0 / 10^(iteration // step)``."""
    return lr0 * 0.1 ** (iteration // step)


def sdnet_losses(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    n_labelled: int,
    temperature: float = 0.1,
    unsup_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The SD-Net loss of one batch (module docs).

    Args:
        logits_a: (B, K, z, y, x) output of network A (the V-Net); the first ``n_labelled``
            samples are labelled, the rest unlabelled.
        logits_b: the same of network B (the residual V-Net).
        labels: (n_labelled, z, y, x) class indices of the labelled samples.

    Returns:
        ``loss`` (to minimise), ``supervised``, ``disagreement_mse``, ``unsupervised_mse``,
        ``dice_a`` / ``dice_b`` (soft Dice losses on the labelled half) and ``teacher``
        (0: A teaches B, 1: B teaches A).
    """
    n = int(n_labelled)
    labels = labels.long()
    la, lb = logits_a.float(), logits_b.float()
    pa, pb = la.softmax(1), lb.softmax(1)
    dice_ce = DiceCELoss()
    supervised = dice_ce(la[:n], labels) + dice_ce(lb[:n], labels)
    fa, fb = 1 - pa[:, 0], 1 - pb[:, 0]  # foreground probability
    ref = (labels > 0).float()
    disagree = pa[:n].argmax(1) != pb[:n].argmax(1)
    disagreement = masked_mse(fa[:n], ref, disagree) + masked_mse(fb[:n], ref, disagree)
    with torch.no_grad():
        dice_a = soft_dice_loss(pa[:n], labels)
        dice_b = soft_dice_loss(pb[:n], labels)
    teacher = 0 if float(dice_a) < float(dice_b) else 1  # Algorithm 1: ties go to the residual V-Net (B)
    if la.shape[0] > n:
        if teacher == 0:
            unsup = consistency_mse(fb[n:], fa[n:], temperature)
        else:
            unsup = consistency_mse(fa[n:], fb[n:], temperature)
    else:
        unsup = la.new_zeros(())
    loss = supervised + disagreement + unsup_weight * unsup
    return {
        "loss": loss,
        "supervised": supervised,
        "disagreement_mse": disagreement,
        "unsupervised_mse": unsup,
        "dice_a": dice_a,
        "dice_b": dice_b,
        "teacher": torch.tensor(teacher),
    }


def _unlabelled_batch_fn(pool: list[tuple[Any, str]], config: TrainConfig):
    """``g -> (B, 1, z, y, x)`` unlabelled patches of iteration ``g`` (random centres; images only)."""
    augment = SDNET_AUGMENTATION if config.augment else None
    patch = config.patch_size

    def batch(g: int) -> torch.Tensor:
        rng = np.random.default_rng([config.seed, 1_000_003, g])
        out = []
        for _ in range(config.batch_size):
            dataset, name = pool[int(rng.integers(0, len(pool)))]
            image = _image_array(dataset, name)
            zeros = np.broadcast_to(np.zeros((), np.uint8), image.shape)
            img, lab = extract_patch(image, zeros, choose_center(image.shape, rng, None), patch)
            img_t = torch.from_numpy(img)
            if augment is not None:
                img_t, _ = augment(img_t, torch.from_numpy(lab.astype(np.int64)), rng)
            out.append(img_t)
        return torch.stack(out)[:, None].contiguous()

    return batch


def _image_array(dataset: Any, name: str) -> np.ndarray:
    """The image of an unlabelled case: ``load_image`` when the dataset has it (a label map is
    then never opened), else the first of ``load``'s pair (in-memory datasets)."""
    loader = getattr(dataset, "load_image", None)
    image = loader(name, mmap=True) if loader is not None else dataset.load(name, mmap=True)[0]
    array = image.array if isinstance(image, Image) else np.asarray(image)
    if array.ndim != 3:
        raise DatasetError(f"unlabelled case {name}: expected a 3D array, got shape {array.shape}")
    return array


def _build(name: str, config: TrainConfig, n_classes: int, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    from liverctl.models import build_model

    kwargs = dict(config.arch_kwargs)
    kwargs.setdefault("in_channels", 1)
    kwargs["out_channels"] = n_classes
    torch.manual_seed(seed)
    model = build_model(name, **kwargs)
    multiple = int(getattr(model, "min_input_multiple", 1) or 1)
    if any(p % multiple for p in config.patch_size):
        raise ConfigError(f"--patch {_xyz(config.patch_size)} (X,Y,Z) must be a multiple of {multiple} for {name}")
    return model, kwargs


def run(
    datasets: Sequence[Any],
    out: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    progress: ProgressCallback | None,
    unlabelled: Sequence[Any] | None = None,
) -> TrainResult:
    """The SD-Net run behind :func:`~liverctl.training.methods.train_sdnet` and ``train(config.method="sdnet")``."""
    runner = open_recipe(  # --whole-liver (the default): a liver segmentation, tumour labels folded in
        datasets, out, config, state, progress, columns=_COLUMNS, merge_tumour=not config.tumour_class
    )
    full = runner.data
    pool, extra, unlabelled_names = _sdnet_data(full, config, unlabelled)
    device = runner.device
    net_a, kwargs = _build(config.architecture, config, full.n_classes, config.seed)
    net_b, _ = _build(config.second_architecture, config, full.n_classes, seed_int(config.seed, 1))
    if state is None and config.init_checkpoint:
        from liverctl.training.common import load_init_weights

        load_init_weights(net_a, config.init_checkpoint)
    nets = [net_a.to(device), net_b.to(device)]
    params = [p for net in nets for p in net.parameters()]
    lr0 = config.initial_lr if config.lr is not None or config.init_checkpoint else 0.01
    optimizer = torch.optim.SGD(params, lr=lr0, momentum=0.9, weight_decay=1e-4)
    scaler = runner.scaler()
    load_parts(state, model=nets[0], model_b=nets[1], optimizer=optimizer, scaler=scaler)
    runner.write_config(
        datasets,
        unlabelled=[str(u) for u in extra],
        labelled_cases=[list(n) for n in full.train],
        unlabelled_cases=unlabelled_names,
    )

    step = _step_fn(nets, optimizer, params, scaler, full, pool, lr0, runner)

    select_val = [float("nan"), float("nan")]  # each network's Dice on the inner selection split
    validators = [runner.validator(net) for net in nets]

    def validate(cases: Sequence[Sequence[str]]) -> float:
        values = [v(cases) for v in validators]
        if cases is runner.data.select:
            select_val[:] = values
        return float(np.nanmax(values)) if not all(np.isnan(values)) else float("nan")

    def better() -> int:  # the network the inner split prefers (final / iteration: A)
        return 1 if select_val[1] > select_val[0] else 0

    def parts() -> dict[str, Any]:
        return {
            "model": nets[0].state_dict(),
            "model_b": nets[1].state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        }

    def best_parts() -> dict[str, Any]:
        k = better()
        return {"model": nets[k].state_dict(), "network": k, "select_dice": list(select_val)}

    runner.train(Steps(step, parts, best_parts, lambda: sdnet_lr(lr0, runner.g, config.lr_step), validate))
    model_path, toml_path = _export(runner, nets, kwargs)
    return runner.result(nets[0], model_path, toml_path, runner.validating)


def _export(runner: TrainingRun, nets: list[nn.Module], kwargs: dict[str, Any]) -> tuple[Path, Path]:
    """Network A with its final weights, or the network ``selected.pt`` holds (A at iteration N;
    under an inner split, the one with the higher Dice there)."""
    config = runner.config
    k, exported = 0, nets[0]
    selected = runner.load_selected()
    if selected is not None:
        k = int(selected.get("network", 0))
        exported = copy.deepcopy(nets[k])
        exported.load_state_dict(selected["model"])
    arch = config.architecture if k == 0 else config.second_architecture
    return runner.export(
        exported,
        architecture=arch,
        kwargs=kwargs,
        description=f"SD-Net {'AB'[k]} network ({arch}) trained with liverctl train --method sdnet",
    )


_PLAN_KEYS = ("target_spacing", "window", "normalization", "mean", "std", "image_order")
"""The plan settings an unlabelled dataset must share with a labelled one (what the network sees)."""


def _open_unlabelled(source: Any) -> tuple[Any, str]:
    if hasattr(source, "cases") and (hasattr(source, "load_image") or hasattr(source, "load")):
        return source, str(getattr(source, "name", None) or getattr(source, "folder", "unlabelled"))
    from liverctl.preprocessing import load_preprocessed

    folder = Path(source)
    if not folder.is_dir():
        raise DatasetError(f"--unlabelled {folder}: no such preprocessed folder")
    return load_preprocessed(folder), str(folder)


def _check_plan(name: str, plan: Any, labelled_plans: Sequence[dict[str, Any]]) -> None:
    """Refuse unlabelled data preprocessed with another recipe than every labelled dataset."""
    mine = plan_dict(plan)

    def differing(other: dict[str, Any]) -> list[str]:
        keys = [k for k in _PLAN_KEYS if k in mine and k in other]
        return [k for k in keys if json.dumps(mine[k]) != json.dumps(other[k])]

    diffs = [differing(p) for p in labelled_plans]
    if all(diffs):
        raise ConfigError(
            f"unlabelled data {name} was preprocessed with another plan than the labelled data (different "
            f"{', '.join(diffs[0])}); preprocess it with liverctl preprocess --unlabelled DIR --like LABELLED_PREP"
        )


def _sdnet_data(
    full: TrainingData, config: TrainConfig, unlabelled: Sequence[Any] | None
) -> tuple[list[tuple[Any, str]], list[Any], list[list[str]]]:
    """The pool of unlabelled cases ``(dataset, case)`` from ``config.unlabelled`` and
    ``unlabelled`` (empty: 100:0), the unlabelled sources and their case names."""
    extra = [*config.unlabelled, *(unlabelled or [])]
    pool: list[tuple[Any, str]] = []
    names: list[list[str]] = []
    for source in extra:
        dataset, name = _open_unlabelled(source)
        _check_plan(name, dataset.plan, full.plans)
        cases = sorted(str(c["name"] if isinstance(c, dict) else c.name) for c in dataset.cases)
        if not cases:
            raise DatasetError(f"unlabelled data {name} holds no cases")
        names.append(cases)
        pool += [(dataset, n) for n in cases]
    if not pool:
        warnings.warn(
            "SD-Net without unlabelled data: the 100:0 run (unsupervised term 0); give --unlabelled PREP "
            "for a semi-supervised one",
            LiverctlWarning,
            stacklevel=3,
        )
    return pool, extra, names


def _step_fn(
    nets: list[nn.Module],
    optimizer: torch.optim.Optimizer,
    params: list[torch.Tensor],
    scaler: Any,
    lab_data: TrainingData,
    pool: list[tuple[Any, str]],
    lr0: float,
    runner: TrainingRun,
):
    """Global iteration ``g``: a labelled + unlabelled batch through both networks, one step."""
    from liverctl.device import autocast

    config, device = runner.config, runner.device
    labelled_batch = make_batch_fn(lab_data, config, augmentation=SDNET_AUGMENTATION)
    unlabelled_batch = _unlabelled_batch_fn(pool, config) if pool else None
    n_lab = config.batch_size

    def step(g: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = sdnet_lr(lr0, g, config.lr_step)
        x_l, y_l, _ = labelled_batch(g)
        x = (torch.cat([x_l, unlabelled_batch(g)]) if unlabelled_batch is not None else x_l).to(device)
        y = y_l.to(device)
        for net in nets:
            net.train()
        torch.manual_seed(seed_int(config.seed, 0, g, 1))
        with autocast(device, runner.precision):
            logits_a, logits_b = nets[0](x), nets[1](x)
        losses = sdnet_losses(logits_a, logits_b, y, n_lab, config.sharpen_temperature, config.unsup_weight)
        backward_step(losses["loss"], optimizer, params, scaler)
        return {
            "loss": float(losses["loss"].detach()),
            "supervised": float(losses["supervised"].detach()),
            "disagreement_mse": float(losses["disagreement_mse"].detach()),
            "unsupervised_mse": float(losses["unsupervised_mse"].detach()),
            "teacher_b": float(losses["teacher"]),
        }

    return step
