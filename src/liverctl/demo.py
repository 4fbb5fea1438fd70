"""The offline demo: every step of liverctl on synthetic phantoms, in a few minutes on a CPU.

:func:`demo` (``liverctl demo``) needs no network and no data. In ``output_dir`` it:

1. **phantoms**: writes :data:`DemoSettings.n_train` training phantoms of one domain
   (:func:`liverctl.phantoms.write_dataset`, MSD layout, ``phantoms/train``) and
   :data:`DemoSettings.n_test` held-out phantoms drawn with another seed
   (``phantoms/heldout/images`` and ``labels``, the ``pairs`` layout);
2. **preprocess**: :func:`liverctl.preprocessing.preprocess` (liver z-crop, HU window
   ``liver`` = [-200, 250], z-score with the dataset's liver statistics, at the phantoms'
   own spacing) into ``preprocessed/``;
3. **train**: a small 3D U-Net (:func:`liverctl.training.train`) into ``model/``, which
   exports ``model.safetensors`` + ``weights.toml``;
4. **predict**: :func:`liverctl.predict.predict` with ``weights=model/model.safetensors``
   (exactly ``liverctl predict --weights``; its own clean-up turned off) into
   ``predictions/``;
5. **post-process**: :func:`liverctl.postprocessing.postprocess` with the ``liver``
   preset (largest component, hole filling) into ``postprocessed/``;
6. **evaluate**: :func:`liverctl.evaluation.evaluate` of both against the held-out
   reference livers (label 1), written as ``metrics.csv`` / ``metrics.json``;
7. **overlay**: ``overlay.png``, the axial slice through the centre of the reference liver
   of the first held-out phantom, reference contour green, prediction red.

``demo.json`` records the settings, the per-case metrics, the mean held-out Dice and the
wall and CPU seconds of every step. ``quick=True`` trains for far fewer iterations (a
smoke test: the Dice is then much lower).

The full demo's held-out liver Dice and its time are measured by
``benchmarks/bench_demo.py``. The CPU time is the process's (all threads), so it is the
wall time an idle single core would need; on two idle cores the wall time is lower.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from liverctl.errors import ConfigError
from liverctl.io import write_text_atomic
from liverctl.io.manifest import MANIFEST_NAME, Manifest, check_new_or_owned_folder
from liverctl.progress import ProgressCallback

__all__ = ["DemoResult", "DemoSettings", "demo"]

#: Marker file of a demo folder (kept for folders written before the manifest).
_MARKER = ".liverctl-demo"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds and how long it trains.

    The defaults were tuned to reach a held-out liver Dice >= 0.90 in well under 5 minutes
    on 2 CPU cores (see ``benchmarks/bench_demo.py``).
    """

    domain: str = "contrast"
    n_train: int = 16
    n_test: int = 4
    shape: tuple[int, int, int] = (48, 72, 72)
    spacing: tuple[float, float, float] = (5.333, 5.333, 6.667)
    base_features: int = 8
    n_levels: int = 4
    patch_size: tuple[int, int, int] = (32, 72, 72)
    batch_size: int = 2
    epochs: int = 5
    iterations_per_epoch: int = 30
    lr: float = 3e-3
    augment: bool = False

    @classmethod
    def quick(cls) -> DemoSettings:
        """A smoke-test version: few phantoms, few iterations (Dice well below 0.9)."""
        return cls(n_train=4, n_test=2, epochs=1, iterations_per_epoch=4)


@dataclass
class DemoResult:
    """What :func:`demo` produced.

    Attributes:
        output_dir: the demo folder.
        rows: one dict per held-out case: ``case``, ``dice``, ``jaccard``, ``assd``,
            ``hd95``, ``rvd``, ``pred_ml``, ``ref_ml`` (post-processed prediction) and
            ``dice_raw`` (before post-processing).
        mean_dice: mean held-out liver Dice (post-processed).
        overlay: the overlay PNG.
        model: the exported weights file (``liverctl predict --weights`` takes it).
        timings: ``{step: {"wall": s, "cpu": s}}`` for every step and ``"total"``.
        settings: the :class:`DemoSettings` used.
    """

    output_dir: Path
    rows: list[dict[str, Any]]
    mean_dice: float
    overlay: Path
    model: Path
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: DemoSettings = field(default_factory=DemoSettings)

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        return {
            "output_dir": str(self.output_dir),
            "rows": self.rows,
            "mean_dice": self.mean_dice,
            "overlay": str(self.overlay),
            "model": str(self.model),
            "timings": self.timings,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        }


class _Clock:
    def __init__(self) -> None:
        self.timings: dict[str, dict[str, float]] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = {
            "wall": round(time.perf_counter() - wall, 3),
            "cpu": round(time.process_time() - cpu, 3),
        }

    def total(self) -> None:
        self.timings["total"] = {
            "wall": round(time.perf_counter() - self._wall, 3),
            "cpu": round(time.process_time() - self._cpu, 3),
        }


def _prepare_output(out: Path) -> tuple[Manifest, set[Path]]:
    """Accept a new or empty folder, or one an earlier demo wrote; remove what that demo wrote.

    Only the files the earlier demo recorded in its manifest (:mod:`liverctl.io.manifest`) are
    removed; anything the user put there stays. Returns the manifest and the files that stay.
    """
    manifest = check_new_or_owned_folder(out, "demo")
    manifest.remove_owned()
    out.mkdir(parents=True, exist_ok=True)
    manifest.claim([out / _MARKER], "demo")
    write_text_atomic(
        out / _MARKER, "written by liverctl demo; the next demo replaces what it recorded in its manifest\n"
    )
    return manifest, _files_under(out)


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and p != folder / MANIFEST_NAME}


def _heldout(folder: Path, settings: DemoSettings, seed: int) -> list[str]:
    from liverctl.io import write_image
    from liverctl.phantoms import case_name, make_phantom

    names = []
    for i in range(settings.n_test):
        ct, lab = make_phantom(
            domain=settings.domain, seed=seed, case=i, shape=settings.shape, spacing=settings.spacing
        )
        name = case_name(settings.domain, i)
        write_image(ct, folder / "images" / f"{name}.nii.gz")
        # the reference liver region: liver (1) and any tumour (2) inside it
        write_image(lab.with_array((lab.array > 0).astype("uint8")), folder / "labels" / f"{name}.nii.gz")
        names.append(name)
    return names


def demo(
    output_dir: str | os.PathLike[str] = "liverctl-demo",
    *,
    seed: int = 0,
    quick: bool = False,
    settings: DemoSettings | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Run the offline demo (module docs) and return its metrics, files and timings.

    Args:
        output_dir: folder for everything the demo writes; it must be new, empty or hold
            an earlier demo (marked by a ``.liverctl-demo`` file), which is replaced.
        seed: phantom and training seed (held-out phantoms use ``seed + 1``).
        quick: use :meth:`DemoSettings.quick` (a smoke test, low Dice).
        settings: explicit settings (overrides ``quick``).
        device: ``"cpu"`` (default, the measured configuration), ``"auto"``, ``"cuda"``...
        threads: CPU threads for torch during the demo (restored afterwards); ``None``
            keeps torch's setting. The default, 1, is the measured configuration: this small
            network gains little from a second thread on an idle machine (about 20 s of
            training), while on a busy one waiting threads spin and the demo can take
            twice as long.
        progress: receives the progress of every step.
    """
    import torch

    from liverctl.device import resolve_device

    resolve_device(device)  # an unknown or absent device is refused before anything is written
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(int(threads))
    try:
        return _demo(Path(output_dir), seed, quick, settings, device, threads, progress)
    finally:
        torch.set_num_threads(previous)


def _demo(
    out: Path,
    seed: int,
    quick: bool,
    settings: DemoSettings | None,
    device: str,
    threads: int | None,
    progress: ProgressCallback | None,
) -> DemoResult:
    cfg = settings or (DemoSettings.quick() if quick else DemoSettings())
    manifest, before = _prepare_output(out)
    try:
        return _steps(out, seed, cfg, device, threads, progress)
    finally:  # also after a failure: the next demo removes what this one wrote, and nothing else
        manifest.record(sorted(_files_under(out) - before))


def _train_config(cfg: DemoSettings, device: str, seed: int) -> Any:
    """The demo's small U-Net training run (no validation, no checkpoints)."""
    from liverctl.training import TrainConfig

    return TrainConfig(
        architecture="unet3d",
        # a small demo network, not the He et al. 2021 reproduction: no dropout (as its figures were measured)
        arch_kwargs={"base_features": cfg.base_features, "n_levels": cfg.n_levels, "dropout": 0.0},
        patch_size=cfg.patch_size,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        iterations_per_epoch=cfg.iterations_per_epoch,
        lr=cfg.lr,
        scheduler="poly",
        val_every=0,
        augment=cfg.augment,
        checkpoint_every=0,
        device=device,
        seed=seed,
    )


def _case_rows(raw: Any, final: Any) -> list[dict[str, Any]]:
    """One row per held-out case: the metrics after postprocessing, Dice before it."""
    raw_dice = {r.case: r.metrics.dice for r in raw.rows}
    rows = []
    for r in final.rows:
        m = r.metrics
        rows.append(
            {
                "case": r.case,
                "dice": m.dice,
                "dice_raw": raw_dice.get(r.case),
                "jaccard": m.jaccard,
                "assd": m.assd,
                "hd95": m.hd95,
                "rvd": m.rvd,
                "pred_ml": m.pred_ml,
                "ref_ml": m.ref_ml,
            }
        )
    return rows


def _overlay(out: Path, first: str, rows: list[dict[str, Any]]) -> Path:
    """``overlay.png``: the first held-out case, reference (green) vs postprocessed prediction (red)."""
    from liverctl.io import read_image, read_label
    from liverctl.plots import overlay

    heldout = out / "phantoms" / "heldout"
    image = read_image(heldout / "images" / f"{first}.nii.gz")
    ref = read_label(heldout / "labels" / f"{first}.nii.gz")
    pred = read_label(out / "postprocessed" / f"{first}.nii.gz")
    dice_first = next(r["dice"] for r in rows if r["case"] == first)
    return overlay(
        image,
        ref,
        pred,
        out / "overlay.png",
        title=f"{first} (held out): reference (green) vs prediction (red), Dice {dice_first:.3f}",
    )


def _steps(
    out: Path, seed: int, cfg: DemoSettings, device: str, threads: int | None, progress: ProgressCallback | None
) -> DemoResult:
    from liverctl.evaluation import EvaluateOptions, evaluate
    from liverctl.phantoms import write_dataset
    from liverctl.postprocessing import PostprocessConfig, postprocess
    from liverctl.predict import PredictOptions, predict
    from liverctl.preprocessing import preprocess
    from liverctl.training import train

    clock = _Clock()
    report: Callable[[str, int, int | None], None] | None = progress

    with clock.step("phantoms"):
        train_dir = out / "phantoms" / "train"
        write_dataset(train_dir, cfg.domain, cfg.n_train, seed, shape=cfg.shape, spacing=cfg.spacing, progress=report)
        names = _heldout(out / "phantoms" / "heldout", cfg, seed + 1)
    with clock.step("preprocess"):
        preprocess(train_dir, out / "preprocessed", target_spacing=cfg.spacing, window="liver", progress=report)
    with clock.step("train"):
        config = _train_config(cfg, device, seed)
        trained = train([out / "preprocessed"], out / "model", config, progress=report)
        if trained.model_path is None:
            raise ConfigError("training exported no model")
    heldout = out / "phantoms" / "heldout"
    with clock.step("predict"):
        predict(
            heldout / "images",
            out / "predictions",
            weights=trained.model_path,
            options=PredictOptions(device=device, postprocess=False, threads=threads),
            progress=report,
        )
    with clock.step("postprocess"):
        postprocess(out / "predictions", out / "postprocessed", PostprocessConfig.preset("liver"), progress=report)
    with clock.step("evaluate"):
        raw = evaluate(out / "predictions", heldout / "labels", EvaluateOptions(labels=[1]), progress=report)
        final = evaluate(out / "postprocessed", heldout / "labels", EvaluateOptions(labels=[1]), progress=report)
        write_text_atomic(out / "metrics.csv", final.to_csv())
        write_text_atomic(out / "metrics.json", final.to_json())
    rows = _case_rows(raw, final)
    mean_dice = sum(r["dice"] for r in rows) / len(rows)
    with clock.step("overlay"):
        overlay_path = _overlay(out, names[0], rows)
    clock.total()
    result = DemoResult(out, rows, mean_dice, overlay_path, Path(trained.model_path), clock.timings, cfg)
    write_text_atomic(out / "demo.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result
