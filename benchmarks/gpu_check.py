"""The one prepared check of liverctl's GPU path (issue 25); ``bash benchmarks/gpu_check.sh``.

Run from the repository root on a machine with an NVIDIA GPU, torch with CUDA and the project
installed (``pip install -e ".[test]"``: MONAI, nibabel and nnunetv2 come with the ``test``
extra). It needs no download and no data outside the repository: its scans are liverctl
phantoms and its nnU-Net model is the trained test folder under ``tests/data/nnunet``. Without a
CUDA device it prints one line and exits with status 2 at once. Budget: under 8 minutes on one
H100 (``gpu_check.sh`` stops it at 8).

Rows of the table it prints (markdown, one row per check; status ok / FAIL / error):

* **environment**: torch, its CUDA, cuDNN, the GPU (name, compute capability, memory) and
  torch's TF32 defaults (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``).
* **engine ...**: liverctl's sliding-window engine (``predict_volume``) with each configuration
  on CUDA against the same configuration on the CPU in fp32: max |dp| (largest difference of
  any class probability), agree (share of voxels with the same label), the precision and TF32
  use its stats report. A SegResNet of the MONAI bundle's layout (4 classes, 8 filters),
  weakly trained (40 Adam steps) so that its decisions have real margins.
* **monai amp vs defaults**: MONAI's whole-body bundle pipeline (Orientationd, Spacingd 3 mm,
  NormalizeIntensityd, ScaleIntensityd, SlidingWindowInferer with gaussian blending and
  replicate padding, softmax, Invertd; as ``tests/predict/test_predict_bundle.py`` runs it)
  under ``torch.autocast("cuda")``, as the bundle's ``amp: true`` runs it, against
  ``liverctl`` defaults (``PredictOptions()``: fp16 autocast, air windows skipped), both on the
  GPU: Dice of the liver masks, max |dp| of the liver probability, wall seconds and peak GPU
  memory (liverctl / MONAI).
* **monai fp32 vs exact**: the same pipeline in fp32 with TF32 off against exact mode
  (``PredictOptions(shortcuts=False)``: fp32, TF32 off).
* **nnunet exact / default**: ``nnUNetPredictor`` (nnU-Net 2.5.1, ``perform_everything_on_device=True``,
  folds 0 and 1, mirroring) on CUDA against ``NnUNetModel(exact=True)`` (nnU-Net's fp16 autocast
  and float16 sums on the GPU) and the default mode, on the three test cases.
* **batch oom + resume**: a 3-scan ``predict`` on the GPU whose first forward runs into a real
  CUDA out-of-memory error (a 1 PiB allocation): that scan must be retried with the sums on the
  CPU and the report must say so; ``resume`` must then keep all three; the same batch on the CPU
  with ``resume`` must keep none (the key holds the resolved device and precision).
* **train fp16 + resume**: ``liverctl.training.train`` on the GPU with ``precision="auto"``
  (fp16 autocast + ``torch.amp.GradScaler("cuda")``), interrupted after iteration 13 of 20,
  resumed from ``last.pt``: iterations, finite losses, max |dw| against an uninterrupted run.

``--dry-run-on-cpu`` runs every row on the CPU instead (small sizes, no warm-up runs): for
working on this script without a GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # monai_bundle.py, nnunet_cases.py
N_CLASSES, LIVER = 4, 2
DEV = torch.device("cpu")  # set in main()
SIZES = {"engine": (96, 160, 160), "scan": (80, 200, 200), "batch": (48, 96, 96), "roi": (64, 64, 64)}
ROWS: list[dict[str, str]] = []
COLUMNS = ("check", "status", "agreement", "max abs dp", "wall s", "peak GPU GB", "notes")


# --------------------------------------------------------------------------- helpers


def row(check: str, ok: bool | None, agreement="", dp="", wall="", peak="", notes="") -> None:
    status = "ok" if ok else ("FAIL" if ok is not None else "")
    ROWS.append(dict(zip(COLUMNS, (check, status, agreement, dp, wall, peak, notes), strict=True)))


def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 1e-2 else f"{value:.{digits}f}"


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)


@contextlib.contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Wall seconds and peak GPU memory (GB) of the block."""
    out: dict[str, float] = {}
    sync()
    if DEV.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(DEV)
    t0 = time.perf_counter()
    yield out
    sync()
    out["wall"] = time.perf_counter() - t0
    out["peak"] = torch.cuda.max_memory_allocated(DEV) / 1e9 if DEV.type == "cuda" else float("nan")


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def guarded(name: str, fn: Callable[[], None]) -> None:
    """Run one section; an exception becomes an ``error`` row, and the next section runs."""
    try:
        fn()
    except Exception as exc:  # a check script reports, it does not stop at the first failure
        ROWS.append(
            dict(zip(COLUMNS, (name, "error", "", "", "", "", f"{type(exc).__name__}: {exc}"[:200]), strict=True))
        )
        traceback.print_exc(file=sys.stderr)


def print_table() -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in ROWS:
        print("| " + " | ".join(str(r[c]).replace("|", "/") for c in COLUMNS) + " |")


# --------------------------------------------------------------------------- the network


def entry():
    """The bundle's recipe on a small SegResNet, as tests/predict/test_predict_bundle.py has it."""
    from liverctl.weights import IntensityRecipe, ModelEntry, WindowRecipe

    return ModelEntry(
        name="bundle-like",
        repo_id="local/bundle-like",
        filename="w.pt",
        revision="main",
        sha256="",
        architecture="segresnet",
        kwargs={"spatial_dims": 3, "in_channels": 1, "out_channels": N_CLASSES, "init_filters": 8},
        spacing=(3.0, 3.0, 3.0),
        orientation="RAS",
        interpolation="linear",
        intensity=IntensityRecipe("nonzero-zscore-minmax", range=(-1.0, 1.0)),
        n_classes=N_CLASSES,
        liver_channel=LIVER,
        decision="argmax",
        labels={"liver": LIVER},
        sliding_window=WindowRecipe(roi=SIZES["roi"], overlap=0.25, mode="gaussian", padding_mode="replicate"),
        network_axes="xyz",
        grid="monai",
    )


def weak_network() -> torch.nn.Module:
    """MONAI's SegResNet (bundle layout, 4 classes), 40 Adam steps on 32^3 crops of phantoms."""
    from monai.networks.nets import SegResNet

    from liverctl.phantoms import make_phantom
    from liverctl.preprocessing.intensity import normalise

    torch.manual_seed(3)
    net = SegResNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, init_filters=8).to(DEV).train()
    rng = np.random.default_rng(0)
    cases = []
    for case in range(3):
        ct, lab = make_phantom(domain="contrast", seed=5, case=case, shape=(48, 64, 64), spacing=(3.0, 3.0, 3.0))
        x = normalise(ct.array.astype(np.float32), entry().intensity).transpose(2, 1, 0)
        y = np.where(lab.array > 0, LIVER, 0).astype(np.int64).transpose(2, 1, 0)
        cases.append((x, y))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(40):
        x, y = cases[rng.integers(len(cases))]
        i, j, k = (rng.integers(0, s - 31) for s in x.shape)
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + 32, j : j + 32, k : k + 32]))[None, None].to(DEV)
        yb = torch.from_numpy(np.ascontiguousarray(y[i : i + 32, j : j + 32, k : k + 32]))[None].to(DEV)
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def liverctl_model(monai_net: torch.nn.Module, device: torch.device):
    """liverctl's SegResNet with the MONAI network's weights, as a LiverModel on ``device``."""
    from liverctl.models import build_model
    from liverctl.predict import LiverModel
    from liverctl.weights import ResolvedWeights

    e = entry()
    ours = build_model("segresnet", **e.kwargs)
    ours.load_state_dict({k: v.cpu() for k, v in monai_net.state_dict().items()})
    resolved = ResolvedWeights(e, Path("w.pt"), "0" * 64, "local")
    return LiverModel([resolved], [ours.eval().to(device)], device)


def phantom(shape: tuple[int, int, int], spacing=(3.0, 3.0, 3.0), case: int = 0):
    from liverctl.phantoms import make_phantom

    ct, _ = make_phantom(domain="contrast", seed=2, case=case, shape=shape, spacing=spacing)
    return ct


# --------------------------------------------------------------------------- the checks


def check_environment() -> None:
    import liverctl

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}"]
    if DEV.type == "cuda":
        p = torch.cuda.get_device_properties(DEV)
        parts.append(f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB)")
    parts += [f"TF32 defaults: matmul {matmul}, cudnn {cudnn}", f"liverctl {liverctl.__version__}"]
    for name in ("monai", "nnunetv2"):
        with contextlib.suppress(Exception):
            parts.append(f"{name} {__import__(name).__version__}")
    row("environment", None, notes="; ".join(parts))


def engine_configs():
    from liverctl.inference import SlidingWindow

    roi = SIZES["roi"]
    return {
        "monai fp32": SlidingWindow.monai(roi=roi, padding_mode="replicate", argmax=True),
        "defaults (auto)": SlidingWindow(roi=roi, argmax=True),
        "fast (auto)": SlidingWindow.fast(roi=roi, argmax=True),
        "fp32": SlidingWindow(roi=roi, precision="fp32", argmax=True),
        "bf16": SlidingWindow(roi=roi, precision="bf16", argmax=True),
        "tta x (auto)": SlidingWindow(roi=roi, tta=(2,), argmax=True),  # one mirror axis: the CPU reference stays short
        "cpu sums (auto)": SlidingWindow(roi=roi, accumulate_on="cpu", argmax=True),
    }


def check_engine(monai_net: torch.nn.Module) -> None:
    from liverctl.inference import predict_volume
    from liverctl.preprocessing.intensity import normalise

    ct = phantom(SIZES["engine"])
    x = normalise(ct.array.astype(np.float32), entry().intensity)
    gpu_net = liverctl_model(monai_net, DEV).networks[0]
    cpu_net = liverctl_model(monai_net, torch.device("cpu")).networks[0]
    for name, cfg in engine_configs().items():
        cpu = predict_volume(x, [cpu_net], dataclasses.replace(cfg, precision="fp32"), "cpu", hu=ct.array)
        with measured() as m:
            gpu = predict_volume(x, [gpu_net], cfg, DEV, hu=ct.array)
        dp = float(np.abs(gpu.probabilities - cpu.probabilities).max())
        agree = float((gpu.labels == cpu.labels).mean())
        limit = 1e-4 if gpu.stats.precision == "fp32" else 5e-2  # fp32 with TF32 off: float rounding only
        notes = f"{gpu.stats.device}, {gpu.stats.precision}, tf32 {gpu.stats.tf32}, cpu fp32 {cpu.stats.total_seconds:.1f} s"
        row(
            f"engine {name} vs cpu fp32",
            dp <= limit and agree >= 0.999,
            f"labels {agree:.5f}",
            fmt(dp),
            fmt(m["wall"], 2),
            fmt(m["peak"], 2),
            notes,
        )


def monai_bundle(image, network: torch.nn.Module, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's pipeline (tests/support/monai_bundle.py, as the parity tests run it) on DEV,
    with the bundle's ``amp`` or in fp32 with TF32 off: (liver mask, liver probability) on the
    image's grid, (z, y, x)."""
    from monai_bundle import monai_bundle as reference

    mask, prob = reference(image, network, roi=SIZES["roi"], liver=LIVER, device=DEV, sw_batch_size=4, amp=amp)
    return mask.astype(bool), prob


def check_monai(monai_net: torch.nn.Module) -> None:
    from liverctl.predict import PredictOptions

    scan = phantom(SIZES["scan"], spacing=(2.0, 1.5, 1.5), case=1)
    model = liverctl_model(monai_net, DEV)
    pairs = {
        "monai amp vs liverctl defaults": (True, PredictOptions(postprocess=False, save_probabilities=True)),
        "monai fp32 tf32-off vs exact": (
            False,
            PredictOptions(shortcuts=False, postprocess=False, save_probabilities=True),
        ),
    }
    for name, (amp, options) in pairs.items():
        monai_bundle(scan, monai_net, amp)  # warm-up (cuDNN autotuning, allocator)
        with measured() as mm:
            labels, prob = monai_bundle(scan, monai_net, amp)
        model.segment(scan, options)
        with measured() as ml:
            seg = model.segment(scan, options)
        d = dice(seg.mask.array, labels)
        dp = float(np.abs(seg.probabilities.array - prob).max())
        inf = seg.report["inference"]
        need = 0.99 if amp else 0.9999
        row(
            name,
            d >= need and bool(labels.any()),
            f"Dice {d:.5f}",
            fmt(dp),
            f"{ml['wall']:.2f} / {mm['wall']:.2f}",
            f"{fmt(ml['peak'], 2)} / {fmt(mm['peak'], 2)}",
            f"liverctl {inf['precision']}, tf32 {inf['tf32']}; liverctl / MONAI",
        )


def nnunet_reference(folder: Path, scans: dict[str, Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # nnU-Net 2.5.1 unpickles whole; the repo's own file
    try:
        predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=True,
            perform_everything_on_device=True,
            device=DEV,
            allow_tqdm=False,
        )
        predictor.initialize_from_trained_model_folder(str(folder), (0, 1), "checkpoint_final.pth")
    finally:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    out = {}
    for name, path in scans.items():
        image, props = SimpleITKIO().read_images([str(path)])
        seg, probs = predictor.predict_single_npy_array(image, props, None, None, True)
        out[name] = (seg, probs)
    return out


def check_nnunet(tmp: Path) -> None:
    from nnunet_cases import FOLDER, write_cases

    from liverctl.io import read_image
    from liverctl.nnunet import NnUNetModel

    scans = write_cases(tmp / "nnunet")
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # unused; unset, nnU-Net prints a warning
        os.environ.setdefault(var, str(tmp / var))
    if DEV.type == "cuda":
        nnunet_reference(FOLDER, scans)  # warm-up
    with measured() as mr:
        reference = nnunet_reference(FOLDER, scans)
    for exact in (True, False):
        model = NnUNetModel.load(FOLDER, folds=(0, 1), device=str(DEV), exact=exact)
        if DEV.type == "cuda":
            model.predict(read_image(scans["native"]))  # warm-up
        dices, dps, notes = [], [], ""
        with measured() as ml:
            for name, path in scans.items():
                result = model.predict(read_image(path), probabilities=exact)
                seg, probs = reference[name]
                dices.append(dice(result.labels.array > 0, seg > 0))
                dps.append(float(np.abs(result.liver_probability.array - probs[1:].sum(0)).max()))
                notes = (
                    f"{result.stats['device']}, {result.stats['precision']}, sums on {result.stats['accumulate_on']}"
                )
        ok = min(dices) >= (0.999 if exact else 0.995) and max(dps) <= (1e-2 if exact else 0.05)
        row(
            f"nnunet {'exact' if exact else 'default'} vs nnUNetPredictor ({DEV.type})",
            ok,
            f"min Dice {min(dices):.5f}",
            fmt(max(dps)),
            f"{ml['wall']:.2f} / {mr['wall']:.2f}",
            fmt(ml["peak"], 2),
            notes + "; liverctl / nnU-Net, 3 cases",
        )


def force_oom_once(net: torch.nn.Module) -> None:
    """The first forward of ``net`` asks the device for 1 PiB: a real out-of-memory error."""
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    fired = []

    def hook(module, args):
        if not fired:
            fired.append(True)
            if DEV.type == "cuda":
                torch.empty(1 << 50, dtype=torch.uint8, device=DEV)
            raise torch.OutOfMemoryError("simulated out of memory (dry run on the CPU)")

    conv.register_forward_pre_hook(hook)


def check_batch(monai_net: torch.nn.Module, tmp: Path) -> None:
    from liverctl.io import write_image
    from liverctl.predict import predict

    folder = tmp / "scans"
    for i in range(3):
        write_image(phantom(SIZES["batch"], case=i), folder / f"case{i}.nii.gz")
    out = tmp / "masks"
    model = liverctl_model(monai_net, DEV)
    force_oom_once(model.networks[0])
    with measured() as m:
        first = predict(folder, out, loaded=model)
    fallback = (first.cases[0].report or {}).get("inference", {}).get("out_of_memory_fallback")
    kept = predict(folder, out, loaded=liverctl_model(monai_net, DEV), resume=True)
    on_cpu = 0
    if DEV.type == "cuda":
        on_cpu = sum(
            c.skipped
            for c in predict(folder, out, loaded=liverctl_model(monai_net, torch.device("cpu")), resume=True).cases
        )
    ok = all(c.ok for c in first.cases) and fallback is not None and all(c.skipped for c in kept.cases) and on_cpu == 0
    options = (first.cases[1].report or {}).get("options", {})
    notes = (
        f"ok {sum(c.ok for c in first.cases)}/3, fallback on scan 1: {fallback is not None}, resume kept "
        f"{sum(c.skipped for c in kept.cases)}/3, cpu run kept {on_cpu}/3; key {options.get('device')} {options.get('precision')}"
    )
    row("batch 3 scans: oom on scan 1 + resume", ok, "", "", fmt(m["wall"], 2), fmt(m["peak"], 2), notes)


class _Stop(Exception):
    pass


def check_training(tmp: Path) -> None:
    from liverctl.phantoms import make_phantom
    from liverctl.training import ArrayDataset, TrainConfig, train

    imgs, labs = {}, {}
    for i in range(3):
        ct, lab = make_phantom(domain="contrast", seed=0, case=i, shape=(48, 64, 64), spacing=(6.0, 6.0, 6.0))
        imgs[f"c{i}"] = ct.with_array(((np.clip(ct.array, -200, 250) - 100.0) / 60.0).astype(np.float32))
        labs[f"c{i}"] = lab.with_array((lab.array > 0).astype(np.uint8))
    ds = ArrayDataset(imgs, labs)
    cfg = TrainConfig(
        arch_kwargs={"base_features": 8, "n_levels": 3},
        patch_size=(32, 32, 32),
        epochs=2,
        iterations_per_epoch=10,
        val_every=0,
        device=str(DEV),
        precision="auto",
        seed=5,
        checkpoint_every=3,
    )
    with measured() as m:
        reference = train([ds], tmp / "ref", cfg)

    def stop_at_13(desc: str, done: int, total: int) -> None:
        if desc == "training" and done == 13:
            raise _Stop

    with contextlib.suppress(_Stop):
        train([ds], tmp / "run", cfg, progress=stop_at_13)
    resumed = train([ds], tmp / "run", cfg, resume=True)
    ref_w, res_w = reference.model.state_dict(), resumed.model.state_dict()
    dw = max(float((ref_w[k].float() - res_w[k].float()).abs().max()) for k in ref_w)
    finite = all(math.isfinite(v) for v in resumed.train_losses + reference.train_losses)
    ok = resumed.iterations == 20 and resumed.epochs == 2 and finite
    notes = (
        f"precision auto ({'fp16 + GradScaler' if DEV.type == 'cuda' else 'fp32'}); resumed at 12 of 20 -> "
        f"{resumed.iterations}; losses {[round(v, 4) for v in resumed.train_losses]} vs {[round(v, 4) for v in reference.train_losses]}"
    )
    row("train fp16 + resume", ok, f"max abs dw {fmt(dw)}", "", fmt(m["wall"], 2), fmt(m["peak"], 2), notes)


# --------------------------------------------------------------------------- main


def main() -> int:
    global DEV
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda:0", help="the CUDA device to check (default cuda:0)")
    ap.add_argument(
        "--dry-run-on-cpu", action="store_true", help="every row on the CPU, small sizes (numbers mean nothing)"
    )
    args = ap.parse_args()
    if args.dry_run_on_cpu:
        SIZES.update(engine=(40, 48, 48), scan=(40, 60, 60), batch=(32, 48, 48), roi=(32, 32, 32))
    elif not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda}): "
            "nothing checked; run it on a machine with an NVIDIA GPU"
        )
        return 2
    else:
        DEV = torch.device(args.device)
        torch.cuda.set_device(DEV)
    import warnings

    warnings.filterwarnings("ignore", module="monai")  # deprecation and affine notes of MONAI's transforms
    warnings.filterwarnings("ignore", category=FutureWarning)
    t0 = time.perf_counter()
    try:
        status = run_checks()
    except KeyboardInterrupt:  # gpu_check.sh's 8-minute budget (SIGINT): the table so far
        row("stopped at the time budget", False, notes="the rows above finished; the others did not run")
        status = 124
    print(
        f"\nliverctl GPU check on {DEV}, {time.perf_counter() - t0:.0f} s"
        + (" (DRY RUN ON THE CPU: the numbers mean nothing)" if DEV.type != "cuda" else "")
        + "\n"
    )
    print_table()
    if status:
        return status
    return 0 if all(r["status"] in ("ok", "") for r in ROWS) else 1


def run_checks() -> int:
    """Every section in order; 1 if the test network could not even be trained."""
    with tempfile.TemporaryDirectory(prefix="liverctl_gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        guarded("environment", check_environment)
        try:
            net = weak_network()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            row(
                "test network", False, notes=f"could not be trained ({type(exc).__name__}: {exc}); nothing else checked"
            )
            return 1
        guarded("engine", lambda: check_engine(net))
        guarded("monai", lambda: check_monai(net))
        guarded("nnunet", lambda: check_nnunet(tmp))
        guarded("batch", lambda: check_batch(net, tmp))
        guarded("train", lambda: check_training(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
