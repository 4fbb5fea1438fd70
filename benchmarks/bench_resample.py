"""Resampling and `preprocess` on a 512x512x600 int16 CT: time and peak memory.

Each measurement runs in a fresh subprocess, so ``ru_maxrss`` is the peak resident
memory of that measurement alone (including the ~150 MB of Python + NumPy + SimpleITK).

    python benchmarks/bench_resample.py            # full size, 512x512x600
    python benchmarks/bench_resample.py --small    # 256x256x150, quick check
    python benchmarks/bench_resample.py --no-scipy # skip the scipy.ndimage.zoom comparison
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACING_XYZ = (0.8, 0.8, 1.5)


def make_scan(shape_zyx: tuple[int, int, int]):
    """A synthetic int16 abdomen: air, a body ellipse at 40 HU and a liver ellipsoid at 60 +- 15 HU."""
    import numpy as np

    from liverctl.io import Geometry, Image

    nz, ny, nx = shape_zyx
    y, x = np.ogrid[:ny, :nx]
    body = ((y - ny / 2) / (0.4 * ny)) ** 2 + ((x - nx / 2) / (0.45 * nx)) ** 2 <= 1
    array = np.full(shape_zyx, -1000, dtype=np.int16)
    label = np.zeros(shape_zyx, dtype=np.uint8)
    rng = np.random.default_rng(0)
    for z in range(nz):  # slice by slice, so that building the scan needs no float64 volume
        array[z][body] = 40
        r2 = 1 - ((z - nz / 2) / (0.2 * nz)) ** 2
        if r2 > 0:
            liver = ((y - ny / 2) / (0.2 * ny)) ** 2 + ((x - nx / 3) / (0.2 * nx)) ** 2 <= r2
            label[z][liver] = 1
            array[z][liver] = (60 + rng.normal(0, 15, size=int(liver.sum()))).astype(np.int16)
    geometry = Geometry(SPACING_XYZ, (-200.0, -200.0, -400.0))
    return Image(array, geometry), Image(label, geometry)


def child(task: str, shape_zyx: tuple[int, int, int], folder: str) -> dict:
    import resource

    import numpy as np

    from liverctl.io import Image
    from liverctl.preprocessing import preprocess
    from liverctl.spatial import resample

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if task.startswith("preprocess"):
        order = 3 if task.endswith("bspline") else 1
        start = time.perf_counter()
        result = preprocess(
            Path(folder) / "ds",
            Path(folder) / f"out{order}",
            target_spacing=(1.5, 1.5, 1.5),
            window="liver",
            image_order=order,
        )
        seconds = time.perf_counter() - start
        out_shape = result.cases[0]["shape"]
    else:
        image, label = make_scan(shape_zyx)
        kind, target = task.split("@")
        spacing = (float(target),) * 3
        start = time.perf_counter()
        if kind == "sitk-linear":
            out = resample(image, spacing, interpolator="linear")
        elif kind == "sitk-nearest":
            out = resample(label, spacing, interpolator="nearest")
        elif kind == "sitk-bspline":
            out = resample(image, spacing, interpolator="bspline")
        elif kind == "scipy-linear":
            from scipy import ndimage

            zoom = [s / t for s, t in zip(image.spacing_zyx, spacing[::-1], strict=True)]
            out = Image(ndimage.zoom(image.array.astype(np.float32), zoom, order=1), image.geometry)
        else:
            raise SystemExit(f"unknown task {task}")
        seconds = time.perf_counter() - start
        out_shape = list(out.shape)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "task": task,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak),
        "base_mb": round(base),
        "out": out_shape,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="256x256x150 instead of 512x512x600")
    parser.add_argument("--no-scipy", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("TASK", "SHAPE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape = tuple(int(v) for v in args.child[1].split("x"))
        print(json.dumps(child(args.child[0], shape, args.child[2])))  # type: ignore[arg-type]
        return

    shape = (150, 256, 256) if args.small else (600, 512, 512)
    print(f"scan {shape[2]}x{shape[1]}x{shape[0]} (x, y, z) int16 at {SPACING_XYZ} mm")
    tasks = [f"{k}@{t}" for t in ("1.5", "3") for k in ("sitk-linear", "sitk-nearest")]
    if not args.no_scipy:
        tasks += ["scipy-linear@3"]
    with tempfile.TemporaryDirectory() as tmp:
        # one case on disk for `preprocess` (uncompressed NIfTI: gzip would dominate the time)
        import SimpleITK as sitk

        image, label = make_scan(shape)
        ds = Path(tmp) / "ds"
        (ds / "imagesTr").mkdir(parents=True)
        (ds / "labelsTr").mkdir()
        sitk.WriteImage(image.to_sitk(), str(ds / "imagesTr" / "big_0000.nii"))
        sitk.WriteImage(label.to_sitk(), str(ds / "labelsTr" / "big.nii"))
        del image, label
        tasks += ["preprocess", "preprocess-bspline"]
        print(f"{'task':<22} {'seconds':>8} {'peak RSS MB':>12}  output shape (z, y, x)")
        for task in tasks:
            shape_arg = "x".join(str(v) for v in shape)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", task, shape_arg, tmp], capture_output=True, text=True
            )
            if proc.returncode != 0:
                print(f"{task:<22} failed: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{task:<22} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12}  {r['out']}")
    print("peak RSS includes building the synthetic scan in memory (int16 + uint8 label) for the resample rows;")
    print("the preprocess rows read the case from disk: fingerprint, then crop -> resample (linear or cubic")
    print("B-spline) -> window -> z-score at 1.5 mm, and write the .npy files.")


if __name__ == "__main__":
    main()
