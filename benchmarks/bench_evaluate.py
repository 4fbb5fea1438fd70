"""Benchmark: liverctl's metric set vs MedPy (hd95 + assd) and MONAI (HD95 + ASSD) on one large pair.

Builds a 512x512x300 pair of liver-sized masks at spacing (z, y, x) = (2.5, 0.8, 0.8) mm
(an ellipsoid of about 1.6 L and a perturbed copy: shifted, reshaped, with an extra
lobe and a small false-positive blob far away), then times, in the same run:

* liverctl ``compute_metrics`` (all 14 metrics: overlap, volumes, ASSD, RMSD, HD, HD95),
  on boolean arrays, and ``evaluate_images`` on uint8 label maps (label validation included);
* MedPy 0.5.2 ``hd95`` + ``assd`` (each computes both distance transforms on the full volume);
* MONAI ``compute_hausdorff_distance(percentile=95)`` + ``compute_average_surface_distance(symmetric=True)``.

Prints times (best of ``--repeat``, after one untimed warm-up for liverctl and MONAI;
MedPy runs once), speed-up ratios, and the values side by side. Timing only, no assertions.

Then the normalised surface Dice at ``--nsd`` tolerances (mm), side by side in the same run:

* liverctl ``surface_dice_at`` (all tolerances at once);
* DeepMind ``surface-distance`` ``compute_surface_distances`` + ``compute_surface_dice_at_tolerance``
  (the definition liverctl reproduces);
* MONAI ``compute_surface_dice(use_subvoxels=True)`` (MONAI's port of that definition), one
  call per tolerance,

each timed in this process and as a whole process (a fresh ``python`` that imports the
library, loads the pair from ``.npy`` files and computes every tolerance: what a user's
script costs). MedPy has no NSD.

    python benchmarks/bench_evaluate.py [--repeat 3] [--size 512 512 300] [--skip-medpy] [--nsd 1,2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np


def ellipsoid(shape_zyx, spacing_zyx, centre_mm, radii_mm) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape_zyx)]
    total = sum(
        ((g.astype(np.float32) * s - c) / r) ** 2
        for g, s, c, r in zip(grids, spacing_zyx, centre_mm, radii_mm, strict=True)
    )
    return total <= 1.0


def make_pair(shape_zyx, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = (n * s for n, s in zip(shape_zyx, spacing_zyx, strict=True))
    centre = (z / 2, y * 0.42, x * 0.40)
    ref = ellipsoid(shape_zyx, spacing_zyx, centre, (80.0, 75.0, 65.0))  # 4/3 pi abc = 1.63 L
    moved = (centre[0] + 3.0, centre[1] - 2.0, centre[2] + 2.4)
    pred = ellipsoid(shape_zyx, spacing_zyx, moved, (78.0, 77.0, 63.0))
    pred |= ellipsoid(shape_zyx, spacing_zyx, (centre[0] - 45, centre[1] + 45, centre[2] - 35), (20.0, 20.0, 20.0))
    pred |= ellipsoid(shape_zyx, spacing_zyx, (centre[0] + 60, centre[1] + 150, centre[2] + 150), (6.0, 6.0, 6.0))
    return pred, ref


def best_of(fn, repeat: int, warmup: bool = True):
    if warmup:
        fn()
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300), metavar=("X", "Y", "Z"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-medpy", action="store_true", help="MedPy takes about a minute on the full size")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--nsd", default="1,2", help="NSD tolerances in mm ('' skips the NSD part)")
    parser.add_argument("--skip-processes", action="store_true", help="NSD: no whole-process timings")
    args = parser.parse_args()

    from liverctl.evaluation import EvaluateOptions, evaluate_images
    from liverctl.io import Geometry, Image
    from liverctl.metrics import compute_metrics

    shape = (args.size[2], args.size[1], args.size[0])
    spacing = (2.5, 0.8, 0.8)
    t0 = time.perf_counter()
    pred, ref = make_pair(shape, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")
    print(
        f"pair: {args.size[0]}x{args.size[1]}x{args.size[2]} voxels at (z,y,x) {spacing} mm, "
        f"reference {ref.sum() * voxel_ml:.0f} mL, prediction {pred.sum() * voxel_ml:.0f} mL "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )

    results: dict[str, tuple[float, dict[str, float]]] = {}

    t_lc, m = best_of(lambda: compute_metrics(pred, ref, spacing), args.repeat)
    results["liverctl compute_metrics (all metrics)"] = (t_lc, {"hd95": m.hd95, "assd": m.assd, "hd": m.hd})
    m_dm = compute_metrics(pred, ref, spacing, hd95="directed-max")
    geo = Geometry(spacing[::-1])
    p_img, r_img = Image(pred.astype(np.uint8), geo), Image(ref.astype(np.uint8), geo)
    t_ev, ev = best_of(lambda: evaluate_images(p_img, r_img, EvaluateOptions(labels=[1])), args.repeat)
    results["liverctl evaluate_images (uint8, label 1)"] = (
        t_ev,
        {"hd95": ev.rows[0].metrics.hd95, "assd": ev.rows[0].metrics.assd},
    )

    if not args.skip_monai:
        import torch
        from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

        yp, yt = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])

        def monai_run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                h = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=list(spacing))
                a = compute_average_surface_distance(
                    yp, yt, include_background=True, symmetric=True, spacing=list(spacing)
                )
            return {"hd95": float(h.item()), "assd": float(a.item())}

        results[f"MONAI {__import__('monai').__version__} HD95 + ASSD (torch threads {torch.get_num_threads()})"] = (
            best_of(monai_run, args.repeat)
        )

    if not args.skip_medpy:
        from medpy.metric import binary

        def medpy_run():
            return {"hd95": binary.hd95(pred, ref, spacing), "assd": binary.assd(pred, ref, spacing)}

        results["MedPy 0.5.2 hd95 + assd"] = best_of(medpy_run, 1, warmup=False)

    print()
    print(f"{'':52s} {'time s':>8s} {'liverctl faster':>16s} {'HD95 mm':>18s} {'ASSD mm':>18s}")
    for name, (t, values) in results.items():
        ratio = "-" if name.startswith("liverctl") else f"{t / t_lc:.1f}x"
        print(f"{name:52s} {t:8.3f} {ratio:>16s} {values['hd95']:18.12f} {values['assd']:18.12f}")
    print()
    print(f"liverctl HD95 directed-max (MONAI's convention): {m_dm.hd95:.12f} mm")
    for name, (_, values) in results.items():
        if name.startswith("MedPy"):
            for key in ("hd95", "assd"):
                rel = abs(getattr(m, key) - values[key]) / abs(values[key])
                print(f"liverctl {key} vs MedPy: relative difference {rel:.2e}")
        if name.startswith("MONAI"):
            rel = abs(m_dm.hd95 - values["hd95"]) / values["hd95"]
            print(f"liverctl directed-max HD95 vs MONAI HD95: relative difference {rel:.2e} (MONAI uses float32)")
            rel = abs(m.assd - values["assd"]) / values["assd"]
            print(f"liverctl ASSD vs MONAI ASSD: relative difference {rel:.2e}")
    print(f"full liverctl metric set: Dice {m.dice:.4f}, HD {m.hd:.2f} mm, RMSD {m.rmsd:.2f} mm, RVD {m.rvd:+.4f}")

    if args.nsd:
        tolerances = [float(t) for t in args.nsd.split(",")]
        nsd_benchmark(pred, ref, spacing, tolerances, args)


# --------------------------------------------------------------------------- NSD

_NSD_SCRIPTS = {
    "liverctl": """
        from liverctl.metrics.surface_dice import surface_dice_at
        nsd = surface_dice_at(pred, ref, spacing, tolerances)  # every tolerance in one pass
        values = [nsd[t] for t in tolerances]
    """,
    "deepmind": """
        import surface_distance as sd
        d = sd.compute_surface_distances(ref, pred, spacing)
        values = [float(sd.compute_surface_dice_at_tolerance(d, t)) for t in tolerances]
    """,
    "monai": """
        import torch
        from monai.metrics import compute_surface_dice
        yp, yt = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])
        values = [
            float(compute_surface_dice(yp, yt, [t], include_background=True, spacing=list(spacing), use_subvoxels=True))
            for t in tolerances
        ]
    """,
}


def _nsd_script(tool: str, folder: Path, spacing, tolerances) -> str:
    head = f"""
        import json, warnings
        import numpy as np
        warnings.simplefilter("ignore")
        pred = np.load({str(folder / "pred.npy")!r})
        ref = np.load({str(folder / "ref.npy")!r})
        spacing, tolerances = {tuple(spacing)!r}, {list(tolerances)!r}
    """
    tail = """
        print(json.dumps(values))
    """
    return textwrap.dedent(head) + textwrap.dedent(_NSD_SCRIPTS[tool]) + textwrap.dedent(tail)


def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def nsd_benchmark(pred: np.ndarray, ref: np.ndarray, spacing, tolerances, args) -> None:
    """NSD: liverctl vs DeepMind vs MONAI, in process and as whole processes."""
    tools = ["liverctl"]
    if _available("surface_distance"):
        tools.append("deepmind")
    if not args.skip_monai and _available("monai"):
        tools.append("monai")
    names = {
        "liverctl": "liverctl surface_dice_at",
        "deepmind": "DeepMind surface-distance 0.1",
        "monai": "MONAI compute_surface_dice(use_subvoxels)",
    }
    rows: dict[str, tuple[float, float | None, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "pred.npy", pred)
        np.save(folder / "ref.npy", ref)
        for tool in tools:
            script = _nsd_script(tool, folder, spacing, tolerances)
            scope: dict = {}
            code = compile(script.replace("print(json.dumps(values))", ""), f"<nsd {tool}>", "exec")
            repeat = args.repeat if tool == "liverctl" else 1
            t_in, _ = best_of(lambda code=code, scope=scope: exec(code, scope), repeat, warmup=tool == "liverctl")
            values = [float(v) for v in scope["values"]]
            t_proc = None
            if not args.skip_processes:
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
                t_proc = time.perf_counter() - t0
                assert out.stdout.strip(), out.stderr
            rows[tool] = (t_in, t_proc, values)

    print()
    print(
        f"NSD at {', '.join(f'{t:g}' for t in tolerances)} mm (whole process: python start, imports, .npy load, all tolerances)"
    )
    cols = "".join(f"{'NSD ' + format(t, 'g') + ' mm':>20s}" for t in tolerances)
    print(f"{'':44s} {'in-process s':>12s} {'x':>7s} {'process s':>10s} {'x':>7s}{cols}")
    base_in, base_proc, base_values = rows["liverctl"]
    for tool, (t_in, t_proc, values) in rows.items():
        r_in = "-" if tool == "liverctl" else f"{t_in / base_in:.1f}x"
        proc = "-" if t_proc is None else f"{t_proc:.2f}"
        r_proc = "-" if tool == "liverctl" or t_proc is None or base_proc is None else f"{t_proc / base_proc:.1f}x"
        vals = "".join(f"{v:20.15f}" for v in values)
        print(f"{names[tool]:44s} {t_in:12.3f} {r_in:>7s} {proc:>10s} {r_proc:>7s}{vals}")
    for tool, (_, _, values) in rows.items():
        if tool != "liverctl":
            diff = max(abs(a - b) for a, b in zip(values, base_values, strict=True))
            print(f"liverctl NSD vs {names[tool]}: max abs difference {diff:.2e}")


if __name__ == "__main__":
    main()
