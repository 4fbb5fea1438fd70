"""The five training recipes against plain unet3d on the same phantoms and iteration budget: held-out Dice, wall time.

Usage::

    python benchmarks/bench_recipes.py [--iterations N] [--cases K] [--heldout M]
                                       [--methods unet3d,di2in-an,...] [--threads T] [--seed S] [--out DIR]

One run, one seed, for every method: K ``contrast`` phantoms (:func:`liverctl.phantoms.write_dataset`,
seed S) of :data:`SHAPE` voxels at :data:`SPACING` mm (the phantoms' whole 384 x 384 x 320 mm field of
view, coarsely sampled so that a CPU manages), preprocessed with each method's HU window and crop as
its page in ``docs/studies/`` says (at the phantoms' own spacing), trained through
:func:`liverctl.training.train` for N iterations (``epochs * iterations_per_epoch``) with the
recipe's own optimiser, learning rate, schedule and losses, then M held-out phantoms (seed S + 1)
segmented from their HU volumes by the exported ``model.safetensors`` through
:class:`liverctl.predict.LiverModel` (``predict``'s defaults: largest component, holes filled) and
scored against their whole liver (Dice per case on the scan's grid, liver = label > 0).

The methods (:func:`recipes`):

``unet3d``
    the baseline: ``--method he2021`` with the plain 3D U-Net (no DCM) and the demo's short-budget
    settings (Adam at 3e-3 with poly decay, ``--window liver``, liver z-crop): He et al.'s Adam at
    3e-4 barely moves in 60 iterations.
``di2in-an``
    DI2IN generator + discriminator with the recipe's defaults: SGD at 0.01, generator batch 4, the
    first 2/3 of N pre-training with the lr step half-way, each phase on its own schedule; the whole
    phantom volume as the input (``--no-crop``, patch = the volume), no foreground oversampling;
    k_D = 2 discriminator steps of 4 patches (paper: 10 of 8).
``hdenseunet``
    H-DenseUNet's small preset (the paper preset does not train on a CPU in minutes) with its cascade:
    N/2 coarse liver-ROI iterations first (counted apart), then the three stages (thirds of N; the
    first half of stage 1 without UNet connections) inside the coarse box; ``--window liver --no-crop``.
``pipofan``
    PIPO-FAN, 2D on 3-slice stacks of slices that contain the liver, batch 8 slices, the one-organ
    protocol of the recipe's defaults (whole liver, RMSprop at 0.002, class weights 0.2 / 1.2, phase 1
    4/5 of N), ``--window pipofan --no-crop``, but the dataset z-score: with ``--normalization image``
    (the study page's protocol) the exported entry cannot say so and ``predict`` feeds unnormalised HU.
``sdnet``
    SD-Net, V-Net + residual V-Net, SGD at 0.01, with half of the K cases as unlabelled data
    (``preprocess_split``: split before preprocessing), ``--window sdnet``.

Every network is narrower than its paper's (the widths are printed): the paper sizes do not train
on a CPU in minutes. Augmentation is off for every method (a short budget; the held-out phantoms
come from the same generator). ``--threads`` defaults to 1: on a shared 2-core machine two torch
threads that wait on each other made a PIPO-FAN prediction 50 times slower. It prints one table; it
asserts nothing. Times are wall seconds, comparable only within one run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

SHAPE = (32, 64, 64)
"""Phantom shape (z, y, x)."""
SPACING = (6.0, 6.0, 10.0)
"""Phantom spacing (x, y, z) in mm: 64 x 6 = 384 mm across, 32 x 10 = 320 mm tall (the default field of view)."""
DOMAIN = "contrast"


@dataclass(frozen=True)
class Recipe:
    """One row of the table: how a method is preprocessed and trained in this benchmark."""

    name: str
    method: str
    widths: str  # printed: the widths used vs the paper's
    preprocess: dict[str, Any]
    config: dict[str, Any]
    labelled_fraction: float | None = None  # SD-Net: split before preprocessing


def recipes(n: int) -> dict[str, Recipe]:
    """The methods at an iteration budget of ``n`` (see the module docs)."""
    unet = {"base_features": 8, "n_levels": 4, "dropout": 0.0}  # the plain U-Net the README's table measured
    return {
        "unet3d": Recipe(
            "unet3d",
            "he2021",
            "unet3d 8-16-32-64, 4 levels (paper: 32..320, 6 levels)",
            {"window": "liver"},
            {"arch_kwargs": unet, "patch_size": (32, 64, 64), "lr": 3e-3, "scheduler": "poly"},
        ),
        "di2in-an": Recipe(
            "di2in-an",
            "di2in-an",
            "di2in 8-16-32-64, 4 levels; discriminator 8, 3 layers, k_D = 2 steps of 4 patches"
            " (paper: 32..512, 5 levels; k_D = 10 of 8)",
            {"window": "liver", "crop": False},
            {
                "arch_kwargs": {"base_features": 8, "n_levels": 4},
                "disc_kwargs": {"base_features": 8, "n_layers": 3},
                "patch_size": SHAPE,  # the whole volume, as the paper's input
                "d_steps": 2,
                "d_batch_size": 4,
            },
        ),
        "hdenseunet": Recipe(
            "hdenseunet",
            "hdenseunet",
            "hdenseunet preset small: 2D 32 + blocks 3-4-6-4 growth 16, 3D blocks 2-3-3 growth 8"
            " (paper preset: DenseNet-161 + DenseUNet-65)",
            {"window": "liver", "crop": False},
            {"arch_kwargs": {"preset": "small"}, "patch_size": (12, 64, 64), "coarse_iterations": max(1, n // 2)},
        ),
        "pipofan": Recipe(
            "pipofan",
            "pipofan",
            "pipofan 16..128, 4 scales (paper: 64..512, 5 scales)",
            {"window": "pipofan", "crop": False},
            {
                "arch_kwargs": {"base_features": 16, "max_features": 128, "n_scales": 4},
                "patch_size": (1, 64, 64),
                "batch_size": 8,
            },
        ),
        "sdnet": Recipe(
            "sdnet",
            "sdnet",
            "vnet + resvnet, 4 base features (paper: 16)",
            {"window": "sdnet"},
            # the final weights: a short budget cannot export the paper's iteration-1000 model
            {"arch_kwargs": {"base_features": 4}, "patch_size": (32, 64, 64), "select_on": "final"},
            labelled_fraction=0.5,
        ),
    }


def iteration_note(recipe: Recipe, n: int) -> str:
    """The iterations column: the budget, and what part of it is special to the recipe."""
    cfg = recipe.config
    if recipe.method == "di2in-an":
        return f"{n} ({2 * n // 3} pre-train)"  # the recipe's default: 2/3 of the run
    if recipe.method == "hdenseunet":
        return f"{n} + {cfg['coarse_iterations']} coarse"
    if recipe.method == "sdnet":
        return f"{n} (x2 nets)"
    return str(n)


def batch_note(recipe: Recipe, config: Any) -> str:
    """The batch column: patches per iteration as the recipe takes them."""
    b = config.batch_size
    if recipe.method == "di2in-an":
        return f"{b} (D: {config.d_steps} x {config.d_batch_size})"
    if recipe.method == "sdnet":
        return f"{b} + {b} unlabelled"
    if recipe.method == "pipofan":
        return f"{b} slices"
    return str(b)


def train_config(recipe: Recipe, n: int, seed: int, unlabelled: list[str]) -> Any:
    from liverctl.training import TrainConfig

    per_epoch = min(n, 10)
    return TrainConfig(
        method=recipe.method,
        epochs=max(1, n // per_epoch),
        iterations_per_epoch=per_epoch,
        val_every=0,
        checkpoint_every=0,
        augment=False,
        device="cpu",
        seed=seed,
        unlabelled=unlabelled,
        **recipe.config,
    )


def prepare(recipe: Recipe, raw: Path, work: Path) -> tuple[Path, list[str]]:
    """Preprocess the training phantoms as ``recipe`` needs; -> (labelled folder, unlabelled folders)."""
    from liverctl.preprocessing import preprocess, preprocess_split

    options = {"target_spacing": SPACING, **recipe.preprocess}
    if recipe.labelled_fraction is None:
        out = work / f"prep_{recipe.name}"
        preprocess(raw, out, **options)
        return out, []
    out = work / f"prep_{recipe.name}"
    preprocess_split(raw, out, labelled_fraction=recipe.labelled_fraction, split_seed=0, **options)
    unl = out / "unlabelled"
    return out / "labelled", [str(unl)] if unl.is_dir() else []


def heldout(m: int, seed: int) -> list[tuple[Any, np.ndarray]]:
    """``m`` held-out phantoms (HU image, whole-liver reference) drawn with another seed."""
    from liverctl.phantoms import make_phantom

    cases = []
    for i in range(m):
        ct, lab = make_phantom(domain=DOMAIN, seed=seed, case=i, shape=SHAPE, spacing=SPACING)
        cases.append((ct, np.asarray(lab.array) > 0))
    return cases


def evaluate(model_path: Path, cases: list[tuple[Any, np.ndarray]]) -> tuple[list[float], float, Any]:
    """Segment every held-out case as ``predict --weights`` does -> (Dice per case, s per case, model)."""
    from liverctl.metrics.overlap import dice
    from liverctl.predict import LiverModel, PredictOptions

    model = LiverModel.load(weights=model_path, device="cpu")
    options = PredictOptions(device="cpu")
    scores, seconds = [], 0.0
    for ct, ref in cases:
        t = time.perf_counter()
        seg = model.segment(ct, options)
        seconds += time.perf_counter() - t
        scores.append(float(dice(np.asarray(seg.mask.array) > 0, ref)))
    return scores, seconds / max(1, len(cases)), model


def run_one(recipe: Recipe, n: int, seed: int, raw: Path, work: Path, cases: list) -> dict[str, Any]:
    """Preprocess, train, export and evaluate one method -> its table row."""
    from liverctl.training import train

    t = time.perf_counter()
    labelled, unlabelled = prepare(recipe, raw, work)
    prep_s = time.perf_counter() - t
    config = train_config(recipe, n, seed, unlabelled)
    t = time.perf_counter()
    result = train([labelled], work / f"run_{recipe.name}", config)
    train_s = time.perf_counter() - t
    scores, predict_s, model = evaluate(Path(result.model_path), cases)
    params = sum(p.numel() for net in model.networks for p in net.parameters())
    return {
        "method": recipe.name,
        "architecture": model.entry.architecture,
        "params": params,
        "iterations": iteration_note(recipe, n),
        "batch": batch_note(recipe, config),
        "prep_s": prep_s,
        "train_s": train_s,
        "predict_s": predict_s,
        "dice_mean": float(np.mean(scores)),
        "dice_min": float(np.min(scores)),
    }


def print_table(rows: list[dict[str, Any]], chosen: dict[str, Recipe]) -> None:
    head = f"| {'method':<10} | {'architecture':<18} | {'parameters':>10} | {'iterations':<17} | {'batch':<16} |"
    head += f" {'train s':>7} |"
    head += f" {'predict s/case':>14} | {'Dice mean':>9} | {'Dice min':>8} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r['method']:<10} | {r['architecture']:<18} | {r['params']:>10,} | {r['iterations']:<17} |"
            f" {r['batch']:<16} |"
            f" {r['train_s']:>7.1f} | {r['predict_s']:>14.2f} | {r['dice_mean']:>9.3f} | {r['dice_min']:>8.3f} |"
        )
    print("\nwidths (reduced from the papers' for the CPU):")
    for r in rows:
        print(f"  {r['method']:<10} {chosen[r['method']].widths}")
    print("preprocessing (s, before training): " + ", ".join(f"{r['method']} {r['prep_s']:.1f}" for r in rows))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=60, help="training iterations of every method (default 60)")
    ap.add_argument("--cases", type=int, default=8, help="training phantoms (default 8; SD-Net: half unlabelled)")
    ap.add_argument("--heldout", type=int, default=4, help="held-out phantoms (default 4)")
    ap.add_argument("--methods", default=",".join(recipes(1)), help="comma-separated, from: " + ", ".join(recipes(1)))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: see the module docs)")
    ap.add_argument("--seed", type=int, default=0, help="phantom and training seed; held-out phantoms: seed + 1")
    ap.add_argument("--out", default=None, help="keep the phantoms, runs and models here (default: a temp folder)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.methods.split(",")) - set(recipes(1)))
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(recipes(1))}")
    if min(args.iterations, args.cases, args.heldout, args.threads) < 1 or args.cases < 2:
        ap.error("--iterations, --heldout and --threads must be >= 1, --cases >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from liverctl.errors import LiverctlWarning
    from liverctl.phantoms import write_dataset

    warnings.simplefilter("once", LiverctlWarning)
    os.environ.setdefault("LIVERCTL_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)
    chosen = {name: r for name, r in recipes(args.iterations).items() if name in args.methods.split(",")}
    print(
        f"torch {torch.__version__}, {args.threads} CPU thread(s), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f};"
        f" {args.cases} training + {args.heldout} held-out {DOMAIN} phantoms of {SHAPE[::-1]} voxels (x, y, z)"
        f" at {SPACING} mm, seed {args.seed}; {args.iterations} iterations each, no augmentation"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        raw = work / "phantoms"
        write_dataset(raw, DOMAIN, args.cases, args.seed, shape=SHAPE, spacing=SPACING)
        cases = heldout(args.heldout, args.seed + 1)
        rows = []
        for recipe in chosen.values():
            rows.append(run_one(recipe, args.iterations, args.seed, raw, work, cases))
            r = rows[-1]
            print(f"  {r['method']}: trained in {r['train_s']:.1f} s, held-out Dice {r['dice_mean']:.3f}", flush=True)
    print()
    print_table(rows, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
