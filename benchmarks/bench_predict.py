"""Benchmark: end-to-end ``liverctl predict`` against the MONAI way, on the CPU.

The MONAI way is the whole-body CT bundle's pipeline (``wholeBody_ct_segmentation``, 3 mm
model), written out with MONAI's own classes: LoadImaged, EnsureChannelFirstd,
Orientationd("RAS"), Spacingd(3.0 mm, bilinear), NormalizeIntensityd(nonzero=True),
ScaleIntensityd(-1, 1), SlidingWindowInferer(96^3, overlap 0.25, gaussian, padding_mode
"replicate" as weights.toml records for the bundle), softmax, argmax, Invertd back to the
input image, SaveImaged. liverctl runs ``liverctl.predict.predict`` on the same file with the
same weights (a local weights file whose recipe is the ``wholebody-ct-3mm`` entry).

Weights (no network here, so the bundle's trained weights cannot be had):
  random  SegResNet 105 channels, init_filters 32, blocks_down (1, 2, 2, 4), blocks_up
          (1, 1, 1): the bundle's network, random weights (seed 0). Used for timing; its
          outputs are chaotic, so mask agreement under changed windows is a worst case.
  proxy   the same architecture with init_filters ``--proxy-filters`` (default 8), trained
          for ``--proxy-steps`` steps on the shared scan with its TotalSegmentator labels
          (labels > 104 -> background) in the bundle's preprocessing, with random crops of
          random size, randomly padded (constant 0 or replicate, sometimes to 96 slices as
          MONAI pads a short scan), DiceCE loss. A stand-in for trained weights with real
          decision margins: use it for mask agreement, not for anatomy. Cached under
          ``--cache`` (default /tmp/liverctl_bench_predict), keyed by filters and steps.

Methods, each in a fresh subprocess (its own peak RSS: VmHWM from /proc/self/status); the time
counted is from before the weights are loaded to after the mask is written (imports excluded):
  monai          the MONAI way above (sw_batch_size ``--monai-batch``, default 1)
  monai-const    the same with padding_mode "constant" (only when a side is < 96 voxels)
  defaults       liverctl ``PredictOptions()``: MONAI's grid and windows with air windows skipped,
                 features blended before SegResNet's 1x1x1 head, precision auto (fp32 on the CPU),
                 post-processing (largest component, holes filled)
  defaults-fp32  the same, fp32 asked for
  defaults-bf16  the same in bf16 (a CPU with native bf16 computes it 2.5x faster per window)
  exact          ``PredictOptions(shortcuts=False)``, no post-processing: every MONAI window, fp32
  fast           ``PredictOptions(fast=True)``: body crop + adaptive windows, post-processing
  shortcuts      the same without post-processing
  crop-only      body crop, MONAI's 96^3 windows, no post-processing
  adaptive-only  adaptive windows on the whole volume, no post-processing
Each liverctl method runs as a user runs it (no probability map unless asked); a second,
untimed pass of the same model writes the raw decision and the liver probability for the
agreement columns.

Columns: wall s (end to end, see above), net s / net % (the report's
inference.network_seconds and its share of wall), ampl. (voxels evaluated / scan voxels),
RSS GB (peak), Dice (the raw network decision, liver = argmax 5, vs the MONAI way's on the
input grid), Dice pp (the method's post-processed mask vs the MONAI way's mask after the same
post-processing), max|dp| (max abs difference of the liver probability, softmax channel 5, vs
MONAI's inverted to the input grid), vs const (the same against monai-const, when run).

Cases: ct-example (the shared scan, 122x101x30 at 3 mm), abdomen (122x101x112: the same
scan reflected along z to 112 slices, written at 3 mm with its geometry), and the same anatomy
stored on the grids clinical scans come in (``GRID_CASES``: 0.8x0.8x2, 0.7x0.7x5 mm LPS,
oblique 1.5 mm rotated 12 and 8 degrees, LPS-stored 0.9x0.9x2.5 mm), resampled linearly.
Two 70 cm long scans (122x101x232): ``long``, the abdomen above 4 copies of the scan with its liver
painted soft tissue (45 HU; a hard case for any first pass: 4 more abdomens whose liver-shaped
region is not liver), and ``long-fat``, the abdomen above 4 copies of its body outline filled with
fat (a lower body without liver that a network can tell apart).

With network access, ``--weights bundle --bundle-file "$(liverctl weights path wholebody-ct-3mm)"``
(after ``liverctl weights download``) runs the same comparison with the trained bundle weights.

Usage: python benchmarks/bench_predict.py [--quick] [--cases ct-example abdomen]
       [--weights random proxy bundle] [--bundle-file PATH] [--proxy-steps 400] [--proxy-filters 8] [--threads N]
       [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LIVERCTL_TEST_DATA", REPO.parent / "shared" / "data")) / "ct-example"
CT = DATA / "ct.nii.gz"
LABELS = DATA / "multiorgan.nii.gz"
LIVER = 5
N_CLASSES = 105
ALL_METHODS = (
    "monai",
    "monai-const",
    "defaults",
    "shortcuts",
    "crop-only",
    "adaptive-only",
    "exact",
    "fast",
    "defaults-fp32",
    "defaults-bf16",
    "defaults-torch",
    "defaults-openvino",
    "defaults-onnxruntime",
)
REFUSED: set[str] = set()
"""Backends that failed the exactness test on the benchmark's weights (their rows are skipped)."""
BACKEND_METHODS = {"defaults-torch": "torch", "defaults-openvino": "openvino", "defaults-onnxruntime": "onnxruntime"}


# --------------------------------------------------------------------------- networks


def segresnet(init_filters: int):
    """MONAI's SegResNet with the bundle's configuration (dropout is inactive in eval)."""
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=N_CLASSES,
        init_filters=init_filters,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
        dropout_prob=0.2,
    )


def bundle_transforms(keys=("image",), label_key: str | None = None):
    """The bundle's preprocessing (labels, when given, resampled with nearest)."""
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityd,
        Spacingd,
    )

    all_keys = list(keys) + ([label_key] if label_key else [])
    modes = ["bilinear"] * len(keys) + (["nearest"] if label_key else [])
    return Compose(
        [
            LoadImaged(keys=all_keys),
            EnsureTyped(keys=all_keys),
            EnsureChannelFirstd(keys=all_keys),
            Orientationd(keys=all_keys, axcodes="RAS"),
            Spacingd(keys=all_keys, pixdim=(3.0, 3.0, 3.0), mode=modes),
            NormalizeIntensityd(keys=list(keys), nonzero=True),
            ScaleIntensityd(keys=list(keys), minv=-1.0, maxv=1.0),
        ]
    )


def _pad_to(x, shape, mode: str):
    import torch

    pads = []
    for size, target in zip(reversed(x.shape[-3:]), reversed(shape), strict=True):
        extra = max(target - size, 0)
        pads += [extra // 2, extra - extra // 2]
    if not any(pads):
        return x
    if mode == "constant":
        return torch.nn.functional.pad(x, pads, mode="constant", value=0.0)
    return torch.nn.functional.pad(x, pads, mode="replicate")


def train_proxy(path: Path, steps: int, filters: int, seconds: float, log=print, resume: dict | None = None) -> dict:
    """Train the proxy on the shared scan for ``steps`` steps or ``seconds`` seconds, whichever
    comes first; save its state dict to ``path``; return a summary (steps done, liver Dice)."""
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    data = bundle_transforms(label_key="label")({"image": str(CT), "label": str(LABELS)})
    x = torch.as_tensor(np.asarray(data["image"]), dtype=torch.float32)[None]  # (1, 1, i, j, k)
    y = torch.as_tensor(np.asarray(data["label"]), dtype=torch.int64)[None]
    y[y > N_CLASSES - 1] = 0
    shape = tuple(x.shape[2:])
    net = segresnet(filters).train()
    if resume:  # go on from the cached proxy: cross-entropy only (the Dice term over 105 mostly absent classes stalls)
        net.load_state_dict(torch.load(path, weights_only=True))
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)

        def loss_fn(logits, target):
            return torch.nn.functional.cross_entropy(logits, target[:, 0])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    t0 = time.perf_counter()
    done = 0
    while done < steps and time.perf_counter() - t0 < seconds:
        size = [min(int(gen.integers(3, 9)) * 8, s) for s in shape]  # 24..64 voxels per axis
        start = [int(gen.integers(0, s - c + 1)) for s, c in zip(shape, size, strict=True)]
        sl = (slice(None), slice(None), *(slice(a, a + c) for a, c in zip(start, size, strict=True)))
        xc, yc = x[sl], y[sl]
        target = [-(-c // 8) * 8 for c in size]
        if gen.random() < 0.1:  # the way MONAI pads a short scan into a 96^3 window
            target = [96 if s < 96 else t for t, s in zip(target, shape, strict=True)]
        mode = "constant" if gen.random() < 0.5 else "replicate"
        xc = _pad_to(xc, target, mode)
        yc = _pad_to(yc.float(), target, "constant").long()
        loss = loss_fn(net(xc), yc)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done % 25 == 0:
            log(f"  proxy step {done} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.inference_mode():
        full = _pad_to(x, [-(-s // 8) * 8 for s in shape], "replicate")
        pred = net(full).argmax(1)[0]
    off = [(p - s) // 2 for p, s in zip(pred.shape, shape, strict=True)]
    pred = pred[off[0] : off[0] + shape[0], off[1] : off[1] + shape[1], off[2] : off[2] + shape[2]].numpy()
    liver_dice = dice(pred == LIVER, y[0, 0].numpy() == LIVER)
    torch.save(net.state_dict(), path)
    summary = {"steps": done, "filters": filters, "seconds": train_s, "liver_dice": liver_dice}
    if resume:
        summary["steps"] += resume["steps"]
        summary["seconds"] += resume["seconds"]
        summary["history"] = [*resume.get("history", []), resume]
    path.with_suffix(".json").write_text(json.dumps(summary))
    return summary


def registry_text(filters: int) -> str:
    """weights.toml's text with the network's init_filters set to ``filters``."""
    text = (REPO / "weights.toml").read_text()
    return text.replace("init_filters = 32", f"init_filters = {filters}")


def make_weights(
    cache: Path, kind: str, steps: int, filters: int, seconds: float = 1e9, log=print, more: bool = False
) -> tuple[Path, str]:
    """The weights file for ``kind`` (random or proxy), with a ``<file>.toml`` recipe beside it."""
    import torch

    cache.mkdir(parents=True, exist_ok=True)
    if kind == "random":
        filters = 32
        path = cache / "random_f32_seed0.pt"
        if not path.exists():
            torch.manual_seed(0)
            torch.save(segresnet(32).state_dict(), path)
        what = "SegResNet 105 ch, init_filters 32, random weights (seed 0)"
    else:
        path = cache / f"proxy_f{filters}.pt"
        if path.exists() and path.with_suffix(".json").exists() and not more:
            info = json.loads(path.with_suffix(".json").read_text())
            log(f"proxy weights cached at {path}")
        elif more:
            info = json.loads(path.with_suffix(".json").read_text())
            log(f"training the cached proxy further (<= {steps} steps / {seconds:.0f} s, cross-entropy)")
            info = train_proxy(path, steps, filters, seconds, log, resume=info)
        else:
            log(f"training the proxy (<= {steps} steps / {seconds:.0f} s, init_filters {filters}) -> {path}")
            info = train_proxy(path, steps, filters, seconds, log)
        what = (
            f"PROXY SegResNet 105 ch, init_filters {filters}, trained {info['steps']} steps on the shared scan "
            f"({info['seconds']:.0f} s), its liver Dice on that scan {info['liver_dice']:.3f}"
        )
    Path(str(path) + ".toml").write_text(registry_text(filters))
    return path, what


# --------------------------------------------------------------------------- cases


def make_case(name: str, folder: Path) -> Path:
    """Write case ``name`` as NIfTI in ``folder``; returns its path."""
    from liverctl.io import Image, read_image, write_image

    if name == "ct-example":
        return CT
    image = read_image(CT)
    if name in GRID_CASES:
        image = on_grid(image, *GRID_CASES[name])
        hu = image.array
    elif name == "abdomen":
        hu = np.pad(image.array, [(41, 41), (0, 0), (0, 0)], mode="reflect")  # 112 slices
    elif name == "long":  # 70 cm: 4 copies of the scan with its liver made soft tissue, below the abdomen
        from liverctl.io import read_label

        liver = read_label(LABELS).array == LIVER
        lower = np.where(liver, np.int16(45), image.array).astype(np.int16)
        abdomen = np.pad(image.array, [(41, 41), (0, 0), (0, 0)], mode="reflect")
        hu = np.concatenate([lower] * 4 + [abdomen], axis=0)  # z grows upwards: the abdomen on top
    elif name == "long-fat":  # 70 cm: the abdomen above 4 copies of its body outline filled with fat
        lower = np.where(image.array > -500, np.int16(-100), image.array).astype(np.int16)
        abdomen = np.pad(image.array, [(41, 41), (0, 0), (0, 0)], mode="reflect")
        hu = np.concatenate([lower] * 4 + [abdomen], axis=0)
    else:
        raise SystemExit(f"unknown case {name}")
    path = folder / f"{name}.nii.gz"
    write_image(Image(np.ascontiguousarray(hu).astype(np.int16), image.geometry), path)
    return path


def _rotation(a_deg: float, b_deg: float) -> np.ndarray:
    a, b = np.radians(a_deg), np.radians(b_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rx @ ry


#: The shared scan's anatomy stored on the grids clinical scans come in: spacing (x, y, z) mm, direction.
GRID_CASES = {
    "0.8x0.8x2": ((0.8, 0.8, 2.0), np.diag([-1.0, -1.0, 1.0])),
    "0.7x0.7x5": ((0.7, 0.7, 5.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique": ((1.5, 1.5, 1.5), np.diag([-1.0, -1.0, 1.0]) @ _rotation(12, 8)),
    "lps-stored": ((0.9, 0.9, 2.5), np.eye(3)),
}


def on_grid(ct, spacing, direction):
    """``ct`` resampled (linear, -1024 HU outside) onto a grid of that spacing and direction
    around the same centre, covering the same extent."""
    from liverctl.io import Geometry, Image
    from liverctl.spatial import resample_to_reference

    size = np.asarray(ct.shape[::-1]) * np.asarray(ct.geometry.spacing)
    shape_xyz = np.maximum(2, np.round(size / np.asarray(spacing))).astype(int)
    centre = ct.geometry.index_to_physical((np.asarray(ct.shape) - 1) / 2.0)
    origin = centre - direction @ ((shape_xyz - 1) / 2.0 * np.asarray(spacing))
    geometry = Geometry(tuple(spacing), tuple(origin), tuple(np.asarray(direction).ravel()))
    out = resample_to_reference(ct, geometry, tuple(shape_xyz[::-1]), interpolator="linear", default_value=-1024.0)
    return Image(np.round(out.array).astype(np.int16), geometry)


# --------------------------------------------------------------------------- workers


def run_monai(scan: Path, weights: Path, filters: int, out: Path, padding: str, batch: int) -> dict:
    import torch
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Activationsd, AsDiscreted, Invertd, SaveImaged

    t0 = time.perf_counter()
    net = segresnet(filters)
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    pre = bundle_transforms()
    data = pre({"image": str(scan)})
    t_pre = time.perf_counter()
    inferer = SlidingWindowInferer(
        roi_size=(96, 96, 96), sw_batch_size=batch, overlap=0.25, mode="gaussian", padding_mode=padding
    )
    with torch.inference_mode():
        data["pred"] = inferer(data["image"][None], net)[0]
    t_net = time.perf_counter()
    data = Activationsd(keys="pred", softmax=True)(data)
    data["prob"] = data["pred"][LIVER : LIVER + 1].clone()
    data = AsDiscreted(keys="pred", argmax=True)(data)
    inv = Invertd(
        keys=["pred", "prob"],
        transform=pre,
        orig_keys="image",
        nearest_interp=[True, False],
        to_tensor=True,
    )
    data = inv(data)
    SaveImaged(keys="pred", output_dir=str(out.parent), output_postfix="monai", separate_folder=False, print_log=False)(
        data
    )
    wall = time.perf_counter() - t0
    labels = np.asarray(data["pred"][0]).astype(np.uint8)  # (i, j, k) of the input file
    prob = np.asarray(data["prob"][0], dtype=np.float32)
    padded = [max(s, 96) for s in data["image"].shape[1:]]
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    n = len(dense_patch_slices(padded, (96,) * 3, _get_scan_interval(padded, (96,) * 3, 3, (0.25,) * 3)))
    np.savez(out, liver=(labels == LIVER).transpose(2, 1, 0), prob=prob.transpose(2, 1, 0))  # -> (z, y, x)
    return {
        "wall_s": wall,
        "net_s": t_net - t_pre,
        "windows": n,
        "amplification": n * 96**3 / float(np.prod(data["image"].shape[1:])),
    }


def run_liverctl(scan: Path, weights: Path, out: Path, method: str, batch: int | None) -> dict:
    from dataclasses import replace

    from liverctl.io import read_image, read_label
    from liverctl.predict import LiverModel, PredictOptions, predict

    t0, cpu0 = time.perf_counter(), time.process_time()
    options = PredictOptions(
        device="cpu",
        shortcuts=method != "exact",
        fast=method in ("fast", "shortcuts", "crop-only", "adaptive-only"),
        postprocess=method in ("defaults", "fast", "defaults-fp32", "defaults-bf16", *BACKEND_METHODS),
        precision={"defaults-fp32": "fp32", "defaults-bf16": "bf16"}.get(method, "auto"),
        backend=BACKEND_METHODS.get(method, "auto"),
        **({"batch_size": batch} if batch else {}),
    )
    model = LiverModel.load(weights=weights, device="cpu")  # network_axes = "xyz" from the recipe
    if method in ("crop-only", "adaptive-only"):
        base = model.window_config

        def window_config(opts):
            return replace(base(opts), crop_body=method == "crop-only", adaptive_roi=method == "adaptive-only")

        model.window_config = window_config  # type: ignore[method-assign]
    res = predict(scan, out.with_suffix(".nii.gz"), options=options, loaded=model)  # as a user runs it
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    case = res.cases[0]
    if not case.ok:
        raise SystemExit(case.error)
    inf = case.report["inference"]
    liver = read_label(case.mask).array.astype(bool)
    # untimed second pass for the agreement columns: the raw network decision and the liver
    # probability (a 105-class model's probabilities cost a pass over every channel)
    if os.environ.get("BENCH_NO_SECOND_PASS"):
        raw, prob = liver if not options.postprocess else np.zeros(0, bool), np.zeros(0, np.float32)
    else:
        seg = model.segment(read_image(scan), replace(options, postprocess=False, save_probabilities=True))
        raw, prob = seg.mask.array.astype(bool), seg.probabilities.array.astype(np.float32)
    np.savez(out, liver=liver, raw=raw, prob=prob, postprocessed=options.postprocess)
    return {
        "backend": inf.get("backend", "torch"),
        "first_pass": inf.get("first_pass"),
        "skipped": inf.get("skipped_windows", 0),
        "wall_s": wall,
        "cpu_s": cpu,
        "net_s": inf["network_seconds"],
        "windows": inf["windows"] + int((inf.get("first_pass") or {}).get("windows", 0)),  # first pass included
        "window": inf["window_zyx"],
        "amplification": inf["compute_amplification"],
    }


def worker(
    method: str,
    scan: str,
    weights: str,
    filters: int,
    out: str,
    batch: int | None,
    threads: int | None,
):
    import torch

    if threads:
        torch.set_num_threads(threads)
    cpu0 = time.process_time()
    if method.startswith("monai"):
        padding = "constant" if method == "monai-const" else "replicate"
        info = run_monai(Path(scan), Path(weights), filters, Path(out), padding, batch or 1)
    else:
        info = run_liverctl(Path(scan), Path(weights), Path(out), method, batch)
    info.setdefault("cpu_s", time.process_time() - cpu0)
    info["peak_rss_gb"] = _peak_rss_gb()
    Path(out + ".json").write_text(json.dumps(info))


def _peak_rss_gb() -> float:
    """This process's own peak RSS: VmHWM of its address space. (ru_maxrss is not: Linux carries
    the parent's RSS at fork into it across exec, so every worker showed the driver's 2.29 GB.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# --------------------------------------------------------------------------- driver


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["ct-example", "abdomen"])
    ap.add_argument("--weights", nargs="+", default=["random", "proxy"], choices=["random", "proxy", "bundle"])
    ap.add_argument(
        "--bundle-file",
        type=Path,
        default=None,
        help="the real models/model_lowres.pt (e.g. `liverctl weights path wholebody-ct-3mm`) for --weights bundle",
    )
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=ALL_METHODS)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="ct-example; monai, defaults, exact; the proxy if cached, else random weights",
    )
    ap.add_argument(
        "--issue24",
        action="store_true",
        help="abdomen, long (70 cm) and 0.8x0.8x2 x monai, exact, defaults per backend; proxy weights; "
        "no second (agreement) pass: Dice pp of the written masks",
    )
    ap.add_argument("--proxy-steps", type=int, default=1000)
    ap.add_argument("--proxy-filters", type=int, default=8)
    ap.add_argument("--proxy-seconds", type=float, default=900.0, help="training time budget of the proxy")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "liverctl_bench_predict")
    ap.add_argument("--monai-batch", type=int, default=1, help="MONAI sw_batch_size (default 1)")
    ap.add_argument("--batch", type=int, default=None, help="liverctl batch_size (default: PredictOptions')")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--proxy-more", action="store_true", help="with --train-only: train the cached proxy further")
    ap.add_argument("--train-only", action="store_true", help="train (or find) the proxy and exit")
    ap.add_argument(
        "--worker", nargs=5, metavar=("METHOD", "SCAN", "WEIGHTS", "FILTERS", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.worker:
        m, scan, w, f, out = args.worker
        batch = args.monai_batch if m.startswith("monai") else args.batch
        worker(m, scan, w, int(f), out, batch, args.threads)
        return
    if not CT.exists():
        raise SystemExit(f"needs the shared scan at {CT}")
    if args.issue24:  # the table of issue 24, in one run of under 10 minutes
        os.environ["BENCH_NO_SECOND_PASS"] = "1"
        args.cases, args.weights = ["abdomen", "long", "0.8x0.8x2"], ["proxy"]
        args.methods = ["monai", "exact", "defaults", "defaults-torch", "defaults-openvino", "defaults-onnxruntime"]
    if args.quick:
        cached = (args.cache / f"proxy_f{args.proxy_filters}.json").exists()
        args.cases, args.methods = ["ct-example"], ["monai", "defaults", "exact"]
        args.weights = ["proxy"] if cached else ["random"]
    t_start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_only:
        print(
            make_weights(
                args.cache,
                "proxy",
                args.proxy_steps,
                args.proxy_filters,
                args.proxy_seconds,
                log=_log,
                more=args.proxy_more,
            )[1]
        )
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; load average {_load()}", flush=True)
    header = (
        f"{'case':11s} {'method':13s} {'wall s':>7s} {'cpu s':>7s} {'net s':>6s} {'net %':>6s} {'win':>3s} "
        f"{'window':>9s} {'ampl.':>5s} {'RSS GB':>6s} {'Dice':>6s} {'Dice pp':>7s} {'max|dp|':>8s} {'vs const':>8s} "
        f"{'x MONAI':>7s} {'backend':>11s} {'skip':>4s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for kind in args.weights:
            if kind == "bundle":  # the trained bundle weights, where they can be downloaded
                if args.bundle_file is None or not args.bundle_file.is_file():
                    raise SystemExit(
                        "--weights bundle needs --bundle-file PATH (liverctl weights path wholebody-ct-3mm)"
                    )
                weights = args.cache / "bundle_model_lowres.pt"
                args.cache.mkdir(parents=True, exist_ok=True)
                weights.write_bytes(args.bundle_file.read_bytes())
                Path(str(weights) + ".toml").write_text(registry_text(32))
                what = f"the MONAI bundle's trained 3 mm weights ({args.bundle_file})"
            else:
                weights, what = make_weights(
                    args.cache, kind, args.proxy_steps, args.proxy_filters, args.proxy_seconds, log=_log
                )
            filters = args.proxy_filters if kind == "proxy" else 32
            print(f"\n== weights: {what}", flush=True)
            if any(m.startswith("defaults") for m in args.methods):  # not timed: once per machine and weights
                print(_warm_backends(weights), flush=True)
            for case in args.cases:
                scan = make_case(case, tmpdir)
                shape = _shape(scan)
                print(f"\n{case}: {shape[0]}x{shape[1]}x{shape[2]} (x, y, z); load average {_load()}", flush=True)
                print(header, flush=True)
                results: dict[str, tuple[dict, dict]] = {}
                for method in args.methods:
                    if method == "monai-const" and min(shape) >= 96:
                        continue  # no padding: identical to monai
                    if BACKEND_METHODS.get(method) in REFUSED:
                        print(f"{case:11s} {method:13s} refused: fails the exactness test", flush=True)
                        continue
                    out = tmpdir / f"{kind}_{case}_{method}"
                    cmd = [
                        sys.executable,
                        __file__,
                        "--worker",
                        method,
                        str(scan),
                        str(weights),
                        str(filters),
                        str(out),
                    ]
                    cmd += ["--monai-batch", str(args.monai_batch)]
                    if args.batch:
                        cmd += ["--batch", str(args.batch)]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    subprocess.run(cmd, check=True)
                    info = json.loads(Path(str(out) + ".json").read_text())
                    arrays = dict(np.load(str(out) + ".npz"))
                    results[method] = (info, arrays)
                    print(_row(case, method, info, arrays, results, scan), flush=True)
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s; load average {_load()}")


def _row(case: str, method: str, info: dict, arrays: dict, results: dict, scan: Path) -> str:
    ref = results.get("monai")
    const = results.get("monai-const")
    d = dpp = dp = dc = "-"
    if ref is not None and method != "monai":
        if arrays["raw"].size:
            d = f"{dice(arrays['raw'], ref[1]['liver']):.4f}"
        if arrays["prob"].size and ref[1]["prob"].size:
            dp = f"{np.abs(arrays['prob'] - ref[1]['prob']).max():.1e}"
        if bool(arrays["postprocessed"]):
            dpp = f"{dice(arrays['liver'], _postprocessed(ref[1]['liver'], scan)):.4f}"
    if const is not None and method not in ("monai", "monai-const") and arrays["prob"].size:
        dc = f"{np.abs(arrays['prob'] - const[1]['prob']).max():.1e}"
    speed = f"{ref[0]['wall_s'] / info['wall_s']:.2f}" if ref is not None else "-"
    net_pct = 100 * info["net_s"] / info["wall_s"]
    window = "x".join(str(w) for w in info.get("window", (96, 96, 96)))
    return (
        f"{case:11s} {method:13s} {info['wall_s']:7.1f} {info['cpu_s']:7.1f} {info['net_s']:6.1f} {net_pct:5.1f}% "
        f"{info['windows']:3d} {window:>9s} {info['amplification']:5.2f} {info['peak_rss_gb']:6.2f} {d:>6s} "
        f"{dpp:>7s} {dp:>8s} {dc:>8s} {speed:>7s} {info.get('backend', '-'):>11s} {info.get('skipped', 0):>4d}"
    )


def _postprocessed(mask: np.ndarray, scan: Path) -> np.ndarray:
    """MONAI's mask after liverctl's default post-processing (largest component, holes filled)."""
    from liverctl.postprocessing import clean_liver_mask

    return np.asarray(clean_liver_mask(mask.astype(bool), keep_largest=True)[0]).astype(bool)


def _warm_backends(weights: Path) -> str:
    """Build the compiled models once before the timed runs (a first run pays this once per
    weights, runtime version and window shape; later runs read the cache), and let ``auto`` time
    the backends once (a first ``auto`` run on a machine pays that once)."""
    from liverctl.errors import ConfigError
    from liverctl.inference.backends import available_backends
    from liverctl.predict import LiverModel, PredictOptions

    model = LiverModel.load(weights=weights, device="cpu")
    done = []
    for name in [*available_backends(), "auto"]:
        t0 = time.perf_counter()
        try:
            ran = model.backend_predictors(PredictOptions(device="cpu", backend=name))[1]
        except ConfigError as exc:
            REFUSED.add(name)
            done.append(f"{name} refused ({exc})")
            continue
        done.append(f"{name} ({ran}) {time.perf_counter() - t0:.0f} s")
    return "compiled-model cache warmed: " + (", ".join(done) or "no runtime installed")


def _shape(path: Path) -> tuple[int, ...]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(reader.GetSize())


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
